"""The ``synthembed`` command: one sub-command per pipeline stage, plus embed, search and serve.

This module only parses arguments and reports errors; the work lives in the stage packages. A
:class:`~synthembed.errors.UserError` (or a bad file) becomes one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from synthembed.errors import UserError

app = typer.Typer(
    help="Turn a decoder-only LLM into a text-embedding model: synthetic data, LoRA, InfoNCE, MTEB.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ParamsOption = Annotated[Path, typer.Option("--params", help="params file (validated against the schema)")]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="model reference: a directory, builtin:NAME, models:/NAME@ALIAS or an HF id"),
]
F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False}


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False) -> None:
    _state["debug"] = debug
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def reports_errors(func: F) -> F:
    """Turn known failures into one line on stderr and a non-zero exit (a traceback only with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            _fail(str(exc), 2, exc)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            _fail(f"{exc.strerror}: {exc.filename}", 2, exc)
        except KeyboardInterrupt as exc:
            _fail("interrupted; no partial output was kept", 130, exc)

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int, exc: BaseException) -> None:
    if _state["debug"]:
        raise exc
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _params(path: Path):
    from synthembed.params import load_params

    return load_params(path)


def default_model(config) -> str:
    """The trained embedder when the pipeline has produced one, else the untrained backbone."""
    trained = Path(config.evaluate.model)
    return str(trained) if (trained / "modules.json").exists() else config.model.backbone


@app.command()
@reports_errors
def embed(
    texts: Annotated[list[str] | None, typer.Argument(help="texts to embed")] = None,
    input: Annotated[Path | None, typer.Option("--input", "-i", help="plain lines or JSONL with a 'text' field")] = None,
    instruction: Annotated[str | None, typer.Option(help="embed as queries with this task instruction")] = None,
    model: ModelOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help=".npy or .jsonl; printed if omitted")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="texts per forward pass")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Embed texts (queries with --instruction, documents without)."""
    from synthembed.encoder import Embedder
    from synthembed.io import atomic_write, read_texts

    config = _params(params)
    inputs = list(texts or [])
    if input is not None:
        inputs += read_texts(input)
    if not inputs:
        raise UserError("no text to embed: pass TEXT arguments or --input FILE")
    if output is not None and output.suffix not in (".npy", ".jsonl"):
        raise UserError(f"--output must end in .npy or .jsonl, not {output.suffix or 'no suffix'!r}")
    embedder = Embedder.load(model or default_model(config), config.model)
    vectors = embedder.encode(inputs, instruction=instruction, batch_size=batch_size)
    if output is None:
        for text, vector in zip(inputs, vectors, strict=True):
            typer.echo(json.dumps({"text": text, "embedding": [round(float(x), 6) for x in vector]}))
    elif output.suffix == ".npy":
        import numpy as np

        with atomic_write(output, "wb") as handle:
            np.save(handle, vectors)
    else:
        with atomic_write(output) as handle:
            for text, vector in zip(inputs, vectors, strict=True):
                handle.write(json.dumps({"text": text, "embedding": vector.tolist()}, ensure_ascii=False) + "\n")
    if output is not None:
        typer.echo(f"wrote {len(inputs)} embeddings of dimension {vectors.shape[1]} to {output}", err=True)


def run() -> None:  # pragma: no cover - console entry for `python -m synthembed`
    app(prog_name="synthembed")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
