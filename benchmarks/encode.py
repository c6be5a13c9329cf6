"""Encoding speed: our Embedder against sentence-transformers' plain ``encode`` on the same model and texts.

For each builtin model and dtype both encoders embed the same SciFact abstracts, interleaved, ``--repeats``
times; the table gives medians (docs/s, real tokens/s, the ratio), the minimum cosine between the two
embeddings of each document, and the achieved model FLOP/s against this machine's measured matmul peak.
Numbers on a shared machine are noisy: compare the ratio, which comes from the same run.

    .venv/bin/python benchmarks/encode.py --output benchmarks/results/encode.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import time
from pathlib import Path

from synthembed import runtime

runtime.start(offline=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from synthembed.encoder import Embedder  # noqa: E402
from synthembed.encoder.precision import native_bf16, resolve_precision  # noqa: E402
from synthembed.evaluate.run import BUNDLED_DATA  # noqa: E402
from synthembed.io import write_json  # noqa: E402
from synthembed.params import ModelParams  # noqa: E402

DEFAULT_CORPUS = BUNDLED_DATA / "scifact" / "corpus.jsonl.gz"  # the package's copy of data/eval
MODELS = {"builtin:SmolLM2-135M-Instruct": 64, "builtin:all-MiniLM-L6-v2": 256}  # docs per model


def matmul_peak(dtype: torch.dtype, size: int, repeats: int = 3) -> float:
    """Median GFLOP/s of a ``size``^3 matmul: the ceiling any model FLOP/s is measured against."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def read_corpus(path: Path | None, limit: int) -> list[str]:
    """The first ``limit`` documents as ``title + " " + text``, the MTEB convention for SciFact."""
    path = path or DEFAULT_CORPUS
    opener = gzip.open if path.suffix == ".gz" else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            texts.append(f"{row.get('title', '')} {row['text']}".strip())
            if len(texts) == limit:
                break
    return texts


def model_flops(embedder: Embedder, lengths: list[int]) -> float:
    """Useful FLOPs for these sequence lengths: 2 x non-embedding parameters per token plus attention scores.

    Attention adds 4 x layers x hidden x n^2 per sequence (QK^T and AV), halved for causal decoders.
    """
    backbone = embedder.model[0].auto_model
    config = backbone.config
    embedding_params = sum(m.weight.numel() for m in backbone.modules() if isinstance(m, torch.nn.Embedding))
    dense = sum(p.numel() for p in backbone.parameters()) - embedding_params
    attention = 4 * config.num_hidden_layers * config.hidden_size * (0.5 if _causal(config) else 1)
    return float(sum(2 * dense * n + attention * n * n for n in lengths))


def _causal(config) -> bool:
    return any(arch.endswith("ForCausalLM") for arch in config.architectures or [])


