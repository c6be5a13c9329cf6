"""The train stage: LoRA on the embedder's backbone, InfoNCE, sentence-transformers' trainer, safe export.

:func:`run_train` is a short pipeline: read the records, agree on a checkpoint to resume from, build the model,
the loss and the collapse guard, fit, export and verify, summarize. One process trains directly;
``train.devices > 1`` or a DeepSpeed stage re-launches through :mod:`synthembed.train.distributed`, and each rank
comes back here. Checkpoints land in ``train.checkpoint_dir`` every ``train.save_steps``; a rerun with the same
params resumes from the last one.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint

from synthembed.data.records import TRAIN_FILE, TrainRecord, read_records
from synthembed.encoder.convention import QueryConvention, is_decoder
from synthembed.encoder.embedder import load_sentence_transformer
from synthembed.encoder.precision import Precision, resolve_precision
from synthembed.encoder.references import resolve_model
from synthembed.errors import UserError
from synthembed.params import Params, TrainParams
from synthembed.pipeline.stage import StageResult
from synthembed.runtime import SINGLE_PROCESS, Distributed
from synthembed.train import export
from synthembed.train.adapter import (
    attach_lora,
    gathered,
    load_adapter_weights,
    lora_parameters,
    save_adapter,
)
from synthembed.train.collapse import CollapseGuard
from synthembed.train.distributed import deepspeed_config, launch, needs_launcher
from synthembed.train.loss import build_loss

FINGERPRINT_FILE = "params.json"


def build_model(config: Params) -> SentenceTransformer:
    """The backbone as an embedder (plain text + EOS, pooling per ``model.pooling``, its query convention, or
    none with ``train.instructions: false``) with fresh LoRA adapters."""
    model = load_sentence_transformer(config.model.backbone, config.model, config.train.max_seq_length)
    if is_decoder(resolve_model(config.model.backbone)) and config.model.append_eos:
        export.check_pooled_token_is_eos(model)
    if not config.train.instructions:
        replace(QueryConvention.of(model), takes_instructions=False).attach(model)
    attach_lora(model, config.lora)
    return model


class LoraTrainer(SentenceTransformerTrainer):
    """Resumes by loading the checkpoint's LoRA weights into the live adapter (optimizer state follows)."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_adapter_weights(self.model, Path(resume_from_checkpoint))


def to_datasets(records: list[TrainRecord], convention: QueryConvention) -> Dataset | DatasetDict:
    """Records with a hard negative train as (anchor, positive, negative), the rest as in-batch-only pairs;
    anchors are written as the model will see queries (its own convention), documents plain."""

    def table(rows: list[TrainRecord], with_negative: bool) -> Dataset:
        data = {
            "anchor": [convention.query_text(r.query, r.instruction) for r in rows],
            "positive": [r.positive for r in rows],
        }
        if with_negative:
            data["negative"] = [r.negative for r in rows]
        return Dataset.from_dict(data)

    parts = {
        name: table(rows, name == "hard_negatives")
        for name, rows in (
            ("hard_negatives", [r for r in records if r.negative is not None]),
            ("in_batch_only", [r for r in records if r.negative is None]),
        )
        if rows
    }
    return next(iter(parts.values())) if len(parts) == 1 else DatasetDict(parts)


def training_arguments(
    config: Params, checkpoint_dir: Path, distributed: Distributed
) -> SentenceTransformerTrainingArguments:
    train = config.train
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=train.batch_size,
        learning_rate=train.lr,
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        lr_scheduler_type="linear",
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=2,
        logging_steps=1,
        seed=config.seed,
        bf16=training_precision(train) == "bf16",
        # Without a GPU the trainer refuses bf16 unless told it runs on the CPU; told so, it would skip DeepSpeed.
        use_cpu=not torch.cuda.is_available() and train.deepspeed == "none",
        gradient_checkpointing=train.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if train.gradient_checkpointing else None,
        deepspeed=deepspeed_config(train.deepspeed),
        ddp_backend="gloo" if distributed.launched and not torch.cuda.is_available() else None,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        dataloader_drop_last=distributed.world_size > 1,  # gathered negatives need equal batches on every rank
        report_to="none",
        disable_tqdm=False,
    )


def training_precision(train: TrainParams) -> Precision:
    """bf16 where the hardware has it (``auto``) or where asked for, else fp32.

    DeepSpeed without a GPU, the CPU rehearsal of the multi-GPU path, trains in fp32: the trainer runs DeepSpeed
    only when it is not told to use the CPU, and refuses bf16 on a CPU it was not told about.
    """
    precision = resolve_precision(train.precision)
    if precision == "bf16" and train.deepspeed != "none" and not torch.cuda.is_available():
        if train.precision == "bf16":
            raise UserError("train.precision bf16 with train.deepspeed needs a GPU; without one DeepSpeed trains fp32")
        return "fp32"
    return precision


def _fingerprint(config: Params) -> str:
    """What a checkpoint depends on; a checkpoint from other params is not resumed."""
    relevant = {
        "seed": config.seed,
        "model": config.model.model_dump(),
        "lora": config.lora.model_dump(),
        "train": config.train.model_dump(exclude={"save_steps", "output_dir", "checkpoint_dir"}),
        "data": hashlib.sha256(Path(config.prepare.output_dir, TRAIN_FILE).read_bytes()).hexdigest(),
    }
    return json.dumps(relevant, sort_keys=True)


