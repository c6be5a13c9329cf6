"""The task taxonomy in one place: kinds, template parameter spaces, languages, JSON schemas and validation.

Values follow Wang et al. (2024), the E5-mistral paper, value for value; prompts and stages read them here.
"""

from __future__ import annotations

import random
from typing import Any, get_args

from synthembed.errors import UserError
from synthembed.params import BrainstormKind, TaskKind

KINDS: tuple[str, ...] = get_args(TaskKind)
BRAINSTORM_KINDS: tuple[str, ...] = get_args(BrainstormKind)  # sts and bitext need no brainstormed tasks

# The keys of each kind's JSON answer, in the order the prompt lists them.
KEYS: dict[str, tuple[str, ...]] = {
    "short_long": ("user_query", "positive_document", "hard_negative_document"),
    "long_short": ("input_text", "label", "misleading_label"),
    "short_short": ("input", "positive_document"),
    "long_long": ("input", "positive_document"),
    "sts": ("S1", "S2", "S3"),
    "bitext": ("S1", "S2", "S3"),
}

# Symmetric kinds have no brainstormed task; their training instruction is fixed.
FIXED_TASKS = {
    "sts": "Retrieve semantically similar text.",
    "bitext": "Retrieve parallel sentences.",
}

# The paper's realised mix: thousands of synthetic examples per kind in its ~500k (Wang et al. 2024, Figure 2).
# Uniform weights would give short_short and long_long about six times their share.
PAPER_KIND_MIX: dict[str, float] = {
    "short_long": 167,
    "long_short": 122,
    "short_short": 13,
    "long_long": 17,
    "sts": 99,
    "bitext": 89,
}

MIN_TASK_WORDS = 4

# Corpus-grounded generation (synth/grounded.py): the document is given, the LLM writes its task and query.
GROUNDED_SHAPES: tuple[str, ...] = ("grounded_short_long", "grounded_short_short")
GROUNDED_KEYS: tuple[str, ...] = ("task", "query")
# A query of this many words found verbatim in its document is a copied span, not a query; shorter keyword
# queries ("vitamin D dosage") may occur in the text they find.
COPIED_QUERY_WORDS = 4

CLARITY = ("clear", "understandable with some effort", "ambiguous")
UNIT = ("sentence", "phrase", "passage")

# Template parameters sampled uniformly per request (language and the task are drawn separately).
PARAMETER_SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "short_long": {
        "query_type": ("extremely long-tail", "long-tail", "common"),
        "query_length": ("less than 5 words", "5 to 15 words", "at least 10 words"),
        "clarity": CLARITY,
        "num_words": (50, 100, 200, 300, 400, 500),
        "difficulty": ("high school", "college", "PhD"),
    },
    "long_short": {
        "num_words": ("less than 10", "at least 10", "at least 50", "at least 100", "at least 200"),
        "difficulty": ("high school", "college", "PhD"),
        "clarity": CLARITY,
    },
    "short_short": {},
    "long_long": {},
    "sts": {
        "unit": UNIT,
        "high_score": (4, 4.5, 5),
        "low_score": (2.5, 3, 3.5),
        "difficulty": ("elementary school", "high school", "college"),
    },
    "bitext": {
        "unit": UNIT,
        "high_score": (4, 4.5, 5),
        "low_score": (1.5, 2, 2.5),
        "difficulty": ("elementary school", "high school", "college"),
    },
}

# XLM-R's pre-training languages with sampling weights: English dominates, then high-resource languages.
# Weights are relative (tiers roughly follow the size of each language's share of CC-100).
_TIERS: dict[float, tuple[str, ...]] = {
    40.0: ("English",),
    4.0: (
        "Chinese",
        "Spanish",
        "French",
        "German",
        "Japanese",
        "Russian",
        "Portuguese",
        "Italian",
        "Korean",
        "Arabic",
        "Dutch",
        "Polish",
        "Turkish",
        "Vietnamese",
        "Indonesian",
        "Persian",
        "Hindi",
        "Thai",
        "Swedish",
        "Czech",
    ),
    1.0: (
        "Ukrainian",
        "Romanian",
        "Hungarian",
        "Greek",
        "Danish",
        "Finnish",
        "Norwegian",
        "Bulgarian",
        "Hebrew",
        "Slovak",
        "Catalan",
        "Croatian",
        "Serbian",
        "Lithuanian",
        "Slovenian",
        "Estonian",
        "Latvian",
        "Bengali",
        "Tamil",
        "Malay",
        "Urdu",
        "Tagalog",
        "Georgian",
        "Kazakh",
        "Azerbaijani",
        "Armenian",
        "Albanian",
        "Macedonian",
        "Belarusian",
        "Bosnian",
        "Icelandic",
        "Galician",
        "Basque",
        "Swahili",
        "Telugu",
        "Marathi",
        "Malayalam",
        "Kannada",
        "Gujarati",
        "Nepali",
    ),
    0.3: (
        "Afrikaans",
        "Amharic",
        "Assamese",
        "Breton",
        "Welsh",
        "Esperanto",
        "Western Frisian",
        "Irish",
        "Scottish Gaelic",
        "Hausa",
        "Javanese",
        "Khmer",
        "Kurdish",
        "Kyrgyz",
        "Latin",
        "Lao",
        "Malagasy",
        "Mongolian",
        "Burmese",
        "Oromo",
        "Oriya",
        "Punjabi",
        "Pashto",
        "Sanskrit",
        "Sindhi",
        "Sinhala",
        "Somali",
        "Sundanese",
        "Uyghur",
        "Uzbek",
        "Xhosa",
        "Yiddish",
    ),
}
LANGUAGE_WEIGHTS: dict[str, float] = {name: weight for weight, names in _TIERS.items() for name in names}

