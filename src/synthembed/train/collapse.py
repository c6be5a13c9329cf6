"""The representation-collapse guard.

On a small backbone with few steps, InfoNCE can map every text to nearly one point: the loss then sits at
about ln(number of candidates) and retrieval is random. The guard embeds a fixed set of held-out documents
before training (the baseline) and every few optimizer steps, and watches their mean off-diagonal cosine.
Collapse means the spread ``1 - cosine`` has shrunk below ``ratio`` times its baseline value, or the cosine
reached ``CEILING``; training then stops with a clear error instead of saving a useless model.

It embeds through the model's own forward pass, so it does not depend on how sentence-transformers' losses
are written.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import batch_to_device
from torch import Tensor
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from synthembed.data.records import TRAIN_FILE, VALIDATION_FILE, read_records
from synthembed.encoder.precision import Precision, autocast
from synthembed.errors import UserError

CEILING = 0.995
MAX_DOCUMENTS = 64  # enough for a stable mean over ~2,000 pairs; a few forward passes even on a 7B model
BATCH_SIZE = 8
SAMPLE_SEED = 0

logger = logging.getLogger(__name__)


class CollapseError(UserError):
    """Training drove all embeddings together."""


def mean_offdiagonal_cosine(embeddings: Tensor) -> float:
    """Average cosine between distinct rows: near 1 means every text maps to one point (collapse)."""
    count = embeddings.shape[0]
    if count < 2:
        return float("nan")
    unit = torch.nn.functional.normalize(embeddings.detach().float(), dim=-1)
    similarity = unit @ unit.T
    return float((similarity.sum() - similarity.diagonal().sum()) / (count * (count - 1)))


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


def split_documents(path: Path, limit: int = MAX_DOCUMENTS) -> list[str]:
    """The distinct positives and negatives of a prepared split, a fixed sample of ``limit`` when there are
    more (prepare writes the split source by source, so the first ones would all be of one kind)."""
    if not path.exists():
        return []
    texts = [text for record in read_records(path) for text in (record.positive, record.negative) if text]
    documents = list(dict.fromkeys(texts))
    if len(documents) > limit:
        documents = random.Random(SAMPLE_SEED).sample(documents, limit)
    return documents


class CollapseGuard(TrainerCallback, ExportableState):
    """Embeds ``documents`` at the start of training and every ``every_steps`` optimizer steps (and at the last
    step), adds ``doc_cosine`` to the next log line and raises :class:`CollapseError` on collapse.

    ``history`` holds (step, cosine), the baseline at the starting step first. The baseline, the history and
    the documents travel in the checkpoint's ``trainer_state.json`` (``stateful_callbacks``), and a resumed run
    takes them from there in ``on_train_begin``: it keeps comparing the same documents against the untrained
    model, not against the half-trained one it resumes. Leave ``restore_callback_states_from_checkpoint`` off:
    transformers would replace this object with a copy (placed after the log printer) that its caller never sees.
    ``ratio == 0`` disables the guard.
    """

    def __init__(self, documents: list[str], ratio: float, every_steps: int, precision: Precision) -> None:
        if every_steps < 1:
            raise ValueError(f"every_steps must be at least 1, got {every_steps}")
        if ratio > 0 and len(documents) < 2:
            raise ValueError(f"the collapse guard needs at least 2 documents, got {len(documents)}")
        self.documents = documents
        self.ratio = ratio
        self.every_steps = every_steps
        self.precision = precision
        self.baseline: float | None = None
        self.history: list[tuple[int, float]] = []
        self._unlogged: float | None = None

    @classmethod
    def from_split(cls, train_dir: Path, ratio: float, every_steps: int, precision: Precision) -> CollapseGuard:
        """The guard over the validation documents that prepare wrote to ``train_dir``.

        With fewer than 2 distinct validation documents (``prepare.validation_fraction: 0``, a tiny data set)
        it watches a fixed sample of the training documents instead, and says so: the model has trained on
        them, but collapse moves every text together, seen or not. With fewer than 2 of those too it is off,
        with a warning.
        """
        if ratio <= 0:
            return cls([], ratio, every_steps, precision)
        documents = split_documents(train_dir / VALIDATION_FILE)
        if len(documents) >= 2:
            return cls(documents, ratio, every_steps, precision)
        documents = split_documents(train_dir / TRAIN_FILE)
        if len(documents) >= 2:
            logger.warning(
                "collapse guard: %s holds fewer than 2 distinct documents; watching %d training documents instead",
                train_dir / VALIDATION_FILE,
                len(documents),
            )
            return cls(documents, ratio, every_steps, precision)
        logger.warning("collapse guard off: fewer than 2 distinct documents in %s and %s", VALIDATION_FILE, TRAIN_FILE)
        return cls([], 0.0, every_steps, precision)

    @property
    def enabled(self) -> bool:
        return self.ratio > 0

    def measure(self, model: SentenceTransformer) -> float:
        """The documents' mean off-diagonal cosine under the current weights.

        Eval mode turns off dropout and gradient checkpointing, ``no_grad`` keeps no activations, and the
        training precision's autocast makes the numbers those of the model being trained. Every rank runs the
        same forward passes (ZeRO-3 gathers its shards for them) and then takes rank 0's number, so all ranks
        decide alike.
        """
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), autocast(self.precision):
                starts = range(0, len(self.documents), BATCH_SIZE)
                embeddings = torch.cat([self._embed(model, start) for start in starts])
        finally:
            model.train(was_training)
        cosine = torch.tensor([mean_offdiagonal_cosine(embeddings)], dtype=torch.float64, device=embeddings.device)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(cosine, src=0)
        return float(cosine)

    def _embed(self, model: SentenceTransformer, start: int) -> Tensor:
        features = batch_to_device(model.preprocess(self.documents[start : start + BATCH_SIZE]), model.device)
        return model(features)["sentence_embedding"].float()

    def on_train_begin(self, args, state, control, model: SentenceTransformer | None = None, **kwargs: Any) -> None:
        if not self.enabled:
            return
        name = type(self).__name__
        saved = state.stateful_callbacks.get(name, {})
        if saved.get("attributes", {}).get("baseline") is not None:
            self.documents = saved["args"]["documents"]
            self.baseline = saved["attributes"]["baseline"]
            self.history = [(int(step), float(cosine)) for step, cosine in saved["attributes"]["history"]]
            return
        if state.global_step > 0:
            logger.warning(
                "collapse guard: the checkpoint at step %d holds no baseline; measuring one on the resumed model",
                state.global_step,
            )
        self.baseline = self.measure(model)
        self.history = [(state.global_step, self.baseline)]
        # Saving a checkpoint updates this entry in place; a state resumed from an older checkpoint may lack it.
        state.stateful_callbacks[name] = self.state()

    def on_step_end(self, args, state, control, model: SentenceTransformer | None = None, **kwargs: Any) -> None:
        step = state.global_step
        if not self.enabled or (step % self.every_steps and step != state.max_steps):
            return
        cosine = self.measure(model)
        self.history.append((step, cosine))
        self._unlogged = cosine
        check_collapse(cosine, self.baseline, self.ratio, step)

    def on_log(self, args, state, control, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self._unlogged is None or logs is None or "loss" not in logs:
            return
        value = round(self._unlogged, 4)
        logs["doc_cosine"] = value  # the printed line
        state.log_history[-1]["doc_cosine"] = value  # the trainer stored its copy of the line before calling us
        self._unlogged = None

    def state(self) -> dict[str, Any]:
        return {
            "args": {
                "documents": self.documents,
                "ratio": self.ratio,
                "every_steps": self.every_steps,
                "precision": self.precision,
            },
            "attributes": {"baseline": self.baseline, "history": self.history},
        }
