"""DeepSpeed ZeRO-2 and ZeRO-3 on two CPU ranks (gloo): train, save, reload equal (no empty ZeRO-3
adapters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_train import TOPICS, enter_workdir, make_config

from synthembed.encoder import Embedder
from synthembed.params import ModelParams, TrainParams
from synthembed.train.adapter import load_adapter_model
from synthembed.train.distributed import deepspeed_config


@pytest.mark.slow  # the first DeepSpeed start compiles a shared-memory op (20-45 s); two ranks share 2 cores
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_two_cpu_ranks_train_and_save(stage: str, tmp_path: Path, monkeypatch, tiny_decoder_dir: Path) -> None:
    from synthembed.train.trainer import run_train

    enter_workdir(tmp_path, monkeypatch)
    config = make_config(tmp_path, tiny_decoder_dir, devices=2, deepspeed=stage, max_steps=4, batch_size=2)
    metrics = run_train(config).metrics
    assert metrics["devices"] == 2 and metrics["deepspeed"] == stage and metrics["steps"] == 4
    assert metrics["verification"]["adapter_vs_base"] > 1e-3  # the saved adapter is not empty
    texts = [t for pair in TOPICS[:3] for t in pair]
    merged_dir = str(tmp_path / "models" / "embedder")
    merged = Embedder.load(merged_dir, ModelParams(max_seq_length=48, dtype="fp32")).encode(texts)
    adapter = load_adapter_model(tmp_path / "models" / "adapter").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(merged, adapter, atol=1e-4)


def test_deepspeed_configs_ship_with_the_package() -> None:
    assert deepspeed_config("none") is None
    for stage, number in (("zero2", 2), ("zero3", 3)):
        config = deepspeed_config(stage)
        assert config["zero_optimization"]["stage"] == number
        assert config["optimizer"]["params"]["torch_adam"] is True  # no FusedAdam/CPUAdam compile
    assert deepspeed_config("zero3")["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_gradcache_with_zero3_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be combined"):
        TrainParams(mini_batch_size=4, deepspeed="zero3")
