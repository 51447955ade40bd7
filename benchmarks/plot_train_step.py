"""Plot train_step.py results: median step time (IQR whiskers) and peak memory per variant, one row per JSON.

    python benchmarks/plot_train_step.py benchmarks/results/h200_qwen2.5-0.5b.json \
        benchmarks/results/h200_gemma3-270m_shape.json --out benchmarks/results/h200_train_step.png

Reads the JSON only (no torch); matplotlib's object API with the Agg canvas, as alignx's report plots.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _title(result: dict[str, Any], path: Path) -> str:
    cfg = result["config"]
    if cfg.get("preset"):
        model = f"{cfg['preset']} shape (random weights)"
    elif isinstance(cfg.get("model"), dict) and cfg["model"].get("name_or_path"):
        model = f"{Path(cfg['model']['name_or_path']).name} ({cfg['model'].get('weights', '?')} weights)"
    else:
        model = path.stem
    device = result.get("environment", {}).get("device", cfg.get("device", ""))
    return f"{model} on {device}\nbatch {cfg['batch']} x {cfg['seq']}, {cfg['dtype']}, timed {result.get('timing', {}).get('mode', 'per_process')}"


def plot(paths: list[Path], out: Path) -> Path:
    results = [json.loads(p.read_text()) for p in paths]
    fig = Figure(figsize=(11, 3.2 * len(results)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(results), 2, squeeze=False)
    for (ax_t, ax_m), result, path in zip(axes, results, paths, strict=True):
        names = list(result["variants"])
        steps = [result["variants"][v]["step_time_s"] for v in names]
        med = [s["median"] for s in steps]
        # results written before the IQR was recorded (cpu_tiny.json) have no q1 / q3: no whiskers
        err = [[s["median"] - s.get("q1", s["median"]) for s in steps], [s.get("q3", s["median"]) - s["median"] for s in steps]]
        ax_t.bar(names, med, yerr=err, capsize=4, color="#4c72b0")
        ax_t.set_ylabel("median step time, s (IQR)")
        ax_t.set_ylim(0, max(s.get("q3", s["median"]) for s in steps) * 1.25)  # room for the labels
        for x, (m, v) in enumerate(zip(med, names, strict=True)):
            mfu = result["variants"][v].get("mfu")
            ax_t.annotate(f"{m:.3g}" + (f"\nMFU {mfu:.2f}" if mfu is not None else ""), (x, m), ha="center", va="bottom",
                          fontsize=8, xytext=(0, 3), textcoords="offset points")
        gib = [result["variants"][v]["memory"]["peak_bytes"] / 2**30 for v in names]
        ax_m.bar(names, gib, color="#dd8452")
        ax_m.set_ylabel("peak memory, GiB")
        ax_m.set_ylim(0, max(gib) * 1.15)
        for x, g in enumerate(gib):
            ax_m.annotate(f"{g:.1f}", (x, g), ha="center", va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
        ax_t.set_title(_title(result, path), fontsize=9, loc="left")
        kind = result["variants"][names[0]]["memory"]["kind"]
        ax_m.set_title("max_memory_allocated" if "cuda" in kind else "peak RSS over the RSS before the model", fontsize=9,
                       loc="left")
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="train_step.py result JSON files")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = p.parse_args(argv)
    missing = [str(r) for r in args.results if not r.is_file()]
    if missing:
        p.error(f"no such result file: {', '.join(missing)}")
    print(f"wrote {plot(args.results, args.out)}")


if __name__ == "__main__":
    main()
