"""The GPU check script runs its own code on a tiny Mistral on the CPU, so it is known to work before a GPU
machine is lent (there it runs the 7B shape)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_tiny_on_cpu_and_reports_rates_and_the_export_check(tmp_path: Path) -> None:
    output = tmp_path / "check.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--runs", "gradcache"]
    command += ["--steps", "2", "--batch", "8", "--mini-batch", "4", "--seq", "32", "--output", str(output)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["chip"] == "cpu" and report["bf16_matmul_peak_tflop_per_s"] > 0
    (run,) = report["runs"]
    assert (run["run"], run["batch_size"], run["mini_batch_size"], run["steps"]) == ("gradcache", 8, 4, 2)
    assert run["tokens_per_s"] > 0 and 0 < run["of_peak"] < 1
    # the random backbone is stored in bf16, as Mistral-7B's checkpoint is: merged and adapter agree as bf16 does
    assert run["verification"]["adapter_vs_merged_min_cosine"] >= 0.999
    assert run["verification"]["adapter_vs_base"] > 1e-4
    assert "gradcache" in done.stdout and "export check" in done.stdout
