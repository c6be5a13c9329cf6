"""Semantic textual similarity: scored sentence pairs, subsampled by pairs, scored by MTEB's STS evaluator."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from xml.etree import ElementTree

import mteb
from datasets import Dataset, DatasetDict
from mteb.abstasks.sts import AbsTaskSTS

from synthembed.errors import UserError
from synthembed.evaluate.data import read_csv, sample_rows
from synthembed.evaluate.tasks.base import Builder, InMemoryTask, SubsetSizes, mteb_metadata

Pair = tuple[str, str, float]

# The SemEval STS test files of each year (MTEB scores each year as one pooled set); 2012 lacks MSRvid.
SEMEVAL_FILES = {
    "STS12": ["MSRpar", "OnWN", "SMTeuroparl", "SMTnews"],
    "STS13": ["FNWN", "OnWN", "headlines"],
    "STS14": ["OnWN", "deft-forum", "deft-news", "headlines", "images", "tweet-news"],
    "STS15": ["answers-forums", "answers-students", "belief", "headlines", "images"],
    "STS16": ["answer-answer", "headlines", "plagiarism", "postediting", "question-question"],
}
WORD = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
BREAKS = {f"{WORD}{tag}" for tag in ("p", "tab", "br", "cr")}  # Word elements that separate words


class LocalSTS(InMemoryTask, AbsTaskSTS):
    pass


def sts_task(name: str, folder: Path, files: list[str], reader: Callable[[list[Path]], list[Pair]]) -> Builder:
    def build(sizes: SubsetSizes) -> LocalSTS:
        paths = [folder / f for f in files]
        pairs = reader(paths)
        kept = sample_rows(pairs, sizes.max_queries, sizes.seed)
        subset = {"n_queries": len(kept)} if len(kept) < len(pairs) else None
        s1, s2, score = zip(*kept, strict=True)
        dataset = DatasetDict({"test": Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": score})})
        task = LocalSTS.create(mteb_metadata(name, folder, paths), dataset, subset, sizes.seed)
        # MTEB rescales the gold scores by its own range for the task (0-5 for every bundled one)
        reference = mteb.get_task(name)
        task.min_score, task.max_score = reference.min_score, reference.max_score
        return task

    return build


def each_file(read: Callable[[Path], list[Pair]]) -> Callable[[list[Path]], list[Pair]]:
    """A reader of several files that pools the pairs of each, in order."""
    return lambda paths: [pair for path in paths for pair in read(path)]


def scored_pairs(
    path: Path, rows: Iterable[list[str]], columns: tuple[int, int, int], layout: str, unrated: bool = False
) -> list[Pair]:
    """(sentence1, sentence2, score) from the given columns of each row; a bad row is a UserError. With
    ``unrated``, rows whose score is empty are left out (pairs that were never rated)."""
    first, second, score = columns
    pairs = []
    for number, row in enumerate(rows, start=1):
        if unrated and len(row) > score and not row[score]:
            continue
        try:
            pairs.append((row[first], row[second], float(row[score])))
        except (IndexError, ValueError):
            raise UserError(f"{path}: row {number} is not {layout}") from None
    return pairs


def stsb_pairs(path: Path) -> list[Pair]:
    return scored_pairs(path, read_csv(path, header=False), (0, 1, 2), "'sentence1,sentence2,score'")


def sick_pairs(path: Path) -> list[Pair]:
    return scored_pairs(path, read_csv(path, delimiter="\t"), (1, 2, 3), "'id<TAB>sentence_A<TAB>sentence_B<TAB>score'")


def semeval_pairs(path: Path) -> list[Pair]:
    """The rated pairs of a SemEval file (MTEB leaves out the lines with an empty score too)."""
    rows = read_csv(path, delimiter="\t", header=False)
    return scored_pairs(path, rows, (1, 2, 0), "'score<TAB>sentence1<TAB>sentence2'", unrated=True)


def docx_table(path: Path) -> list[list[str]]:
    """The cell texts of the rows of the Word tables in ``path``, whitespace collapsed (tabs, breaks, stray
    spaces and paragraph ends all become one space)."""
    try:
        with zipfile.ZipFile(path) as document:
            root = ElementTree.fromstring(document.read("word/document.xml"))
    except (OSError, KeyError, zipfile.BadZipFile, ElementTree.ParseError) as exc:
        raise UserError(f"cannot read {path} as a Word document: {exc}") from None

    def text(node: ElementTree.Element) -> str:
        if node.tag == f"{WORD}t":
            return node.text or ""
        inner = "".join(text(child) for child in node)
        return f" {inner} " if node.tag in BREAKS else inner

    return [[" ".join(text(cell).split()) for cell in row.iter(f"{WORD}tc")] for row in root.iter(f"{WORD}tr")]


def biosses_pairs(paths: list[Path]) -> list[Pair]:
    """BIOSSES' 100 pairs (one table) and their five annotators' 0-4 scores (another); the gold score is their
    mean, as in MTEB."""
    pairs_file, scores_file = paths
    sentences = {row[0]: row[1:] for row in docx_table(pairs_file)[1:] if len(row) == 3}
    annotations = {row[0]: row[1:] for row in docx_table(scores_file)[1:]}
    if not sentences or set(sentences) != set(annotations):
        raise UserError(f"{scores_file} does not score exactly the pairs numbered in {pairs_file}")
    pairs = []
    for number, scores in annotations.items():
        try:
            pairs.append((*sentences[number], sum(map(float, scores)) / len(scores)))
        except (ValueError, ZeroDivisionError):
            raise UserError(f"{scores_file}: pair {number} has no numeric annotator scores") from None
    return pairs


def bundled(data_dir: Path) -> dict[str, Builder]:
    sick = ["SICK_train.txt.gz", "SICK_trial.txt.gz", "SICK_test_annotated.txt.gz"]
    semeval = data_dir / "semeval-sts"
    tasks = {
        "STSBenchmark": sts_task(
            "STSBenchmark", data_dir / "stsbenchmark", ["stsb-en-test.csv"], each_file(stsb_pairs)
        ),
        "SICK-R": sts_task("SICK-R", data_dir / "sickr", sick, each_file(sick_pairs)),
        "BIOSSES": sts_task(
            "BIOSSES", data_dir / "biosses", ["Annotation-Pairs.docx", "Annotator-Scores.docx"], biosses_pairs
        ),
    }
    for name, stems in SEMEVAL_FILES.items():
        year = "20" + name.removeprefix("STS")
        files = [f"{year}/{stem}.test.tsv.gz" for stem in stems]
        tasks[name] = sts_task(name, semeval, files, each_file(semeval_pairs))
    return tasks
