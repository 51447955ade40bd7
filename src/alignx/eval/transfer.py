"""Zero-shot cross-lingual transfer: a classification task taught in one language, asked in every other.

Rows of a transfer file (JSONL)::

    {"lang": "de", "instruction": "Which LibreOffice application ...?", "input": "<text in that language>",
     "choices": ["Calc", "Writer", "Basic", "Impress"], "label": 0, "id": "...", "cluster": "<English text>"}

Stage 2 teaches the task with instruction rows in one language (``{"instruction", "input", "output"}``, the same
instruction); here each row is rendered as stage 2 renders an instruction row (the tokenizer's chat template, or
the Alpaca-LoRA prompt) and the model picks the choice with the highest log-likelihood as the answer
(:func:`alignx.eval.scoring.continuation_logprobs`, which computes the LM head only where a choice is scored).

Result per language: accuracy, n, and per item whether it was right with its cluster (the English text: the items
of one text in several languages are one cluster for the bootstrap); plus the transfer gap, the accuracy of the
task's language (``source_lang``, English by default) minus each other language's.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from alignx.data.readers import DataError, Instruction, choice_row, iter_lines, json_object
from alignx.data.render import instruction_prompt
from alignx.eval.scoring import continuation_logprobs


def read_transfer_files(paths: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Rows per language, checked (errors name file:line)."""
    by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in paths:
        for lineno, line in iter_lines(Path(path)):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            row = json_object(line, where)
            lang, _, _ = choice_row(row, where, ("instruction", "input"))
            by_lang[lang].append({**row, "lang": lang, "cluster": str(row.get("cluster", row.get("id", f"{where}")))})
    if not by_lang:
        raise DataError(f"{', '.join(paths)}: no rows")
    return dict(by_lang)


def run_transfer(model: Any, tokenizer: Any, sets: dict[str, list[dict[str, Any]]], use_chat_template: bool = True,
                 source_lang: str = "en", batch_size: int = 8, limit: int | None = None) -> dict[str, Any]:
    """``{"acc": {lang: {"acc", "n", "chance", "items": {"correct", "cluster"}}}, "gap": {lang: source acc - acc},
    "source_lang"}``; ``chance`` is the accuracy of always answering the most frequent label."""
    requests: list[tuple[list[int], list[int]]] = []
    index: list[tuple[str, int, int]] = []  # (lang, row, choice) per request
    for lang, rows in sets.items():
        for r, row in enumerate(rows[:limit]):
            msgs = [{"role": "user", "content": row["instruction"].strip() + "\n\n" + row["input"].strip()},
                    {"role": "assistant", "content": row["choices"][0]}]
            prompt, add_special = instruction_prompt(Instruction(msgs, lang, (row["instruction"].strip(), row["input"].strip())),
                                                     tokenizer, use_chat_template)
            ctx = tokenizer(prompt, add_special_tokens=add_special)["input_ids"]
            for c, choice in enumerate(row["choices"]):
                whole = tokenizer(prompt + choice, add_special_tokens=add_special)["input_ids"]
                requests.append((ctx, whole[len(ctx):]))
                index.append((lang, r, c))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = continuation_logprobs(model, requests, batch_size=batch_size, pad_id=pad, progress=True, desc="transfer")
    best: dict[tuple[str, int], tuple[float, int]] = {}
    for (lang, r, c), (logp, _) in zip(index, scores, strict=True):
        if (lang, r) not in best or logp > best[(lang, r)][0]:
            best[(lang, r)] = (logp, c)
    acc: dict[str, Any] = {}
    for lang, rows in sets.items():
        rows = rows[:limit]
        correct = [int(best[(lang, r)][1] == row["label"]) for r, row in enumerate(rows)]
        counts: dict[int, int] = defaultdict(int)
        for row in rows:
            counts[row["label"]] += 1
        acc[lang] = {"acc": sum(correct) / len(correct), "n": len(correct), "chance": max(counts.values()) / len(rows),
                     "items": {"correct": correct, "cluster": [row["cluster"] for row in rows]}}
    gap = {lang: acc[source_lang]["acc"] - v["acc"] for lang, v in acc.items() if lang != source_lang} if source_lang in acc else {}
    return {"source_lang": source_lang, "acc": acc, "gap": gap}
