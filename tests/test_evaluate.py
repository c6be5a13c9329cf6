"""Evaluation on real local data: bundled MTEB tasks, user BEIR folders, instructions, subsets, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthembed.cli import app
from synthembed.errors import UserError
from synthembed.evaluate.tasks import SubsetSizes, build_task, build_tasks, bundled_tasks
from synthembed.evaluate.tasks.retrieval import read_beir, subsample_retrieval
from synthembed.params import ModelParams, Params

REPO_ROOT = Path(__file__).resolve().parents[1]
SCIFACT = REPO_ROOT / "data" / "eval" / "scifact"
SCIFACT_INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


def write_params(path: Path, **evaluate: object) -> Path:
    """A params file whose evaluate section points its outputs into the test's temp folder."""
    import yaml

    section = {"results_dir": str(path.parent / "mteb"), **evaluate}
    path.write_text(yaml.safe_dump({"evaluate": section}))
    return path


@pytest.fixture()
def tiny_beir(tmp_path: Path) -> Path:
    """Six real SciFact test claims, their evidence abstracts and real distractors: 12 documents."""
    data = read_beir(SCIFACT)
    queries = sorted(data.queries, key=int)[:6]
    judged = sorted({doc for q in queries for doc in data.qrels[q]})
    distractors = [doc for doc in sorted(data.corpus) if doc not in judged][: 12 - len(judged)]
    folder = tmp_path / "tiny-scifact"
    (folder / "qrels").mkdir(parents=True)
    with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
        for doc in judged + distractors:
            title, text = data.corpus[doc]
            handle.write(json.dumps({"_id": doc, "title": title, "text": text}) + "\n")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": data.queries[q]}) + "\n" for q in queries)
    )
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q in queries for d, s in data.qrels[q].items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


