"""The embedding model: a SentenceTransformer set up the E5-mistral way.

Decoder backbones feed plain text (never a chat template) with an EOS token appended by the tokenizer's
post-processor and pad on the left; ``model.pooling`` picks the pooled vector: the last token, i.e. the EOS, as
the paper does, or the mean (the shipped default, see docs/training.md). Because the EOS rule lives in the saved
``tokenizer.json``, a folder written by :meth:`Embedder.save` loads with plain ``SentenceTransformer(path)`` and
gives the same embeddings. Encoder backbones use mean pooling under ``auto``. How queries are written (with a task
instruction for decoders, as plain text for encoders) is the model's :class:`QueryConvention`, decided when the
embedder is built and saved with it; documents are always plain text.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from sentence_transformers.util import batch_to_device
from tokenizers.processors import TemplateProcessing
from tqdm.auto import trange

from synthembed.encoder.convention import QueryConvention, is_decoder
from synthembed.encoder.precision import PrecisionSetting, autocast, resolve_precision
from synthembed.encoder.references import resolve_model
from synthembed.errors import UserError
from synthembed.params import ModelParams

# Tokenizer state that encoding changes on every call, not part of what a model is.
TRANSIENT = ("truncation", "padding")

# Plain-text modality: sentence-transformers 6 would otherwise render an instruct model's chat template.
PLAIN_TEXT_MODALITY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}


def append_eos(tokenizer) -> None:
    """Make the fast tokenizer end every sequence with EOS, keeping the prefix it adds itself.

    E5-mistral's input is ``<s> text </s>``: Llama, Mistral and Gemma tokenizers put a BOS first, Qwen and
    SmolLM2 none. The template is built from what the tokenizer's own post-processor adds in front of a
    text, so that BOS (or its absence) survives; EOS is kept through truncation and saved in ``tokenizer.json``.
    """
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None or eos_id is None:
        raise UserError("the backbone's tokenizer defines no EOS token; set model.append_eos: false")
    prefix = tokenizer.convert_ids_to_tokens(_special_prefix(tokenizer))
    if getattr(tokenizer, "add_eos_token", None) is False:
        # Llama-family tokenizers rebuild their post-processor from these flags when they are loaded again.
        tokenizer.add_eos_token = True
    head = " ".join(prefix)
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{head} $A {eos}".strip(),
        pair=f"{head} $A {eos} $B:1 {eos}:1".strip(),
        special_tokens=sorted({(token, tokenizer.convert_tokens_to_ids(token)) for token in (*prefix, eos)}),
    )


def _special_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a text of its own accord (e.g. ``[1]`` for Mistral's ``<s>``)."""
    probe = "hello world"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return [int(token) for token in full[:start] if token != tokenizer.eos_token_id]
    return []


def build_sentence_transformer(model_dir: Path, settings: ModelParams) -> SentenceTransformer:
    """A fresh SentenceTransformer over a plain Hugging Face checkpoint, following ``settings``.

    This is where a model's query convention is decided: a decoder takes E5 instructions, an encoder none.
    """
    decoder = is_decoder(model_dir)
    kwargs = {"modality_config": PLAIN_TEXT_MODALITY, "module_output_name": "token_embeddings"} if decoder else {}
    transformer = Transformer(str(model_dir), max_seq_length=settings.max_seq_length, **kwargs)
    tokenizer = transformer.tokenizer
    if decoder:
        if settings.append_eos:
            append_eos(tokenizer)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    pooling = settings.pooling if settings.pooling != "auto" else ("lasttoken" if decoder else "mean")
    modules: list[torch.nn.Module] = [
        transformer,
        Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling),
    ]
    if settings.normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, similarity_fn_name="cosine")
    QueryConvention(takes_instructions=decoder).attach(model)
    return model


def load_sentence_transformer(
    reference: str, settings: ModelParams, max_seq_length: int | None = None
) -> SentenceTransformer:
    """Load a saved SentenceTransformer folder as it was made, or build one over a plain checkpoint.

    A saved folder keeps the ``max_seq_length`` it was saved with (all-MiniLM-L6-v2: 256; a trained
    embedder: its ``model.max_seq_length``), which is what makes scores match MTEB's table;
    ``settings.max_seq_length`` shapes fresh backbones, and ``max_seq_length`` overrides both (training).
    A saved folder's query convention is read back (or, where it saved none, implied by its type) and its
    ``prompts`` set to match, so the model's own ``encode_query`` agrees with :meth:`Embedder.encode_queries`.
    """
    model_dir = resolve_model(reference)
    if (model_dir / "modules.json").exists():
        model = SentenceTransformer(str(model_dir))
        QueryConvention.of(model).attach(model)
        if max_seq_length is None and _saved_max_seq_length(model_dir) is None:
            max_seq_length = settings.max_seq_length
    else:
        model = build_sentence_transformer(model_dir, settings)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    model.model_card_data.model_name = _display_name(reference)
    return model


