"""Training speed and memory: ``synthembed train``'s model and loss against a plain sentence-transformers run.

Every configuration trains the builtin SmolLM2 backbone with the same LoRA adapters (``lora`` of params.yaml),
the same (query, positive, hard negative) triplets from SciFact's labeled train claims, the same batch, sequence
length, learning rate and gradient checkpointing (``train.gradient_checkpointing``), each in its own process so
that peak memory (max RSS) is its own:

- ``plain``: a ``SentenceTransformer`` of the backbone's ``Transformer`` (plain text) and mean ``Pooling``,
  peft's ``get_peft_model`` (through our ``attach_lora``, so the adapters are identical) and
  ``MultipleNegativesRankingLoss`` in fp32, sentence-transformers' default: the run a user would write by hand;
- ``ours``: what ``synthembed train`` builds (E5 instruction, EOS, left padding, InfoNCE with the collapse
  guard's bookkeeping, the no-duplicates sampler) in ``train.precision`` (auto: bf16 where the CPU has bf16
  units), and on such a CPU ``ours, fp32`` too, to show what bf16 alone buys;
- ``ours, large batch``: the same at ``--large-batch``, the memory a larger negative pool costs;
- ``ours, large batch, GradCache``: that batch through GradCache in mini-batches of ``--batch``.

Throughput counts the steps after the first (warm-up). Tokens are the padded tokens the model ran (what costs
compute). Model FLOPs follow the usual convention (``flops.py``: 6 x parameters x tokens, plus attention,
checkpointing's recomputation and GradCache's gradient-free pass). The matmul peak is
measured in the same process as the report (a 2048-cube ``torch.mm``, median of repeats) in each precision.
Run on an idle machine; the ratios are the numbers to read.

    .venv/bin/python benchmarks/train.py --output benchmarks/results/train.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from flops import Shape, matmul_peak, training_flops

from synthembed import runtime

runtime.start(offline=True)

ROOT = Path(__file__).resolve().parents[1]
LABELED = ROOT / "data" / "labeled" / "scifact_train.jsonl"


def triplets(count: int) -> dict[str, list[str]]:
    """``count`` labeled pairs, each with the next record's positive as its hard negative."""
    from synthembed.encoder.convention import QueryConvention
    from synthembed.io import read_jsonl

    rows = list(read_jsonl(LABELED))[: count + 1]
    decoder = QueryConvention(takes_instructions=True)  # both sides train the decoder's E5 queries
    return {
        "anchor": [decoder.query_text(row["query"], row["instruction"]) for row in rows[:count]],
        "positive": [row["positive"] for row in rows[:count]],
        "negative": [row["positive"] for row in rows[1 : count + 1]],
    }