def perfect_match(folder: Path) -> Path:
    """Rewrite each query to be the exact text of its first judged document (title + ' ' + text), now its only
    judged document: any model ranks it first, so nDCG@10 is 1 whatever the model's weights."""
    data = read_beir(folder)
    rows, judged = [], ["query-id\tcorpus-id\tscore"]
    for qid, docs in data.qrels.items():
        doc = next(iter(docs))
        title, text = data.corpus[doc]
        rows.append(json.dumps({"_id": qid, "text": f"{title} {text}".strip()}))
        judged.append(f"{qid}\t{doc}\t1")
    (folder / "queries.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "qrels" / "test.tsv").write_text("\n".join(judged) + "\n")
    return folder


def evaluate_cli(params: Path, *options: str):
    """``synthembed evaluate OPTIONS --params PARAMS``, in-process."""
    return CliRunner().invoke(app, ["evaluate", *options, "--params", str(params)])


def test_bundled_tasks_have_mteb_names_scores_and_sizes() -> None:
    sizes = {}
    for name, build in bundled_tasks(REPO_ROOT / "data" / "eval").items():
        task = build(SubsetSizes())
        task.load_data()
        assert task.metadata.name == name and task.subset is None
        if task.metadata.type == "Retrieval":
            split = task.dataset["default"]["test"]
            sizes[name] = (
                len(split["corpus"]),
                len(split["queries"]),
                sum(map(len, split["relevant_docs"].values())),
            )
        else:
            sizes[name] = {split: len(rows) for split, rows in task.dataset.items()}
    assert sizes == {
        "SciFact": (5183, 300, 339),
        "NFCorpus": (3162, 323, 12334),
        "STSBenchmark": {"test": 1379},
        "SICK-R": {"test": 9927},
        "Banking77Classification": {"train": 10003, "test": 3080},
        "EmotionClassification": {"train": 16000, "test": 2000},
        "AmazonCounterfactualClassification": {"en": 2},  # keyed by MTEB's subset: train and test inside
        "TweetSentimentExtractionClassification": {"train": 27481, "test": 3534},
        "STS12": {"test": 2358},
        "STS13": {"test": 1500},
        "STS14": {"test": 3750},
        "STS15": {"test": 3000},
        "STS16": {"test": 1186},
        "BIOSSES": {"test": 100},
        "TwitterURLCorpus": {"test": 9334},
        "MSRP": {"test": 1725},
        "SummEval": {"test": 100},
        "WikiQA": {"default": 1},
        "RedditClustering": {"test": 5},
        "StackExchangeClustering": {"test": 5},
    }
    scifact = build_task("SciFact", REPO_ROOT / "data" / "eval", SubsetSizes())
    assert scifact.metadata.main_score == "ndcg_at_10"
    assert scifact.metadata.prompt == {"query": SCIFACT_INSTRUCTION}


def test_subsample_keeps_judged_documents_and_is_seeded() -> None:
    data = read_beir(SCIFACT)
    small = subsample_retrieval(data, max_queries=20, max_documents=100, seed=1)
    judged = {doc for docs in small.qrels.values() for doc in docs}
    assert len(small.queries) == 20 and set(small.qrels) == set(small.queries)
    assert judged <= set(small.corpus) and len(small.corpus) == 100
    assert subsample_retrieval(data, 20, 100, seed=1) == small
    assert subsample_retrieval(data, 20, 100, seed=2).queries != small.queries


def test_cli_scores_a_beir_folder_end_to_end(tmp_path: Path, tiny_beir: Path, tiny_decoder_dir: Path) -> None:
    params = write_params(tmp_path / "params.yaml", instructions="never")
    output = tmp_path / "out" / "eval.json"
    task = str(perfect_match(tiny_beir))
    result = evaluate_cli(params, "--model", str(tiny_decoder_dir), "--tasks", task, "--output", str(output))
    assert result.exit_code == 0, result.output
    metrics = json.loads(output.read_text())
    assert list(metrics) == ["tiny-scifact", "average", "scored_on"]
    assert metrics["average"] == {"Retrieval": 1.0, "overall": 1.0}
    assert metrics["scored_on"] == {"tasks": {"tiny-scifact": "full"}, "seed": 42, "precision": "fp32"}
    scores = metrics["tiny-scifact"]
    assert scores["main_score"] == scores["ndcg_at_10"] == pytest.approx(1.0)
    assert {"map_at_10", "recall_at_10", "mrr_at_10"} <= set(scores) and "subset" not in scores
    assert scores["precision"] == "fp32"  # the default on every machine, whatever its bf16 units
    model_results = tmp_path / "mteb" / "results" / tiny_decoder_dir.name
    assert list(model_results.glob("*/tiny-scifact.json")), "MTEB's own result file is kept"
    table = (tmp_path / "out" / "eval.csv").read_text().splitlines()
    assert table[0] == "task,model,main_score" and table[1].startswith(f"tiny-scifact,{tiny_decoder_dir.name},1.0")
    assert table[2:] == [
        f"average: Retrieval,{tiny_decoder_dir.name},1.0",
        f"average: overall,{tiny_decoder_dir.name},1.0",
    ]
    assert "| tiny-scifact | Retrieval | 1.0000 |" in result.output  # the markdown table


def test_bf16_evaluation_is_asked_for_and_recorded(tmp_path: Path, tiny_beir: Path, tiny_decoder_dir: Path) -> None:
    params = write_params(tmp_path / "params.yaml", instructions="never")
    output = tmp_path / "eval.json"
    task = str(perfect_match(tiny_beir))
    options = ["--model", str(tiny_decoder_dir), "--tasks", task, "--output", str(output), "--precision", "bf16"]
    assert evaluate_cli(params, *options).exit_code == 0
    scores = json.loads(output.read_text())["tiny-scifact"]
    assert scores["precision"] == "bf16" and scores["ndcg_at_10"] == pytest.approx(1.0)
    refused = evaluate_cli(params, *options[:-1], "fp16")
    assert refused.exit_code == 2 and "precision" in refused.output and "Traceback" not in refused.output


def test_real_claims_rank_their_evidence_with_minilm(tmp_path: Path, tiny_beir: Path) -> None:
    from synthembed.evaluate import run_evaluate

    config = Params.model_validate({"evaluate": {"results_dir": str(tmp_path / "mteb")}})
    metrics = run_evaluate(config, "builtin:all-MiniLM-L6-v2", [str(tiny_beir)]).metrics
    assert metrics["tiny-scifact"]["ndcg_at_10"] > 0.6


def test_sts_subset_gives_sensible_spearman_and_records_the_subset(tmp_path: Path) -> None:
    from synthembed.pipeline.run import run_stage
    from synthembed.pipeline.stages import evaluation_stage

    config = Params.model_validate({"evaluate": {"max_queries": 100, "results_dir": str(tmp_path / "mteb")}})
    stage = evaluation_stage(config, "builtin:all-MiniLM-L6-v2")
    assert stage.name == "evaluate_reference"
    metrics = run_stage(stage, config, metrics=tmp_path / "eval.json", track=False, tasks=["STSBenchmark"]).metrics
    assert metrics["STSBenchmark"]["main_score"] == metrics["STSBenchmark"]["cosine_spearman"] > 0.5
    assert metrics["STSBenchmark"]["subset"] == {"n_queries": 100}
    assert json.loads((tmp_path / "eval.json").read_text()) == metrics


class PromptRecorder:
    """Wraps a real model's ``preprocess``: records the size and the prompt of every batch that reaches it."""

    def __init__(self, preprocess) -> None:
        self.preprocess = preprocess
        self.calls: list[tuple[int, str | None]] = []

    def __call__(self, texts, prompt=None, **kwargs):
        self.calls.append((len(texts), prompt))
        return self.preprocess(texts, prompt=prompt, **kwargs)


@pytest.mark.parametrize(
    ("which", "mode", "instructed"),
    [("decoder", "auto", True), ("encoder", "auto", False), ("encoder", "always", True), ("decoder", "never", False)],
)
def test_instruction_reaches_queries_only_and_as_the_convention_says(
    which: str,
    mode: str,
    instructed: bool,
    tiny_beir: Path,
    tiny_decoder_dir: Path,
    minilm_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """auto follows the embedder's own convention (a decoder takes instructions, MiniLM none); always / never
    override it."""
    import mteb

    from synthembed.encoder import Embedder
    from synthembed.evaluate.model import EmbedderEncoder

    (tiny_beir / "instruction.txt").write_text(SCIFACT_INSTRUCTION + "\n")
    embedder = Embedder.load(str(tiny_decoder_dir if which == "decoder" else minilm_dir), ModelParams(dtype="fp32"))
    if mode == "auto":
        assert embedder.convention.takes_instructions is instructed
    recorder = PromptRecorder(embedder.model.preprocess)
    monkeypatch.setattr(embedder.model, "preprocess", recorder)
    encoder = EmbedderEncoder(embedder, "recorder", mode)
    assert encoder.use_instructions is instructed
    task = build_task(str(tiny_beir), REPO_ROOT / "data" / "eval", SubsetSizes())
    mteb.evaluate(encoder, tasks=[task], cache=None, show_progress_bar=False)
    by_size = dict(recorder.calls)
    assert by_size[12] is None  # the 12 documents
    assert by_size[6] == (f"Instruct: {SCIFACT_INSTRUCTION}\nQuery: " if instructed else None)  # the 6 queries
    assert embedder.model.prompts["query"] == embedder.convention.prefix()  # an override leaves the model as it was


def test_saved_models_keep_their_own_max_seq_length(tiny_decoder_dir: Path) -> None:
    from synthembed.encoder import Embedder

    params = ModelParams(max_seq_length=512)
    assert Embedder.load("builtin:all-MiniLM-L6-v2", params).model.max_seq_length == 256  # saved with 256
    assert Embedder.load(str(tiny_decoder_dir), params).model.max_seq_length == 512  # a plain checkpoint


def test_unknown_task_is_one_clear_line(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml")
    result = evaluate_cli(params, "--tasks", "SciFakt")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown task 'SciFakt'")
    assert "SciFact" in lines[0] and "SICK-R" in lines[0] and "BEIR folder" in lines[0]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda f: (f / "qrels" / "test.tsv").unlink(), "has no qrels/test.tsv"),
        (lambda f: (f / "corpus.jsonl.gz").unlink(), "has no corpus.jsonl[.gz]"),
        (
            lambda f: (f / "queries.jsonl").write_text('{"_id": "1", "text": "a"}\nnot json\n'),
            "line 2 is not valid JSON",
        ),
        (
            lambda f: (f / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1 2 3\n"),
            "line 2 is not",
        ),
        (lambda f: (f / "qrels" / "test.tsv").write_text("q\td\t1\n"), "query 'q' is judged but not in"),
    ],
)
def test_malformed_beir_folder_is_one_clear_line(tmp_path: Path, tiny_beir: Path, breakage, message: str) -> None:
    breakage(tiny_beir)
    params = write_params(tmp_path / "params.yaml")
    result = evaluate_cli(params, "--model", "builtin:all-MiniLM-L6-v2", "--tasks", str(tiny_beir))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_missing_folder_path_is_an_error_not_an_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="is not a directory; a BEIR folder holds"):
        build_task(str(tmp_path / "nowhere"), REPO_ROOT / "data" / "eval", SubsetSizes())


