"""Next-token prediction (L_NTP) as a sum over target tokens, so callers normalise once per optimiser step."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def next_token_loss_from_logits(logits: torch.Tensor, shift_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of ``logits`` [B, T, V] against ``shift_labels`` [B, T].

    ``shift_labels[b, t]`` is the token that position t must predict (i.e. labels shifted left by one,
    IGNORE_INDEX where no loss is taken). Returns (sum of token losses, number of target tokens), fp32.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()
    target = shift_labels.reshape(-1)
    total = F.cross_entropy(flat, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total, target.ne(IGNORE_INDEX).sum()


def _chunk_ce(
    head: Callable[[torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,
    target: torch.Tensor,
    softcap: float | None,
    scale: float | None,
) -> torch.Tensor:
    logits = head(hidden).float()
    if scale is not None:
        logits = logits * scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, target, reduction="sum")


def fused_next_token_loss(
    hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    shift_labels: torch.Tensor,
    chunk_size: int = 1024,
    softcap: float | None = None,
    logit_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy computed from final hidden states without full-size logits.

    hidden: [B, T, H] final (post-norm) states; head: the output projection (e.g. ``lm_head``, LoRA
    wrappers included); shift_labels: [B, T] as in :func:`next_token_loss_from_logits`.
    Only positions with a target are projected, ``chunk_size`` at a time, and each chunk's logits are
    recomputed in backward (activation checkpointing), so peak memory holds one chunk of fp32 logits
    instead of B*T*V. Equal to the unfused loss up to float rounding.
    Returns (sum of token losses, number of target tokens).
    """
    target = shift_labels.reshape(-1)
    keep = target.ne(IGNORE_INDEX)
    states = hidden.reshape(-1, hidden.shape[-1])[keep]
    target = target[keep]
    count = keep.sum()
    if states.shape[0] == 0:
        return hidden.sum() * 0.0, count
    if chunk_size <= 0:
        chunk_size = states.shape[0]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, states.shape[0], chunk_size):
        h = states[start : start + chunk_size]
        y = target[start : start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            total = total + checkpoint(_chunk_ce, head, h, y, softcap, logit_scale, use_reentrant=False)
        else:
            total = total + _chunk_ce(head, h, y, softcap, logit_scale)
    return total, count
