"""PNG plots drawn only from result dicts (``analysis.json``, ``eval.json``), never from models.

Uses matplotlib's object API with the Agg canvas, so it never touches pyplot's global backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _colour(i: int) -> Any:
    cmap = matplotlib.colormaps["tab10" if i < 10 else "tab20"]
    return cmap(i % cmap.N)


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


# --------------------------------------------------------------------------------------------
# One analysis run
# --------------------------------------------------------------------------------------------


def plot_analysis(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """All plots of one ``analysis.json`` dict: layer curves per pooling, language heatmap, PCA."""
    out_dir = Path(out_dir)
    paths = [plot_layer_curves(result, pooling, out_dir / f"layers_{pooling}.png") for pooling in result["pooling"]]
    lm = result.get("lang_matrix") or {}
    if lm.get("langs"):
        paths.append(plot_lang_matrix(lm, out_dir / f"lang_matrix_L{lm['layer']}.png"))
    pca = result.get("pca") or {}
    if pca.get("points"):
        paths.append(plot_pca(pca, out_dir / f"pca_L{pca['layer']}.png"))
    return paths


def plot_layer_curves(result: dict[str, Any], pooling: str, path: Path) -> Path:
    """MEXA and (pair - random) cosine against the layer index, one line per language."""
    res = result["pooling"][pooling]
    langs = result["languages"]
    rec = result.get("recommended") or {}
    fig = _figure(11, 4)
    ax_m, ax_c = fig.subplots(1, 2)
    for i, lang in enumerate(langs):
        mexa = [_nan(v) for v in res["mexa"][lang]]
        gap = [_nan(p) - _nan(r) for p, r in zip(res["cos_pair"][lang], res["cos_random"][lang], strict=True)]
        ax_m.plot(range(len(mexa)), mexa, color=_colour(i), label=lang, lw=1.3)
        ax_c.plot(range(len(gap)), gap, color=_colour(i), label=lang, lw=1.3)
    if "mexa_mean" in res and len(langs) > 1:
        ax_m.plot(range(len(res["mexa_mean"])), [_nan(v) for v in res["mexa_mean"]], color="black", lw=2.4, label="mean")
    for ax in (ax_m, ax_c):
        if rec.get("band"):
            ax.axvspan(rec["band"][0], rec["band"][1], color="0.9", zorder=0, label="middle band")
        if "layer" in rec:
            src = "" if rec.get("pooling", pooling) == pooling else f" ({rec['pooling']} pooling)"
            ax.axvline(rec["layer"], color="crimson", ls="--", lw=1, label=f"recommended L{rec['layer']}{src}")
        ax.set_xlabel("layer (hidden_states index, 0 = embeddings)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_m.set_ylabel(f"MEXA vs {result['pivot']}")
    ax_m.set_ylim(-0.02, 1.02)
    ax_c.set_ylabel("cos(pair) - cos(random)")
    ax_m.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{result.get('run_name', '')}: alignment with {result['pivot']} by layer ({pooling} pooling)")
    return _save(fig, path)


def plot_lang_matrix(lm: dict[str, Any], path: Path) -> Path:
    """Heatmaps of pairwise MEXA and pair cosine between languages at one layer (null cells grey)."""
    import numpy as np

    names = lm["langs"]
    k = len(names)
    fig = _figure(4 + 0.9 * k, 0.5 + 0.45 * k + 1.5)
    axes = fig.subplots(1, 2)
    for ax, key, title in zip(axes, ("mexa", "cos"), ("MEXA", "mean pair cosine"), strict=True):
        m = np.array([[_nan(v) for v in row] for row in lm[key]], dtype=float)
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.8")
        vmin = 0.0 if key == "mexa" else float(np.nanmin(m)) if np.isfinite(m).any() else 0.0
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=1.0)
        ax.set_xticks(range(k), names, rotation=45)
        ax.set_yticks(range(k), names)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    if np.isfinite(m[i, j]):
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if m[i, j] < (vmin + 1) / 2 else "black")
        ax.set_title(f"{title}, layer {lm['layer']}")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


def plot_pca(pca: dict[str, Any], path: Path) -> Path:
    """Scatter of the 2-D PCA of sentence states, coloured by language."""
    fig = _figure(6, 5)
    ax = fig.subplots()
    langs = list(dict.fromkeys(pca["lang"]))
    for i, lang in enumerate(langs):
        pts = [p for p, g in zip(pca["points"], pca["lang"], strict=True) if g == lang]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=9, alpha=0.7, color=_colour(i), label=lang)
    ev = pca.get("explained") or [float("nan")] * 2
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.1f}% var.)")
    ax.set_ylabel(f"PC2 ({100 * ev[1]:.1f}% var.)" if len(ev) > 1 else "PC2")
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title(f"sentence states at layer {pca['layer']} ({pca.get('pooling', '')} pooling)")
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# Comparisons across runs
# --------------------------------------------------------------------------------------------


def plot_mexa_runs(curves: dict[str, dict[str, list[float]]], pivot: str, path: Path) -> Path:
    """MEXA per layer, one line per run; one panel for the mean and one per language.

    curves: {run: {"mean" | lang: [MEXA per layer]}}.
    """
    panels = list(dict.fromkeys(k for c in curves.values() for k in c))
    panels.sort(key=lambda k: (k != "mean", k))
    if len(panels) == 2 and "mean" in panels:  # one language: its mean panel would repeat it
        panels.remove("mean")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(4.2 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        for i, (run, c) in enumerate(curves.items()):
            if panel in c:
                ax.plot(range(len(c[panel])), [_nan(v) for v in c[panel]], color=_colour(i), label=run, lw=1.5)
        ax.set_title(f"{panel} vs {pivot}" if panel != "mean" else f"mean MEXA vs {pivot}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def plot_grouped_bars(values: dict[str, dict[str, float | None]], ylabel: str, title: str, path: Path) -> Path:
    """Grouped bar chart: values {run: {group: value}}; groups on the x axis, one bar per run."""
    values = {r: v for r, v in values.items() if any(x is not None for x in v.values())}  # runs without data: no bar slot
    groups = list(dict.fromkeys(g for v in values.values() for g in v))
    runs = list(values)
    width = 0.8 / max(len(runs), 1)
    fig = _figure(max(5.0, 0.9 * len(groups) * max(1, len(runs)) * 0.5 + 2), 3.8)
    ax = fig.subplots()
    for i, run in enumerate(runs):
        xs = [g + (i - (len(runs) - 1) / 2) * width for g in range(len(groups))]
        ys = [_nan(values[run].get(grp)) for grp in groups]
        ax.bar(xs, ys, width=width, color=_colour(i), label=run)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 6 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_differences(rows: list[dict[str, Any]], path: Path, labels: dict[str, str] | None = None) -> Path:
    """Forest plot of ``alignx compare`` rows: one panel per metric, one line per comparison a − b with its
    95% interval; a dashed line at 0 (an interval that crosses it is not a claim). ``labels`` (name -> what it is)
    are listed under the panels."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    labels = labels or {}
    legend = "\n".join(f"{name}: {label}" for name, label in labels.items())
    height = max(2.0, 1.0 + 0.9 * sum(1 + sum(r["metric"] == m for r in rows) * 0.35 for m in metrics)) + 0.16 * len(labels)
    fig = _figure(7.5, height)
    if legend:
        fig.get_layout_engine().set(rect=(0, 0.16 * len(labels) / height, 1, 1 - 0.16 * len(labels) / height))
        fig.text(0.01, 0.005, legend, fontsize=6.5, va="bottom", ha="left", wrap=True)
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0] if metrics else []
    for ax, metric in zip(axes, metrics, strict=True):
        sel = [r for r in rows if r["metric"] == metric]
        ys = list(range(len(sel)))[::-1]
        for y, r in zip(ys, sel, strict=True):
            excl = r["lo"] > 0 or r["hi"] < 0
            ax.errorbar(r["delta"], y, xerr=[[r["delta"] - r["lo"]], [r["hi"] - r["delta"]]], fmt="o", capsize=3,
                        color="tab:blue" if excl else "tab:grey")  # fmt: skip
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.set_yticks(ys, [f"{r['a']} − {r['b']}" for r in sel], fontsize=7)
        ax.set_title(f"{metric} ({sel[0]['unit']}), n = {sel[0]['n']}", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
