"""Sequence packing for stage 1 (``data.packing``): several rows per sequence, each row attending only to itself.

A micro-batch is still ``optim.batch_size`` rows, drawn as without packing; :class:`PackingCollator` only lays
them out differently: first-fit decreasing into as few sequences of at most ``capacity`` tokens as it finds
(``data.max_length``), with position ids restarting at 0 for every row. No 2-D attention mask is given, so
transformers reads the packed layout from the position ids (``masking_utils.find_packed_sequence_indices``):
sdpa / eager / flex get a block-diagonal causal mask (and a sliding window in row positions); flash attention
gets the rows' cumulative lengths (:func:`packed_forward_kwargs`) and runs varlen. Every loss term then sees the
same rows, tokens and pairs as the unpacked micro-batch, and equals it up to float rounding (tests/test_packing.py).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from alignx.config import ConfigError
from alignx.data.render import Example, as_example
from alignx.objectives.ntp import IGNORE_INDEX

log = logging.getLogger(__name__)


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: the row indices of each packed sequence, no sequence over ``capacity`` tokens.

    Rows are placed longest first (ties in row order) into the first sequence with room; a row longer than
    ``capacity`` gets a sequence of its own. Within a sequence, rows keep the order they were placed in.
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        at = next((k for k, free in enumerate(room) if n <= free), None)
        if at is None:
            bins.append([i])
            room.append(capacity - n)
        else:
            bins[at].append(i)
            room[at] -= n
    return bins


class PackingCollator:
    """Packs the rows of a micro-batch (:class:`Example` or their field dicts) into sequences of at most ``capacity`` tokens.

    Output (K packed sequences of T tokens, B rows):
      input_ids, labels, shift_labels, position_ids [K, T]: position ids restart at 0 for every row; the padding
        after the last row of a sequence is a segment of its own (positions from 0, labels IGNORE_INDEX);
        shift_labels is shifted within each row (a row's last token predicts nothing), so use it, not labels;
      packed_row [B]: the sequence that holds row b; x_start, x_end, y_start, y_end [B]: token offsets in that
        sequence; src_lang, tgt_lang [B]. Rows keep their micro-batch order in every [B] tensor.
    No attention_mask: transformers detects packed rows from position ids only when it gets none.
    """

    def __init__(self, pad_token_id: int, capacity: int, pad_to_multiple_of: int | None = 8) -> None:
        self.pad = pad_token_id
        self.capacity = capacity
        self.multiple = pad_to_multiple_of

    def __call__(self, batch: list[Example | dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [e if isinstance(e, Example) else as_example(e) for e in batch]
        if not all(e.x_span is not None and e.y_span is not None for e in rows):
            raise ValueError("data.packing: every row needs x and y spans (stage-1 translation rows)")
        bins = pack_rows([len(e.input_ids) for e in rows], self.capacity)
        T = max(sum(len(rows[i].input_ids) for i in b) for b in bins)
        if self.multiple:
            T = -(-T // self.multiple) * self.multiple
        K, B = len(bins), len(rows)
        input_ids = torch.full((K, T), self.pad, dtype=torch.long)
        labels = torch.full((K, T), IGNORE_INDEX, dtype=torch.long)
        shift = torch.full((K, T), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((K, T), dtype=torch.long)
        packed_row = torch.zeros(B, dtype=torch.long)
        offset = torch.zeros(B, dtype=torch.long)
        for k, members in enumerate(bins):
            at = 0
            for i in members:
                e = rows[i]
                n = len(e.input_ids)
                input_ids[k, at : at + n] = torch.tensor(e.input_ids)
                labels[k, at : at + n] = torch.tensor(e.labels)
                shift[k, at : at + n - 1] = labels[k, at + 1 : at + n]
                position_ids[k, at : at + n] = torch.arange(n)
                packed_row[i], offset[i] = k, at
                at += n
            position_ids[k, at:] = torch.arange(T - at)  # padding: one more segment, which no row attends to
        return {
            "input_ids": input_ids,
            "labels": labels,
            "shift_labels": shift,
            "position_ids": position_ids,
            "packed_row": packed_row,
            "x_start": torch.tensor([e.x_span[0] for e in rows]) + offset,
            "x_end": torch.tensor([e.x_span[1] for e in rows]) + offset,
            "y_start": torch.tensor([e.y_span[0] for e in rows]) + offset,
            "y_end": torch.tensor([e.y_span[1] for e in rows]) + offset,
            "src_lang": torch.tensor([e.src_lang for e in rows]),
            "tgt_lang": torch.tensor([e.tgt_lang for e in rows]),
        }


def row_starts(x_start: torch.Tensor, position_ids: torch.Tensor, packed_row: torch.Tensor) -> torch.Tensor:
    """Offset of each row's first token in its packed sequence [B]: x's offset minus x's position within the row."""
    return x_start - position_ids[packed_row, x_start]


def packed_forward_kwargs(lm: nn.Module, position_ids: torch.Tensor) -> dict[str, Any]:
    """The keyword arguments that keep packed rows apart in ``lm``'s forward.

    ``position_ids`` and no attention mask for every attention implementation (transformers builds the
    block-diagonal mask from them); for flash attention also the segments' cumulative lengths over the flattened
    [K * T] tokens (padding segments included), which transformers reads from position ids by itself only when
    K is 1.
    """
    kwargs: dict[str, Any] = {"position_ids": position_ids, "attention_mask": None}
    if "flash" in str(getattr(lm.config, "_attn_implementation", "")):
        from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

        (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(position_ids)
        kwargs.update(cu_seq_lens_q=cu_q, cu_seq_lens_k=cu_k, max_length_q=int(max_q), max_length_k=int(max_k))
    return kwargs


@torch.no_grad()
def check_rows_stay_apart(lm: nn.Module) -> None:
    """ConfigError unless ``lm`` keeps packed rows apart: two rows packed into one sequence, and the second row's
    final states must not change when the first row's tokens do (one forward of 12 tokens, twice, where the model is).
    Skipped for flash attention on a model still on the CPU (FSDP / DeepSpeed place it later; the kernels need a GPU)."""
    device = next(lm.parameters()).device
    impl = getattr(lm.config, "_attn_implementation", None)
    if device.type == "cpu" and "flash" in str(impl):
        log.info("data.packing: %s keeps rows apart by cu_seq_lens; not checked (the model is not on a GPU yet)", impl)
        return
    vocab = int(lm.get_input_embeddings().weight.shape[0])
    g = torch.Generator().manual_seed(0)
    first_a, first_b, second = (torch.randint(0, vocab, (n,), generator=g) for n in (7, 7, 5))
    position_ids = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0).to(device)
    was_training = lm.training
    lm.eval()
    try:
        states = []
        for first in (first_a, first_b):
            ids = torch.cat([first, second]).unsqueeze(0).to(device)
            out = lm(input_ids=ids, use_cache=False, output_hidden_states=True, **packed_forward_kwargs(lm, position_ids))
            states.append(out.hidden_states[-1][0, 7:].float())
    finally:
        lm.train(was_training)
    scale = states[0].abs().max().clamp(min=1e-6)
    if not bool(((states[0] - states[1]).abs().max() <= 1e-3 * scale).item()):
        raise ConfigError(f"data.packing=true: this model (attn_implementation={impl}) lets a packed row attend to the row "
                          "before it (its attention ignores packed position ids); set data.packing=false or another "
                          "model.attn_implementation")
