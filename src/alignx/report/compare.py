"""``alignx compare``: differences between experiment arms with hierarchical-bootstrap 95% CIs and seed spread.

Reads result JSON only (``analysis.json`` files with per-pair MEXA outcomes, ``eval.json`` files with per-
sentence chrF++ statistics, off-target flags, transfer and multiple-choice outcomes per item and perplexity). Rows
come in families, downstream first: translation, zero-shot transfer, multiple choice, forgetting (English
perplexity), then the alignment readouts (MEXA of several poolings and layers, the one L_CTR trains marked). Arms trained with different seeds form a
group. Each bootstrap resample draws each group's seeds with replacement, then the items (paired: the same draw
for both groups; MEXA pairs that share a pivot sentence as one cluster), so the interval covers both the seed and
the sentence sample (:func:`alignx.eval.stats.hierarchical_mean_diff`); the spread over seeds is reported beside
it. Writes ``comparison.json``, ``comparison.md``
and ``differences.png`` (one panel per metric, every difference with its interval).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignx.config import ConfigError, opt
from alignx.eval.perplexity import perplexity_from_stats
from alignx.eval.stats import N_BOOT, hierarchical_corpus_diff, hierarchical_mean_diff, seed_spread
from alignx.eval.translation import chrf_from_stats
from alignx.utils import write_json


@dataclass
class CompareConfig:
    runs_dir: str = opt("runs/experiment", "directory with one sub-directory per arm (as written by alignx experiment)")
    groups: dict[str, list[str]] = opt({}, "group name -> arm names trained with different seeds; an arm in no group is its own group")
    pairs: list[str] = opt([], "comparisons 'a:b' (group or arm names): each metric is reported as a - b")
    labels: dict[str, str] = opt(
        {}, "group or arm name -> what it is (e.g. 'not the reference: ...'), listed under the table and the plot"
    )
    layer: int = opt(-1, "hidden_states index whose MEXA is compared (-1: the recommended layer of b's first arm)")
    pooling: str = opt("mean", "analysis variant: mean | last | mean_centred | last_centred")
    analyses: dict[str, str] = opt(
        {"in-domain": "analysis.json", "out-of-domain": "analysis_ood/analysis.json"},
        "label -> analysis.json path relative to an arm's directory",
    )
    readouts: list[str] = opt(
        [], "alignment readouts compared, each 'pooling@layer' (pooling: mean | last | mean_centred | last_centred; layer a "
        "hidden_states index or 'rec', the recommended layer); empty: the one readout of pooling and layer",
    )
    trained_readout: str = opt("", "the readout the arms' L_CTR trains ('pooling@layer'): marked '[the readout L_CTR trains]' in the table (it is the readout that is trained, whichever arms are compared)")
    evals: dict[str, str] = opt(
        {"in-domain": "eval.json", "out-of-domain": "eval_ood/eval.json"},
        "label -> eval.json path relative to an arm's directory (translation, transfer, benchmarks and perplexity are read from each)",
    )
    perplexity_lang: str = opt("en", "language whose perplexity is compared (relative difference)")
    n_boot: int = opt(N_BOOT, "bootstrap resamples")
    seed: int = opt(0, "bootstrap seed")
    output_dir: str = opt("", "where comparison.json/.md and differences.png go (empty: runs_dir)")

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ConfigError("pairs: give at least one comparison 'a:b'")
        for p in self.pairs:
            if p.count(":") != 1 or not all(p.split(":")):
                raise ConfigError(f"pairs: {p!r} is not 'a:b'")
        if self.n_boot < 100:
            raise ConfigError(f"n_boot must be >= 100, got {self.n_boot}")
        for r in [*self.readouts, *filter(None, [self.trained_readout])]:
            pooling, _, layer = r.partition("@")
            if pooling not in POOLINGS or not (layer == "rec" or layer.isdigit()):
                raise ConfigError(f"readouts: {r!r} is not 'pooling@layer' (pooling one of {', '.join(POOLINGS)}; layer a number or rec)")


POOLINGS = ("mean", "last", "mean_centred", "last_centred")
# Families in the order the table shows them: what users care about first, the alignment readouts last.
FAMILIES = ("translation", "transfer", "multiple choice", "forgetting", "alignment")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


class Arm:
    """The per-item results of one arm directory."""

    def __init__(self, root: Path, cfg: CompareConfig) -> None:
        self.name = root.name
        self.analyses = {label: _read(root / rel) for label, rel in cfg.analyses.items()}
        self.evals = {label: _read(root / rel) or {} for label, rel in cfg.evals.items()}

    def mexa_items(self, label: str, pooling: str, layer: int) -> dict[str, tuple[str, list[float]]] | None:
        """{lang: (pairs digest, per-pair 0/1)} at ``layer``, or None when the analysis lacks per-pair data."""
        a = self.analyses.get(label)
        res = (a or {}).get("pooling", {}).get(pooling)
        if not res or "mexa_items" not in res:
            return None
        return {lang: (res["pairs_digest"][lang], [float(c) for c in v[layer]]) for lang, v in res["mexa_items"].items()}

    def pivot_ids(self, label: str) -> dict[str, list[str]] | None:
        """{lang: per-pair pivot-sentence ids} of an analysis (analyses written before the field: None)."""
        return (self.analyses.get(label) or {}).get("pivot_ids")

    def recommended_layer(self) -> int | None:
        for a in self.analyses.values():
            if a and isinstance(a.get("recommended_layer"), int):
                return a["recommended_layer"]
        return None


def _mexa_metric(
    a_arms: list[Arm], b_arms: list[Arm], label: str, pooling: str, layer: int
) -> tuple[list[str], list[list[list[float]]], list[list[list[float]]], list[float], list[float], list[list[str]] | None] | None:
    """Languages both sides have; per-pair outcomes of each seed of A and of B (``[seed][language][pair]``); each
    seed's mean MEXA for A and for B; the pairs' pivot-sentence clusters (``[language][pair]``, None when an analysis
    predates them). None when an arm lacks per-pair data."""
    items_a = [(a, m) for a in a_arms if (m := a.mexa_items(label, pooling, layer)) is not None]
    items_b = [(a, m) for a in b_arms if (m := a.mexa_items(label, pooling, layer)) is not None]
    if not items_a or not items_b:
        return None
    a_arms, b_arms = [a for a, _ in items_a], [a for a, _ in items_b]
    per_arm = [m for _, m in [*items_a, *items_b]]
    langs = sorted(set.intersection(*(set(p) for p in per_arm)))  # type: ignore[arg-type]
    for lang in langs:
        if len({p[lang][0] for p in per_arm}) != 1:  # type: ignore[index]
            names = ", ".join(a.name for a in [*a_arms, *b_arms])
            raise ConfigError(f"{label} analysis of {lang}: arms {names} used different sentences; analyse them on the same file and settings")
    pa, pb = per_arm[: len(a_arms)], per_arm[len(a_arms) :]

    def seeds(ps: list[Any]) -> list[list[list[float]]]:
        return [[p[lang][1] for lang in langs] for p in ps]

    def per_seed(ps: list[Any]) -> list[float]:
        return [float(np.mean([np.mean(p[lang][1]) for lang in langs])) for p in ps]

    ids = a_arms[0].pivot_ids(label)
    clusters = [ids[lang] for lang in langs] if ids and all(lang in ids for lang in langs) else None
    return langs, seeds(pa), seeds(pb), per_seed(pa), per_seed(pb), clusters


# The metric readers take the eval.json contents of a group's arms (one per seed; {} for an arm without one yet).
Evals = list[dict[str, Any]]


def _directions(evals: Evals) -> list[str]:
    """Directions every arm with translation results has (arms still without an eval.json do not count)."""
    sets = [set(t) for e in evals if (t := e.get("translation"))]
    return sorted(set.intersection(*sets)) if sets else []


def _translation_metric(evals: Evals, dirs: list[str], key: str) -> tuple[list[list[Any]], list[float]] | None:
    """Per seed and direction (``[seed][direction]``): key 'chrf_stats' -> [N, 24] statistics; 'off_target' -> flags;
    and each seed's mean over directions (chrF++ of the direction's corpus, or the off-target share)."""
    evals = [e for e in evals if all(d in (e.get("translation") or {}) for d in dirs)]
    if not dirs or not evals:
        return None
    seeds = [[np.asarray(e["translation"][d]["items"][key], dtype=np.float64) for d in dirs] for e in evals]
    if key == "chrf_stats":
        per_seed = [float(np.mean([chrf_from_stats(x.sum(0)) for x in s])) for s in seeds]
    else:
        per_seed = _seed_means(seeds)
    return seeds, per_seed


def _ppl_metric(evals: Evals, lang: str) -> tuple[list[list[np.ndarray]], list[float]] | None:
    """Per seed, one stratum of [N, 2] (NLL, tokens) per sentence; each seed's perplexity."""
    entries = [x for e in evals if (x := (e.get("perplexity") or {}).get(lang)) is not None]
    if not entries:
        return None
    stats = [[np.stack([x["items"]["nll"], x["items"]["tokens"]], axis=1)] for x in entries]  # type: ignore[index]
    return stats, [float(x["ppl"]) for x in entries]  # type: ignore[index]


