"""Multi-process training: ``train.devices: N`` runs N ranks through torchrun with a DeepSpeed config
from the package.

The parent writes the validated params to a file, launches ``torchrun --nproc_per_node N -m
synthembed.train.worker PARAMS RESULT``, and reads rank 0's result back. On machines without CUDA the ranks
talk over gloo and DeepSpeed uses its CPU accelerator, so the same path is testable on a laptop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from synthembed.errors import UserError
from synthembed.params import Params
from synthembed.pipeline.stage import StageResult
from synthembed.runtime import Distributed


def needs_launcher(config: Params, distributed: Distributed) -> bool:
    """DeepSpeed needs a process group even on one device; so do N > 1 devices."""
    return not distributed.launched and (config.train.devices > 1 or config.train.deepspeed != "none")


def deepspeed_config(stage: str) -> dict[str, Any] | None:
    """The ZeRO JSON shipped in this package ("auto" values are filled in by the trainer)."""
    if stage == "none":
        return None
    return json.loads(resources.files("synthembed.train").joinpath("deepspeed", f"{stage}.json").read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(config: Params) -> StageResult:
    """Run training in ``train.devices`` processes (``python -m synthembed.train.worker``); rank 0's result."""
    devices = config.train.devices
    if torch.cuda.is_available() and torch.cuda.device_count() < devices:
        raise UserError(f"train.devices is {devices} but only {torch.cuda.device_count()} GPU(s) are visible")
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    with tempfile.TemporaryDirectory(prefix="synthembed-train-") as tmp:
        params_file, result_file = Path(tmp) / "params.json", Path(tmp) / "result.json"
        params_file.write_text(config.model_dump_json())
        command = [
            sys.executable, "-m", "torch.distributed.run",
            f"--nproc_per_node={devices}", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
            "-m", "synthembed.train.worker", str(params_file), str(result_file),
        ]  # fmt: skip
        done = subprocess.run(command, env=env, check=False)
        if done.returncode != 0:
            raise UserError(f"distributed training failed (exit code {done.returncode}); see the rank logs above")
        return read_result(result_file)


def write_result(path: Path, result: StageResult) -> None:
    """How rank 0 hands its result to the launching process."""
    path.write_text(json.dumps(dataclasses.asdict(result)))


def read_result(path: Path) -> StageResult:
    data = json.loads(path.read_text())
    table = data["table"]
    return StageResult(
        data["metrics"], data["summary"], table=(table[0], [tuple(row) for row in table[1]]) if table else None
    )
