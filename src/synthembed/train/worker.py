"""One training rank, as torchrun starts it: ``python -m synthembed.train.worker PARAMS RESULT``."""

from __future__ import annotations

import sys
from pathlib import Path

from synthembed import runtime
from synthembed.errors import UserError, describe
from synthembed.params import Params


def main(params_file: str, result_file: str) -> None:
    """Train this rank's share; rank 0 writes the result for the launching process."""
    context = runtime.start()  # before torch is imported: the rank's environment defaults
    import torch.distributed as dist

    from synthembed.train.distributed import write_result
    from synthembed.train.trainer import run_train

    distributed = context.distributed
    config = Params.model_validate_json(Path(params_file).read_text())
    try:
        result = run_train(config, distributed)
    except Exception as exc:  # noqa: BLE001 - each rank reports one line; the parent turns it into exit 2
        message = str(exc) if isinstance(exc, UserError) else describe(exc)
        print(f"error: rank {distributed.rank}: {message}", file=sys.stderr)
        sys.exit(2)
    if distributed.is_main:
        write_result(Path(result_file), result)
    if dist.is_initialized():
        # The other ranks wait while rank 0 exports; a rank that exits with its process group still open can
        # abort in the communication threads' teardown ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
