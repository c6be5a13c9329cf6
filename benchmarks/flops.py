"""Model FLOPs of training steps, by the convention model FLOP utilisation is usually quoted in.

A forward pass over T tokens of a transformer with N parameters (the embedding table left out: a lookup, not a
product) costs 2 N T for the weight products plus 4 L s d T for attention's two products (L layers, width d,
sequence length s). Backward costs twice the forward, so a step with gradients is 3 forwards, i.e. the familiar
6 N T; gradient checkpointing recomputes each forward once more in the backward pass, and GradCache's first,
gradient-free pass over the whole batch is one more forward. With LoRA the frozen weights get no gradients, so
the hardware runs about 2/3 of the backward counted here; the convention is kept so numbers compare with
published ones.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Shape:
    parameters: int  # without the input embedding table
    layers: int
    width: int

    @classmethod
    def of(cls, backbone: torch.nn.Module) -> Shape:
        embedding = backbone.get_input_embeddings().weight
        parameters = sum(p.numel() for p in backbone.parameters() if p is not embedding)
        return cls(parameters, backbone.config.num_hidden_layers, backbone.config.hidden_size)

    @classmethod
    def of_folder(cls, folder: Path) -> Shape:
        """The shape of the checkpoint in ``folder``, built on the meta device (no weights read)."""
        from transformers import AutoConfig, AutoModel

        with torch.device("meta"):
            return cls.of(AutoModel.from_config(AutoConfig.from_pretrained(folder)))

    def forward(self, tokens: int, length: int) -> float:
        """One forward pass over ``tokens`` tokens in sequences of ``length``."""
        return 2 * self.parameters * tokens + 4 * self.layers * length * self.width * tokens


def training_flops(with_gradients: float, without_gradients: float, checkpointing: bool) -> float:
    """A run's model FLOPs from its forward FLOPs with gradients (x3, +1 when checkpointing recomputes) and
    without them (x1: GradCache's first pass)."""
    return 3 * with_gradients + (with_gradients if checkpointing else 0) + without_gradients


def matmul_peak(precision: str, size: int, device: str = "cpu", repeats: int = 7) -> float:
    """This machine's dense matmul rate in ``precision`` (``fp32`` or ``bf16``), FLOP/s: the median of
    ``repeats`` ``size``-cube products after three warm-up ones."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    seconds = []
    for repeat in range(repeats + 3):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        if repeat >= 3:
            seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds)