# Brainstorm answers are objects holding a list, so the same structured-output path serves every step.
BRAINSTORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"tasks": {"type": "array", "items": {"type": "string"}}},
    "required": ["tasks"],
    "additionalProperties": False,
}


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON schema of ``kind``'s answer (a kind or a grounded shape): an object of non-empty strings, every
    key required."""
    keys = GROUNDED_KEYS if kind in GROUNDED_SHAPES else KEYS[kind]
    return {
        "type": "object",
        "properties": {key: {"type": "string", "minLength": 1} for key in keys},
        "required": list(keys),
        "additionalProperties": False,
    }


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style structured-output request; LiteLLM translates or drops it per provider."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def validate(kind: str, value: Any) -> tuple[dict[str, str] | None, str | None]:
    """Return ``(data, None)`` with exactly the kind's keys, or ``(None, reason)`` saying why not."""
    if not isinstance(value, dict):
        return None, "not_an_object"
    data = {}
    for key in KEYS[kind]:
        if key not in value:
            return None, "missing_key"
        field = value[key]
        if isinstance(field, (int, float)) and not isinstance(field, bool) and kind == "long_short":
            field = str(field)  # a numeric label is still a label
        if not isinstance(field, str):
            return None, "not_a_string"
        if not field.strip():
            return None, "empty_value"
        data[key] = field.strip()
    if len(set(data.values())) < len(data):
        return None, "repeated_value"  # e.g. the positive copied as the negative: no training signal
    return data, None


def validate_grounded(value: Any, document: str) -> tuple[dict[str, str] | None, str | None]:
    """A grounded answer as ``({"task", "query"}, None)``, or ``(None, reason)``: besides the shape, a query
    that is empty, the document itself or a verbatim span of it, and an empty task are rejected."""
    if not isinstance(value, dict):
        return None, "not_an_object"
    if any(key not in value for key in GROUNDED_KEYS):
        return None, "missing_key"
    if not all(isinstance(value[key], str) for key in GROUNDED_KEYS):
        return None, "not_a_string"
    task, query = (value[key].strip() for key in GROUNDED_KEYS)
    if not task:
        return None, "empty_task"
    if not query:
        return None, "empty_query"
    needle, text = (" ".join(part.split()).casefold() for part in (query, document))
    if needle == text or (len(needle.split()) >= COPIED_QUERY_WORDS and needle in text):
        return None, "copied_query"
    if needle == " ".join(task.split()).casefold():
        return None, "repeated_value"
    return {"task": task, "query": query}, None


def validate_tasks(value: Any) -> list[str] | None:
    """Task definitions from a brainstorm answer (an object with ``tasks`` or a list); None if unusable."""
    if isinstance(value, dict):
        value = value.get("tasks")
    if not isinstance(value, list):
        return None
    # A task definition is a sentence: fragments such as "first task" carry no instruction to train with.
    tasks = [item.strip() for item in value if isinstance(item, str) and len(item.split()) >= MIN_TASK_WORDS]
    return tasks or None


def allowed_languages(languages: list[str] | str) -> dict[str, float]:
    """The weighted language list restricted to ``languages`` ("all" keeps every XLM-R language)."""
    if languages == "all":
        return dict(LANGUAGE_WEIGHTS)
    unknown = [name for name in languages if name not in LANGUAGE_WEIGHTS]
    if unknown:
        raise UserError(
            f"generate.languages: unknown language(s) {', '.join(map(repr, unknown))}; "
            f"use names from the XLM-R list such as English, German, Chinese (or 'all')"
        )
    if not languages:
        raise UserError("generate.languages is empty; name at least one language or use 'all'")
    return {name: LANGUAGE_WEIGHTS[name] for name in languages}


def kind_weights(kinds: dict[str, float] | str, local: bool) -> dict[str, float]:
    """``generate.kinds`` as weights: ``paper`` is the paper's mix; ``auto`` that mix for hosted models and
    uniform for the offline model, whose few examples must show every kind; a mapping is taken as given."""
    if isinstance(kinds, dict):
        return dict(kinds)
    if kinds == "auto" and local:
        return dict.fromkeys(KINDS, 1.0)
    return dict(PAPER_KIND_MIX)


def sample_params(kind: str, rng: random.Random, languages: dict[str, float]) -> dict[str, Any]:
    """One request's template parameters: each space uniform, the language weighted."""
    params = {name: rng.choice(values) for name, values in PARAMETER_SPACES[kind].items()}
    names, weights = list(languages), list(languages.values())
    if kind == "bitext":
        # A translation pair needs two languages: the source from the run's list, the target from all others.
        params["src_lang"] = rng.choices(names, weights)[0]
        others = [name for name in LANGUAGE_WEIGHTS if name != params["src_lang"]]
        params["tgt_lang"] = rng.choices(others, [LANGUAGE_WEIGHTS[name] for name in others])[0]
    else:
        params["language"] = rng.choices(names, weights)[0]
    return params