def _seed_means(seeds: list[list[list[float]]]) -> list[float]:
    """Each seed's mean over strata of the per-stratum mean."""
    return [float(np.mean([np.mean(x) for x in s])) for s in seeds]


def _transfer_metric(evals: Evals) -> dict[str, Any] | None:
    """The transfer task's non-source languages every arm has (``langs``); per seed ``[seed][language][item]``
    correctness (``acc``) and the items' clusters (their source-language text: one text asked in several languages is
    one cluster); and, where the source language was asked too, per item the source's correctness minus this
    language's for the texts asked in both (``gap``). Seed means beside each (``acc_seeds``, ``gap_seeds``)."""
    results = [t for e in evals if (t := e.get("transfer"))]
    if not results:
        return None
    source = results[0]["source_lang"]
    langs = sorted(set.intersection(*(set(t["acc"]) for t in results)) - {source})
    if not langs:
        return None
    acc = [[[float(c) for c in t["acc"][lang]["items"]["correct"]] for lang in langs] for t in results]
    out = {"langs": langs, "acc": acc, "acc_seeds": _seed_means(acc),
           "clusters": [results[0]["acc"][lang]["items"]["cluster"] for lang in langs], "gap": None, "gap_seeds": None}
    if source in results[0]["acc"]:
        gap = []
        for t in results:
            src = dict(zip(t["acc"][source]["items"]["cluster"], t["acc"][source]["items"]["correct"], strict=True))
            gap.append([[float(src[c] - x) for c, x in zip(t["acc"][lang]["items"]["cluster"], t["acc"][lang]["items"]["correct"], strict=True)
                         if c in src] for lang in langs])
        out.update(gap=gap, gap_seeds=_seed_means(gap))
    return out


