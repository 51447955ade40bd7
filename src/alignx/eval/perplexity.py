"""Per-language perplexity of plain sentences (no prompt): the "no regression in English" check.

Each sentence is scored alone, BOS (when the tokenizer adds one) + sentence tokens, and every token
after the first is predicted. Per-sentence summed NLL and token counts are kept so that two models can
be compared with a paired bootstrap over sentences (``alignx.eval.stats``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from alignx.data.readers import read_parallel
from alignx.eval.alignment import _model_device, _pad_id


def sentences_by_language(paths: Sequence[str], langs: Sequence[str], max_sentences: int) -> dict[str, list[str]]:
    """Distinct sentences of each language in ``langs`` from parallel files (either side), in file order."""
    out: dict[str, list[str]] = {lang: [] for lang in langs}
    seen: dict[str, set[str]] = {lang: set() for lang in langs}
    for path in paths:
        for pair in read_parallel(path):
            for text, lang in ((pair.src, pair.src_lang), (pair.tgt, pair.tgt_lang)):
                if lang in out and text not in seen[lang] and len(out[lang]) < max_sentences:
                    seen[lang].add(text)
                    out[lang].append(text)
    return out


@torch.no_grad()
def sentence_nll(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 8, max_length: int = 256) -> tuple[list[float], list[int]]:
    """(summed NLL in nats, number of predicted tokens) per sentence."""
    was_training = model.training
    model.eval()
    device = _model_device(model)
    pad = _pad_id(tokenizer)
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    nll: list[float] = [0.0] * len(ids)
    count: list[int] = [0] * len(ids)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="perplexity", leave=False):
            batch = order[start : start + batch_size]
            T = max(len(ids[i]) for i in batch)
            input_ids = torch.full((len(batch), T), pad, dtype=torch.long)
            attn = torch.zeros((len(batch), T), dtype=torch.long)
            for r, i in enumerate(batch):
                input_ids[r, : len(ids[i])] = torch.tensor(ids[i])
                attn[r, : len(ids[i])] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attn.to(device), use_cache=False).logits[:, :-1].float()
            target = input_ids[:, 1:].masked_fill(attn[:, 1:] == 0, -100).to(device)
            tok = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")  # [B, T-1]
            for r, i in enumerate(batch):
                nll[i] = float(tok[r].sum())
                count[i] = int((target[r] != -100).sum())
    finally:
        model.train(was_training)
    return nll, count


def perplexity_from_stats(summed: Sequence[float]) -> float:
    """exp(total NLL / total tokens) from summed [nll, tokens]."""
    return math.exp(summed[0] / summed[1]) if summed[1] else float("nan")


def run_perplexity(model: Any, tokenizer: Any, paths: Sequence[str], langs: Sequence[str], max_sentences: int, batch_size: int = 8) -> dict[str, Any]:
    """{lang: {"ppl", "n", "tokens", "items": {"nll": [...], "tokens": [...]}}} for each language found."""
    out: dict[str, Any] = {}
    for lang, texts in sentences_by_language(paths, langs, max_sentences).items():
        if not texts:
            continue
        nll, count = sentence_nll(model, tokenizer, texts, batch_size)
        out[lang] = {
            "ppl": perplexity_from_stats([sum(nll), sum(count)]),
            "n": len(texts),
            "tokens": sum(count),
            "items": {"nll": [round(v, 5) for v in nll], "tokens": count},
        }
    return out
