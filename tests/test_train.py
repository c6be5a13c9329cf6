"""Training on the tiny random decoder: the loss falls, outputs reload equal, GradCache matches, resume,
collapse."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from synthembed.data.records import TrainRecord
from synthembed.encoder import Embedder
from synthembed.encoder.convention import QueryConvention
from synthembed.errors import UserError
from synthembed.io import write_jsonl
from synthembed.params import LoraParams, ModelParams, Params, PrepareParams, TrainParams
from synthembed.pipeline.run import run_stage
from synthembed.train.adapter import load_adapter_model
from synthembed.train.trainer import build_model, to_datasets

TOPICS = [
    (
        "How do vaccines train the immune system?",
        "Vaccines expose the body to a harmless antigen so memory cells form.",
    ),
    (
        "What causes ocean tides?",
        "Tides come from the gravitational pull of the moon and the sun on the oceans.",
    ),
    ("Why is the sky blue?", "Air molecules scatter short blue wavelengths of sunlight more than red ones."),
    ("How do plants make sugar?", "Photosynthesis in chloroplasts turns light, water and CO2 into glucose."),
    (
        "What is inflation in economics?",
        "Inflation is a general rise in prices that lowers the value of money.",
    ),
    (
        "How does a compiler work?",
        "A compiler parses source code and translates it into machine instructions.",
    ),
    ("Why do cats purr?", "Cats purr by vibrating their laryngeal muscles, often when they are content."),
    (
        "What is a black hole?",
        "A black hole is a region where gravity is so strong that light cannot escape.",
    ),
]


def records() -> list[TrainRecord]:
    rows = []
    for i, (query, positive) in enumerate(TOPICS):
        negative = TOPICS[(i + 3) % len(TOPICS)][1].replace(".", " indeed.")
        rows.append(
            TrainRecord("Retrieve the answer", query, positive, negative if i % 2 else None, "test", "short_long")
        )
    return rows


def make_config(tmp_path: Path, backbone: Path, **train: object) -> Params:
    defaults = dict(
        lr=5e-3, warmup_steps=0, batch_size=4, max_steps=12, max_seq_length=48, temperature=0.05,
        gradient_checkpointing=False, save_steps=4, precision="fp32",
        output_dir=str(tmp_path / "models"), checkpoint_dir=str(tmp_path / "checkpoints"),
    )  # fmt: skip
    defaults.update(train)
    return Params(
        model=ModelParams(backbone=str(backbone), max_seq_length=48, dtype="fp32"),
        prepare=PrepareParams(output_dir=str(tmp_path / "data" / "train")),
        lora=LoraParams(r=8, alpha=16, dropout=0.0),
        train=TrainParams(**defaults),
    )


def enter_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory, holding the prepared records of :func:`records`."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data" / "train" / "train.jsonl", (r.to_json() for r in records()))
    return tmp_path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter_workdir(tmp_path, monkeypatch)


def test_tiny_run_learns_and_saves_consistent_models(workdir: Path, tiny_decoder_dir: Path) -> None:
    metrics = run_stage("train", make_config(workdir, tiny_decoder_dir), track=False).metrics
    assert metrics["steps"] == 12
    curve = list(csv.DictReader((workdir / "metrics" / "train.csv").open()))
    losses = [float(row["loss"]) for row in curve]
    assert len(losses) == 12 and [int(row["step"]) for row in curve] == list(range(1, 13))
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])
    assert json.loads((workdir / "metrics" / "train.json").read_text())["best_loss"] == min(losses)
    for key in ("examples_per_s", "peak_memory_mb", "train_time_s", "final_loss"):
        assert metrics[key] > 0

    adapter = workdir / "models" / "adapter"
    assert (adapter / "adapter_model.safetensors").exists() and (adapter / "adapter_config.json").exists()
    embedder_dir = workdir / "models" / "embedder"
    assert not list(embedder_dir.glob("adapter_*"))  # merged: a plain model
    texts = [t for pair in TOPICS[:4] for t in pair]
    plain = SentenceTransformer(str(embedder_dir)).encode(texts, normalize_embeddings=True)
    ours = Embedder.load(str(embedder_dir), ModelParams(max_seq_length=48, dtype="fp32")).encode(texts)
    with_adapter = load_adapter_model(adapter).encode(texts, normalize_embeddings=True)
    base = Embedder.load(str(tiny_decoder_dir), ModelParams(max_seq_length=48, dtype="fp32")).encode(texts)
    np.testing.assert_allclose(plain, ours, atol=1e-5)
    np.testing.assert_allclose(plain, with_adapter, atol=1e-4)
    assert np.abs(plain - base).max() > 1e-3
    assert metrics["verification"]["adapter_vs_merged"] < 1e-3
    assert not (workdir / "checkpoints").exists()  # finished runs leave nothing to resume


@pytest.mark.parametrize("instructions", [True, False])
def test_train_instructions_decide_the_anchors_and_the_saved_convention(
    workdir: Path, tiny_decoder_dir: Path, instructions: bool
) -> None:
    """``train.instructions: false`` trains plain queries, and the saved embedder then writes queries plain."""
    config = make_config(workdir, tiny_decoder_dir, max_steps=2, instructions=instructions)
    dataset = to_datasets(records(), QueryConvention.of(build_model(config)))
    prefixed = [anchor.startswith("Instruct: ") for anchor in dataset["hard_negatives"]["anchor"]]
    assert set(prefixed) == {instructions}
    run_stage("train", config, track=False)
    embedder = Embedder.load(str(workdir / "models" / "embedder"), ModelParams(max_seq_length=48, dtype="fp32"))
    assert embedder.convention.takes_instructions is instructions
    query, document = embedder.encode_queries(["vitamin d"]), embedder.encode(["vitamin d"])
    assert np.allclose(query, document, atol=1e-6) is not instructions


def test_gradcache_matches_plain_gradients(tiny_decoder_dir: Path, tmp_path: Path) -> None:
    from synthembed.train.loss import CachedInfoNCELoss, InfoNCELoss

    torch.manual_seed(0)  # the LoRA init, and with it the gradients' scale, must not depend on earlier tests
    model = build_model(make_config(tmp_path, tiny_decoder_dir))
    batch = [r for r in records() if r.negative][:4]
    columns = [[r.query for r in batch], [r.positive for r in batch], [r.negative for r in batch]]
    features = [model.preprocess(column) for column in columns]
    labels = torch.zeros(len(batch))

    def gradients(loss_fn) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        value = loss_fn([{k: _copy(v) for k, v in f.items()} for f in features], labels)
        value.backward()
        return float(value), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    model.train()
    plain_loss, plain = gradients(InfoNCELoss(model, temperature=0.05))
    cached_loss, cached = gradients(CachedInfoNCELoss(model, temperature=0.05, mini_batch_size=1))
    assert math.isclose(plain_loss, cached_loss, rel_tol=1e-5)
    assert plain and plain.keys() == cached.keys()
    assert any(g.abs().max() > 0 for g in plain.values())
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_killed_run_resumes_from_last_checkpoint(
    workdir: Path, tiny_decoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import TrainerCallback

    from synthembed.train import trainer as trainer_module

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise KeyboardInterrupt

    class KilledTrainer(trainer_module.LoraTrainer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.add_callback(Kill())

    config = make_config(workdir, tiny_decoder_dir, max_steps=8, gradient_checkpointing=True)
    with monkeypatch.context() as patched:
        patched.setattr(trainer_module, "LoraTrainer", KilledTrainer)
        with pytest.raises(KeyboardInterrupt):
            run_stage("train", config, track=False)
    assert (workdir / "checkpoints" / "checkpoint-4").is_dir()
    metrics = run_stage("train", config, track=False).metrics
    assert metrics["resumed_from_step"] == 4 and metrics["steps"] == 8
    steps = [int(row["step"]) for row in csv.DictReader((workdir / "metrics" / "train.csv").open())]
    assert steps == list(range(1, 9))


def _copy(value):
    return value.clone() if isinstance(value, torch.Tensor) else value


def test_training_without_prepared_data_is_a_user_error(tmp_path: Path, monkeypatch, tiny_decoder_dir) -> None:
    from synthembed.train.trainer import run_train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="run `synthembed prepare` first"):
        run_train(make_config(tmp_path, tiny_decoder_dir))


def test_a_failure_inside_the_libraries_is_one_error_line(tmp_path: Path, monkeypatch, tiny_decoder_dir) -> None:
    import yaml
    from typer.testing import CliRunner

    from synthembed.cli import app

    enter_workdir(tmp_path, monkeypatch)
    config = make_config(tmp_path, tiny_decoder_dir)
    config.lora.target_modules = ["no_such_projection"]  # peft raises an error of its own
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(config.model_dump()))
    result = CliRunner().invoke(app, ["train"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert lines[-1].startswith("error: NoMatchingPeftModuleError: ") and "no_such_projection" in lines[-1]
    assert "--debug" in lines[-1]
