"""The typed schema of ``params.yaml``: one model per section, validated with one-line errors.

DVC reads ``params.yaml`` directly for dependency tracking; every stage reads it through :func:`load_params`,
so a misspelt key or an out-of-range value fails before any work starts. The defaults here are the shipped
recipe: ``params.yaml`` spells every one of them out (a test holds the two equal), so ``Params()`` in Python,
the tests and the benchmarks build the same model as the pipeline.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synthembed.errors import UserError

TaskKind = Literal["short_long", "long_short", "short_short", "long_long", "sts", "bitext"]
BrainstormKind = Literal["short_long", "long_short", "short_short", "long_long"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelParams(Section):
    """How a backbone becomes an embedder (used by embed, evaluate, train, search, serve)."""

    backbone: str = "builtin:SmolLM2-135M-Instruct"
    # auto: lasttoken (EOS) for decoders, mean for encoders. On SmolLM2-135M with a few CPU steps EOS pooling
    # collapsed while mean pooling learned (docs/training.md), so the shipped recipe is mean.
    pooling: Literal["auto", "lasttoken", "mean"] = "mean"
    append_eos: bool = True
    max_seq_length: int = Field(256, ge=8, le=32768)  # CPU-sized; the paper uses 512
    normalize: bool = True
    dtype: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where the hardware has native bf16 matmul
    batch_size: int = Field(32, ge=1)


class LLMParams(Section):
    """The LLM that writes synthetic data, as a LiteLLM model string. Keys come from the environment only."""

    model: str = "local/SmolLM2-135M-Instruct"
    api_base: str | None = None
    fallbacks: list[str] = []
    # online: each request sent as the run goes; batch: the provider's batch API, about half the price, answers
    # within 24 hours, resumable (docs/generation.md; OpenAI models; llm.fallbacks are not used).
    mode: Literal["online", "batch"] = "online"
    temperature: float = Field(0.7, ge=0.0, le=2.0)  # the paper samples at 1.0; 0.7 keeps a 135M model coherent
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    # Each request's answer budget is sized from its kind and template parameters (synth/budget.py); an integer
    # caps that size (the offline 135M model writes slowly), auto sends it uncapped: the setting for hosted models.
    max_tokens: int | Literal["auto"] = 256
    max_concurrency: int = Field(8, ge=1)  # requests in flight; the local provider batches up to this many
    max_retries: int = Field(3, ge=0)  # retries with exponential backoff on 429, 5xx, timeouts
    timeout_s: float = Field(600.0, gt=0)  # per request
    budget_usd: float = Field(5.0, ge=0)  # stop sending once the accounted cost reaches this
    warn_rejected_fraction: float = Field(0.5, ge=0, le=1)  # the summary warns when more answers are rejected
    cache_dir: str = "data/synthetic/cache"  # response cache and raw-response journals

    @model_validator(mode="before")
    @classmethod
    def _max_tokens_is_auto_or_a_cap(cls, data: object) -> object:
        """One line for a bad value (pydantic's own error names each branch of the union)."""
        from pydantic_core import PydanticCustomError

        value = data.get("max_tokens", "auto") if isinstance(data, dict) else "auto"
        if value != "auto" and not (type(value) is int and value >= 16):
            message = "max_tokens must be auto (sized per request) or an integer cap of at least 16, not {value}"
            raise PydanticCustomError("max_tokens", message, {"value": repr(value)})
        return data


class BrainstormParams(Section):
    kinds: list[BrainstormKind] = list(get_args(BrainstormKind))
    requests_per_kind: int = Field(2, ge=1)
    tasks_per_request: int = Field(8, ge=1)  # the paper asks for about 20; fewer fit a small model's output
    # Of a kind's tasks whose definitions are this similar in cosine (the reference encoder), the first is kept.
    near_duplicate_similarity: float | None = Field(0.95, gt=0, le=1)  # None: exact repeats only
    output: str = "data/synthetic/tasks.jsonl"


class GenerateParams(Section):
    # Weights by kind, or a named mix: paper (the paper's realised mix, synth/taxonomy.py), auto (paper for hosted
    # models, uniform for the offline local model, whose few examples must show every kind).
    kinds: dict[TaskKind, float] | Literal["auto", "paper"] = "auto"
    num_examples: int = Field(24, ge=1)
    languages: list[str] | Literal["all"] = ["English"]
    output: str = "data/synthetic/examples.jsonl"
    # Corpus-grounded generation (docs/generation.md): your documents (BEIR folder, JSONL or plain text, .gz ok);
    # the LLM writes a task and a query for each sampled document. None: off.
    corpus: str | None = "data/eval/scifact"  # the SciFact abstracts (its corpus file; never its queries)
    grounded_examples: int = Field(48, ge=1)  # documents sampled with seed, without replacement
    grounded_output: str = "data/synthetic/grounded.jsonl"  # read by prepare.grounded

    @model_validator(mode="before")
    @classmethod
    def _kinds_are_a_mix_or_weights(cls, data: object) -> object:
        """One line for a bad value (pydantic's own error names each branch of the union)."""
        from pydantic_core import PydanticCustomError

        value = data.get("kinds", "auto") if isinstance(data, dict) else "auto"
        if not isinstance(value, dict):
            if value in ("auto", "paper"):
                return data
            problem = f"must be auto, paper or a mapping of kind to weight, not {value!r}"
        elif unknown := [kind for kind in value if kind not in get_args(TaskKind)]:
            problem = f"has the unknown kind {unknown[0]!r}; kinds: {', '.join(get_args(TaskKind))}"
        elif bad := [kind for kind, weight in value.items() if type(weight) not in (int, float) or weight < 0]:
            problem = f"gives {bad[0]} the weight {value[bad[0]]!r}; a weight is a number >= 0"
        else:
            return data
        raise PydanticCustomError("kinds", "kinds {problem}", {"problem": problem})


class PrepareParams(Section):
    synthetic: str = "data/synthetic/examples.jsonl"
    grounded: str | None = "data/synthetic/grounded.jsonl"  # generate's corpus-grounded records (None: none)
    labeled: list[str] = ["data/labeled/scifact_train.jsonl"]
    synthetic_weight: float = Field(1.0, ge=0)  # per source: 0 leaves it out, < 1 subsamples, > 1 repeats
    grounded_weight: float = Field(1.0, ge=0)
    labeled_weight: float = Field(1.0, ge=0)
    max_per_source: int | None = Field(None, ge=1)
    validation_fraction: float = Field(0.05, ge=0, lt=1)
    mine_negatives: bool = True
    negative_miner: str = "builtin:all-MiniLM-L6-v2"
    # Mined from the labeled positives plus this corpus (a file or BEIR folder; None: the positives only).
    negative_corpus: str | None = "data/eval/scifact"
    negative_rank_min: int = Field(3, ge=0)  # skip the top ranks below the positives (likely false negatives)
    negative_rank_max: int = Field(100, ge=1)  # the paper mines from the top 100
    negative_margin: float | None = Field(0.05, ge=0, lt=1)  # relative: a negative scores >= 5% below the positive
    negatives_per_query: int = Field(1, ge=1)  # the paper trains with one; more repeat the pair with each
    # Contamination audit against the bundled evaluation tasks (data/contamination.py): a shared word n-gram of
    # this length (or a whole shorter test text), or a query this similar to a retrieval/reranking test query
    # (None: n-grams only), flags a record; more than contamination_limit flagged for one task stops the stage.
    contamination_ngram: int = Field(13, ge=1)
    contamination_similarity: float | None = Field(0.95, gt=0, le=1)
    contamination_limit: int = Field(0, ge=0)
    # LLM-written records only (synthetic and grounded; data/filters.py): drop a record whose positive this
    # encoder does not rank within the top consistency_top_k of its kind's candidates for its query, and one whose
    # query is this similar to an earlier one of its kind (None: that filter is off).
    consistency_encoder: str = "builtin:all-MiniLM-L6-v2"
    consistency_top_k: int | None = Field(3, ge=1)
    near_duplicate_similarity: float | None = Field(0.95, gt=0, le=1)
    output_dir: str = "data/train"

    @model_validator(mode="after")
    def _window(self) -> PrepareParams:
        if self.negatives_per_query > self.negative_rank_max - self.negative_rank_min:
            raise ValueError(
                "the ranks negative_rank_min..negative_rank_max hold fewer candidates than negatives_per_query"
            )
        return self


class LoraParams(Section):
    # r 32 scored above the paper's 16 and 8 in the 10-step CPU recipe (docs/ablations.md); alpha stays 2 x r.
    r: int = Field(32, ge=1)
    alpha: int = Field(64, ge=1)
    # No dropout: its random masks took half of a bf16 step on CPU and changed no score (docs/ablations.md).
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainParams(Section):
    """Defaults fit the offline pipeline (2 CPU cores); docs/training.md gives the paper's values and why."""

    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    batch_size: int = Field(16, ge=2)
    mini_batch_size: int | None = Field(None, ge=1)  # set: GradCache with this chunk size
    epochs: int = Field(1, ge=1)
    max_steps: int = Field(10, ge=-1)  # -1: run all epochs
    max_seq_length: int = Field(128, ge=8)
    temperature: float = Field(0.05, gt=0)  # the paper's 0.02 collapsed SmolLM2-135M (docs/training.md)
    # Queries train with their task's instruction (the paper); false trains plain queries, and the saved
    # embedder then takes none at evaluation either (the paper's ablation, docs/ablations.md).
    instructions: bool = True
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    gradient_checkpointing: bool = True  # without it batch 16 x 3 texts x 128 tokens held 9.7 GB and ran slower
    devices: int = Field(1, ge=1)
    deepspeed: Literal["none", "zero2", "zero3"] = "none"
    save_steps: int = Field(4, ge=1)
    output_dir: str = "models"
    checkpoint_dir: str = "checkpoints/train"  # outside the DVC output, so a killed run can resume
    collapse_ratio: float = Field(0.3, ge=0, lt=1)  # fail if doc spread < ratio x initial spread; 0: off
    collapse_check_steps: int = Field(5, ge=1)  # how often the guard embeds the validation documents

    @model_validator(mode="after")
    def _gradcache_excludes_zero3(self) -> TrainParams:
        if self.mini_batch_size is not None and self.deepspeed == "zero3":
            raise ValueError(
                "train.mini_batch_size (GradCache) cannot be combined with train.deepspeed: zero3 (no known "
                "implementation makes them work together); choose one"
            )
        return self


class EvaluateParams(Section):
    tasks: list[str] = ["suite:cpu"]  # all seven categories on fixed subsets (evaluate/tasks/suites.py)
    # Subsampling for small compute budgets (None = the whole test split; a subset is not comparable to MTEB):
    # max_queries caps retrieval queries, STS pairs and classification test texts; max_documents caps the
    # retrieval corpus (every judged document of the kept queries stays, plus seeded random distractors).
    max_queries: int | None = Field(100, ge=1)
    max_documents: int | None = Field(250, ge=1)
    instructions: Literal["auto", "always", "never"] = "auto"  # auto: instructions for decoder backbones only
    # fp32 unless asked otherwise, so a score does not depend on whether the machine has bf16 units; the
    # precision is recorded with every score and the champion moves only between versions scored alike.
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    data_dir: str | None = None  # bundled task data; None: the package's copy of the repository's data/eval
    results_dir: str = "metrics/mteb"
    # Vectors per model fingerprint, precision and prompt: a text is encoded once per model across tasks and
    # runs (None: no cache). Keyed by content, so it is never stale and needs no DVC tracking.
    cache_dir: str | None = ".cache/embeddings"


class RegisterParams(Section):
    """Which model goes to the MLflow registry, and the score that decides whether it becomes the champion."""

    model_name: str = Field("synthembed", pattern=r"^[\w.-]+$")
    metric: str = "average.overall"  # dotted path into the evaluate stage's metrics; higher is better
    model: str | None = None  # the folder to register; None: the train stage's embedder
    alias: str = Field("champion", pattern=r"^[A-Za-z_][\w-]*$")


class MlflowParams(Section):
    """Where runs and registered models go; credentials come from MLFLOW_TRACKING_* environment variables."""

    tracking_uri: str = "sqlite:///mlflow.db"  # MLFLOW_TRACKING_URI overrides it
    experiment: str = Field("synthembed", min_length=1)


# Params land in dvc.lock, MLflow and logs, so no string in them may carry a credential.
CREDENTIALS = (
    re.compile(r"://[^/?#\s]*@"),  # user:password@host or token@host in a URL
    re.compile(r"[?&;](?:api[_-]?key|key|token|access[_-]?token|secret|password|sig)=", re.IGNORECASE),
    # A provider key: a known prefix, then a random run with capitals and digits (not a word such as hf_cache).
    re.compile(r"(?<![A-Za-z0-9])(?:sk|gsk|pk|rk|xai|hf)[-_](?=[\w-]*[A-Z])(?=[\w-]*\d)[\w-]{16,}"),
    re.compile(r"api[_-]?key", re.IGNORECASE),
)
CREDENTIAL_HOME = {"mlflow": "MLFLOW_TRACKING_USERNAME/PASSWORD (or MLFLOW_TRACKING_TOKEN)"}


def credential_path(data: object, path: str = "") -> str | None:
    """The dotted path of the first string in ``data`` that looks like it holds a credential."""
    if isinstance(data, str):
        return path if any(pattern.search(data) for pattern in CREDENTIALS) else None
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        if found := credential_path(value, f"{path}.{key}" if path else str(key)):
            return found
    return None


# ``register`` is a stage name; pydantic warns (when the class is made) only because ABCMeta also has a
# ``register`` method. The filter holds for this class statement only, not for the process.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class Params(Section):
        """The whole of ``params.yaml``."""

        seed: int = 42
        model: ModelParams = ModelParams()
        llm: LLMParams = LLMParams()
        brainstorm: BrainstormParams = BrainstormParams()
        generate: GenerateParams = GenerateParams()
        prepare: PrepareParams = PrepareParams()
        lora: LoraParams = LoraParams()
        train: TrainParams = TrainParams()
        evaluate: EvaluateParams = EvaluateParams()
        register: RegisterParams = RegisterParams()
        mlflow: MlflowParams = MlflowParams()

        @model_validator(mode="after")
        def _no_credentials(self) -> Params:
            if found := credential_path(self.model_dump()):
                home = CREDENTIAL_HOME.get(found.split(".")[0], "environment variables (e.g. OPENAI_API_KEY)")
                raise ValueError(f"{found}: credentials belong in {home}, never in params.yaml")
            return self


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raise :class:`UserError` with one line naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=UniqueKeyLoader) or {}
    except FileNotFoundError:
        raise UserError(f"params file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read params file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        problem = f": {exc.problem}" if str(getattr(exc, "problem", "")).startswith("duplicate key") else ""
        raise UserError(f"params file {path} is not valid YAML{line}{problem}") from None
    if not isinstance(raw, dict):
        raise UserError(f"params file {path} must be a mapping of sections")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{path}: {format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError) -> str:
    """First error as ``key.path: message``; unknown keys list the allowed ones."""
    error = exc.errors()[0]
    loc = [str(p) for p in error["loc"]]
    if not loc and error["type"] == "value_error":  # a check across sections names its own key
        return str(error["ctx"]["error"])
    key = ".".join(loc) or "<root>"
    if error["type"] == "extra_forbidden":
        section: type[BaseModel] = Params
        for part in loc[:-1]:
            field = section.model_fields.get(part)
            if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
                break
            section = field.annotation
        allowed = ", ".join(section.model_fields)
        return f"unknown key {key!r}; allowed here: {allowed}"
    return f"{key}: {error['msg']}"
