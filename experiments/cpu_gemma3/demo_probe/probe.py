"""Demo-scale probe: stage 1 on the demo's data and budget with setting overrides, then held-out MEXA vs the base model.

    python experiments/cpu_gemma3/demo_probe/probe.py NAME [key=value ...]   (e.g. loss.ctr_inputs=separate)
    python experiments/cpu_gemma3/demo_probe/probe.py --table                (results.jsonl as a markdown table)
    python experiments/cpu_gemma3/demo_probe/probe.py --ppl-vs cpt_s22       (English perplexity vs one probe, with CIs)

Stage 1 as `alignx demo` ran it before this probe (Gemma-3-270M, 30 steps x 8 rows, LR 1e-4, frozen embeddings,
max length 96, batch-centred L_CTR with lambda 3, in-context spans) unless overridden, then mean-pooled MEXA (raw and
centred) on the demo's 50 held-out pairs per language (8 languages); each layer's change vs the base model with a
paired-bootstrap 95% CI over the 400 pairs. One line of JSON per run is appended to results.jsonl. Deterministic for
a given setting (seed 0); the trained weights are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from alignx.config import TrainConfig, load_config
from alignx.demo import DemoConfig, demo_data_dir
from alignx.eval import analyze as an
from alignx.eval.perplexity import perplexity_from_stats, run_perplexity
from alignx.eval.stats import paired_corpus_diff, paired_mean_diff
from alignx.model.load import resolve_path
from alignx.train import stage as train_stage

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("PROBE_WORKDIR", "/tmp/alignx_probe"))
LANGUAGES = ["de", "fr", "es", "ru", "zh", "ja", "ko", "hi"]
OOD = HERE.parent / "data" / "ood" / "heldout.jsonl"  # GNOME help: out-of-domain English for the regression check
PPL = HERE / "ppl"  # per-sentence NLL and token counts of each probe (and the base model), for paired intervals


def _english_ppl(model: str, name: str) -> dict[str, Any]:
    """Perplexity of the out-of-domain English sentences (250 at most), per-sentence stats kept for paired CIs."""
    from alignx.config import ModelConfig
    from alignx.model.load import load_model_and_tokenizer

    lm, tok = load_model_and_tokenizer(ModelConfig(name_or_path=model))
    res = run_perplexity(lm, tok, [str(OOD)], ["en"], 250)["en"]
    PPL.mkdir(exist_ok=True)
    (PPL / f"{name}.json").write_text(json.dumps(res))
    return res


def _analyze(model: str, name: str, out: Path, heldout: Path) -> dict[str, Any]:
    acfg = load_config(an.AnalyzeConfig, [], {
        "model.name_or_path": model, "parallel": [str(heldout)], "languages": LANGUAGES, "max_sentences": 50,
        "pooling": ["mean"], "centering": ["raw", "centred"], "output_dir": str(out), "run_name": name, "seed": 0,
        "batch_size": 25,
    })
    return an.main(acfg)


def table() -> str:
    """results.jsonl as markdown: raw MEXA change vs base (points, 95% CI) at layers 7-11, centred at the align layer."""
    rows = [json.loads(line) for line in (HERE / "results.jsonl").read_text().splitlines() if line.strip()]
    out = ["| probe | settings (over the probe's defaults) | L_CTR first -> last | NTP last | MEXA L7 | MEXA L8 | "
           "MEXA L9 (align layer) | MEXA L10 | MEXA L11 | centred MEXA L9 | English PPL, out of domain |", "|" + "---|" * 11]
    for r in rows:
        def cell(key: str, r: dict[str, Any] = r) -> str:
            d, lo, hi = r[key]
            return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"
        first, last = r["losses"]["first"], r["losses"]["last"]
        ctr = f"{first['loss_ctr']:.2f} -> {last['loss_ctr']:.2f}" if "loss_ctr" in last else "—"
        settings = ", ".join(f"`{k}={v}`" for k, v in r["over"].items()) or "(defaults)"
        layer = r["layer"]
        p = r.get("ppl_en_ood")
        ppl = f"{p['base']:.1f} -> {p['probe']:.1f} (n = {p['n']})" if p else "—"
        out.append(f"| {r['name']} | {settings} | {ctr} | {last['loss_ntp']:.2f} | {cell('mean_L7')} | {cell('mean_L8')} | "
                   f"{cell(f'mean_L{layer}')} | {cell('mean_L10')} | {cell('mean_L11')} | {cell(f'mean_centred_L{layer}')} | {ppl} |")
    return "\n".join(out)


def ppl_versus(reference: str) -> str:
    """Each probe's out-of-domain English perplexity relative to ``reference``'s: paired bootstrap over sentences."""
    def stats(name: str) -> list[list[float]]:
        items = json.loads((PPL / f"{name}.json").read_text())["items"]
        return [[nll, tok] for nll, tok in zip(items["nll"], items["tokens"], strict=True)]

    ref = stats(reference)
    out = [f"| probe | English PPL vs {reference} [95% CI] | n sentences |", "|---|---|---|"]
    for path in sorted(PPL.glob("*.json")):
        if path.stem == reference:
            continue
        d = paired_corpus_diff(stats(path.stem), ref, perplexity_from_stats, relative=True)
        out.append(f"| {path.stem} | {100 * d['delta']:+.1f} % [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] | {d['n']} |")
    return "\n".join(out)


def main() -> None:
    if sys.argv[1:] == ["--table"]:
        print(table())
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--ppl-vs":
        print(ppl_versus(sys.argv[2]))
        return
    name = sys.argv[1]
    over = dict(a.split("=", 1) for a in sys.argv[2:])
    root = WORK / name
    data = demo_data_dir()
    base_path, _ = resolve_path(DemoConfig().model)
    heldout = data / "parallel_heldout.jsonl"
    base_dir = WORK / "base"
    if not (base_dir / "analysis.json").exists():
        _analyze(base_path, "base", base_dir, heldout)
    if not (PPL / "base.json").exists():
        _english_ppl(base_path, "base")
    t0 = time.time()
    conf: dict[str, Any] = {
        "stage": 1, "output_dir": str(root / "stage1"), "model.name_or_path": base_path, "data.max_length": 96,
        "data.seed": 0, "optim.max_steps": 30, "optim.batch_size": 8, "optim.lr": 1e-4, "model.freeze_embeddings": True,
        "optim.warmup_ratio": 0.1, "optim.seed": 0, "loss.ctr_center": True, "loss.lambda_ctr": 3.0, "logging_steps": 5,
        "save_steps": 10000, "report_to": "none", "overwrite_output_dir": True,
        "data.parallel": [str(data / "parallel_train.jsonl")],
    }
    conf.update(over)
    s1 = train_stage.main(load_config(TrainConfig, [], conf))
    train_s = time.time() - t0
    _analyze(s1["final_model"], name, root, heldout)
    ppl = _english_ppl(s1["final_model"], name)
    base_ppl = json.loads((PPL / "base.json").read_text())
    a = json.loads((root / "analysis.json").read_text())
    b = json.loads((base_dir / "analysis.json").read_text())
    ts = json.loads((root / "stage1" / "train_summary.json").read_text())
    layer = ts["align_layer"]
    res: dict[str, Any] = {"name": name, "over": over, "train_s": round(train_s), "layer": layer}
    for pool in a["pooling"]:
        A, B = a["pooling"][pool], b["pooling"][pool]
        if "mexa_items" not in A:
            continue
        langs = sorted(A["mexa_items"])
        for L in sorted({layer, 7, 8, 9, 10, 11}):
            d = paired_mean_diff([[float(c) for c in A["mexa_items"][lg][L]] for lg in langs],
                                 [[float(c) for c in B["mexa_items"][lg][L]] for lg in langs])
            res[f"{pool}_L{L}"] = [round(100 * d["delta"], 1), round(100 * d["lo"], 1), round(100 * d["hi"], 1)]
    res["losses"] = {"first": ts["first_losses"], "last": ts["final_losses"]}
    res["ppl_en_ood"] = {"base": round(base_ppl["ppl"], 2), "probe": round(ppl["ppl"], 2), "n": ppl["n"]}
    print(json.dumps(res))
    with open(HERE / "results.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    shutil.rmtree(root / "stage1" / "final", ignore_errors=True)


if __name__ == "__main__":
    main()
