"""Saving what training produced, then proving it was saved: adapter, merged embedder, reload-and-compare.

Two failures seen in peers' trackers are guarded here: adapters written empty (ZeRO-3 partitions the LoRA
weights, so a naive save stores empty or untrained tensors) and "the fine-tuned model scores like the base"
(adapters not loaded). We therefore rebuild the models from the files just written, compare their
embeddings with the trained model and with the untouched backbone, and check that the pooled position
holds EOS and that the saved embedder carries its backbone's query convention (how queries are written).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from synthembed.encoder.convention import QueryConvention
from synthembed.encoder.precision import Precision, autocast
from synthembed.errors import UserError
from synthembed.train.adapter import load_adapter_model, merge

PROBE_TEXTS = (
    "Aspirin lowers the risk of a second heart attack.",
    "The committee postponed its vote on the new budget until next spring.",
    "How do I reset the password of my online banking account?",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in plant cells.",
)
PROBE_INSTRUCTION = "Given a question, retrieve passages that answer it"
SAME_TOLERANCE = 1e-3  # max |difference| between two loads of the same weights (fp32)
BF16_MIN_COSINE = 0.999  # the same weights in bf16: batch composition alone moves embeddings by ~2e-3
MIN_CHANGE = 1e-4  # a trained adapter must move the embeddings at least this much


def probe_embeddings(model: SentenceTransformer, precision: Precision = "fp32") -> np.ndarray:
    """Queries (written by the model's query convention) and documents, the way the Embedder encodes them.

    A model trained in bf16 is probed in bf16: the trainer keeps its forward under bf16 autocast (DeepSpeed
    even keeps bf16 weights), so an fp32 probe of the reloaded files is compared like with like. The vectors
    are normalised again in fp32: a model with bf16 weights normalises in bf16, which leaves norms up to ~0.4%
    off 1, and dot products would read that as a difference between the models.
    """
    convention = QueryConvention.of(model)
    texts = [convention.query_text(text, PROBE_INSTRUCTION) for text in PROBE_TEXTS[:2]] + list(PROBE_TEXTS[2:])
    model.eval()
    with torch.inference_mode(), autocast(precision):
        vectors = model.encode(texts, batch_size=len(texts), convert_to_numpy=True).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def check_pooled_token_is_eos(model: SentenceTransformer) -> None:
    """The last attended position of every row (what last-token pooling reads, on either padding side) is
    EOS."""
    tokenizer = model[0].tokenizer
    if tokenizer.eos_token_id is None:
        raise UserError("the decoder's tokenizer defines no EOS token (see model.append_eos)")
    long_text = " ".join(PROBE_TEXTS) * 200  # longer than max_seq_length: EOS must survive truncation
    features = model.preprocess([PROBE_TEXTS[0], long_text])
    mask = features["attention_mask"]
    positions = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)
    pooled = features["input_ids"][torch.arange(mask.shape[0]), positions]
    if not bool((pooled == tokenizer.eos_token_id).all()):
        raise UserError(
            f"the pooled (last) tokens are {pooled.tolist()}, not EOS {tokenizer.eos_token_id}: "
            "the embedder would not pool the EOS hidden state"
        )


def write_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Write a directory beside ``path`` and swap it in, so an interrupted save keeps no half model."""
    path = Path(path)
    tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def export_embedder(adapter_dir: Path, embedder_dir: Path) -> None:
    """Merge the adapter read back from disk (not the in-memory copy) and save a plain SentenceTransformer.

    The backbone it is merged into was built with its query convention, so the saved folder carries it.
    """
    merged = merge(load_adapter_model(adapter_dir))
    write_dir(embedder_dir, lambda tmp: merged.save(str(tmp)))


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest cosine between matching rows of two sets of unit vectors."""
    return float((a * b).sum(axis=1).min())


def agree(report: dict[str, float], pair: str, fp32: bool) -> bool:
    """Whether ``pair``'s two embeddings are the same model's: within fp32 noise (max difference), or within
    bf16's (min cosine) when either side computed in bf16."""
    if fp32:
        return report[pair] <= SAME_TOLERANCE
    return report[f"{pair}_min_cosine"] >= BF16_MIN_COSINE


def verify_saved(
    trained: np.ndarray | None,
    precision: Precision,
    base: SentenceTransformer,
    adapter_dir: Path,
    embedder_dir: Path,
    decoder: bool,
) -> dict[str, float]:
    """Reload both outputs and compare: adapter == merged (== trained in memory, in its ``precision``), and
    != untrained backbone."""
    adapter_model = load_adapter_model(adapter_dir)
    from_adapter = probe_embeddings(adapter_model)
    merged = SentenceTransformer(str(embedder_dir))
    if decoder:
        check_pooled_token_is_eos(merged)
    if QueryConvention.of(merged) != QueryConvention.of(base) or merged.prompts != base.prompts:
        raise UserError(f"the embedder under {embedder_dir} does not carry its backbone's query convention")
    from_merged = probe_embeddings(merged)
    # A backbone stored in bf16 (Mistral-7B's own checkpoint) runs in bf16 whatever the probe asks, and merging
    # rounds W + BA to bf16: the merged model then agrees with base + adapter as bf16 results do.
    merged_fp32 = next(merged.parameters()).dtype == torch.float32
    report = {
        "adapter_vs_merged": float(np.abs(from_adapter - from_merged).max()),
        "adapter_vs_merged_min_cosine": min_cosine(from_adapter, from_merged),
        "adapter_vs_base": float(np.abs(from_adapter - probe_embeddings(base)).max()),
    }
    if trained is not None:
        reloaded = from_adapter if precision == "fp32" else probe_embeddings(adapter_model, precision)
        report["trained_vs_adapter"] = float(np.abs(trained - reloaded).max())
        report["trained_vs_adapter_min_cosine"] = min_cosine(trained, reloaded)
        if not agree(report, "trained_vs_adapter", precision == "fp32"):
            raise UserError(
                f"the saved adapter does not reproduce the trained model ({precision}: max difference "
                f"{report['trained_vs_adapter']:.2e}, min cosine {report['trained_vs_adapter_min_cosine']:.5f}); "
                f"the files under {adapter_dir} are incomplete"
            )
    if not agree(report, "adapter_vs_merged", merged_fp32):
        raise UserError(
            f"the merged embedder under {embedder_dir} differs from base + adapter "
            f"(max difference {report['adapter_vs_merged']:.2e}, "
            f"min cosine {report['adapter_vs_merged_min_cosine']:.5f})"
        )
    if report["adapter_vs_base"] < MIN_CHANGE:
        raise UserError(
            f"the adapter under {adapter_dir} leaves the backbone unchanged: its LoRA weights were saved "
            "empty or never trained"
        )
    return report