class Embedder:
    """Encodes queries (as the model's :class:`QueryConvention` writes them) and documents (plain text) into
    normalised vectors."""

    def __init__(self, model: SentenceTransformer, precision: PrecisionSetting = "auto", batch_size: int = 32) -> None:
        self.model = model
        self.precision = resolve_precision(precision)
        self.batch_size = batch_size
        self.convention = QueryConvention.of(model)

    @classmethod
    def load(cls, reference: str, settings: ModelParams | None = None) -> Embedder:
        settings = settings or ModelParams()
        return cls(load_sentence_transformer(reference, settings), settings.dtype, settings.batch_size)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def tokenizer(self):
        return self.model[0].tokenizer

    def fingerprint(self) -> str:
        """A digest of all that decides the vectors (weights, the modules' settings such as pooling, lengths and
        normalisation, the tokenizer): embedders with one fingerprint embed every text alike."""
        digest = hashlib.blake2b(f"{self.model!r} max_seq_length={self.model.max_seq_length}".encode(), digest_size=12)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            digest.update(repr(self.tokenizer).encode())
        else:  # without the truncation and padding state, which each encode call sets anew
            rules = {key: value for key, value in json.loads(backend.to_str()).items() if key not in TRANSIENT}
            digest.update(json.dumps(rules, sort_keys=True).encode())
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def with_convention(self, convention: QueryConvention) -> Embedder:
        """The same model writing its queries by ``convention`` (``evaluate.instructions: always / never``);
        the model, and the convention it saves, stay as they are."""
        other = copy.copy(self)
        other.convention = convention
        return other

    def query_text(self, text: str, instruction: str | None = None) -> str:
        """``text`` as this model reads it as a query for ``instruction`` (None: the default instruction)."""
        return self.convention.query_text(text, instruction)

    def encode_queries(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` as queries: in the model's template around ``instruction`` (None: the model's default
        instruction) if the model takes instructions, else as plain text."""
        return self._encode(texts, self.convention.prefix(instruction), batch_size, show_progress)

    def encode_documents(
        self, texts: Sequence[str], batch_size: int | None = None, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed ``texts`` as documents, which never carry an instruction."""
        return self._encode(texts, "", batch_size, show_progress)

    def encode(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Documents without ``instruction``, queries for it with one: for callers that choose the side by
        whether an instruction was given, as the server's optional ``instruction`` field does."""
        if instruction is None:
            return self.encode_documents(texts, batch_size, show_progress)
        return self.encode_queries(texts, instruction, batch_size, show_progress)

    def _encode(
        self, texts: Sequence[str], prompt: str, batch_size: int | None, show_progress: bool | None
    ) -> np.ndarray:
        """Embed ``texts`` with ``prompt`` in front of each.

        Batches hold texts of similar token length (sentence-transformers sorts by characters), so less
        compute goes on padding; the model itself runs unchanged, one batch at a time.
        """
        texts = list(texts)
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        batch_size = batch_size or self.batch_size
        if show_progress is None:
            show_progress = len(texts) > 4 * batch_size
        order = self._longest_first(texts)
        embeddings = torch.empty(len(texts), self.dimension)
        self.model.eval()
        with torch.inference_mode(), autocast(self.precision):
            for start in trange(0, len(texts), batch_size, desc="Batches", disable=not show_progress):
                batch = order[start : start + batch_size]
                features = self.model.preprocess([texts[i] for i in batch], prompt=prompt or None)
                features = batch_to_device(features, self.model.device)
                embeddings[batch] = self.model(features)["sentence_embedding"].float().cpu()
        return embeddings.numpy()

    def _longest_first(self, texts: list[str]) -> list[int]:
        """Indices of ``texts`` by token count (after truncation), longest first."""
        tokens = self.tokenizer(texts, truncation=True, max_length=self.model.max_seq_length)["input_ids"]
        return sorted(range(len(texts)), key=lambda i: -len(tokens[i]))

    def save(self, path: str | Path) -> None:
        """Save the model with the query convention it was built or loaded with (prompts and config)."""
        self.model.save(str(path))


def _saved_max_seq_length(model_dir: Path) -> int | None:
    config = model_dir / "sentence_bert_config.json"
    value = json.loads(config.read_text()).get("max_seq_length") if config.is_file() else None
    return value if isinstance(value, int) else None


def _display_name(reference: str) -> str:
    return reference.removeprefix("builtin:").rstrip("/").split("/")[-1] or reference
