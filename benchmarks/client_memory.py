"""Memory of a paper-scale generate run: peak RSS at 10k, 100k and 500k planned requests.

Each size runs in a fresh process (``resource``'s peak RSS is per process) and reports the RSS after the imports
and the peak while the client answers every request of generate's own planner, made one at a time as a real
run makes them (``generate.iter_requests``). The answers come from a journal written beforehand (one 1.2 kB
answer per request), so the run exercises the planner, the client's scheduling, journal index, progress and
``on_reply`` at disk speed; ``--fresh N`` sends N requests over HTTP instead, to the local OpenAI-compatible
server (in its own process) with an instant reply.

    python benchmarks/client_memory.py [--sizes 10000 100000 500000] [--fresh 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSWER = json.dumps({"query": "a question " * 20, "positive_document": "an answer " * 50, "hard_negative_document": ""})


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(size: int, fresh: bool) -> dict:
    """One size, in this process: journal the answers (or not, for HTTP), then answer every planned request."""
    from synthembed import runtime

    runtime.start(offline=True)
    os.environ.setdefault("OPENAI_API_KEY", "sk-benchmark-not-a-key")
    from synthembed.params import Params
    from synthembed.synth import taxonomy
    from synthembed.synth.cache import Journal
    from synthembed.synth.client import LLMClient
    from synthembed.synth.generate import iter_requests

    row: dict = {"planned": size, "path": "http" if fresh else "journal", "imports_mb": round(rss_mb())}
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/llm_server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        with tempfile.TemporaryDirectory() as work:
            tasks = {kind: [f"Find texts about topic {i} for {kind}." for i in range(50)] for kind in taxonomy.KINDS}
            llm = {"model": "openai/bench", "api_base": server.stdout.readline().strip(), "cache_dir": work}
            config = Params.model_validate(
                {"llm": llm | {"max_concurrency": 64}, "generate": {"num_examples": size, "kinds": "paper"}}
            )
            client = LLMClient(config.llm, "generate")
            if not fresh:  # one journaled answer per request, as the client writes them (unsynced: setup only)
                client.journal.close()
                with open(client.journal.path, "w", encoding="utf-8") as journal:
                    for request in iter_requests(config, tasks):
                        entry = {"key": client.request_key(request), "model": "bench", "content": ANSWER}
                        journal.write(json.dumps(entry | {"finish_reason": "stop", "cost_usd": 0.0}) + "\n")
                row["journal_mb_on_disk"] = round(client.journal.path.stat().st_size / 2**20)
                client.journal = Journal(client.journal.path)
            row["before_answering_mb"] = round(rss_mb())
            answered = 0

            def on_reply(reply) -> None:
                nonlocal answered
                answered += reply.content is not None

            started = time.perf_counter()
            client.run(iter_requests(config, tasks), on_reply, desc=f"{size:,} requests", total=size)
            row["answer_s"] = round(time.perf_counter() - started, 1)
            assert answered == size, f"answered {answered} of {size}"
    finally:
        server.kill()
    row["peak_mb"] = round(peak_mb())
    row["peak_kb_per_request"] = round((row["peak_mb"] - row["imports_mb"]) * 1024 / size, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 500_000])
    parser.add_argument("--fresh", type=int, nargs="*", default=[10_000], help="sizes sent over HTTP")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/client_memory.json")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: SIZE PATH in a fresh process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1] == "http")))
        return
    rows = []
    for size, path in [(size, "journal") for size in args.sizes] + [(size, "http") for size in args.fresh]:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(size), path], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    columns = ["planned", "path", "answer_s", "imports_mb", "before_answering_mb", "peak_mb", "peak_kb_per_request"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    print("\n".join("| " + " | ".join(str(row.get(name)) for name in columns) + " |" for row in rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
