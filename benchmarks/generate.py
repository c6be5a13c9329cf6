"""Throughput of `generate` against a local OpenAI-compatible server with a fixed per-request latency.

For each concurrency c the ideal rate is c / latency records per second; the script reports the measured rate
next to that bound, then re-runs the same config (answered from the journal/cache) and reports the speed-up.

    python benchmarks/generate.py [--latency 0.2] [--concurrency 1 4 16 64] [--per-slot 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from synthembed import runtime

runtime.start(offline=True)
os.environ.setdefault("OPENAI_API_KEY", "sk-benchmark-not-a-key")  # the local server wants no real key

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import FakeLLMServer  # noqa: E402

from synthembed.params import Params  # noqa: E402
from synthembed.pipeline.run import run_stage  # noqa: E402
from synthembed.synth import taxonomy  # noqa: E402


def measure(server: FakeLLMServer, concurrency: int, count: int, latency: float) -> dict:
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        tasks = Path("tasks.jsonl")
        tasks.write_text(
            "".join(
                json.dumps({"kind": k, "task": f"Find texts about topic {i} for {k}."}) + "\n"
                for k in taxonomy.BRAINSTORM_KINDS
                for i in range(50)
            )
        )
        config = Params.model_validate(
            {
                "llm": {"model": "openai/bench", "api_base": server.api_base, "max_concurrency": concurrency},
                "brainstorm": {"output": str(tasks)},
                "generate": {"num_examples": count, "corpus": None},
            }
        )
        fresh = run_stage("generate", config, track=False).metrics
        sent = server.total_requests
        cached = run_stage("generate", config, track=False).metrics
        assert server.total_requests == sent, "the cached re-run sent requests"
        os.chdir(ROOT)
    bound = concurrency / latency
    rate = fresh["valid"] / fresh["wall_time_s"]
    return {
        "concurrency": concurrency,
        "records": fresh["valid"],
        "records_per_s": round(rate, 2),
        "bound_records_per_s": round(bound, 2),
        "fraction_of_bound": round(rate / bound, 3),
        "wall_s": fresh["wall_time_s"],
        "cached_wall_s": cached["wall_time_s"],
        "cached_speedup": round(fresh["wall_time_s"] / cached["wall_time_s"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--per-slot", type=int, default=20, help="requests per concurrency slot")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/generate.json")
    args = parser.parse_args()
    rows = []
    with FakeLLMServer(latency_s=args.latency) as server:
        measure(server, 2, 4, args.latency)  # warm-up: imports and first-call set-up are not throughput
        for concurrency in args.concurrency:
            rows.append(measure(server, concurrency, concurrency * args.per_slot, args.latency))
    header = "| concurrency | records | records/s | bound (c/latency) | of bound | cached re-run | speed-up |"
    print(header)
    print("|" + "---|" * 7)
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['records']} | {r['records_per_s']} | {r['bound_records_per_s']} | "
            f"{r['fraction_of_bound']:.0%} | {r['cached_wall_s']} s | {r['cached_speedup']}x |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"latency_s": args.latency, "per_slot": args.per_slot, "rows": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