def resume_point(checkpoint_dir: Path, fingerprint: str) -> str | None:
    """The last checkpoint of an interrupted run with the same params, else None (stale ones are removed)."""
    if not checkpoint_dir.is_dir():
        return None
    stamp = checkpoint_dir / FINGERPRINT_FILE
    if stamp.exists() and stamp.read_text() == fingerprint:
        return get_last_checkpoint(str(checkpoint_dir))
    shutil.rmtree(checkpoint_dir)
    return None


def agree_on_resume(config: Params, distributed: Distributed) -> str | None:
    """Rank 0 decides where to resume (and stamps the checkpoint folder with the params); every rank agrees."""
    checkpoint_dir = Path(config.train.checkpoint_dir)
    resume = None
    if distributed.is_main:
        fingerprint = _fingerprint(config)
        resume = resume_point(checkpoint_dir, fingerprint)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (checkpoint_dir / FINGERPRINT_FILE).write_text(fingerprint)
    if distributed.world_size > 1:
        import torch.distributed as dist

        holder = [resume]
        dist.broadcast_object_list(holder, src=0)
        resume = holder[0]
    return resume


def read_training_records(config: Params) -> list[TrainRecord]:
    train_file = Path(config.prepare.output_dir) / TRAIN_FILE
    if not train_file.exists():
        raise UserError(f"{train_file} not found; run `synthembed prepare` first")
    records = read_records(train_file)
    if len(records) < 2:
        raise UserError(f"{train_file} holds {len(records)} record(s); contrastive training needs at least 2")
    return records


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def export_and_verify(config: Params, model: SentenceTransformer, distributed: Distributed) -> dict[str, Any] | None:
    """Save the adapter and the merged embedder, reload both and compare them with the trained model (rank 0;
    the others only help gather ZeRO-3 shards). Returns the verification numbers on rank 0."""
    out = Path(config.train.output_dir)
    zero3 = config.train.deepspeed == "zero3"
    precision = training_precision(config.train)
    trained = None if zero3 or not distributed.is_main else export.probe_embeddings(model, precision)
    with gathered(lora_parameters(model), zero3):
        if distributed.is_main:
            export.write_dir(out / "adapter", lambda tmp: save_adapter(model, tmp, config.model.backbone, config.model))
    if not distributed.is_main:
        return None
    if config.train.deepspeed != "none":
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # rank 0 alone now loads plain models; ZeRO-3 init would wait for peers
    export.export_embedder(out / "adapter", out / "embedder")
    base = load_sentence_transformer(config.model.backbone, config.model)
    QueryConvention.of(model).attach(base)  # the untrained backbone, writing queries as training did
    eos = is_decoder(resolve_model(config.model.backbone)) and config.model.append_eos
    return export.verify_saved(trained, precision, base, out / "adapter", out / "embedder", eos)


def summarize(
    config: Params,
    trainer: LoraTrainer,
    guard: CollapseGuard,
    records: list[TrainRecord],
    devices: int,
    **measured: Any,
) -> StageResult:
    """The stage's metrics, its loss curve as a table and the line the CLI prints."""
    curve = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    losses = [loss for _, loss in curve]
    candidates = config.train.batch_size * devices * (2 if any(r.negative for r in records) else 1)
    metrics = {
        "steps": trainer.state.global_step,
        "final_loss": losses[-1] if losses else math.nan,
        "best_loss": min(losses) if losses else math.nan,
        "chance_loss": math.log(candidates),
        "doc_cosine_start": guard.history[0][1] if guard.history else math.nan,
        "doc_cosine_end": guard.history[-1][1] if guard.history else math.nan,
        **measured,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "train_records": len(records),
        "devices": devices,
        "deepspeed": config.train.deepspeed,
        "precision": training_precision(config.train),
    }
    summary = (
        f"trained {metrics['steps']} steps in {metrics['train_time_s']:.0f} s, final loss {metrics['final_loss']:.3f} "
        f"(best {metrics['best_loss']:.3f}); embedder saved to {Path(config.train.output_dir) / 'embedder'}"
    )
    return StageResult(metrics, summary, table=(["step", "loss"], curve))


def run_train(config: Params, distributed: Distributed = SINGLE_PROCESS) -> StageResult:
    """Train, export and verify the adapter and the merged embedder. ``train.devices > 1`` or DeepSpeed re-launch
    this through torchrun; each rank comes back here with its ``distributed`` context."""
    if needs_launcher(config, distributed):
        return launch(config)
    records = read_training_records(config)
    # First: for a launched rank, making the arguments starts the process group that agreeing on a checkpoint uses.
    args = training_arguments(config, Path(config.train.checkpoint_dir), distributed)
    resume = agree_on_resume(config, distributed)
    set_seed(config.seed)  # the LoRA initialisation too, not only what the trainer seeds later
    model = build_model(config)
    loss = build_loss(model, config.train.temperature, config.train.mini_batch_size, distributed.world_size > 1)
    guard = CollapseGuard.from_split(
        Path(config.prepare.output_dir), config.train.collapse_ratio, config.train.collapse_check_steps,
        training_precision(config.train),
    )  # fmt: skip
    dataset = to_datasets(records, QueryConvention.of(model))
    trainer = LoraTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[guard])
    started = time.perf_counter()
    outcome = trainer.train(resume_from_checkpoint=resume)
    train_time = time.perf_counter() - started
    verification = export_and_verify(config, model, distributed)
    if not distributed.is_main:
        return StageResult({}, "")
    result = summarize(
        config, trainer, guard, records, distributed.world_size,
        resumed_from_step=int(Path(resume).name.split("-")[-1]) if resume else 0,
        examples_per_s=outcome.metrics.get("train_samples_per_second"),
        train_time_s=round(train_time, 1),
        verification=verification,
    )  # fmt: skip
    shutil.rmtree(config.train.checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    return result
