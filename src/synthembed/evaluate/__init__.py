"""Evaluation with MTEB on local copies of real data (bundled tasks or any BEIR folder)."""

from synthembed.evaluate.run import run_evaluate

__all__ = ["run_evaluate"]
