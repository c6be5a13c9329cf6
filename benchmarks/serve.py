"""Throughput and latency of ``synthembed serve`` on loopback: micro-batching against one encode per request.

    python benchmarks/serve.py --model builtin:all-MiniLM-L6-v2 --concurrency 1 8 32 --requests 200

For each mode the app is started on a free 127.0.0.1 port; each concurrency level sends ``--requests``
requests (``--texts`` texts each) from that many client threads after a short warm-up, and records
requests/s and latency percentiles. Prints a table; writes JSON to benchmarks/results/serve-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from synthembed import runtime

runtime.start(offline=True)

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from synthembed.encoder import Embedder  # noqa: E402
from synthembed.params import ModelParams  # noqa: E402
from synthembed.serve import create_app, running_server  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def measure(url: str, concurrency: int, requests: int, texts: int) -> dict[str, float]:
    """Send ``requests`` requests from ``concurrency`` threads; every response must be a correct 200."""
    bodies = [
        {"model": "bench", "input": [f"request {i} text {j}: a sentence to embed" for j in range(texts)]}
        for i in range(requests)
    ]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, limits=limits, timeout=120) as client:

        def one(body: dict) -> float:
            start = time.perf_counter()
            response = client.post("/v1/embeddings", json=body)
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            if len(response.json()["data"]) != len(body["input"]):
                raise RuntimeError("wrong number of embeddings in a response")
            return elapsed

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, bodies[: max(concurrency, 4)]))  # warm-up: connections, first forward pass
            start = time.perf_counter()
            latencies = np.array(list(pool.map(one, bodies)))
            wall = time.perf_counter() - start
    p50, p95, p99 = np.percentile(latencies * 1000, [50, 95, 99])
    return {"requests_per_s": requests / wall, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "wall_s": wall}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", default="builtin:all-MiniLM-L6-v2")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level and mode")
    parser.add_argument("--texts", type=int, default=1, help="texts per request")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    embedder = Embedder.load(args.model, ModelParams())
    rows = []
    for batching in (True, False):
        app = create_app(embedder, args.model, batching=batching)
        with running_server(app) as url:
            for concurrency in args.concurrency:
                calls = app.state.batcher.encode_calls  # counted with the warm-up requests
                result = measure(url, concurrency, args.requests, args.texts)
                mode = "batched" if batching else "per-request"
                calls = app.state.batcher.encode_calls - calls
                rows.append({"mode": mode, "concurrency": concurrency, **result, "encode_calls": calls})
                print(f"{mode} x{concurrency}: {result['requests_per_s']:.1f} req/s", file=sys.stderr)

    header = f"{'concurrency':>11}  {'mode':<11}  {'req/s':>7}  {'p50 ms':>7}  {'p95 ms':>7}  {'p99 ms':>7}  calls"
    print(header)
    for row in sorted(rows, key=lambda r: (r["concurrency"], r["mode"])):
        print(
            f"{row['concurrency']:>11}  {row['mode']:<11}  {row['requests_per_s']:7.1f}  "
            f"{row['p50_ms']:7.1f}  {row['p95_ms']:7.1f}  {row['p99_ms']:7.1f}  {row['encode_calls']:5d}"
        )
    stamp = datetime.now(timezone.utc)
    output = args.output or RESULTS / f"serve-{stamp:%Y%m%dT%H%M%SZ}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "model": args.model,
        "texts_per_request": args.texts,
        "requests_per_level": args.requests,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        "date": stamp.isoformat(),
        "results": rows,
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
