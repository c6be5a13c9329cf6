"""The prompt templates state every constraint of the paper's prompts, and no brainstorm example leaks an
evaluation task (a model trained on tasks brainstormed from such examples would be scored on its own data)."""

from __future__ import annotations

import random
import re

import pytest

from synthembed.params import BrainstormParams
from synthembed.synth import prompts, taxonomy

# A realistic brainstormed task per asymmetric kind (sts and bitext take theirs from taxonomy.FIXED_TASKS).
TASKS = {
    "short_long": "Given a hobby gardener's problem, find horticulture guides that explain how to solve it.",
    "long_short": "Classify a customer support email into billing, technical problem or account access.",
    "short_short": "Given a chemical element, find its symbol.",
    "long_long": "Given a grant proposal, find funded proposals that pursue a similar research aim.",
}

# Regexes searched in the lower-cased prompt with whitespace collapsed; {name} is the sampled value of a
# template parameter, so a renamed or dropped variable fails here too.
COMMON = (r"be creative!",)
GENERATE: dict[str, tuple[str, ...]] = {
    "short_long": (
        r"diverse in topic",
        r"at least {num_words} words",
        r"contains some useful information",
        r"less useful or comprehensive than the positive document",
        r"avoid copying the query verbatim",
        r"do not explain in any document why it is relevant or not relevant to the query",
        r"both documents independently of the query",
        r"some parts of the positive document are off-topic",
        r"it is {query_type}, {query_length} long, {clarity}",
        r"{difficulty} level education",
        r"written in {language}",
    ),
    "long_short": (
        r"a text of {num_words} words",
        r"diverse in expression",
        r'do not put the label or the misleading label inside "input_text"',
        r"a valid label of the same task",
        r"it is {clarity}",
        r"{difficulty} level education",
        r"written in {language}",
    ),
    "short_short": (
        r"a phrase or one sentence",
        r"avoid large word overlap",
        r'"input" and "positive_document" independently of each other',
        r"written in {language}",
    ),
    "long_long": (
        r'"input": a long input for the task, at least 300 words',
        r'"positive_document": a long text, at least 300 words',
        r"avoid large word overlap",
        r'"input" and "positive_document" independently of each other',
        r"written in {language}",
    ),
    "sts": (
        r"some word overlap between all three {unit}s",
        r"scored from 1 \(least similar\) to 5 \(most similar\)",
        r"similarity to s1 scores {high_score}",
        r"similarity to s1 scores {low_score}",
        r"diverse in topic and length",
        r"{difficulty} level education",
        r"texts in {language}",
    ),
    "bitext": (
        r"a {unit} in {src_lang}",
        r"translation of s1 into {tgt_lang} whose quality scores {high_score}",
        r"whose quality scores {low_score}",
        r"s3 has some word overlap with s2",
        r"grammatical and fluent",
        r"contains translation errors",
        r"keyword or number",
        r"missing information",
        r"redundant information",
        r"diverse in topic and length",
        r"{difficulty} level education",
    ),
}
BRAINSTORM: dict[str, tuple[str, ...]] = {
    "short_long": (
        r"{num_tasks} new tasks",
        r"short query goes in and long documents come back",
        r"say what the query is and what the desired documents are",
        r"wide range of queries",
        r"do not make it too specific",
    ),
    "long_short": (r"{num_tasks} new tasks", r"one label is assigned", r"diverse range of domains"),
    "short_short": (r"{num_tasks} new tasks", r"both sides are very short"),
    "long_long": (r"{num_tasks} new tasks", r"both sides are long documents"),
}


def _sampled(kind: str) -> dict[str, object]:
    """The variables ``plan_requests`` passes for ``kind``: the task and the sampled template parameters."""
    params = taxonomy.sample_params(kind, random.Random(0), taxonomy.allowed_languages("all"))
    return {"task": taxonomy.FIXED_TASKS.get(kind) or TASKS[kind], **params}


def _render(step: str, kind: str) -> tuple[str, dict[str, object]]:
    variables = _sampled(kind) if step == "generate" else {"num_tasks": BrainstormParams().tasks_per_request}
    return prompts.render(step, kind, **variables), variables


