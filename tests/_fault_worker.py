"""Runs `alignx train` and kills itself with SIGKILL at one point of the run (fault injection for test_faults.py).

usage: python tests/_fault_worker.py POINT train key=value ...

POINT is where the process dies, as kill -9 or a power cut would stop it:
- ``step:N``        inside optimiser step N (the forward of its first micro-batch);
- ``checkpoint:N``  while checkpoint-N is saved: the model is written, the optimiser state is not;
- ``final``         after final/ is written to its staging directory, before it is renamed into place;
- ``summary``       after final/ is in place, before train_summary.json is written.
The wrapped functions are the real ones; the worker only adds the kill.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    point = argv[0]
    from alignx import cli
    from alignx.train import stage
    from alignx.train.trainer import AlignXTrainer

    kind, _, at = point.partition(":")
    if kind == "step":
        real_loss = AlignXTrainer.compute_loss

        def compute_loss(self: AlignXTrainer, *args: Any, **kwargs: Any) -> Any:
            if self.state.global_step == int(at) - 1:
                _die()
            return real_loss(self, *args, **kwargs)

        AlignXTrainer.compute_loss = compute_loss
    elif kind == "checkpoint":
        real_opt = AlignXTrainer._save_optimizer_and_scheduler

        def save_optimizer(self: AlignXTrainer, output_dir: str) -> None:
            if self.state.global_step == int(at):
                _die()
            real_opt(self, output_dir)

        AlignXTrainer._save_optimizer_and_scheduler = save_optimizer
    elif kind == "final":
        real_save = AlignXTrainer._save

        def save(self: AlignXTrainer, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            real_save(self, output_dir, state_dict)
            if output_dir and os.path.basename(output_dir) == ".tmp-final":
                _die()

        AlignXTrainer._save = save
    elif kind == "summary":
        real_write = stage.write_json

        def write_json(path: Any, obj: Any) -> Any:
            if os.path.basename(str(path)) == "train_summary.json":
                _die()
            return real_write(path, obj)

        stage.write_json = write_json
    else:
        raise SystemExit(f"unknown fault point {point!r}")
    return cli.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
