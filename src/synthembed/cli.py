"""The ``synthembed`` command: one sub-command per pipeline stage, plus embed, search, serve and pipeline.

This module only parses arguments and reports errors; the work lives in the stage packages, and the stage
commands are made from the declarations in :mod:`synthembed.pipeline.stages`. Every failure,
a usage error, a :class:`~synthembed.errors.UserError`, a bad file or an error inside a library, becomes one
``error:`` line (secret values of the environment masked) and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from synthembed import runtime
from synthembed.errors import UserError, describe
from synthembed.params import format_validation_error
from synthembed.pipeline.run import run_stage
from synthembed.pipeline.stage import Stage
from synthembed.pipeline.stages import EVALUATE, PIPELINE, evaluation_stage, trained_embedder
from synthembed.secrets import redact

try:  # recent typer releases run on a copy of click of their own
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import exceptions as click_errors


class OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, an unknown command) as one ``error:`` line and exit code 2, like
    every other failure, instead of click's usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()  # the bare command prints its help
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            if not standalone_mode:
                raise
            typer.echo(f"error: {redact(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:  # typer raises its own (the click it vendors has none)
            if not standalone_mode:
                raise
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    help="Turn a decoder-only LLM into a text-embedding model: synthetic data, LoRA, InfoNCE, MTEB.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ParamsOption = Annotated[
    Path | None,
    typer.Option(
        "--params",
        show_default=False,
        help="params file (validated against the schema); default: ./params.yaml if present, else built-in defaults",
    ),
]
DEFAULT_PARAMS = Path("params.yaml")
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="model reference: a directory, builtin:NAME, models:/NAME@ALIAS or an HF id"),
]
F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False}


@app.callback()
def main(
    ctx: typer.Context, debug: Annotated[bool, typer.Option("--debug", help="show tracebacks on errors")] = False
) -> None:
    # The environment defaults, before any library is imported; the runtime (the rank torchrun gives this
    # process) is handed to the sub-command through click's context.
    ctx.obj = runtime.start()
    _state["debug"] = debug


def reports_errors(func: F) -> F:
    """Turn known failures into one line on stderr and a non-zero exit (a traceback only with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            _fail(str(exc), 2, exc)
        except OSError as exc:  # a full or read-only disk, a missing file, a folder where a file belongs, ...
            where = f": {exc.filename}" if exc.filename else ""
            _fail(f"{exc.strerror or describe(exc)}{where}", 2, exc)
        except KeyboardInterrupt as exc:
            _fail("interrupted; no partial output was kept", 130, exc)
        except ValidationError as exc:  # an option assigned into the params schema
            _fail(format_validation_error(exc), 2, exc)
        except Exception as exc:  # noqa: BLE001 - a failure of a library underneath: still one line
            _fail(f"{describe(exc)} (rerun with --debug for the traceback)", 2, exc)

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int, exc: BaseException) -> None:
    if _state["debug"]:
        raise exc
    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code)


def _runtime(ctx: typer.Context) -> runtime.Runtime:
    """The runtime the entry point made (:func:`main`), carried by click's context to every sub-command."""
    found = ctx.find_object(runtime.Runtime)
    assert found is not None, "the synthembed callback starts the runtime before any sub-command runs"
    return found


def _params(path: Path | None):
    """The params file named with --params (it must exist), else ./params.yaml, else the built-in defaults:
    ``embed``, ``search``, ``serve`` and ``evaluate`` work in any folder."""
    from synthembed.params import Params, load_params

    if path is None and not DEFAULT_PARAMS.exists():
        return Params()
    return load_params(path or DEFAULT_PARAMS)


def default_model(config) -> str:
    """The trained embedder when the pipeline has produced one, else the untrained backbone."""
    trained = trained_embedder(config)
    return trained if (Path(trained) / "modules.json").exists() else config.model.backbone


