"""Named task suites: ``--tasks suite:NAME`` and ``evaluate.tasks: [suite:NAME]``.

A suite fixes its tasks and, where it subsamples, each task's sizes, the way MTEB's own "lite" benchmarks fix
their subsets: two models scored on one suite (and one seed) saw the same texts. ``evaluate.max_queries`` and
``evaluate.max_documents`` cap the tasks that are named one by one, never a suite's.

- ``cpu``: every category of the paper's table, sized so the untrained 135M decoder finishes in about ten
  minutes in fp32 on two CPU cores (the time per task is in docs/evaluation.md). Classification keeps MTEB's
  train texts per label but averages over the first one or three of its ten undersampling experiments, which
  cuts the train texts to encode up to tenfold; NFCorpus is the retrieval task that training never sees.
- ``bundled``: every bundled task, sized by ``evaluate.max_queries`` / ``max_documents`` (null: full splits).
"""

from __future__ import annotations

from dataclasses import replace

from synthembed.evaluate.tasks.base import SubsetSizes

PREFIX = "suite:"

Sizes = SubsetSizes | None  # None: the evaluate params decide
CPU: dict[str, Sizes] = {
    "SciFact": SubsetSizes(max_queries=50, max_documents=100),
    "NFCorpus": SubsetSizes(max_queries=5, max_documents=100),  # its queries judge 38 documents on average
    "STSBenchmark": SubsetSizes(max_queries=150),
    "SICK-R": SubsetSizes(max_queries=150),
    "STS15": SubsetSizes(max_queries=150),
    "BIOSSES": SubsetSizes(),  # 100 pairs in all
    "Banking77Classification": SubsetSizes(max_queries=300, max_experiments=1),  # 616 train texts an experiment
    "EmotionClassification": SubsetSizes(max_queries=300, max_experiments=3),  # 96 train texts an experiment
    "TwitterURLCorpus": SubsetSizes(max_queries=200),
    "WikiQA": SubsetSizes(max_queries=40),
    "StackExchangeClustering": SubsetSizes(max_queries=150),  # titles per set, 5 sets
    "SummEval": SubsetSizes(max_queries=10),  # articles, each with 12 machine and 11 human summaries
}


def suites(bundled: list[str]) -> dict[str, dict[str, Sizes]]:
    """Suite name -> its tasks with their sizes."""
    return {"cpu": CPU, "bundled": dict.fromkeys(bundled)}


def expand(name: str, bundled: list[str], sizes: SubsetSizes) -> list[tuple[str, SubsetSizes]] | None:
    """The (task, sizes) pairs of ``suite:NAME`` with the run's seed, or None when ``name`` is not a suite name."""
    tasks = suites(bundled).get(name.removeprefix(PREFIX)) if name.startswith(PREFIX) else None
    if tasks is None:
        return None
    return [(task, sizes if fixed is None else replace(fixed, seed=sizes.seed)) for task, fixed in tasks.items()]


def names(bundled: list[str]) -> list[str]:
    return [PREFIX + name for name in suites(bundled)]
