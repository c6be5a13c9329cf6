"""GPU check of the multi-GPU training path: a Mistral-7B-shaped decoder trained by ``synthembed train``.

Nothing is downloaded. The backbone is ``MistralConfig`` with Mistral-7B's sizes and random bf16 weights, made
in place; its tokenizer is Mistral-7B's own sentencepiece model from the ``mistral-common`` package (installed,
or its wheel under ``--wheels``). Two runs of the real train stage (``run_stage("train", ...)``), each with
LoRA r 16 on all linear layers, bf16 and gradient checkpointing:

- ``gradcache``: batch 256 through GradCache in mini-batches of 32 (``train.mini_batch_size``);
- ``zero3``: DeepSpeed ZeRO-3 on the one GPU, batch 32 (ZeRO-3 excludes GradCache).

Every text fills ``--seq`` tokens (long SciFact abstracts from its corpus, truncated), so a step runs exactly
batch x 3 columns x seq tokens. Both runs end with the stage's export check (adapter and merged embedder
reloaded and compared with the trained model). Reported per run: tokens/s, peak GPU memory, and model FLOP/s
(:mod:`flops`, with GradCache's extra forward and checkpointing's recomputation) against the chip's bf16 matmul
peak, measured here on an 8192-cube product. Times cover every step, the first one included.

    benchmarks/gpu_check.sh            # on the GPU machine (the script installs the carried wheels first)
    python benchmarks/gpu_check.py --tiny --output /tmp/check.json   # the same code on a tiny model, any CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from flops import Shape, matmul_peak, training_flops

ROOT = Path(__file__).resolve().parents[1]
SCIFACT_CORPUS = ROOT / "data" / "eval" / "scifact" / "corpus.jsonl.gz"
TOKENIZER_FILE = "mistral_common/data/tokenizer.model.v1"  # Mistral-7B v0.1's sentencepiece model
MISTRAL_7B = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096,
}  # fmt: skip
TINY = {
    **MISTRAL_7B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2,
}  # fmt: skip


def write_tokenizer(folder: Path, wheels: Path | None) -> None:
    """Mistral-7B's tokenizer (BOS ``<s>``, EOS ``</s>``) from mistral-common: the package, else its wheel."""
    try:
        import mistral_common

        model = (Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1").read_bytes()
    except ImportError:
        wheel = next(iter(sorted((wheels or Path(".")).glob("mistral_common-*.whl"))), None)
        if wheel is None:
            raise SystemExit(f"neither mistral-common nor its wheel under {wheels} is here") from None
        model = zipfile.ZipFile(wheel).read(TOKENIZER_FILE)
    (folder / "tokenizer.model").write_bytes(model)
    settings = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    settings |= {"add_bos_token": True, "add_eos_token": False, "legacy": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))


