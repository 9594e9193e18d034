"""A vaelab rank that fails on purpose, for tests/test_distributed.py.

    VAELAB_TEST_FAULT="RANK STEP {kill,hang}" python -m ddp_fault VAELAB_ARGS...   (each rank runs it)

Runs `vaelab VAELAB_ARGS` as a data-parallel rank; rank RANK dies by SIGKILL (`kill`) or stops
answering (`hang`) at its STEP-th training step counted from this process's start.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from vaelab import distributed
from vaelab.cli import main


def inject(rank: int, step: int, how: str) -> None:
    sharded_step = distributed.ShardedStepLoss.__call__
    steps = 0

    def faulty(self, *args):
        nonlocal steps
        steps += 1
        if self.world.rank == rank and steps == step:
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)  # hang: the other ranks wait in the step's all-reduce
        return sharded_step(self, *args)

    distributed.ShardedStepLoss.__call__ = faulty  # type: ignore[method-assign]


if __name__ == "__main__":
    rank, step, how = os.environ["VAELAB_TEST_FAULT"].split()
    inject(int(rank), int(step), how)
    sys.exit(main(sys.argv[1:]))