def worker(spec: dict) -> dict:
    """Train one configuration for ``spec['steps']`` steps and return its throughput and peak memory."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from transformers import TrainerCallback

    from synthembed.encoder.embedder import PLAIN_TEXT_MODALITY
    from synthembed.encoder.references import resolve_model
    from synthembed.params import load_params
    from synthembed.runtime import SINGLE_PROCESS
    from synthembed.train.adapter import attach_lora
    from synthembed.train.loss import build_loss
    from synthembed.train.trainer import LoraTrainer, build_model, training_arguments, training_precision

    torch.manual_seed(0)
    config = load_params(ROOT / "params.yaml")
    config = config.model_copy(
        update={
            "train": config.train.model_copy(
                update={
                    "batch_size": spec["batch"],
                    "mini_batch_size": spec["mini_batch"],
                    "max_seq_length": spec["seq"],
                    "max_steps": spec["steps"],
                    "save_steps": 10_000,
                    "precision": spec["precision"],
                }
            )
        }
    )
    data = Dataset.from_dict(triplets(spec["batch"] * spec["steps"]))
    args = training_arguments(config, Path(spec["scratch"]), SINGLE_PROCESS)
    args.save_strategy = "no"
    args.disable_tqdm = True

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_args, **_kwargs) -> None:
            step_ends.append(time.perf_counter())

    if spec["name"] == "plain":
        # Plain text in, mean pooling: the same tokens and pooling as ours (sentence-transformers would otherwise
        # wrap every text in SmolLM2's chat template, 26 more tokens each, and pool the last token).
        transformer = Transformer(
            str(resolve_model(config.model.backbone)),
            max_seq_length=spec["seq"],
            modality_config=PLAIN_TEXT_MODALITY,
            module_output_name="token_embeddings",
        )
        if transformer.tokenizer.pad_token is None:
            transformer.tokenizer.pad_token = transformer.tokenizer.eos_token
        mode = "lasttoken" if config.model.pooling == "auto" else config.model.pooling  # auto: decoder -> EOS
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=mode)
        model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
        attach_lora(model, config.lora)  # peft's get_peft_model with the same LoraConfig as ours, by construction
        loss = MultipleNegativesRankingLoss(model, scale=1.0 / config.train.temperature)
        args.batch_sampler = "batch_sampler"
        trainer_class = SentenceTransformerTrainer
    else:
        model = build_model(config)
        loss = build_loss(model, config.train.temperature, spec["mini_batch"], gather_across_devices=False)
        trainer_class = LoraTrainer
    backbone = model[0].auto_model
    forwards = {True: [], False: []}  # padded tokens and length of each forward, with and without gradients

    def count_tokens(_module: object, args: tuple) -> None:
        input_ids = args[0]
        forwards[torch.is_grad_enabled()].append((input_ids.numel(), input_ids.shape[1]))

    # peft calls the backbone's forward directly (no hooks run); its token embedding is called as a module
    backbone.get_input_embeddings().register_forward_pre_hook(count_tokens)
    trainer = trainer_class(model=model, args=args, train_dataset=data, loss=loss, callbacks=[StepClock()])
    trainer.train()
    timed = len(step_ends) - 1
    seconds = step_ends[-1] - step_ends[0]
    share = timed / len(step_ends)  # every step embeds the same columns at the same lengths, so count evenly
    shape = Shape.of(backbone)
    flops = share * training_flops(
        sum(shape.forward(count, length) for count, length in forwards[True]),
        sum(shape.forward(count, length) for count, length in forwards[False]),
        config.train.gradient_checkpointing,
    )
    tokens = sum(count for count, _length in forwards[True]) * share
    return {
        **{key: spec[key] for key in ("name", "batch", "mini_batch", "seq", "steps")},
        "precision": training_precision(config.train),
        "gradient_checkpointing": config.train.gradient_checkpointing,
        "lora_dropout": config.lora.dropout,
        "examples_per_s": spec["batch"] * timed / seconds,
        "tokens_per_s": tokens / seconds,
        "model_tflop_per_s": flops / seconds / 1e12,
        "s_per_step": seconds / timed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_worker(spec: dict) -> dict:
    """Run :func:`worker` in a fresh interpreter (its own max RSS) and read its JSON answer."""
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{spec['name']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="batch of the plain and ours runs")
    parser.add_argument("--large-batch", type=int, default=64, help="batch of the GradCache comparison")
    parser.add_argument("--seq", type=int, default=64, help="max_seq_length of every run")
    parser.add_argument("--steps", type=int, default=4, help="steps per small-batch run (first is warm-up)")
    parser.add_argument("--large-steps", type=int, default=2, help="steps per large-batch run")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import tempfile

    from synthembed.encoder.precision import resolve_precision
    from synthembed.io import write_json
    from synthembed.params import load_params

    ours = resolve_precision(load_params(ROOT / "params.yaml").train.precision)
    small = {"batch": args.batch, "mini_batch": None, "seq": args.seq, "steps": args.steps}
    large = {"batch": args.large_batch, "mini_batch": None, "seq": args.seq, "steps": args.large_steps}
    specs = [
        {"name": "plain", **small, "precision": "fp32"},
        {"name": "ours", **small, "precision": ours},
        *([{"name": "ours, fp32", **small, "precision": "fp32"}] if ours != "fp32" else []),
        {"name": "ours, large batch", **large, "precision": ours},
        {"name": "ours, large batch, GradCache", **large, "mini_batch": args.batch, "precision": ours},
    ]
    peaks = {precision: matmul_peak(precision, 2048) for precision in {"fp32", ours}}
    print("matmul peak: " + ", ".join(f"{p} {rate / 1e12:.2f} TFLOP/s" for p, rate in sorted(peaks.items())))
    results = []
    header = f"{'run':<28}{'prec':>6}{'batch':>6}{'mini':>6}{'ex/s':>8}{'tok/s':>8}{'s/step':>8}"
    print(f"{header}{'of peak':>9}{'peak MB':>9}")
    with tempfile.TemporaryDirectory() as scratch:
        for spec in specs:
            result = run_worker({**spec, "scratch": scratch})
            result["of_matmul_peak"] = result["model_tflop_per_s"] * 1e12 / peaks[result["precision"]]
            results.append(result)
            print(
                f"{result['name']:<28}{result['precision']:>6}{result['batch']:>6}{result['mini_batch'] or '-':>6}"
                f"{result['examples_per_s']:>8.2f}{result['tokens_per_s']:>8.0f}{result['s_per_step']:>8.1f}"
                f"{result['of_matmul_peak']:>9.0%}{result['peak_rss_mb']:>9.0f}"
            )
    runs = {result["name"]: result for result in results}
    big, cached = runs["ours, large batch"], runs["ours, large batch, GradCache"]
    ratios = {
        "ours_vs_plain_throughput": runs["ours"]["examples_per_s"] / runs["plain"]["examples_per_s"],
        "gradcache_vs_full_batch_memory": cached["peak_rss_mb"] / big["peak_rss_mb"],
        "gradcache_vs_full_batch_throughput": cached["examples_per_s"] / big["examples_per_s"],
    }
    if "ours, fp32" in runs:
        ratios["bf16_vs_fp32_throughput"] = runs["ours"]["examples_per_s"] / runs["ours, fp32"]["examples_per_s"]
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}")
    if args.output:
        machine = {"machine": platform.processor() or platform.machine(), "native_bf16": ours == "bf16"}
        peak = {f"matmul_peak_tflop_per_s_{p}": rate / 1e12 for p, rate in peaks.items()}
        write_json(args.output, {**machine, **peak, "runs": results, **ratios})


if __name__ == "__main__":
    main()