@pytest.mark.slow
def test_minilm_reproduces_mteb_scifact(tmp_path: Path) -> None:
    """MTEB publishes nDCG@10 = 0.6451 for all-MiniLM-L6-v2 on SciFact; the full local copy must match."""
    params = write_params(tmp_path / "params.yaml")
    output = tmp_path / "eval.json"
    result = evaluate_cli(params, "--model", "builtin:all-MiniLM-L6-v2", "--tasks", "SciFact", "--output", str(output))
    assert result.exit_code == 0, result.output
    scores = json.loads(output.read_text())["SciFact"]
    assert scores["ndcg_at_10"] == pytest.approx(0.6451, abs=0.001) and scores["precision"] == "fp32"


def test_any_mteb_task_or_benchmark_name_resolves_through_mteb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundled names use the local copy, inside a benchmark too; the rest are mteb's own tasks (fetched when
    evaluated, so only with the model hub on) and, with HF_HUB_OFFLINE set, one clear error."""
    data, sizes = REPO_ROOT / "data" / "eval", SubsetSizes()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (online,) = build_tasks(["STS17"], data, sizes)
    assert online.metadata.name == "STS17" and not hasattr(online, "subset")
    benchmark = build_tasks(["MTEB(eng, v2)"], data, sizes)
    local = {task.metadata.name for task in benchmark if hasattr(task, "subset")}
    assert len(benchmark) == 41 and {"STS15", "BIOSSES", "Banking77Classification", "TwitterURLCorpus"} <= local
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"^STS17 has no bundled copy and HF_HUB_OFFLINE is set, .*bundled tasks: "):
        build_tasks(["STS17"], data, sizes)
    with pytest.raises(UserError, match=r"^ArguAna has no bundled copy"):
        build_tasks(["MTEB(eng, v2)"], data, sizes)
    with pytest.raises(UserError, match=r"^unknown task 'NoSuchTask'; bundled tasks: SciFact, "):
        build_tasks(["NoSuchTask"], data, sizes)


def test_a_benchmark_name_with_a_comma_is_one_name_on_the_command_line(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml")
    result = evaluate_cli(params, "--model", "builtin:all-MiniLM-L6-v2", "--tasks", "MTEB(eng, v2)")
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith(
        "error: ArguAna has no bundled copy and HF_HUB_OFFLINE is set"
    )
