"""Both precision paths on every machine: bf16 is forced on the tiny decoder (emulated, and slow, on CPUs
without bf16 units), and the ``auto`` rule is checked against both answers of the hardware probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import TOPICS, enter_workdir, make_config

from synthembed.encoder import Embedder, precision
from synthembed.errors import UserError
from synthembed.params import ModelParams, TrainParams
from synthembed.runtime import SINGLE_PROCESS
from synthembed.train.trainer import training_arguments, training_precision

TEXTS = [text for pair in TOPICS[:4] for text in pair]


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_exactly_where_the_hardware_has_it(native: bool, monkeypatch, tmp_path: Path) -> None:
    # The probe is the one thing a machine cannot change about itself: answer it both ways.
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    assert precision.resolve_precision("auto") == ("bf16" if native else "fp32")
    assert precision.resolve_precision("fp32") == "fp32" and precision.resolve_precision("bf16") == "bf16"
    config = make_config(tmp_path, tmp_path, precision="auto")
    args = training_arguments(config, tmp_path / "checkpoints", SINGLE_PROCESS)
    assert args.bf16 is native
    assert args.use_cpu is not torch.cuda.is_available()  # on a CPU the trainer must be told, or refuses bf16
    # DeepSpeed on CPUs trains fp32, whatever the CPU: told "use the CPU", the trainer would skip DeepSpeed.
    assert training_precision(TrainParams(precision="auto", deepspeed="zero2")) == "fp32"
    with pytest.raises(UserError, match="needs a GPU"):
        training_precision(TrainParams(precision="bf16", deepspeed="zero2"))


def test_bf16_encoding_agrees_with_fp32(tiny_decoder_dir: Path) -> None:
    fp32 = Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32", max_seq_length=48))
    bf16 = Embedder(fp32.model, precision="bf16")
    assert bf16.precision == "bf16"
    ours, reference = bf16.encode(TEXTS), fp32.encode(TEXTS)
    assert ours.dtype == np.float32
    assert (ours * reference).sum(axis=1).min() >= 0.999
    assert np.abs(ours - reference).max() > 0  # bf16 really ran: not bit-equal to fp32


def test_bf16_training_trains_exports_and_verifies(tmp_path: Path, monkeypatch, tiny_decoder_dir: Path) -> None:
    from synthembed.train.trainer import run_train

    workdir = enter_workdir(tmp_path, monkeypatch)
    metrics = run_train(make_config(workdir, tiny_decoder_dir, precision="bf16", max_steps=4)).metrics
    assert metrics["precision"] == "bf16" and metrics["steps"] == 4
    check = metrics["verification"]
    assert check["trained_vs_adapter_min_cosine"] >= 0.999 and check["adapter_vs_merged"] < 1e-3
    merged = Embedder.load(str(workdir / "models" / "embedder"), ModelParams(dtype="fp32", max_seq_length=48))
    base = Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32", max_seq_length=48))
    assert np.abs(merged.encode(TEXTS) - base.encode(TEXTS)).max() > 1e-3  # the bf16 steps changed the model
