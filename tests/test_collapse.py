"""The collapse guard on real sentence-transformers training runs of the tiny random decoder: it measures a
baseline and every N steps, logs ``doc_cosine``, stops a collapsed run, and keeps its baseline across a
resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from synthembed.data.records import TRAIN_FILE, VALIDATION_FILE, TrainRecord
from synthembed.encoder.precision import Precision
from synthembed.errors import UserError
from synthembed.io import write_jsonl
from synthembed.params import LoraParams, ModelParams, Params, TrainParams
from synthembed.train.collapse import (
    CEILING,
    MAX_DOCUMENTS,
    CollapseError,
    CollapseGuard,
    check_collapse,
    mean_offdiagonal_cosine,
)

PAIRS = [
    ("How do vaccines work?", "Vaccines expose the body to a harmless antigen so memory cells form."),
    ("What causes ocean tides?", "Tides come from the gravitational pull of the moon and the sun on the oceans."),
    ("Why is the sky blue?", "Air molecules scatter short blue wavelengths of sunlight more than red ones."),
    ("How do plants make sugar?", "Photosynthesis in chloroplasts turns light, water and CO2 into glucose."),
    ("What is inflation in economics?", "Inflation is a general rise in prices that lowers the value of money."),
    ("How does a compiler work?", "A compiler parses source code and translates it into machine instructions."),
    ("Why do cats purr?", "Cats purr by vibrating their laryngeal muscles, often when they are content."),
    ("What is a black hole?", "A black hole is a region where gravity is so strong that light cannot escape."),
]
HELD_OUT = [
    ("How do bees make honey?", "Bees regurgitate nectar and fan it with their wings until the water evaporates."),
    ("Why do we sleep?", "Sleep consolidates memories and clears metabolic waste from the brain."),
    ("What is a prime number?", "A prime number has exactly two divisors, one and itself."),
]


def as_records(pairs: list[tuple[str, str]]) -> list[TrainRecord]:
    """Every other record with a hard negative (another pair's answer), like prepare's mixed kinds."""
    rows = []
    for i, (query, positive) in enumerate(pairs):
        negative = pairs[(i + 1) % len(pairs)][1].replace(".", " indeed.") if i % 2 else None
        rows.append(TrainRecord("Retrieve the answer", query, positive, negative, "test", "short_long"))
    return rows


def documents_of(records: list[TrainRecord]) -> set[str]:
    return {text for r in records for text in (r.positive, r.negative) if text}


def write_split(train_dir: Path, train: list[TrainRecord], validation: list[TrainRecord]) -> None:
    write_jsonl(train_dir / TRAIN_FILE, (r.to_json() for r in train))
    write_jsonl(train_dir / VALIDATION_FILE, (r.to_json() for r in validation))


def make_trainer(
    tmp_path: Path,
    backbone: Path,
    callbacks: list[TrainerCallback],
    max_steps: int,
    save_steps: int = 100,
    precision: Precision = "fp32",
    gradient_checkpointing: bool = False,
):
    """The train stage's model (LoRA dropout on), loss and trainer class on (query, answer) pairs, with
    ``callbacks`` only."""
    from datasets import Dataset

    from synthembed.runtime import SINGLE_PROCESS
    from synthembed.train.loss import build_loss
    from synthembed.train.trainer import LoraTrainer, build_model, training_arguments

    train = TrainParams(
        max_seq_length=48, batch_size=4, lr=5e-3, max_steps=max_steps, save_steps=save_steps, precision=precision,
        gradient_checkpointing=gradient_checkpointing,
    )  # fmt: skip
    config = Params(
        model=ModelParams(backbone=str(backbone), max_seq_length=48, dtype="fp32"),
        lora=LoraParams(r=8, alpha=16, dropout=0.1),
        train=train,
    )
    torch.manual_seed(0)
    model = build_model(config)
    args = training_arguments(config, tmp_path / "checkpoints", SINGLE_PROCESS)
    return LoraTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"anchor": [q for q, _ in PAIRS], "positive": [a for _, a in PAIRS]}),
        loss=build_loss(model, temperature=0.05, mini_batch_size=None, gather_across_devices=False),
        callbacks=callbacks,
    )


def logged_cosines(log_history: list[dict]) -> dict[int, float]:
    return {entry["step"]: entry["doc_cosine"] for entry in log_history if "doc_cosine" in entry}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_guard_measures_validation_documents_every_n_steps(
    precision: Precision, tmp_path: Path, tiny_decoder_dir: Path
) -> None:
    validation = as_records(HELD_OUT)
    write_split(tmp_path, as_records(PAIRS), validation)
    guard = CollapseGuard.from_split(tmp_path, ratio=0.3, every_steps=2, precision=precision)
    assert set(guard.documents) == documents_of(validation) and len(guard.documents) == 4

    trainer = make_trainer(tmp_path, tiny_decoder_dir, [guard], 5, precision=precision, gradient_checkpointing=True)
    trainer.train()
    assert [step for step, _ in guard.history] == [0, 2, 4, 5]  # every 2 steps, and the last one
    assert guard.baseline == guard.history[0][1] < CEILING
    assert logged_cosines(trainer.state.log_history) == {step: round(c, 4) for step, c in guard.history[1:]}
    assert abs(guard.history[-1][1] - guard.baseline) > 1e-4  # it embedded with the trained weights

    model = trainer.model
    model.train()  # LoRA dropout 0.1 is active in train mode: only eval mode measures twice alike
    first = guard.measure(model)
    assert model.training and guard.measure(model) == first


def test_collapsed_embeddings_stop_training(tmp_path: Path, tiny_decoder_dir: Path) -> None:
    guard = CollapseGuard(["One and the same document."] * 4, ratio=0.3, every_steps=2, precision="fp32")
    trainer = make_trainer(tmp_path, tiny_decoder_dir, [guard], max_steps=6)
    with pytest.raises(CollapseError, match="representation collapse at step 2: mean cosine between different"):
        trainer.train()
    assert trainer.state.global_step == 2 and guard.history[-1][1] >= CEILING


class StopAtStep(TrainerCallback):
    """Kills training after ``step``, like an interrupted job."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_resumed_run_keeps_the_original_baseline(tmp_path: Path, tiny_decoder_dir: Path) -> None:
    documents = sorted(documents_of(as_records(HELD_OUT)))
    guard = CollapseGuard(documents, ratio=0.3, every_steps=2, precision="fp32")
    first = make_trainer(tmp_path, tiny_decoder_dir, [guard, StopAtStep(6)], max_steps=8, save_steps=4)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    checkpoint = tmp_path / "checkpoints" / "checkpoint-4"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["CollapseGuard"]
    assert saved["attributes"] == {"baseline": guard.baseline, "history": [list(p) for p in guard.history[:3]]}
    assert abs(guard.history[2][1] - guard.baseline) > 1e-4  # re-measuring on the step-4 model would show

    resumed = CollapseGuard(documents, ratio=0.3, every_steps=2, precision="fp32")
    second = make_trainer(tmp_path, tiny_decoder_dir, [resumed], max_steps=8, save_steps=4)
    second.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.baseline == guard.baseline
    assert resumed.history[:3] == guard.history[:3] and [step for step, _ in resumed.history] == [0, 2, 4, 6, 8]
    assert sorted(logged_cosines(second.state.log_history)) == [2, 4, 6, 8]


def test_documents_come_from_validation_else_training(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    many = [(f"Question {i}?", f"Answer number {i} is here.") for i in range(2 * MAX_DOCUMENTS)]
    write_split(tmp_path, as_records(PAIRS), as_records(many))
    capped = CollapseGuard.from_split(tmp_path, ratio=0.3, every_steps=2, precision="fp32")
    assert len(capped.documents) == MAX_DOCUMENTS and set(capped.documents) <= documents_of(as_records(many))
    again = CollapseGuard.from_split(tmp_path, ratio=0.3, every_steps=2, precision="fp32").documents
    assert again == capped.documents  # a fixed sample: a rerun watches the same documents

    write_split(tmp_path, as_records(PAIRS), as_records(HELD_OUT[:1]))  # one positive, no negative
    with caplog.at_level(logging.WARNING, logger="synthembed.train.collapse"):
        fallback = CollapseGuard.from_split(tmp_path, ratio=0.3, every_steps=2, precision="fp32")
    assert set(fallback.documents) == documents_of(as_records(PAIRS)) and fallback.enabled
    assert "watching 12 training documents instead" in caplog.text

    same = [TrainRecord("Retrieve", f"query {i}", "The one answer.", None, "test", "short_short") for i in range(3)]
    write_split(tmp_path, same, [])
    with caplog.at_level(logging.WARNING, logger="synthembed.train.collapse"):
        assert not CollapseGuard.from_split(tmp_path, ratio=0.3, every_steps=2, precision="fp32").enabled
    assert "collapse guard off" in caplog.text
    assert not CollapseGuard.from_split(tmp_path, ratio=0.0, every_steps=2, precision="fp32").enabled
    with pytest.raises(ValueError, match="at least 2 documents"):
        CollapseGuard(["only one"], ratio=0.3, every_steps=2, precision="fp32")


def test_collapse_guard_fires_on_collapsed_batch() -> None:
    spread = torch.randn(8, 16)
    collapsed = torch.ones(8, 16) + 1e-3 * torch.randn(8, 16)
    baseline = mean_offdiagonal_cosine(spread)
    assert baseline < 0.5 and mean_offdiagonal_cosine(collapsed) > 0.99
    check_collapse(mean_offdiagonal_cosine(spread), baseline, ratio=0.3, step=5)
    with pytest.raises(CollapseError, match="representation collapse at step 5"):
        check_collapse(mean_offdiagonal_cosine(collapsed), baseline, ratio=0.3, step=5)
    with pytest.raises(CollapseError):  # the relative rule: spread 0.24 -> 0.05 (the EOS probe in docs/training.md)
        check_collapse(0.95, 0.76, ratio=0.3, step=9)
    check_collapse(0.83, 0.87, ratio=0.3, step=9)  # mean pooling learning: spread grew
    assert issubclass(CollapseError, UserError)
