r"""The InfoNCE loss of E5-mistral, with in-batch and hard negatives, optionally through GradCache.

For a batch of :math:`B` queries :math:`q_i` with positives :math:`d_i^+` and hard negatives
:math:`d_i^-`, all embeddings L2-normalised so that :math:`s(q, d) = \cos(q, d)`:

.. math::

    \mathcal{L} = -\frac{1}{B} \sum_{i=1}^{B} \log
        \frac{\exp(s(q_i, d_i^+) / \tau)}
             {\sum_{j=1}^{B} \exp(s(q_i, d_j^+) / \tau) + \sum_{j=1}^{B} \exp(s(q_i, d_j^-) / \tau)}

Every other positive and every hard negative in the batch is a negative for :math:`q_i`; the paper uses
:math:`\tau = 0.02`. This is a cross-entropy over the similarity row of each query, which is exactly
sentence-transformers' ``MultipleNegativesRankingLoss`` with ``scale = 1 / τ`` and the default
``query_to_doc`` direction, so we build on it instead of re-deriving it. Records without a hard negative
simply contribute no second sum (the paper's short_short / long_long case).

Negatives come only from the *same forward batch*: gradient accumulation sums losses of separate small batches
and so does not enlarge the denominator. Two things do: ``gather_across_devices`` (every device's
embeddings join the denominator) and GradCache (``CachedMultipleNegativesRankingLoss``): it embeds the
full batch in mini-batches without gradients, computes the loss and the gradient with respect to the
embeddings, then re-embeds each mini-batch with gradients and back-propagates the cached embedding
gradients. The result is the gradient of the full-batch loss in the memory of one mini-batch, for about
one extra forward pass.

The losses only compute the objective: the collapse guard (:mod:`synthembed.train.collapse`) watches the embeddings
by encoding held-out documents itself.
"""

from __future__ import annotations

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)


class InfoNCELoss(MultipleNegativesRankingLoss):
    """InfoNCE over in-batch and hard negatives at ``temperature`` (one full forward/backward per batch)."""

    def __init__(self, model: SentenceTransformer, temperature: float, gather_across_devices: bool = False) -> None:
        super().__init__(model, scale=1.0 / temperature, gather_across_devices=gather_across_devices)


class CachedInfoNCELoss(CachedMultipleNegativesRankingLoss):
    """The same loss through GradCache: identical gradients, memory of ``mini_batch_size`` texts."""

    def __init__(
        self,
        model: SentenceTransformer,
        temperature: float,
        mini_batch_size: int,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__(
            model,
            scale=1.0 / temperature,
            mini_batch_size=mini_batch_size,
            gather_across_devices=gather_across_devices,
        )


def build_loss(
    model: SentenceTransformer, temperature: float, mini_batch_size: int | None, gather_across_devices: bool
) -> InfoNCELoss | CachedInfoNCELoss:
    """The plain loss, or GradCache when ``mini_batch_size`` is set."""
    if mini_batch_size is None:
        return InfoNCELoss(model, temperature, gather_across_devices)
    return CachedInfoNCELoss(model, temperature, mini_batch_size, gather_across_devices)
