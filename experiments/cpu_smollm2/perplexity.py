"""Per-language perplexity of each arm's final model on held-out sentences (English regression check).

Reads the arms' models from runs/<arm>/ (stage2/final, else stage1/final, else the base model) and the
held-out pairs; writes runs/perplexity.json. Each sentence is scored alone (no prompt), token-level NLL.

    PYTHONPATH=src python experiments/cpu_smollm2/perplexity.py
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path

import torch

from alignx.config import ModelConfig
from alignx.data.readers import read_parallel
from alignx.model.load import load_model_and_tokenizer
from alignx.utils import environment, write_json

ROOT = Path("experiments/cpu_smollm2/runs")
HELDOUT = Path("src/alignx/assets/demo/parallel_heldout.jsonl")
ARMS = ["base", "sft_only", "cpt_sft", "alignx", "alignx_no_ctr", "alignx_no_lam", "alignx_ctr10x"]
PER_LANG = 40


def sentences() -> dict[str, list[str]]:
    by_lang: dict[str, list[str]] = defaultdict(list)
    for p in read_parallel(HELDOUT):
        for text, lang in ((p.src, p.src_lang), (p.tgt, p.tgt_lang)):
            if text not in by_lang[lang]:
                by_lang[lang].append(text)
    return {lang: texts[:PER_LANG] for lang, texts in sorted(by_lang.items())}


def model_path(arm: str) -> str:
    for stage in ("stage2", "stage1"):
        if (ROOT / arm / stage / "final" / "config.json").exists():
            return str(ROOT / arm / stage / "final")
    return "packaged:smollm2-135m"


@torch.no_grad()
def nll(model, tok, texts: list[str]) -> tuple[float, int]:
    total, count = 0.0, 0
    for i in range(0, len(texts), 16):
        enc = tok(texts[i : i + 16], return_tensors="pt", padding=True)
        logits = model(**enc).logits[:, :-1].float()
        target = enc["input_ids"][:, 1:].masked_fill(enc["attention_mask"][:, 1:] == 0, -100)
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum").item()
        count += int((target != -100).sum())
    return total, count


def main() -> None:
    data = sentences()
    results = {}
    for arm in ARMS:
        if not (ROOT / arm / "arm.json").exists():
            continue
        start = time.time()
        model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=model_path(arm)))
        per = {}
        for lang, texts in data.items():
            total, count = nll(model, tok, texts)
            per[lang] = {"ppl": round(math.exp(total / count), 3), "tokens": count, "sentences": len(texts)}
        results[arm] = {"model": model_path(arm), "perplexity": per, "seconds": round(time.time() - start, 1)}
        print(arm, {k: v["ppl"] for k, v in per.items()}, flush=True)
    write_json(ROOT / "perplexity.json", {"kind": "perplexity", "heldout": str(HELDOUT), "per_language": PER_LANG,
                                          "results": results, "env": environment()})


if __name__ == "__main__":
    main()
