"""Synthetic data: taxonomy, prompts, LLM access through LiteLLM, and the brainstorm and generate stages."""

from synthembed.synth.brainstorm import run_brainstorm
from synthembed.synth.generate import run_generate

__all__ = ["run_brainstorm", "run_generate"]
