"""Which floating-point precision to run in: bf16 only where the hardware multiplies bf16 natively."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
PrecisionSetting = Literal["auto", "fp32", "bf16"]  # auto: bf16 where the hardware multiplies it natively


@functools.cache
def native_bf16() -> bool:
    """True on GPUs with bf16 and on CPUs with bf16 matrix units (AVX512-BF16 / AMX); emulated bf16 is slower."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: PrecisionSetting) -> Precision:
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision


def device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def autocast(precision: Precision) -> Iterator[None]:
    """bf16 autocast keeps fp32 master weights (cosine >= 0.999 with fp32), unlike casting the weights."""
    if precision == "bf16":
        with torch.autocast(device_type(), dtype=torch.bfloat16):
            yield
    else:
        yield
