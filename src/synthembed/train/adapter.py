"""LoRA adapters on the embedder's backbone, through peft directly.

The adapter folder holds peft's ``adapter_config.json`` and ``adapter_model.safetensors`` plus
``synthembed_adapter.json`` naming the backbone reference, the embedder settings and the query convention it was
trained with, so it loads without guessing where the base weights live (peft records only a resolved cache
path) or how its queries are written.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from synthembed.encoder.convention import QueryConvention
from synthembed.encoder.embedder import load_sentence_transformer
from synthembed.errors import UserError
from synthembed.params import LoraParams, ModelParams

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_META = "synthembed_adapter.json"


def attach_lora(model: SentenceTransformer, lora: LoraParams) -> None:
    """Wrap the backbone in fresh LoRA adapters (B = 0, so the model starts out unchanged)."""
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="FEATURE_EXTRACTION",
    )
    model[0].model = get_peft_model(model[0].model, config)


def peft_model(model: SentenceTransformer) -> PeftModel:
    inner = model[0].model
    if not isinstance(inner, PeftModel):
        raise UserError("the model carries no LoRA adapter")
    return inner


def lora_parameters(model: SentenceTransformer) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if "lora_" in name]


@contextlib.contextmanager
def gathered(parameters: list[torch.nn.Parameter], zero3: bool):
    """Under ZeRO-3 every rank holds a shard of each weight; gather the full tensors (all ranks must
    enter)."""
    if not zero3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(parameters, modifier_rank=None):
        yield


def save_adapter(model: SentenceTransformer, path: Path, backbone: str, settings: ModelParams) -> None:
    """Write the adapter files to ``path`` (call inside :func:`gathered` under ZeRO-3)."""
    peft_model(model).save_pretrained(str(path))
    meta = {"backbone": backbone, "model": settings.model_dump(), "query_convention": asdict(QueryConvention.of(model))}
    (path / ADAPTER_META).write_text(json.dumps(meta, indent=2))
    if not (path / ADAPTER_WEIGHTS).exists():
        raise UserError(f"saving the adapter wrote no {ADAPTER_WEIGHTS} under {path}")


def load_adapter_weights(model: SentenceTransformer, folder: Path) -> None:
    """Put saved LoRA weights (an adapter folder or a trainer checkpoint) into ``model``'s adapter."""
    weights = folder / ADAPTER_WEIGHTS
    if not weights.exists():
        raise UserError(f"{folder} holds no {ADAPTER_WEIGHTS}")
    result = set_peft_model_state_dict(peft_model(model), load_file(str(weights)))
    if getattr(result, "unexpected_keys", None):
        raise UserError(f"{weights} does not match the model's adapter: {result.unexpected_keys[:3]}")


def load_adapter_model(path: Path) -> SentenceTransformer:
    """The backbone named in ``path`` with the saved adapter on top (not merged)."""
    meta_file = Path(path) / ADAPTER_META
    if not meta_file.exists():
        raise UserError(f"{path} is not an adapter folder written by `synthembed train` (no {ADAPTER_META})")
    meta = json.loads(meta_file.read_text())
    model = load_sentence_transformer(meta["backbone"], ModelParams(**meta["model"]))
    if "query_convention" in meta:  # folders written before it was recorded train the backbone's own
        QueryConvention.from_dict(meta["query_convention"]).attach(model)
    model[0].model = PeftModel.from_pretrained(model[0].model, str(path))
    return model


def merge(model: SentenceTransformer) -> SentenceTransformer:
    """Fold the LoRA weights into the base weights: a plain model that any SentenceTransformer loads."""
    model[0].model = peft_model(model).merge_and_unload()
    return model
