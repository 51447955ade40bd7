"""Multilingual semantic alignment (L_CTR): InfoNCE between pooled sentence states and their translations."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    hx: torch.Tensor,
    hy: torch.Tensor,
    tau: float = 0.1,
    symmetric: bool = False,
    positive_index: torch.Tensor | None = None,
    center: bool = False,
) -> torch.Tensor:
    """AlignX contrastive loss.

    hx: [N, H] pooled states of the source sentences x_i (layer l, mean over x's tokens).
    hy: [M, H] pooled states of candidate translations; by default M == N and hy[i] is x_i's
        translation. With negatives gathered from other ranks, M > N and ``positive_index`` [N] gives
        the row of hy that is x_i's translation.
    sim = cos(hx, hy) / tau; loss_i = -log softmax_j(sim_i)[positive(i)].
    Reference form (``symmetric=False``): mean_i loss_i / 2 (one direction, halved as in the
    reference code). ``symmetric=True``: (mean x->y + mean y->x) / 2, where the y->x direction uses
    the local rows only.
    ``center=True`` (not in the reference): subtract the mean of all N + M pooled states (x and y
    together, the mean is part of the graph) from each before the cosine. Mid-layer states of many
    LMs share a large common component (Gemma-3-270M layer 9: cos(pair) - cos(random) ~ 0.003), so the
    raw cosine logits span ~0.03 and the softmax stays uniform; centring removes that component.
    Returns a scalar; 0 (with a zero gradient) when there is only one pair,
    since a single pair has no negatives (the reference skips such batches).
    Computed in fp32 even under autocast (the reference computes the cosine in fp32).
    """
    if hx.shape[0] != (hy.shape[0] if positive_index is None else positive_index.shape[0]):
        raise ValueError(f"hx has {hx.shape[0]} rows but {hy.shape[0]} positives were given")
    if hy.shape[0] < 2:
        return (hx.sum() + hy.sum()) * 0.0
    with torch.autocast(device_type=hx.device.type, enabled=False):
        hx, hy = hx.float(), hy.float()
        if center:
            mean = torch.cat([hx, hy], dim=0).mean(dim=0, keepdim=True)
            hx, hy = hx - mean, hy - mean
        x = F.normalize(hx, dim=-1)
        y = F.normalize(hy, dim=-1)
        sim = x @ y.T / tau  # [N, M]
        target = positive_index if positive_index is not None else torch.arange(x.shape[0], device=x.device)
        loss = F.cross_entropy(sim, target)
        if symmetric:
            local_y = y[target]  # [N, H]
            back = F.cross_entropy(local_y @ x.T / tau, torch.arange(x.shape[0], device=x.device))
            return (loss + back) / 2
        return loss / 2
