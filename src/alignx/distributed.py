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


def wait_for_everyone() -> None:
    """Barrier across ranks (nothing outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _GatherRows(torch.autograd.Function):
    """all_gather of equal-size row blocks whose backward sums every rank's gradient for this rank's block.

    That is the exact gradient of a loss summed over ranks: rank r's anchors also pull on rank s's
    targets. (A plain all_gather with the local block spliced in would drop those cross-rank terms.)
    all_reduce + slice is used instead of reduce_scatter so that gloo (CPU) works too.
    """

    @staticmethod
    def forward(ctx, block: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        rank, size = world()
        parts = [torch.empty_like(block) for _ in range(size)]
        dist.all_gather(parts, block.contiguous())
        ctx.rank, ctx.rows = rank, block.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate ``local`` [N, H] from every rank (row counts may differ) -> ([M, H], index [N]).

    Differentiable: the backward pass delivers to each rank the gradient that *all* ranks' losses
    put on its rows (see :class:`_GatherRows`), so with DDP's gradient averaging the update is the
    exact gradient of the mean loss over ranks. The index gives this rank's rows in the result.
    """
    rank, size = world()
    n = local.shape[0]
    if size == 1:
        return local, torch.arange(n, device=local.device)
    counts = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([n], dtype=torch.long, device=local.device))
    sizes = [int(c.item()) for c in counts]
    most = max(sizes)
    padded = torch.cat([local, local.new_zeros((most - n, *local.shape[1:]))]) if most > n else local
    stacked = _GatherRows.apply(padded)  # [size * most, H]
    rows = torch.cat([stacked[r * most : r * most + sizes[r]] for r in range(size)], dim=0)
    offset = sum(sizes[:rank])
    return rows, torch.arange(offset, offset + n, device=local.device)
