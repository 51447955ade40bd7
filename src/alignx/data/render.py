"""Render rows into token ids: translation instructions with x/y spans (stage 1), instructions with prompt masking (stage 2)."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from alignx import languages
from alignx.config import TRANSLATION_INSTRUCTION, ConfigError
from alignx.data.readers import Instruction, Pair
from alignx.objectives.ntp import IGNORE_INDEX

_LANG_INDEX = {lang.code: i for i, lang in enumerate(languages.all_languages())}

# The reference's template (Alpaca-LoRA's alpaca.json). prompt_input renders translation rows (x as the
# input, y as the response) and Alpaca rows with an input; prompt_no_input renders rows without one.
ALPACA_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = ALPACA_PREAMBLE + "### Instruction:\n{instruction}\n\n### Response:\n"


def lang_id(code: str) -> int:
    """Stable integer id of a language: its row among alignx's built-in languages, else its canonical
    code's ASCII bytes as one integer (at most 8 bytes, so it fits int64 and never meets a row number)."""
    canonical = languages.normalize(code)
    return _LANG_INDEX.get(canonical, int.from_bytes(canonical.encode("ascii"), "big"))


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    x_span: tuple[int, int] | None = None  # token offsets [start, end) of the source sentence
    y_span: tuple[int, int] | None = None  # token offsets of the target sentence, final EOS excluded
    src_lang: int = -1
    tgt_lang: int = -1


DIGEST_COLUMNS = ("input_ids", "labels", "x_span", "y_span", "src_lang", "tgt_lang")


class RowDigest:
    """Digest of rendered rows (ids, labels, spans, languages) in order, fed in batches of any size: per column, one
    stream of its list lengths (-1 for none) and one of its values, int64 little-endian; the digest hashes the streams'
    digests in :data:`DIGEST_COLUMNS` order. :func:`data_digest` feeds it :class:`Example` rows,
    :func:`alignx.data.dataset.build` Arrow record batches; both give the same digest for the same rows."""

    def __init__(self) -> None:
        self.streams = {(name, part): hashlib.blake2b(digest_size=16) for name in DIGEST_COLUMNS for part in ("lengths", "values")}

    def update(self, name: str, lengths: Any, values: Any) -> None:
        """Add rows of one column: ``lengths`` (None for a scalar column) and the flat ``values``, as numpy arrays."""
        import numpy as np

        if lengths is not None:
            self.streams[name, "lengths"].update(np.ascontiguousarray(lengths, dtype="<i8").tobytes())
        self.streams[name, "values"].update(np.ascontiguousarray(values, dtype="<i8").tobytes())

    def hexdigest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for key in sorted(self.streams, key=lambda k: (DIGEST_COLUMNS.index(k[0]), k[1])):
            h.update(self.streams[key].digest())
        return h.hexdigest()


def data_digest(examples: Iterable[Example]) -> str:
    """:class:`RowDigest` of rendered rows."""
    import numpy as np

    rows = list(examples)
    d = RowDigest()
    for name in DIGEST_COLUMNS:
        values = [getattr(e, name) for e in rows]
        if name in ("src_lang", "tgt_lang"):
            d.update(name, None, np.asarray(values, dtype=np.int64))
        else:
            lengths = np.asarray([len(v) if v is not None else -1 for v in values], dtype=np.int64)
            d.update(name, lengths, np.fromiter((t for v in values if v is not None for t in v), dtype=np.int64))
    return d.hexdigest()


@dataclass
class RenderStats:
    rendered: int = 0
    dropped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        drops = ", ".join(f"{n} {why}" for why, n in self.dropped.items())
        return f"{self.rendered} rows" + (f" ({drops} dropped)" if drops else "")


def template_fields(pair: Pair, instruction: str) -> dict[str, str]:
    """The fields a translation template may use, except {src}: language codes and names, and the instruction."""
    names = {
        "src_lang": pair.src_lang,
        "tgt_lang": pair.tgt_lang,
        "src_name": languages.name(pair.src_lang),
        "tgt_name": languages.name(pair.tgt_lang),
    }
    return {**names, "instruction": instruction.format(**names)}


