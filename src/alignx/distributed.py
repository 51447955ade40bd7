"""The only collective code in alignx: gathering contrastive negatives and logged values across ranks.

Whatever engine launched the run (DDP, FSDP, DeepSpeed via ``accelerate launch``), it initialises
``torch.distributed``; these helpers only ask whether a process group exists.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate ``local`` [N, H] from every rank (row counts may differ) -> ([M, H], index [N]).

    Rows of other ranks are constants; this rank's rows keep their autograd graph, so each rank
    back-propagates through its own rows (the usual all-gather-of-negatives recipe). The index gives
    the rows of this rank's entries in the concatenation.
    """
    rank, size = world()
    n = local.shape[0]
    if size == 1:
        return local, torch.arange(n, device=local.device)
    counts = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([n], dtype=torch.long, device=local.device))
    sizes = [int(c.item()) for c in counts]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[:n] = local.detach()
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous())
    rows = [p[:s] for p, s in zip(parts, sizes, strict=True)]
    rows[rank] = local
    offset = sum(sizes[:rank])
    return torch.cat(rows, dim=0), torch.arange(offset, offset + n, device=local.device)
