"""Multi-process training: ``train.devices: N`` runs N ranks through torchrun with a DeepSpeed config
from the repo.

The parent writes the validated params to a file, launches ``torchrun --nproc_per_node N -m
synthembed.train.distributed FILE``, and reads rank 0's metrics back. On machines without CUDA the ranks
talk over gloo and DeepSpeed uses its CPU accelerator, so the same path is testable on a laptop.
"""

from __future__ import annotations

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

from synthembed.errors import UserError, describe
from synthembed.params import Params


def in_distributed_run() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def needs_launcher(config: Params) -> bool:
    """DeepSpeed needs a process group even on one device; so do N > 1 devices."""
    return not in_distributed_run() and (config.train.devices > 1 or config.train.deepspeed != "none")


def deepspeed_config(stage: str) -> dict[str, Any] | None:
    """The ZeRO JSON shipped in this package ("auto" values are filled in by the trainer)."""
    if stage == "none":
        return None
    return json.loads(resources.files("synthembed.train").joinpath("deepspeed", f"{stage}.json").read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(config: Params, metrics_path: Path) -> dict[str, Any]:
    """Run training in ``train.devices`` processes and return rank 0's metrics."""
    devices = config.train.devices
    if torch.cuda.is_available() and torch.cuda.device_count() < devices:
        raise UserError(f"train.devices is {devices} but only {torch.cuda.device_count()} GPU(s) are visible")
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    with tempfile.TemporaryDirectory(prefix="synthembed-train-") as tmp:
        params_file = Path(tmp) / "params.json"
        params_file.write_text(config.model_dump_json())
        command = [
            sys.executable, "-m", "torch.distributed.run",
            f"--nproc_per_node={devices}", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
            "-m", "synthembed.train.distributed", str(params_file),
        ]  # fmt: skip
        result = subprocess.run(command, env=env, check=False)
    if result.returncode != 0:
        raise UserError(f"distributed training failed (exit code {result.returncode}); see the rank logs above")
    return json.loads(metrics_path.read_text())


def _worker(params_file: str) -> None:
    """Entry point of each rank."""
    import torch.distributed as dist

    from synthembed.train.trainer import run_train

    config = Params.model_validate_json(Path(params_file).read_text())
    try:
        run_train(config)
    except Exception as exc:  # noqa: BLE001 - each rank reports one line; the parent turns it into exit 2
        message = str(exc) if isinstance(exc, UserError) else describe(exc)
        print(f"error: rank {os.environ.get('RANK', '?')}: {message}", file=sys.stderr)
        sys.exit(2)
    if dist.is_initialized():
        # The other ranks wait while rank 0 exports; a rank that exits with its process group still open can
        # abort in the communication threads' teardown ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1])
