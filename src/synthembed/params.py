"""The typed schema of ``params.yaml``: one model per section, validated with one-line errors.

DVC reads ``params.yaml`` directly for dependency tracking; every stage reads it through :func:`load_params`,
so a misspelt key or an out-of-range value fails before any work starts.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

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
    pooling: Literal["auto", "lasttoken", "mean"] = "auto"  # auto: lasttoken for decoders, mean for encoders
    append_eos: bool = True
    max_seq_length: int = Field(512, ge=8, le=32768)
    normalize: bool = True
    dtype: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where the hardware has native bf16 matmul
    batch_size: int = Field(32, ge=1)


class LLMParams(Section):
    """The LLM that writes synthetic data, as a LiteLLM model string. Keys come from the environment only."""

    model: str = "local/SmolLM2-135M-Instruct"
    api_base: str | None = None
    fallbacks: list[str] = []
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, ge=16)
    max_concurrency: int = Field(8, ge=1)
    max_retries: int = Field(3, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    budget_usd: float = Field(5.0, ge=0)
    cache_dir: str = "data/synthetic/cache"

    @model_validator(mode="after")
    def _no_inline_secrets(self) -> LLMParams:
        for value in (self.model, self.api_base or "", *self.fallbacks):
            if "api_key" in value.lower() or "sk-" in value:
                raise ValueError("API keys belong in environment variables, never in params.yaml")
        return self


class BrainstormParams(Section):
    kinds: list[BrainstormKind] = ["short_long", "long_short", "short_short", "long_long"]
    requests_per_kind: int = Field(1, ge=1)
    tasks_per_request: int = Field(20, ge=1)
    output: str = "data/synthetic/tasks.jsonl"


class GenerateParams(Section):
    kinds: dict[TaskKind, float] = Field(
        default_factory=lambda: {k: 1.0 for k in ("short_long", "long_short", "short_short", "long_long", "sts", "bitext")}
    )
    num_examples: int = Field(24, ge=1)
    languages: list[str] | Literal["all"] = ["English"]
    output: str = "data/synthetic/examples.jsonl"


class PrepareParams(Section):
    synthetic: str = "data/synthetic/examples.jsonl"
    labeled: list[str] = ["data/labeled/scifact_train.jsonl"]
    synthetic_weight: float = Field(1.0, ge=0)
    labeled_weight: float = Field(1.0, ge=0)
    max_per_source: int | None = Field(None, ge=1)
    validation_fraction: float = Field(0.05, ge=0, lt=1)
    mine_negatives: bool = True
    negative_miner: str = "builtin:all-MiniLM-L6-v2"
    negative_skip_top: int = Field(3, ge=0)
    output_dir: str = "data/train"


class LoraParams(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainParams(Section):
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    batch_size: int = Field(32, ge=2)
    mini_batch_size: int | None = Field(None, ge=1)  # set: GradCache with this chunk size
    epochs: int = Field(1, ge=1)
    max_steps: int = Field(-1, ge=-1)
    max_seq_length: int = Field(512, ge=8)
    temperature: float = Field(0.02, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    gradient_checkpointing: bool = True
    devices: int = Field(1, ge=1)
    deepspeed: Literal["none", "zero2", "zero3"] = "none"
    save_steps: int = Field(50, ge=1)
    output_dir: str = "models"

    @model_validator(mode="after")
    def _gradcache_excludes_zero3(self) -> TrainParams:
        if self.mini_batch_size is not None and self.deepspeed == "zero3":
            raise ValueError(
                "train.mini_batch_size (GradCache) cannot be combined with train.deepspeed: zero3; choose one"
            )
        return self


class EvaluateParams(Section):
    model: str = "models/embedder"
    tasks: list[str] = ["SciFact", "STSBenchmark", "Banking77Classification"]
    max_queries: int | None = Field(None, ge=1)  # subsample retrieval tasks (not comparable to MTEB then)
    max_documents: int | None = Field(None, ge=1)
    output: str = "metrics/eval.json"
    results_dir: str = "metrics/mteb"


class RegisterParams(Section):
    model_name: str = "synthembed"
    metric: str = "SciFact.ndcg_at_10"
    model: str = "models/embedder"


class MlflowParams(Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "synthembed"


# ``register`` is a stage name; pydantic warns only because ABCMeta also has a ``register`` method.
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


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raise :class:`UserError` with one line naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"params file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read params file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise UserError(f"params file {path} is not valid YAML{line}") from None
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