@app.command()
@reports_errors
def embed(
    texts: Annotated[list[str] | None, typer.Argument(help="texts to embed")] = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="plain lines or JSONL with a 'text' field")
    ] = None,
    instruction: Annotated[str | None, typer.Option(help="embed as queries with this task instruction")] = None,
    query: Annotated[
        bool, typer.Option("--query", help="embed as queries with the model's default instruction")
    ] = False,
    model: ModelOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help=".npy or .jsonl; printed if omitted")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="texts per forward pass")] = None,
    params: ParamsOption = None,
) -> None:
    """Embed texts: documents, or queries with --query / --instruction (written the way the model takes them)."""
    config = _params(params)  # fail fast on a bad params file, before the heavy imports
    from synthembed.encoder import Embedder
    from synthembed.encoder.inputs import check_texts
    from synthembed.io import atomic_write, check_writable, read_texts

    inputs = list(texts or [])
    check_texts(inputs, name="TEXTS")
    if input is not None:
        from_file = read_texts(input)
        check_texts(from_file, name=str(input))
        inputs += from_file
    if not inputs:
        raise UserError("no text to embed: pass TEXT arguments or --input FILE")
    if output is not None:
        if output.suffix not in (".npy", ".jsonl"):
            raise UserError(f"--output must end in .npy or .jsonl, not {output.suffix or 'no suffix'!r}")
        check_writable(output)  # before the model loads and the texts are embedded
    embedder = Embedder.load(model or default_model(config), config.model)
    if query or instruction is not None:
        vectors = embedder.encode_queries(inputs, instruction, batch_size=batch_size)
    else:
        vectors = embedder.encode_documents(inputs, batch_size=batch_size)
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


@app.command()
@reports_errors
def search(
    queries: Annotated[list[str], typer.Argument(help="one or more queries")],
    corpus: Annotated[Path, typer.Option(help="plain lines, JSONL with 'text' ('id'), or BEIR corpus")],
    instruction: Annotated[
        str | None,
        typer.Option(help="task instruction for the queries (default: the model's own; none if it takes none)"),
    ] = None,
    model: ModelOption = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="hits per query")] = 10,
    index: Annotated[Path | None, typer.Option(help="index folder (default: <corpus>.index)")] = None,
    backend: Annotated[str, typer.Option(help="numpy (exact) or faiss (approximate, optional)")] = "numpy",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    params: ParamsOption = None,
) -> None:
    """Search a corpus; its embeddings are kept in an index and reused until the corpus or model changes."""
    from synthembed.search import format_results, run_search

    if backend not in ("numpy", "faiss"):
        raise UserError(f"--backend must be numpy or faiss, not {backend!r}")
    config = _params(params)
    reference = model or default_model(config)
    results = run_search(
        config, queries, corpus, reference, instruction=instruction, k=top_k, index_dir=index, backend=backend
    )
    typer.echo(json.dumps(results.to_json(), ensure_ascii=False, indent=2) if as_json else format_results(results))
    if results.unsaved:
        line = f"warning: searched {results.documents} documents without saving the index ({results.unsaved})"
    else:
        state = "reused" if results.reused else "built"
        line = f"{state} index {results.index_dir} ({results.documents} documents, {reference})"
    typer.echo(line, err=True)


@app.command()
@reports_errors
def serve(
    model: ModelOption = None,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="SYNTHEMBED_API_KEY", show_default=False, help="require this bearer token"),
    ] = None,
    max_inputs: Annotated[int, typer.Option(min=1, help="texts per request (more: 413)")] = 256,
    max_input_tokens: Annotated[
        int | None, typer.Option(min=1, help="tokens per text (more: 413); default: the model's maximum")
    ] = None,
    batching: Annotated[bool, typer.Option(help="merge concurrent requests into one encode call")] = True,
    params: ParamsOption = None,
) -> None:
    """Serve the embedder over HTTP with an OpenAI-compatible POST /v1/embeddings."""
    config = _params(params)  # before the heavy imports: a bad params file fails at once

    from synthembed.encoder import Embedder
    from synthembed.serve import RequestLimits, bind, create_app
    from synthembed.serve import serve as run_server

    reference = model or default_model(config)
    with bind(host, port) as sock:  # fail fast on a busy port; closed if the model fails to load
        embedder = Embedder.load(reference, config.model)
        limits = RequestLimits(max_inputs, max_input_tokens, max_batch_texts=max(max_inputs, 256))
        app_ = create_app(embedder, reference, api_key=api_key, limits=limits, batching=batching)
        guarded = " (bearer token needed)" if api_key else ""
        where = f"http://{host}:{sock.getsockname()[1]}/v1"
        typer.echo(f"serving {reference} ({embedder.dimension} dims): {where}{guarded}", err=True)
        run_server(app_, sock)


