"""The representation-collapse guard.

On a small backbone with few steps, InfoNCE can map every text to nearly one point: the loss then sits at
about ln(number of candidates) and retrieval is random. We watch the mean off-diagonal cosine of the
positives in each batch. Collapse means the spread ``1 - cosine`` has shrunk below ``ratio`` times its
value on the first batch (untrained model), or the cosine passed ``ceiling``; training then stops with a
clear error instead of saving a useless model.
"""

from __future__ import annotations

import math

from transformers import TrainerCallback

from synthembed.errors import UserError

CEILING = 0.995


class CollapseError(UserError):
    """Training drove all embeddings together."""


def check_collapse(cosine: float, baseline: float, ratio: float, step: int, ceiling: float = CEILING) -> None:
    """Raise :class:`CollapseError` when ``cosine`` shows the embeddings collapsing relative to
    ``baseline``."""
    if math.isnan(cosine) or ratio <= 0:
        return
    if cosine >= ceiling or (1.0 - cosine) < ratio * (1.0 - baseline):
        raise CollapseError(
            f"representation collapse at step {step}: mean cosine between different documents is "
            f"{cosine:.3f} (it was {baseline:.3f} before training); lower train.lr, raise train.temperature, "
            "or try model.pooling: mean (see docs/training.md)"
        )


class CollapseGuard(TrainerCallback):
    """Adds ``doc_cosine`` to every log line and stops training on collapse."""

    def __init__(self, loss, ratio: float) -> None:
        self.loss = loss
        self.ratio = ratio
        self.baseline: float | None = None
        self.history: list[tuple[int, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = [v for v in self.loss.pop_spread() if not math.isnan(v)]
        if not values or logs is None or "loss" not in logs:
            return
        cosine = sum(values) / len(values)
        if self.baseline is None:
            self.baseline = values[0]
        logs["doc_cosine"] = round(cosine, 4)
        self.history.append((state.global_step, cosine))
        check_collapse(cosine, self.baseline, self.ratio, state.global_step)
