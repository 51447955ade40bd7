"""Render rows into token ids: translation instructions with x/y spans (stage 1), instructions with prompt masking (stage 2)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from alignx import languages
from alignx.data.readers import Instruction, Pair
from alignx.objectives.ntp import IGNORE_INDEX

_LANG_INDEX = {lang.code: i for i, lang in enumerate(languages.all_languages())}

# Used when the tokenizer has no chat template.
ALPACA_PROMPT = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"


def lang_id(code: str) -> int:
    """Stable integer id of a canonical language code (row of the language table)."""
    return _LANG_INDEX[languages.normalize(code)]


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    x_span: tuple[int, int] | None = None  # token offsets [start, end) of the source sentence
    y_span: tuple[int, int] | None = None  # token offsets of the target sentence, final EOS excluded
    src_lang: int = -1
    tgt_lang: int = -1


@dataclass
class RenderStats:
    rendered: int = 0
    dropped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        drops = ", ".join(f"{n} {why}" for why, n in self.dropped.items())
        return f"{self.rendered} rows" + (f" ({drops} dropped)" if drops else "")


def fill_template(template: str, pair: Pair) -> str:
    return template.format(
        src=pair.src,
        src_lang=pair.src_lang,
        tgt_lang=pair.tgt_lang,
        src_name=languages.name(pair.src_lang),
        tgt_name=languages.name(pair.tgt_lang),
    )


def _token_span(offsets: list[tuple[int, int]], lo: int, hi: int) -> tuple[int, int] | None:
    idx = [i for i, (a, b) in enumerate(offsets) if b > a and a < hi and b > lo]
    return (idx[0], idx[-1] + 1) if idx else None


def _eos(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set one (tokenizer.eos_token) before training")
    return int(tokenizer.eos_token_id)


def render_translation(
    pair: Pair,
    tokenizer: Any,
    template: str,
    max_length: int,
    loss_on_prompt: bool,
    stats: RenderStats | None = None,
) -> Example | None:
    """Tokenise ``<template with x> <y><eos>`` and locate x and y as token spans.

    Spans come from the fast tokenizer's character offsets, so the sequence is tokenised exactly as
    one string would be (no seams at span borders). A token that straddles a border counts in the
    span. Rows longer than ``max_length`` are truncated; a row whose y is not complete after
    truncation is dropped (returns None) and counted, as the reference drops rows with a truncated
    target.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("alignx needs a fast (Rust) tokenizer to locate the x/y token spans")
    prompt_head, _, prompt_tail = template.partition("{src}")
    head = fill_template(prompt_head, pair) if "{" in prompt_head else prompt_head
    tail = fill_template(prompt_tail, pair) if "{" in prompt_tail else prompt_tail
    text = head + pair.src + tail.rstrip() + " "
    x_lo, x_hi = len(head), len(head) + len(pair.src)
    y_lo = len(text)
    text += pair.tgt
    y_hi = len(text)
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    ids.append(_eos(tokenizer))
    offsets.append((0, 0))
    x_span = _token_span(offsets, x_lo, x_hi)
    y_span = _token_span(offsets, y_lo, y_hi)
    if x_span is None or y_span is None:
        if stats is not None:
            stats.dropped["empty span"] += 1
        return None
    if len(ids) > max_length:
        if y_span[1] > max_length - 1:  # y and its EOS must fit
            if stats is not None:
                stats.dropped["target truncated"] += 1
            return None
        ids = ids[:max_length]
    labels = list(ids) if loss_on_prompt else [IGNORE_INDEX] * y_span[0] + ids[y_span[0] :]
    if stats is not None:
        stats.rendered += 1
    return Example(ids, labels, x_span, y_span, lang_id(pair.src_lang), lang_id(pair.tgt_lang))


def render_instruction(
    row: Instruction,
    tokenizer: Any,
    max_length: int,
    use_chat_template: bool = True,
    stats: RenderStats | None = None,
) -> Example | None:
    """Tokenise a conversation; only the final assistant answer (and EOS) carries labels."""
    msgs = row.messages
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs, tokenize=False)
        if not full.startswith(prompt):  # unusual templates: answer appended verbatim
            full = prompt + msgs[-1]["content"]
        add_special = False  # chat templates write their own BOS
    else:
        parts = [ALPACA_PROMPT]
        for m in msgs[:-1]:
            tag = {"system": "### System", "user": "### Instruction", "assistant": "### Response"}[m["role"]]
            parts.append(f"{tag}:\n{m['content']}\n\n")
        parts.append("### Response:\n")
        prompt = "".join(parts)
        full = prompt + msgs[-1]["content"]
        add_special = True
    enc = tokenizer(full, add_special_tokens=add_special, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    eos = _eos(tokenizer)
    if not ids or ids[-1] != eos:
        ids.append(eos)
        offsets.append((len(full), len(full) + 1))
    # A token is an answer token when it ends after the prompt (trailing template tokens included).
    first = next((i for i, (a, b) in enumerate(offsets) if b > len(prompt) or (a == b and a >= len(prompt))), len(ids))
    if first >= max_length:
        if stats is not None:
            stats.dropped["answer truncated"] += 1
        return None
    ids = ids[:max_length]
    labels = [IGNORE_INDEX] * first + ids[first:]
    if stats is not None:
        stats.rendered += 1
    return Example(ids, labels)


class ExampleDataset(Dataset):
    """A list of rendered examples as tensors-to-be; shuffling is the trainer's job."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


def both_directions(pairs: list[Pair]) -> list[Pair]:
    return pairs + [Pair(p.tgt, p.src, p.tgt_lang, p.src_lang) for p in pairs]


def subsample(items: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(items):
        return items
    rng = random.Random(seed)
    return rng.sample(items, n)


class Collator:
    """Pads a list of :class:`Example` into a batch dict.

    Output: input_ids, attention_mask, labels [B, T] (IGNORE_INDEX on padding), shift_labels [B, T]
    (labels shifted left: the token each position predicts; the Trainer counts tokens from it), and
    for stage 1 rows x_start, x_end, y_start, y_end, src_lang, tgt_lang [B].
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = 8) -> None:
        self.pad = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, batch: list[Example]) -> dict[str, torch.Tensor]:
        T = max(len(e.input_ids) for e in batch)
        if self.multiple:
            T = -(-T // self.multiple) * self.multiple
        B = len(batch)
        input_ids = torch.full((B, T), self.pad, dtype=torch.long)
        attention = torch.zeros((B, T), dtype=torch.long)
        labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        for i, e in enumerate(batch):
            n = len(e.input_ids)
            input_ids[i, :n] = torch.tensor(e.input_ids)
            attention[i, :n] = 1
            labels[i, :n] = torch.tensor(e.labels)
        shift = torch.full_like(labels, IGNORE_INDEX)
        shift[:, :-1] = labels[:, 1:]
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "shift_labels": shift}
        if all(e.x_span is not None for e in batch):
            out["x_start"] = torch.tensor([e.x_span[0] for e in batch])
            out["x_end"] = torch.tensor([e.x_span[1] for e in batch])
            out["y_start"] = torch.tensor([e.y_span[0] for e in batch])
            out["y_end"] = torch.tensor([e.y_span[1] for e in batch])
            out["src_lang"] = torch.tensor([e.src_lang for e in batch])
            out["tgt_lang"] = torch.tensor([e.tgt_lang for e in batch])
        return out
