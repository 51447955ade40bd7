"""Pooling of token states into sentence vectors over token spans (padding never counts)."""

from __future__ import annotations

import torch


def span_mask(starts: torch.Tensor, ends: torch.Tensor, seq_len: int, shift: int = 0, floor: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask [N, T] that is True on positions ``starts[n] - shift <= t < ends[n] - shift``.

    starts, ends: [N] int tensors (end exclusive). ``shift=1`` selects the positions whose output
    predicts the span's tokens (next-token alignment). Positions are clamped to [floor[n], T): ``floor``
    [N] is where span n's row begins (packed sequences; default 0), so a shift never reaches the row before.
    """
    pos = torch.arange(seq_len, device=starts.device).unsqueeze(0)  # [1, T]
    lo, hi = starts - shift, ends - shift
    if floor is None:
        lo, hi = lo.clamp(min=0), hi.clamp(min=0)
    else:
        lo, hi = torch.maximum(lo, floor), torch.maximum(hi, floor)
    return (pos >= lo.unsqueeze(1)) & (pos < hi.unsqueeze(1))


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` [N, T, H] over the True positions of ``mask`` [N, T] -> [N, H].

    Computed as a batched (1 x T) @ (T x H) product with weights 1/count, so no masked copy of
    the states is made. Rows with an empty mask give zeros (callers drop such rows).
    """
    w = mask.to(hidden.dtype)
    w = w / w.sum(dim=1, keepdim=True).clamp(min=1.0)
    return torch.bmm(w.unsqueeze(1), hidden).squeeze(1)


def pool_spans(
    hidden: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, shift: int = 0, row: torch.Tensor | None = None,
    floor: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean-pool one span per sequence, or several spans per sequence when ``row`` is given.

    hidden: [B, T, H] states; starts/ends: [N] token offsets (end exclusive); row: [N] which
    sequence each span lives in (packed sequences); floor: see :func:`span_mask`. Without ``row``,
    span n is in sequence n (N == B). No copy of the states is made either way: with ``row`` the
    weights are [N, B * T] over the flattened states. Returns [N, H].
    """
    mask = span_mask(starts, ends, hidden.shape[1], shift, floor)  # [N, T]
    if row is None:
        return masked_mean(hidden, mask)
    B, T, H = hidden.shape
    placed = mask.new_zeros((mask.shape[0], B, T))
    placed[torch.arange(mask.shape[0], device=mask.device), row] = mask
    w = placed.reshape(-1, B * T).to(hidden.dtype)
    w = w / w.sum(dim=1, keepdim=True).clamp(min=1.0)
    return w @ hidden.reshape(B * T, H)


def span_batch(
    input_ids: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, prefix: int | None, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut span n of sequence n out of ``input_ids`` [N, T] into a batch of its own, right-padded.

    Each span becomes ``[prefix] + input_ids[n, starts[n]:ends[n]]`` (no prefix when ``prefix`` is None), so the
    sentence can be encoded alone, as an analysis encodes it. Returns (ids [N, S], attention_mask [N, S],
    content [N, S]: True on the span's own tokens, i.e. what to pool; the prefix and padding are excluded).
    """
    lengths = (ends - starts).clamp(min=0)
    lead = 0 if prefix is None else 1
    width = max(int(lengths.max().item()) if lengths.numel() else 0, 1) + lead
    pos = torch.arange(width, device=input_ids.device).unsqueeze(0)  # [1, S]
    content = (pos >= lead) & (pos < lengths.unsqueeze(1) + lead)
    # Source column of each content position in the original sequence (clamped where it is not content).
    src = (starts.unsqueeze(1) + pos - lead).clamp(0, input_ids.shape[1] - 1)
    ids = torch.where(content, torch.gather(input_ids, 1, src), torch.full_like(src, pad_id))
    if prefix is not None:
        ids[:, 0] = prefix
    mask = content.clone()
    if prefix is not None:
        mask[:, 0] = True
    return ids, mask.long(), content


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """State of the last non-padding token of each row: hidden [B, T, H], attention_mask [B, T] -> [B, H].

    Works for left and right padding.
    """
    T = attention_mask.shape[1]
    pos = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)
    last = torch.where(attention_mask.bool(), pos, torch.full_like(pos, -1)).max(dim=1).values.clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