def write_backbone(folder: Path, sizes: dict, device: str) -> None:
    """A MistralModel of ``sizes`` with random bf16 weights, saved with the tokenizer beside it."""
    from transformers import AutoTokenizer, MistralConfig, MistralModel

    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = MistralConfig(**sizes, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = MistralModel(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model


def write_records(path: Path, count: int, seq: int) -> None:
    """``count`` training records whose query, positive and negative are SciFact abstracts of at least 5
    characters per token of ``seq`` (so truncated to ``seq``), no text in two records (the trainer's sampler
    puts no repeated text in a batch)."""
    from synthembed.corpus import read_corpus
    from synthembed.data.records import TrainRecord
    from synthembed.io import write_jsonl

    texts = [doc.content for doc in read_corpus(SCIFACT_CORPUS) if len(doc.content) >= 5 * seq]
    if len(texts) < 3 * count:
        raise SystemExit(f"{count} records need {3 * count} distinct texts; the corpus has {len(texts)}")
    records = [
        TrainRecord("Retrieve the abstract", *texts[3 * i : 3 * i + 3], "gpu-check", "long_long") for i in range(count)
    ]
    write_jsonl(path, (record.to_json() for record in records))


def run(name: str, workdir: Path, backbone: Path, shape: Shape, train: dict, seq: int) -> dict:
    """One train stage in ``workdir`` (its own records, checkpoints and outputs); its metrics plus rates.
    The learning rate is 5x the default so that a few steps move the embeddings past the export check's
    minimum change."""
    from synthembed.params import LoraParams, ModelParams, Params, PrepareParams, TrainParams
    from synthembed.pipeline.run import run_stage

    folder = workdir / name
    write_records(folder / "data" / "train" / "train.jsonl", train["batch_size"] * train["max_steps"], seq)
    config = Params(
        model=ModelParams(backbone=str(backbone), max_seq_length=seq, pooling="lasttoken"),
        prepare=PrepareParams(output_dir=str(folder / "data" / "train")),
        lora=LoraParams(r=16, alpha=32, dropout=0.0, target_modules="all-linear"),
        train=TrainParams(
            **train,
            lr=1e-3,
            max_seq_length=seq,
            save_steps=10_000,
            gradient_checkpointing=True,
            output_dir=str(folder / "models"),
            checkpoint_dir=str(folder / "checkpoints"),
        ),  # fmt: skip
    )
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    metrics = run_stage("train", config, track=False).metrics
    tokens = metrics["steps"] * train["batch_size"] * 3 * seq  # every text is truncated to seq tokens
    forward = shape.forward(tokens, seq)
    flops = training_flops(forward, forward if train.get("mini_batch_size") else 0.0, checkpointing=True)
    return {
        "run": name,
        **{key: train.get(key) for key in ("batch_size", "mini_batch_size", "deepspeed")},
        **{key: metrics[key] for key in ("steps", "precision", "train_time_s", "peak_memory_mb", "final_loss")},
        "tokens_per_s": tokens / metrics["train_time_s"],
        "model_tflop_per_s": flops / metrics["train_time_s"] / 1e12,
        "verification": metrics["verification"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny Mistral (2 layers, width 64): any CPU")
    parser.add_argument("--steps", type=int, default=3, help="steps per run")
    parser.add_argument("--seq", type=int, default=128, help="tokens per text")
    parser.add_argument("--batch", type=int, default=256, help="GradCache run's batch")
    parser.add_argument("--mini-batch", type=int, default=32, help="GradCache run's mini-batch")
    parser.add_argument("--zero3-batch", type=int, default=32, help="ZeRO-3 run's batch")
    parser.add_argument("--runs", nargs="+", choices=["gradcache", "zero3"], default=["gradcache", "zero3"])
    parser.add_argument("--wheels", type=Path, default=None, help="folder holding the mistral-common wheel")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny:
        raise SystemExit("no GPU visible: the 7B check needs one (use --tiny to run the same code on a CPU)")
    chip = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = matmul_peak("bf16", 8192 if device == "cuda" else 1024, device)
    print(f"{chip}: bf16 matmul peak {peak / 1e12:.1f} TFLOP/s", flush=True)
    precision = "bf16" if device == "cuda" else "auto"  # DeepSpeed on a CPU trains fp32
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        workdir = Path(scratch)
        backbone = workdir / "mistral-7b-shaped"
        backbone.mkdir()
        write_tokenizer(backbone, args.wheels)
        started = time.perf_counter()
        write_backbone(backbone, TINY if args.tiny else MISTRAL_7B, device)
        print(f"random backbone written in {time.perf_counter() - started:.0f} s", flush=True)
        shape = Shape.of_folder(backbone)
        os.chdir(workdir)  # the stage's relative paths (metrics/) land in the scratch folder
        cases = {
            "gradcache": {"batch_size": args.batch, "mini_batch_size": args.mini_batch},
            "zero3": {"batch_size": args.zero3_batch, "deepspeed": "zero3"},
        }
        for name in args.runs:
            train = cases[name]
            train = {**train, "max_steps": args.steps, "precision": precision}
            result = run(name, workdir, backbone, shape, train, args.seq)
            result["of_peak"] = result["model_tflop_per_s"] * 1e12 / peak
            results.append(result)
            print(json.dumps(result), flush=True)
    print(f"{'run':<10}{'batch':>6}{'mini':>6}{'tokens/s':>10}{'peak GB':>9}{'TFLOP/s':>9}{'of peak':>9}  export check")
    for r in results:
        verification = r["verification"]
        check = f"merged vs adapter cos {verification['adapter_vs_merged_min_cosine']:.5f}"
        if "trained_vs_adapter_min_cosine" in verification:
            check += f", trained vs adapter cos {verification['trained_vs_adapter_min_cosine']:.5f}"
        print(
            f"{r['run']:<10}{r['batch_size']:>6}{r['mini_batch_size'] or '-':>6}{r['tokens_per_s']:>10.0f}"
            f"{r['peak_memory_mb'] / 1024:>9.1f}{r['model_tflop_per_s']:>9.1f}{r['of_peak']:>9.1%}  {check}"
        )
    if args.output:
        report = {"chip": chip, "bf16_matmul_peak_tflop_per_s": peak / 1e12, "seq": args.seq, "runs": results}
        args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