@app.command(help=EVALUATE.help)
@reports_errors
def evaluate(
    ctx: typer.Context,
    model: ModelOption = None,
    tasks: Annotated[
        list[str] | None,
        typer.Option(
            "--tasks",
            help="MTEB task name or BEIR folder; repeat or comma-separate. Tasks named here run in full "
            "unless --max-queries/--max-documents are given; evaluate.tasks use the params subset",
        ),
    ] = None,
    max_queries: Annotated[int | None, typer.Option(min=1, help="subsample queries / test items")] = None,
    max_documents: Annotated[int | None, typer.Option(min=1, help="subsample retrieval documents")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help=f"metrics file (.json); default: {EVALUATE.metrics}")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="fp32, bf16 or auto (bf16 where the CPU/GPU has it); default: evaluate.precision")
    ] = None,
    params: ParamsOption = None,
) -> None:
    config = _params(params)
    if precision is not None:
        config.evaluate.precision = precision  # validated by the schema: a bad value is one line
    if tasks or max_queries or max_documents:
        config.evaluate.max_queries, config.evaluate.max_documents = max_queries, max_documents
    # Commas separate names, except inside a benchmark's parentheses: "MTEB(eng, v2)".
    names = [name.strip() for item in tasks or [] for name in re.split(r",(?![^(]*\))", item) if name.strip()]
    from synthembed.encoder.references import resolve_model

    reference = model or default_model(config)
    model_dir = resolve_model(reference)  # an unknown reference fails here, before any run is recorded
    output = output or Path(EVALUATE.metrics)
    stage = evaluation_stage(config, reference)
    result = run_stage(
        stage, config, metrics=output, inputs=[model_dir], distributed=_runtime(ctx).distributed,
        model=reference, tasks=names or None,
    )  # fmt: skip
    typer.echo(f"wrote {output}: {result.summary}\n{result.report}", err=True)


DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="plan the requests as a run would and print, per kind, their number, prompt tokens, completion "
        "tokens (each request's max_tokens, a ceiling) and estimated cost online and in batch; sends nothing, "
        "needs no API key, writes nothing",
    ),
]


def _stage_command(stage: Stage) -> Callable[..., None]:
    """The sub-command of a stage that takes only ``--params`` (and ``--dry-run`` when the stage plans LLM
    requests): run it, report its summary and warnings on stderr (stdout is kept for data, as with embed, search
    and pipeline)."""

    def command(ctx: typer.Context, params: ParamsOption = None) -> None:
        result = run_stage(stage, _params(params), distributed=_runtime(ctx).distributed)
        typer.echo(result.summary, err=True)
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)

    def command_or_dry_run(ctx: typer.Context, params: ParamsOption = None, dry_run: DryRunOption = False) -> None:
        if dry_run:
            _print_estimate(stage, _params(params))
        else:
            command(ctx, params)

    chosen = command_or_dry_run if stage.plans else command
    chosen.__doc__ = stage.help
    return reports_errors(chosen)


def _print_estimate(stage: Stage, config) -> None:
    """The stage's planned requests, tokens and cost on stdout, notes on stderr: no client, no MLflow run, no file."""
    from synthembed.synth.estimate import estimate, format_estimate

    found = estimate(stage.planner()(config), config.llm)
    typer.echo(format_estimate(found))
    for note in found.notes:
        typer.echo(f"note: {note}", err=True)


for _stage in PIPELINE.values():
    if not _stage.command and _stage.name != EVALUATE.name:
        app.command(_stage.name)(_stage_command(_stage))


@app.command()
@reports_errors
def pipeline(
    write: Annotated[bool, typer.Option("--write", help="write dvc.yaml")] = False,
    check: Annotated[bool, typer.Option("--check", help="fail if dvc.yaml differs from the declarations")] = False,
    dvc_file: Annotated[Path, typer.Option("--dvc-file", help="the file to write or check")] = Path("dvc.yaml"),
    params: ParamsOption = None,
) -> None:
    """Print dvc.yaml as the stage declarations make it (paths from params); --write or --check the file."""
    from synthembed.pipeline.dvcfile import differences, render

    config = _params(params)
    if write and check:
        raise UserError("--write and --check exclude each other")
    if check:
        if problem := differences(dvc_file, config):
            raise UserError(problem)
        typer.echo(f"{dvc_file} matches the stage declarations")
    elif write:
        from synthembed.io import atomic_write

        with atomic_write(dvc_file) as handle:
            handle.write(render(config))
        typer.echo(f"wrote {dvc_file}", err=True)
    else:
        typer.echo(render(config), nl=False)


def run() -> None:  # pragma: no cover - `python -m synthembed.cli` and the tests' subprocesses start the CLI so
    app(prog_name="synthembed")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