def _benchmark_metric(evals: Evals, bench: str) -> tuple[list[str], list[list[list[float]]], list[float]] | None:
    """Languages every arm has; per seed ``[seed][language][question]`` 0/1 (``items.acc`` of eval.json); seed means."""
    results = [b for e in evals if (b := (e.get("benchmarks") or {}).get(bench))]  # arms still without it do not count
    if not results:
        return None
    langs = sorted(lang for lang in set.intersection(*(set(b) for b in results)) if all("items" in b[lang] for b in results))
    if not langs:
        return None
    seeds = [[[float(x) for x in b[lang]["items"]["acc"]] for lang in langs] for b in results]
    return langs, seeds, _seed_means(seeds)


def _readouts(cfg: CompareConfig) -> list[tuple[str, str]]:
    """(pooling, layer spec) of every readout compared."""
    specs = cfg.readouts or [f"{cfg.pooling}@{cfg.layer if cfg.layer >= 0 else 'rec'}"]
    return [(r.partition("@")[0], r.partition("@")[2]) for r in specs]


def compare(cfg: CompareConfig) -> dict[str, Any]:
    root = Path(cfg.runs_dir)
    if not root.is_dir():  # checked before anything is written: compare never creates its inputs
        raise ConfigError(f"runs_dir={cfg.runs_dir}: no such directory; give the output_dir an `alignx experiment` wrote")
    if not any(p.is_dir() for p in root.iterdir()):
        raise ConfigError(f"runs_dir={cfg.runs_dir}: holds no arm directories; run `alignx experiment` into it first")
    members: dict[str, list[str]] = {k: list(v) for k, v in cfg.groups.items()}
    names = {n for p in cfg.pairs for n in p.split(":")}
    for n in names:
        members.setdefault(n, [n])
    # An experiment in progress has arms without (all) results yet: each metric uses the arms of a group that
    # have its data, and what is missing is listed in the notes.
    arms = {arm: Arm(root / arm, cfg) for g in names for arm in members[g] if (root / arm).is_dir()}
    notes = [f"{arm}: no directory in {root}" for arm in sorted({a for g in names for a in members[g]} - set(arms))]
    rows: list[dict[str, Any]] = []
    spreads: dict[str, dict[str, Any]] = {}
    for pair in cfg.pairs:
        ga, gb = pair.split(":")
        A, B = [arms[n] for n in members[ga] if n in arms], [arms[n] for n in members[gb] if n in arms]
        if not A or not B:
            notes.append(f"{pair}: skipped, {ga if not A else gb} has no arm directory")
            continue
        recommended = B[0].recommended_layer()

        def add(family: str, metric: str, unit: str, diff: dict[str, Any], seeds_a: list[float], seeds_b: list[float],
                extra: dict[str, Any], a: str = ga, b: str = gb) -> None:
            spreads.setdefault(a, {})[metric] = seed_spread(seeds_a)
            spreads.setdefault(b, {})[metric] = seed_spread(seeds_b)
            rows.append({"family": family, "a": a, "b": b, "metric": metric, "unit": unit, **diff, "a_seeds": seeds_a,
                         "b_seeds": seeds_b, **extra})

        for elabel in cfg.evals:
            ea, eb = [a.evals[elabel] for a in A], [a.evals[elabel] for a in B]
            dirs = sorted(set(_directions(ea)) & set(_directions(eb)))
            for side, sel in (("X→en", [d for d in dirs if d.endswith("-en")]), ("en→X", [d for d in dirs if d.startswith("en-")])):
                ca, cb = _translation_metric(ea, sel, "chrf_stats"), _translation_metric(eb, sel, "chrf_stats")
                if ca and cb:
                    add("translation", f"chrF++ {side} ({elabel})", "points",
                        hierarchical_corpus_diff(ca[0], cb[0], chrf_from_stats, n_boot=cfg.n_boot, seed=cfg.seed), ca[1], cb[1], {"directions": sel})
                oa, ob = _translation_metric(ea, sel, "off_target"), _translation_metric(eb, sel, "off_target")
                if oa and ob:
                    add("translation", f"off-target {side} ({elabel})", "points",
                        _scale(hierarchical_mean_diff(oa[0], ob[0], None, cfg.n_boot, seed=cfg.seed), 100),
                        [v * 100 for v in oa[1]], [v * 100 for v in ob[1]], {"directions": sel})
            ta, tb = _transfer_metric(ea), _transfer_metric(eb)
            if ta and tb and ta["langs"] == tb["langs"]:
                add("transfer", f"transfer accuracy, mean over non-source languages ({elabel})", "points",
                    _scale(hierarchical_mean_diff(ta["acc"], tb["acc"], ta["clusters"], cfg.n_boot, seed=cfg.seed), 100),
                    [v * 100 for v in ta["acc_seeds"]], [v * 100 for v in tb["acc_seeds"]],
                    {"languages": ta["langs"], "clustered_by_source_text": True})
                if ta["gap"] and tb["gap"]:
                    add("transfer", f"transfer gap, source − X ({elabel})", "points",
                        _scale(hierarchical_mean_diff(ta["gap"], tb["gap"], None, cfg.n_boot, seed=cfg.seed), 100),
                        [v * 100 for v in ta["gap_seeds"]], [v * 100 for v in tb["gap_seeds"]], {"languages": ta["langs"]})
            have = [set(b) for e in [*ea, *eb] if (b := e.get("benchmarks"))]
            for bench in sorted(set.intersection(*have)) if have else []:
                ma, mb = _benchmark_metric(ea, bench), _benchmark_metric(eb, bench)
                if ma and mb and ma[0] == mb[0]:
                    add("multiple choice", f"{bench} accuracy ({elabel})", "points",
                        _scale(hierarchical_mean_diff(ma[1], mb[1], None, cfg.n_boot, seed=cfg.seed), 100),
                        [v * 100 for v in ma[2]], [v * 100 for v in mb[2]], {"languages": ma[0]})
            pa, pb = _ppl_metric(ea, cfg.perplexity_lang), _ppl_metric(eb, cfg.perplexity_lang)
            if pa is not None and pb is not None:
                diff = hierarchical_corpus_diff(pa[0], pb[0], perplexity_from_stats, relative=True, n_boot=cfg.n_boot, seed=cfg.seed)
                add("forgetting", f"perplexity {cfg.perplexity_lang} (relative; {elabel})", "%", _scale(diff, 100), pa[1], pb[1], {})
        for pooling, spec in _readouts(cfg):
            layer = recommended if spec == "rec" else int(spec)
            if layer is None:
                raise ConfigError(f"readouts: {gb} has no analysis to take the recommended layer from; give a layer number")
            trained = cfg.trained_readout and cfg.trained_readout.partition("@")[0] == pooling and (
                cfg.trained_readout.partition("@")[2] in (spec, str(layer)))
            for label in cfg.analyses:
                m = _mexa_metric(A, B, label, pooling, layer)
                if m is None:
                    continue
                langs, sa, sb, seeds_a, seeds_b, clusters = m
                diff = hierarchical_mean_diff(sa, sb, clusters, cfg.n_boot, seed=cfg.seed)
                name = f"MEXA L{layer} {pooling} ({label})" + (" [the readout L_CTR trains]" if trained else "")
                add("alignment", name, "points", _scale(diff, 100), [v * 100 for v in seeds_a], [v * 100 for v in seeds_b],
                    {"languages": langs, "clustered_by_pivot": clusters is not None, "trained_readout": bool(trained)})
    rows.sort(key=lambda r: FAMILIES.index(r["family"]))  # stable: the pairs' order within a family
    result = {
        "kind": "comparison",
        "runs_dir": str(root),
        "groups": {g: members[g] for g in sorted(names)},
        "pooling": cfg.pooling,
        "interval": ("hierarchical bootstrap, percentile, 95%: each resample draws the seeds of each side with replacement, "
                     "then items (pairs / sentences) within each language or direction, the same for both sides; MEXA pairs "
                     "sharing a pivot sentence are drawn as one cluster where the analyses record pivot_ids"),
        "differences": rows,
        "seed_spread": spreads,
        "notes": notes,
        "labels": {n: cfg.labels[n] for n in dict.fromkeys(x for r in rows for x in (r["a"], r["b"])) if n in cfg.labels},
    }
    out = Path(cfg.output_dir or root)
    write_json(out / "comparison.json", result)
    (out / "comparison.md").write_text(markdown(result), encoding="utf-8")
    from alignx.report.plots import plot_differences

    plot_differences(rows, out / "differences.png", result["labels"])
    return result