def bench_model(reference: str, texts: list[str], dtype: str, args, bf16_peak: float) -> dict:
    params = ModelParams(dtype=dtype, max_seq_length=args.max_seq_length, batch_size=args.batch_size)
    ours = Embedder.load(reference, params)
    plain = ours.model  # the same SentenceTransformer, called the way sentence-transformers users call it
    tokens = ours.tokenizer(texts, truncation=True, max_length=args.max_seq_length)["input_ids"]
    lengths = [len(ids) for ids in tokens]
    flops = model_flops(ours, lengths)

    def run_plain() -> np.ndarray:
        return plain.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)

    def run_ours() -> np.ndarray:
        return ours.encode(texts, batch_size=args.batch_size, show_progress=False)

    timings: dict[str, list[float]] = {"sentence-transformers": [], "synthembed": []}
    outputs = {}
    fp32_peaks = []
    ours.encode(texts[: args.batch_size], show_progress=False)  # warm-up (allocator, thread pool); not timed
    for _ in range(args.repeats):
        fp32_peaks.append(matmul_peak(torch.float32, 2048, repeats=1))  # under the same load as the runs
        for name, run in (("sentence-transformers", run_plain), ("synthembed", run_ours)):
            start = time.perf_counter()
            outputs[name] = run()
            timings[name].append(time.perf_counter() - start)
    cosine = (outputs["sentence-transformers"] * outputs["synthembed"]).sum(axis=1)
    peaks = {"fp32": statistics.median(fp32_peaks), "bf16": bf16_peak}
    rows = {}
    for name, times in timings.items():
        seconds = statistics.median(times)
        gflops = flops / seconds / 1e9
        rows[name] = {
            "seconds": seconds,
            "seconds_all": times,
            "docs_per_s": len(texts) / seconds,
            "tokens_per_s": sum(lengths) / seconds,
            "gflop_per_s": gflops,
            "fraction_of_fp32_peak": gflops / peaks["fp32"],
            "fraction_of_bf16_peak": gflops / peaks["bf16"],
        }
    return {
        "model": reference,
        "dtype": dtype,
        "precision": ours.precision,
        "docs": len(texts),
        "tokens": sum(lengths),
        "max_seq_length": args.max_seq_length,
        "batch_size": args.batch_size,
        "model_gflop": flops / 1e9,
        "matmul_peak_gflop_per_s": peaks,
        "fp32_peak_all": fp32_peaks,
        "speedup": rows["sentence-transformers"]["seconds"] / rows["synthembed"]["seconds"],
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "encoders": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help=f"SciFact corpus.jsonl(.gz) [{DEFAULT_CORPUS}]")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--docs", type=int, default=None, help="documents per model (default: 64 decoder, 256 encoder)")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "auto"], choices=["fp32", "auto", "bf16"])
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/encode.json"))
    args = parser.parse_args()

    # Emulated bf16 is ~100x slower than fp32, so it gets a smaller matrix to keep the measurement short.
    bf16_peak = matmul_peak(torch.bfloat16, 2048 if native_bf16() else 512)
    print(f"matmul peak: bf16 {bf16_peak:.1f} GFLOP/s (native bf16: {native_bf16()}); fp32: per repeat")
    # "auto" resolves to fp32 on hardware without bf16 units: run each distinct precision once.
    dtypes = list(dict.fromkeys("fp32" if resolve_precision(d) == "fp32" else d for d in args.dtypes))

    results = []
    for reference in args.models:
        texts = read_corpus(args.corpus, args.docs or MODELS.get(reference, 64))
        for dtype in dtypes:
            result = bench_model(reference, texts, dtype, args, bf16_peak)
            results.append(result)
            print_row(result)

    write_json(
        args.output,
        {
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor(),
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "native_bf16": native_bf16(),
            },
            "torch": torch.__version__,
            "default_dtype_resolves_to": resolve_precision("auto"),
            "repeats": args.repeats,
            "results": results,
        },
    )
    print(f"wrote {args.output}")


def print_row(result: dict) -> None:
    print(
        f"\n{result['model']}  dtype={result['dtype']}  {result['docs']} docs, {result['tokens']} tokens, "
        f"max_seq_length {result['max_seq_length']}, batch {result['batch_size']}"
    )
    print(f"{'encoder':<22}{'docs/s':>9}{'tokens/s':>10}{'GFLOP/s':>9}{'% fp32 peak':>13}{'% bf16 peak':>13}")
    for name, row in result["encoders"].items():
        print(
            f"{name:<22}{row['docs_per_s']:>9.2f}{row['tokens_per_s']:>10.0f}{row['gflop_per_s']:>9.1f}"
            f"{100 * row['fraction_of_fp32_peak']:>12.1f}%{100 * row['fraction_of_bf16_peak']:>12.1f}%"
        )
    peaks = result["matmul_peak_gflop_per_s"]
    print(
        f"speedup {result['speedup']:.2f}x   cosine min {result['cosine_min']:.6f}   "
        f"matmul peak fp32 {peaks['fp32']:.1f}, bf16 {peaks['bf16']:.1f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
