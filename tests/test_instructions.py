"""Every bundled task's instruction is pinned in code, and the pinned E5 texts are the ones MTEB gives the
E5-instruct models for the same task (the task's own prompt, else its task type's)."""

from __future__ import annotations

import pytest

from synthembed.evaluate.instructions import E5_INSTRUCTIONS, INSTRUCTIONS, task_instruction
from synthembed.evaluate.run import BUNDLED_DATA
from synthembed.evaluate.tasks import bundled_tasks


@pytest.mark.parametrize("name", sorted(bundled_tasks(BUNDLED_DATA)))
def test_every_bundled_task_has_a_pinned_instruction(name: str) -> None:
    assert INSTRUCTIONS.get(name, "").strip(), f"pin {name}'s instruction in synthembed/evaluate/instructions.py"


# Where MTEB's text is not the E5 authors' to the letter.
MTEB_DIFFERS = {"SummEval": "Given a news summary, retrieve other semantically similar summaries."}


@pytest.mark.parametrize(("name", "pinned"), sorted(E5_INSTRUCTIONS.items()))
def test_pinned_e5_instruction_matches_mteb(name: str, pinned: str) -> None:
    import mteb

    task = mteb.get_task(name)
    prompt = task.metadata.prompt
    theirs = (prompt.get("query") if isinstance(prompt, dict) else prompt) or task.abstask_prompt
    assert theirs == MTEB_DIFFERS.get(name, pinned)
    assert task_instruction(task.metadata) == pinned


def test_a_task_outside_the_table_keeps_its_own_prompt() -> None:
    import mteb

    metadata = mteb.get_task("SciFact").metadata.model_copy(update={"name": "my-beir", "prompt": {"query": "Find it"}})
    assert task_instruction(metadata) == "Find it"
    assert task_instruction(metadata.model_copy(update={"prompt": None})) == ""
