"""Evaluation with MTEB on local copies of real data (bundled tasks or any BEIR folder)."""

from synthembed.evaluate.run import run_evaluate, scores_table_path

__all__ = ["run_evaluate", "scores_table_path"]