STEPS = {"generate": GENERATE, "brainstorm": BRAINSTORM}


def test_every_kind_has_a_constraint_list():
    assert set(GENERATE) == set(taxonomy.KINDS)
    assert set(BRAINSTORM) == set(taxonomy.BRAINSTORM_KINDS)


@pytest.mark.parametrize(("step", "kind"), [(step, kind) for step, table in STEPS.items() for kind in table])
def test_constraints_are_stated(step: str, kind: str):
    """One case per template; the message lists every constraint it lacks."""
    text, variables = _render(step, kind)
    text = re.sub(r"\s+", " ", text.lower())
    values = {name: re.escape(str(value).lower()) for name, value in variables.items()}
    missing = [p for p in (*STEPS[step][kind], *COMMON) if not re.search(p.format(**values), text)]
    assert not missing, f"{step}/{kind} prompt lacks: {missing}"


# --- Leakage: brainstorm examples against the bundled evaluation tasks' instructions ---------------------------

# Function words and the task vocabulary every instruction shares: neither says which task it is.
STOP_WORDS = frozenset(
    "a about an and any are as at based be by each either for from given in into is it its of on one or that the "
    "their them they this to whether which who with classify decide detect document documents find "
    "identify label relevant retrieve search sort text texts".split()
)
OLD_EXAMPLES = [
    ("Given a health question, find web pages that answer it.", "NFCorpus"),
    ("Given a claim about science, find research abstracts that support or refute it.", "SciFact"),
    ("Given a product name, find customer reviews that discuss its flaws.", "AmazonCounterfactualClassification"),
]


def _stem(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _content(text: str) -> list[str]:
    """The stemmed content words of ``text`` in order."""
    return [_stem(word) for word in re.findall(r"[a-z0-9]+", text.lower()) if word not in STOP_WORDS]


def _pairs(words: list[str]) -> set[frozenset[str]]:
    return {frozenset(pair) for pair in zip(words, words[1:], strict=False) if pair[0] != pair[1]}


def close(example: str, instruction: str) -> bool:
    """Close: the example holds at least half of the instruction's content words, or the two share an adjacent
    content-word pair (such as "scientific claim" or "customer review"), which names a task's domain."""
    ex, ins = _content(example), _content(instruction)
    coverage = len(set(ins) & set(ex)) / len(set(ins))
    return coverage >= 0.5 or bool(_pairs(ins) & _pairs(ex))


def _examples(kind: str) -> list[str]:
    """The example tasks of a brainstorm template: its lines that start with "- "."""
    text, _ = _render("brainstorm", kind)
    return [line[2:].strip() for line in text.splitlines() if line.startswith("- ")]


@pytest.fixture(scope="module")
def instructions() -> dict[str, str]:
    """The bundled evaluation tasks' instructions (imported here: mteb takes seconds to import)."""
    from synthembed.evaluate.instructions import INSTRUCTIONS

    return INSTRUCTIONS


@pytest.mark.parametrize("kind", taxonomy.BRAINSTORM_KINDS)
def test_brainstorm_examples_leak_no_evaluation_task(kind: str, instructions: dict[str, str]):
    examples = _examples(kind)
    assert len(examples) >= 2, f"{kind}: the example list is gone, so nothing is checked"
    leaks = [(example, name) for example in examples for name, text in instructions.items() if close(example, text)]
    assert not leaks, f"{kind} examples close to evaluation tasks: {leaks}"


@pytest.mark.parametrize(("example", "task"), OLD_EXAMPLES)
def test_rule_flags_the_old_leaking_examples(example: str, task: str, instructions: dict[str, str]):
    assert close(example, instructions[task])


@pytest.mark.parametrize("kind", taxonomy.BRAINSTORM_KINDS)
def test_brainstorm_examples_are_asymmetric(kind: str):
    """Paraphrase and similarity tasks are symmetric (sts); the brainstormed kinds must not be taught them."""
    for example in _examples(kind):
        assert not re.search(r"rephras|paraphras|same meaning|same thing|similar", example.lower()), example
