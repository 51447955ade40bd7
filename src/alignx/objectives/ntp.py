"""Next-token prediction (L_NTP) as a sum over target tokens, so callers normalise once per optimiser step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
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


def _linear_of(head: Callable[[torch.Tensor], torch.Tensor]) -> nn.Linear | None:
    """``head`` when it is a plain ``nn.Linear`` whose weight is materialised here (not a LoRA / PEFT wrapper, not a
    ZeRO-3 placeholder or a sharded DTensor, no hooks), so its weight may be used directly; else None."""
    if type(head) is not nn.Linear or head._forward_hooks or head._forward_pre_hooks:
        return None
    weight = head.weight
    if weight.dim() != 2 or tuple(weight.shape) != (head.out_features, head.in_features):
        return None
    if hasattr(weight, "to_local"):  # a sharded DTensor outside its owner's forward: let the module call gather it
        return None
    return head


def _transform(logits: torch.Tensor, softcap: float | None, scale: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's logits from the head's output (in place), and tanh(z / softcap) when softcapped (for the gradient)."""
    if scale is not None:
        logits.mul_(scale)
    if softcap is None:
        return logits, None
    t = logits.div_(softcap).tanh_()
    return t * softcap, t


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``transform(states @ weight.T + bias)``, with the gradient computed in the forward.

    Each chunk's logits are made once: the loss and d loss / d logits (softmax minus one-hot) come from the same
    buffer, and the two gradient matmuls run at once. Backward only scales the stored gradients. Against recomputing
    the chunk in backward (activation checkpointing) this saves one head matmul and one softmax per chunk, the
    head's largest costs on a CPU. Peak memory: one chunk of logits, plus the gradients of ``states`` and ``weight``.
    The matmuls run in the autocast dtype when autocast is on (the weight cast once per call), the softmax in fp32.
    """

    @staticmethod
    def forward(ctx: Any, states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
                chunk_size: int, softcap: float | None, scale: float | None) -> torch.Tensor:
        dev = states.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else states.dtype
        acc = torch.promote_types(dtype, torch.float32)  # softmax and gradient sums in fp32 (or fp64)
        need_w = ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        with torch.autocast(device_type=dev, enabled=False):
            w = weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            total = torch.zeros((), dtype=acc, device=states.device)
            grad_states = torch.empty_like(states)
            grad_w = torch.zeros_like(weight, dtype=acc) if need_w else None
            grad_b = torch.zeros_like(bias, dtype=acc) if need_b else None
            for start in range(0, states.shape[0], chunk_size):
                h = states[start : start + chunk_size].to(dtype)
                y = target[start : start + chunk_size].unsqueeze(1)
                raw = h @ w.T if b is None else torch.addmm(b, h, w.T)  # [n, V] in the compute dtype
                z, t = _transform(raw.to(acc), softcap, scale)  # fp32 logits (raw itself when it is fp32)
                # log-sum-exp and softmax in place in z's buffer: a [n, V] pass each, no [n, V] temporaries
                z_y = z.gather(1, y)
                top = z.amax(dim=1, keepdim=True)
                g = z.sub_(top).exp_()
                norm = g.sum(dim=1, keepdim=True)
                total += (norm.log() + top - z_y).sum()
                g.div_(norm)  # softmax
                g.scatter_add_(1, y, g.new_full(y.shape, -1.0))  # minus one-hot: d loss / d logits
                if t is not None:
                    g.mul_(1.0 - t * t)  # through softcap * tanh(x / softcap)
                if scale is not None:
                    g.mul_(scale)
                g = raw.copy_(g) if raw.dtype != g.dtype else g  # back to the compute dtype in raw's buffer
                grad_states[start : start + chunk_size] = (g @ w).to(states.dtype)
                if grad_w is not None:
                    grad_w += (g.T @ h).to(acc)
                if grad_b is not None:
                    grad_b += g.sum(0).to(acc)
        ctx.save_for_backward(grad_states, grad_w, grad_b)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_states, grad_w, grad_b = ctx.saved_tensors
        # In place: the stored gradients are used once (a second backward through this graph is not supported).
        return (
            grad_states.mul_(grad_out.to(grad_states.dtype)) if ctx.needs_input_grad[0] else None,
            None if grad_w is None else grad_w.mul_(grad_out).to(ctx.weight_dtype),
            None if grad_b is None else grad_b.mul_(grad_out).to(ctx.bias_dtype),
            None, None, None, None,
        )


def fused_next_token_loss(
    hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    shift_labels: torch.Tensor,
    chunk_size: int = 1024,
    softcap: float | None = None,
    logit_scale: float | None = None,
    grad_in_forward: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy computed from final hidden states without full-size logits.

    hidden: [B, T, H] final (post-norm) states; head: the output projection (e.g. ``lm_head``, LoRA
    wrappers included); shift_labels: [B, T] as in :func:`next_token_loss_from_logits`.
    Only positions with a target are projected, ``chunk_size`` at a time, so peak memory holds one chunk of fp32
    logits instead of B*T*V. A plain ``nn.Linear`` head computes each chunk's gradients in the forward
    (:class:`_LinearCrossEntropy`: one head matmul and one softmax fewer than recomputing) unless
    ``grad_in_forward=False``; any other head (LoRA, ZeRO-3) recomputes each chunk's logits in backward (activation
    checkpointing). Equal to the unfused loss up to float rounding.
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
    linear = _linear_of(head) if grad_in_forward else None
    if linear is not None and torch.is_grad_enabled() and (states.requires_grad or linear.weight.requires_grad):
        total = _LinearCrossEntropy.apply(states, linear.weight, linear.bias, target, chunk_size, softcap, logit_scale)
        return total.float(), count
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, states.shape[0], chunk_size):
        h = states[start : start + chunk_size]
        y = target[start : start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            total = total + checkpoint(_chunk_ce, head, h, y, softcap, logit_scale, use_reentrant=False)
        else:
            total = total + _chunk_ce(head, h, y, softcap, logit_scale)
    return total, count