def translation_text(pair: Pair, tokenizer: Any, template: str, instruction: str) -> tuple[str, tuple[int, int], tuple[int, int], bool]:
    """One translation row as a string: (text, x's characters, y's characters, add the tokenizer's special tokens?).

    ``template``: ``alpaca`` (the reference's prompt_input, x as the input, y as the response), ``chat``
    (the tokenizer's chat template: instruction and x in the user turn, y as the assistant's answer; the
    template writes its own special tokens) or free text with ``{src}``, which y follows directly.
    Character ranges are [start, end); the EOS is not part of the text.
    """
    fields = template_fields(pair, instruction)
    if template == "chat":
        return _chat_text(tokenizer, fields["instruction"] + "\n\n", pair.src, pair.tgt)
    if template == "alpaca":
        head, _, tail = ALPACA_PROMPT_INPUT.partition("{input}")
        head = head.replace("{instruction}", fields["instruction"])
    else:
        head, _, tail = template.partition("{src}")
        head, tail = head.format(**fields), tail.format(**fields)
    text = head + pair.src + tail + pair.tgt
    return text, (len(head), len(head) + len(pair.src)), (len(text) - len(pair.tgt), len(text)), True


def _chat_text(tokenizer: Any, user_head: str, x: str, y: str) -> tuple[str, tuple[int, int], tuple[int, int], bool]:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("data.template=chat but the tokenizer has no chat template; use data.template=alpaca or a free text")
    user = [{"role": "user", "content": user_head + x}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": y}], tokenize=False)
    at = prompt.find(user_head + x)
    if at < 0:
        raise ConfigError("data.template=chat: the chat template rewrites the user message, so x cannot be located; use alpaca or a free text")
    x_lo = at + len(user_head)
    y_lo = full.find(y, len(prompt)) if full.startswith(prompt) else -1
    if y_lo < 0:  # unusual templates: the answer appended to the generation prompt verbatim
        full, y_lo = prompt + y, len(prompt)
    return full, (x_lo, x_lo + len(x)), (y_lo, y_lo + len(y)), False


def _token_span(offsets: list[tuple[int, int]], lo: int, hi: int) -> tuple[int, int] | None:
    idx = [i for i, (a, b) in enumerate(offsets) if b > a and a < hi and b > lo]
    return (idx[0], idx[-1] + 1) if idx else None


def _eos(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no EOS token; give a tokenizer that has one (model.tokenizer)")
    return int(tokenizer.eos_token_id)


def _drop(stats: RenderStats | None, why: str) -> None:
    if stats is not None:
        stats.dropped[why] += 1


def render_translation(
    pair: Pair,
    tokenizer: Any,
    template: str,
    max_length: int,
    loss_on_prompt: bool,
    stats: RenderStats | None = None,
    *,
    instruction: str = TRANSLATION_INSTRUCTION,
    truncate: bool = False,
) -> Example | None:
    """Tokenise a translation row (see :func:`translation_text`) plus EOS, and locate x and y as token spans.

    Spans come from the fast tokenizer's character offsets over the whole string, so the sequence is
    tokenised exactly as one string (no seams at span borders); a token that straddles a border counts
    in the span. y's span ends before the final EOS (and before a chat template's end-of-turn tokens).
    A row longer than ``max_length`` is dropped (``truncate=False``), or cut to ``max_length`` tokens,
    EOS included, and dropped only when no token of y is left (``truncate=True``, the reference). Drops
    are counted in ``stats``. Labels: every token (``loss_on_prompt``) or y and what follows it.
    """
    return render_translations([pair], tokenizer, template, max_length, loss_on_prompt, stats, instruction=instruction, truncate=truncate)[0]


def render_translations(
    pairs: list[Pair],
    tokenizer: Any,
    template: str,
    max_length: int,
    loss_on_prompt: bool,
    stats: RenderStats | None = None,
    *,
    instruction: str = TRANSLATION_INSTRUCTION,
    truncate: bool = False,
) -> list[Example | None]:
    """:func:`render_translation` of many rows with one batched tokenizer call (the same ids and spans row by row)."""
    rows = _render_translation_rows(pairs, tokenizer, template, max_length, loss_on_prompt, instruction=instruction, truncate=truncate)
    return _count(rows, stats)


def _count(rows: list[Example | str], stats: RenderStats | None) -> list[Example | None]:
    """Rendered rows with each dropped one (its reason) as None, counted in ``stats``."""
    out: list[Example | None] = []
    for r in rows:
        if isinstance(r, str):
            _drop(stats, r)
            out.append(None)
        else:
            if stats is not None:
                stats.rendered += 1
            out.append(r)
    return out


def _render_translation_rows(
    pairs: list[Pair], tokenizer: Any, template: str, max_length: int, loss_on_prompt: bool, *, instruction: str, truncate: bool,
) -> list[Example | str]:
    """Rendered translation rows, a dropped one as the reason it was dropped."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("alignx needs a fast (Rust) tokenizer to locate the x/y token spans; give one with model.tokenizer")
    texts = [translation_text(p, tokenizer, template, instruction) for p in pairs]
    encs = _encode(tokenizer, [(t[0], t[3]) for t in texts])
    eos = _eos(tokenizer)
    out = []
    for pair, (_, x_chars, y_chars, _), enc in zip(pairs, texts, encs, strict=True):
        out.append(_finish_translation(enc, x_chars, y_chars, eos, max_length, loss_on_prompt, truncate,
                                       lang_id(pair.src_lang), lang_id(pair.tgt_lang)))
    return out


class _Encoded:
    """One tokenised text: ``ids``, and the tokens that overlap a character range (:meth:`span`).

    From a Rust ``tokenizers.Encoding`` (``enc``), spans come from ``char_to_token`` at the range's ends, widened over
    neighbours that also overlap (several byte-fallback tokens can share one character), so no offset list is built;
    else (``offsets``) by scanning the offsets. Both give the tokens with ``start < end`` that overlap the range.
    """

    __slots__ = ("enc", "ids", "offsets")

    def __init__(self, ids: list[int], enc: Any = None, offsets: list[tuple[int, int]] | None = None) -> None:
        self.ids, self.enc, self.offsets = ids, enc, offsets

    def span(self, lo: int, hi: int) -> tuple[int, int] | None:
        if self.enc is None:
            return _token_span(self.offsets, lo, hi)
        enc, n = self.enc, len(self.ids)
        first = next((t for c in range(lo, hi) if (t := enc.char_to_token(c)) is not None), None)
        if first is None:
            return None
        last = next(t for c in range(hi - 1, lo - 1, -1) if (t := enc.char_to_token(c)) is not None)

        def overlaps(i: int) -> bool:
            chars = enc.token_to_chars(i)
            return chars is not None and chars[1] > chars[0] and chars[0] < hi and chars[1] > lo

        while first > 0 and overlaps(first - 1):
            first -= 1
        while last + 1 < n and overlaps(last + 1):
            last += 1
        return first, last + 1

    def offset_list(self) -> list[tuple[int, int]]:
        return self.offsets if self.offsets is not None else list(self.enc.offsets)


def _encode(tokenizer: Any, texts: list[tuple[str, bool]]) -> list[_Encoded]:
    """Each (text, add the special tokens?) tokenised, one batched tokenizer call per flag value.

    The Rust tokenizer's ``encode_batch`` is called directly (transformers' wrapper costs as much again per row), when
    it truncates and pads nothing and agrees with ``tokenizer(text)`` on the batch's first row; else the wrapper.
    """
    out: list[Any] = [None] * len(texts)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    for flag in {f for _, f in texts}:
        idx = [i for i, (_, f) in enumerate(texts) if f == flag]
        batch = [texts[i][0] for i in idx]
        encs = None
        if backend is not None and backend.truncation is None and backend.padding is None:
            raw = backend.encode_batch(batch, add_special_tokens=flag)
            ref = tokenizer(batch[0], add_special_tokens=flag, return_offsets_mapping=True)
            if raw[0].ids == list(ref["input_ids"]) and raw[0].offsets == [tuple(o) for o in ref["offset_mapping"]]:
                encs = [_Encoded(e.ids, enc=e) for e in raw]
        if encs is None:
            enc = tokenizer(batch, add_special_tokens=flag, return_offsets_mapping=True)
            encs = [_Encoded(list(ids), offsets=[tuple(o) for o in offs]) for ids, offs in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]
        for i, e in zip(idx, encs, strict=True):
            out[i] = e
    return out


def _finish_translation(
    enc: _Encoded, x_chars: tuple[int, int], y_chars: tuple[int, int], eos: int,
    max_length: int, loss_on_prompt: bool, truncate: bool, src_lang: int, tgt_lang: int,
) -> Example | str:
    x_span = enc.span(*x_chars)
    y_span = enc.span(*y_chars)
    if x_span is None or y_span is None:
        return "empty span"
    ids = enc.ids
    if ids[-1] != eos:  # a post-processor or the chat template may have written it already
        ids.append(eos)
    if len(ids) > max_length:
        if not truncate:
            return "too long"
        if y_span[0] >= max_length:
            return "target truncated away"
        ids = ids[:max_length]
        y_span = (y_span[0], min(y_span[1], max_length))
    labels = list(ids) if loss_on_prompt else [IGNORE_INDEX] * y_span[0] + ids[y_span[0] :]
    return Example(ids, labels, x_span, y_span, src_lang, tgt_lang)


def alpaca_prompt(row: Instruction) -> str:
    """The Alpaca-LoRA prompt of an instruction row (the reference's stage-2 format), up to the response.

    Alpaca rows use prompt_input / prompt_no_input exactly; other conversations without a chat template
    continue the same format turn by turn (a single user turn is exactly prompt_no_input).
    """
    return alpaca_turns(row)[0]


def alpaca_turns(row: Instruction) -> tuple[str, list[tuple[int, int]]]:
    """:func:`alpaca_prompt` and the character ranges [start, end) of the earlier answers in it (their text only:
    the format has no end-of-turn marker between turns)."""
    if row.alpaca is not None:
        instruction, inp = row.alpaca
        if inp:
            return ALPACA_PROMPT_INPUT.replace("{instruction}", instruction).replace("{input}", inp), []
        return ALPACA_PROMPT_NO_INPUT.replace("{instruction}", instruction), []
    parts = [ALPACA_PREAMBLE]
    answers = []
    at = len(ALPACA_PREAMBLE)
    for m in row.messages[:-1]:
        head = {"system": "### System", "user": "### Instruction", "assistant": "### Response"}[m["role"]] + ":\n"
        if m["role"] == "assistant":
            answers.append((at + len(head), at + len(head) + len(m["content"])))
        parts.append(f"{head}{m['content']}\n\n")
        at += len(parts[-1])
    parts.append("### Response:\n")
    return "".join(parts), answers


def _chat_answers(tokenizer: Any, msgs: list[dict[str, str]], full: str) -> list[tuple[int, int]]:
    """Character ranges in ``full`` (the whole conversation) of the assistant turns before the last: from the end of
    the prompt that asks for each (generation prompt included) to the end of the conversation through it."""
    answers = []
    for i, m in enumerate(msgs[:-1]):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False)
        if not (full.startswith(before) and full.startswith(through) and len(through) > len(before)):
            raise ConfigError("data.assistant_turns=all: the chat template renders an earlier turn differently once later turns "
                              "follow (e.g. it drops earlier reasoning), so its answer cannot be located; use "
                              "data.assistant_turns=last or a data.chat_template that renders every turn alike")
        answers.append((len(before), len(through)))
    return answers


def render_instruction(
    row: Instruction,
    tokenizer: Any,
    max_length: int,
    use_chat_template: bool = True,
    stats: RenderStats | None = None,
    *,
    loss_on_prompt: bool = False,
    all_turns: bool = False,
) -> Example | None:
    """Tokenise a conversation plus EOS; labels on the final answer and EOS, or on every token (``loss_on_prompt``).

    The tokenizer's chat template when ``use_chat_template`` and it has one, else the Alpaca-LoRA prompt.
    ``all_turns`` (``data.assistant_turns=all``) also labels every earlier assistant answer: with a chat
    template, each answer with the end-of-turn tokens the template writes after it; in the Alpaca format,
    the answer's text. Rows longer than ``max_length`` are cut (as in the reference); a row is dropped only
    when the cut leaves it no label (its answers are cut away and the prompt carries no loss).
    """
    return render_instructions([row], tokenizer, max_length, use_chat_template, stats, loss_on_prompt=loss_on_prompt, all_turns=all_turns)[0]


def render_instructions(
    rows: list[Instruction],
    tokenizer: Any,
    max_length: int,
    use_chat_template: bool = True,
    stats: RenderStats | None = None,
    *,
    loss_on_prompt: bool = False,
    all_turns: bool = False,
) -> list[Example | None]:
    """:func:`render_instruction` of many rows with one batched tokenizer call (the same ids and labels row by row)."""
    return _count(_render_instruction_rows(rows, tokenizer, max_length, use_chat_template, loss_on_prompt=loss_on_prompt,
                                           all_turns=all_turns), stats)


def _render_instruction_rows(
    rows: list[Instruction], tokenizer: Any, max_length: int, use_chat_template: bool, *, loss_on_prompt: bool, all_turns: bool,
) -> list[Example | str]:
    """Rendered instruction rows, a dropped one as the reason it was dropped."""
    texts = [_instruction_text(row, tokenizer, use_chat_template, all_turns) for row in rows]
    encs = _encode(tokenizer, [(full, add_special) for full, _, _, add_special in texts])
    eos = _eos(tokenizer)
    return [_finish_instruction(enc.ids, enc.offset_list(), full, prompt_len, earlier, eos, max_length, loss_on_prompt)
            for (full, prompt_len, earlier, _), enc in zip(texts, encs, strict=True)]


def instruction_prompt(row: Instruction, tokenizer: Any, use_chat_template: bool = True) -> tuple[str, bool]:
    """(the prompt stage 2 trains ``row``'s answer after, add the tokenizer's special tokens?): what a model fine-tuned
    on such rows reads before it answers (the chat template's generation prompt, or the Alpaca-LoRA prompt)."""
    full, prompt_len, _, add_special = _instruction_text(row, tokenizer, use_chat_template, False)
    return full[:prompt_len], add_special


def _instruction_text(row: Instruction, tokenizer: Any, use_chat_template: bool, all_turns: bool) -> tuple[str, int, list[tuple[int, int]], bool]:
    """(the conversation's text, the length of its prompt, the character ranges of the earlier answers that carry the
    loss, add the tokenizer's special tokens?)."""
    msgs = row.messages
    earlier: list[tuple[int, int]] = []
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs, tokenize=False)
        if not full.startswith(prompt):  # unusual templates: answer appended verbatim
            full = prompt + msgs[-1]["content"]
        if all_turns:
            earlier = _chat_answers(tokenizer, msgs, full)
        return full, len(prompt), earlier, False  # chat templates write their own BOS
    prompt, answers = alpaca_turns(row)
    return prompt + msgs[-1]["content"], len(prompt), answers if all_turns else [], True


def _finish_instruction(
    ids: list[int], offsets: list[tuple[int, int]], full: str, prompt_len: int, earlier: list[tuple[int, int]], eos: int,
    max_length: int, loss_on_prompt: bool,
) -> Example | str:
    if not ids or ids[-1] != eos:
        ids.append(eos)
        offsets.append((len(full), len(full) + 1))
    # A token is an answer token when it ends after the prompt (trailing template tokens included).
    first = next((i for i, (a, b) in enumerate(offsets) if b > prompt_len or (a == b and a >= prompt_len)), len(ids))
    # Earlier answers: the tokens that overlap their characters (a token straddling an edge counts).
    in_earlier = [b > a and any(a < hi and b > lo for lo, hi in earlier) for a, b in offsets]
    if not loss_on_prompt and first >= max_length and not any(in_earlier[:max_length]):
        return "answer truncated away"
    ids = ids[:max_length]
    labels = list(ids) if loss_on_prompt else [t if i >= first or in_earlier[i] else IGNORE_INDEX for i, t in enumerate(ids)]
    return Example(ids, labels)


class ExampleDataset(Dataset):
    """A list of rendered examples; shuffling and length grouping are the trainer's job.

    Items are plain dicts of the :class:`Example` fields, as HF datasets yield: the Trainer's
    length-grouped sampler (``optim.group_by_length``) reads ``item["input_ids"]``.
    """

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(vars(self.examples[i]))


def as_example(row: dict[str, Any]) -> Example:
    """An :class:`Example` from a row dict (:class:`ExampleDataset`'s, or a rendered Arrow dataset's, whose spans are
    lists and which has extra columns)."""
    x, y = row.get("x_span"), row.get("y_span")
    return Example(list(row["input_ids"]), list(row["labels"]), tuple(x) if x is not None else None,
                   tuple(y) if y is not None else None, row.get("src_lang", -1), row.get("tgt_lang", -1))


def both_directions(pairs: list[Pair]) -> list[Pair]:
    return pairs + [Pair(p.tgt, p.src, p.tgt_lang, p.src_lang) for p in pairs]


def subsample(items: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(items):
        return items
    rng = random.Random(seed)
    return rng.sample(items, n)


class Collator:
    """Pads a list of :class:`Example` (or their field dicts, as :class:`ExampleDataset` yields) into a batch dict.

    Output: input_ids, attention_mask, labels [B, T] (IGNORE_INDEX on padding), shift_labels [B, T]
    (labels shifted left: the token each position predicts; the Trainer counts tokens from it), and
    for stage 1 rows x_start, x_end, y_start, y_end, src_lang, tgt_lang [B].
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = 8) -> None:
        self.pad = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, batch: list[Example | dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = [e if isinstance(e, Example) else as_example(e) for e in batch]
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
