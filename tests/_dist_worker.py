"""Entry point for the multi-process tests: runs `alignx train` and records what each rank saw.

usage: python tests/_dist_worker.py RECORD_DIR train key=value ...   (alone, or under accelerate launch)

Besides running the real CLI, it writes RECORD_DIR/rank<r>.json with the world size, a hash of this
rank's parameters just before export, and the row counts of every contrastive all-gather. It only
observes: the wrapped functions are the real ones, called unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch


def _param_digest(module: torch.nn.Module) -> tuple[str, float]:
    h = hashlib.sha256()
    total = 0.0
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        t = p.detach().float().cpu().contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
        total += float(t.double().abs().sum())
    return h.hexdigest(), total


def main(argv: list[str]) -> int:
    record_dir = Path(argv[0])
    record_dir.mkdir(parents=True, exist_ok=True)
    import alignx.model.alignx_model as am
    import alignx.train.stage as stage
    from alignx import cli
    from alignx.distributed import world

    gathers: list[list[int]] = []
    info: dict[str, Any] = {}
    real_gather = am.gather_with_grad

    def gather_with_grad(local: torch.Tensor) -> Any:
        rows, index = real_gather(local)
        gathers.append([int(local.shape[0]), int(rows.shape[0]), int(index[0]) if len(index) else -1])
        return rows, index

    real_export = stage.export

    def export(trainer: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        digest, abs_sum = _param_digest(trainer.accelerator.unwrap_model(trainer.model))
        info.update(digest=digest, abs_sum=abs_sum, world=world()[1], distributed_type=str(trainer.accelerator.distributed_type))
        return real_export(trainer, model, *args, **kwargs)

    am.gather_with_grad = gather_with_grad
    stage.export = export
    rc = cli.main(argv[1:])
    rank = world()[0] if info.get("world", 1) > 1 else int(os.environ.get("RANK", "0"))
    info.update(rc=rc, rank=rank, gathers=gathers)
    (record_dir / f"rank{rank}.json").write_text(json.dumps(info, indent=1))
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