def _scale(diff: dict[str, Any], k: float) -> dict[str, Any]:
    return {**diff, "delta": diff["delta"] * k, "lo": diff["lo"] * k, "hi": diff["hi"] * k}


def _spread_text(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    sd = float(np.std(values, ddof=1))
    return f"{np.mean(values):.1f} ± {sd:.1f} ({len(values)} seeds)"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| family | comparison | metric | a | b | a − b [95% CI] | n items | seeds a / b | CI excludes 0 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["differences"]:
        sig = "yes" if r["lo"] > 0 or r["hi"] < 0 else "no"
        unit = " %" if r["unit"] == "%" else ""
        delta = f"{r['delta']:+.1f}{unit} [{r['lo']:+.1f}, {r['hi']:+.1f}]"
        if math.isnan(r["delta"]):
            delta = "n/a"
        lines.append(f"| {r.get('family', '')} | {r['a']} vs {r['b']} | {r['metric']} | {_spread_text(r['a_seeds'])} | "
                     f"{_spread_text(r['b_seeds'])} | {delta} | {r['n']} | {len(r['a_seeds'])} / {len(r['b_seeds'])} | {sig} |")
    text = "\n".join(lines) + "\n\nSeed spread: mean ± sample sd over the arms of a group. Intervals: " + result["interval"] + ".\n"
    if result.get("labels"):
        text += "\nNames:\n" + "\n".join(f"- `{name}`: {label}" for name, label in result["labels"].items()) + "\n"
    if result.get("notes"):
        text += "\n" + "\n".join(f"- {n}" for n in result["notes"]) + "\n"
    return text


def main(cfg: CompareConfig) -> dict[str, Any]:
    result = compare(cfg)
    out = Path(cfg.output_dir or cfg.runs_dir)
    print((out / "comparison.md").read_text(encoding="utf-8"))
    print(f"compare: wrote {out / 'comparison.json'}, comparison.md, differences.png")
    return result
