"""Entry point for the multi-process tests: runs `alignx train` and records what each rank saw.

usage: python tests/_dist_worker.py RECORD_DIR train key=value ...   (alone, or under accelerate launch)

Besides running the real CLI, it writes RECORD_DIR/rank<r>.json with the world size, the engine accelerate
chose, a hash of this rank's parameters (its shards under FSDP) just before export, and the row counts of every
contrastive all-gather. It only observes: the wrapped functions are the real ones, called unchanged. The one
change is :func:`allow_engines_on_cpu`, so that fsdp.yaml and deepspeed_zero2.yaml run their engine on CPUs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch


def _param_digest(module: torch.nn.Module) -> tuple[str, float, int]:
    """Hash and absolute sum of this rank's parameters (its shards, when FSDP shards them), and how many are sharded."""
    h = hashlib.sha256()
    total = 0.0
    sharded = 0
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        if hasattr(p, "to_local"):  # a DTensor: this rank's shard
            p = p.to_local()
            sharded += 1
        t = p.detach().float().cpu().contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes())
        total += float(t.double().abs().sum())
    return h.hexdigest(), total, sharded


def allow_engines_on_cpu() -> None:
    """Let accelerate build the FSDP or DeepSpeed engine that ``accelerate launch --config_file fsdp.yaml`` (or
    ``deepspeed_zero2.yaml``) asked for, in a gloo group of CPU processes.

    accelerate (1.15, ``AcceleratorState.__init__``) switches to FSDP only for the GPU-like process types (MULTI_GPU,
    MULTI_NPU, ...) and to DeepSpeed only when not on the CPU; a gloo CPU group is MULTI_CPU and silently trains
    plain DDP. This does for MULTI_CPU what accelerate does for a GPU group: set the type and the plugin (and share
    the type with PartialState). Everything after it is accelerate's and the Trainer's own engine path, unchanged.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    real_init = AcceleratorState.__init__

    def init(self: Any, *args: Any, fsdp_plugin: Any = None, deepspeed_plugin: Any = None, **kwargs: Any) -> None:
        real_init(self, *args, fsdp_plugin=fsdp_plugin, deepspeed_plugin=deepspeed_plugin, **kwargs)
        if self.distributed_type != DistributedType.MULTI_CPU:
            return
        if fsdp_plugin is not None:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
        elif deepspeed_plugin is not None:
            self.distributed_type = DistributedType.DEEPSPEED
            deepspeed_plugin.set_mixed_precision(self._mixed_precision)
            deepspeed_plugin.select(_from_accelerator_state=True)
            self.deepspeed_plugins = deepspeed_plugin
            self._mixed_precision = "no"  # DeepSpeed's config holds the precision
        PartialState._shared_state["distributed_type"] = self.distributed_type

    AcceleratorState.__init__ = init


def main(argv: list[str]) -> int:
    record_dir = Path(argv[0])
    allow_engines_on_cpu()
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
        digest, abs_sum, sharded = _param_digest(trainer.accelerator.unwrap_model(trainer.model))
        info.update(digest=digest, abs_sum=abs_sum, sharded_params=sharded, world=world()[1], distributed_type=str(trainer.accelerator.distributed_type))
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
