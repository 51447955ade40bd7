"""``alignx report``: compare runs from their result JSON files only (never from models).

Each run is a directory searched (recursively) for ``eval.json`` (benchmarks + translation),
``analysis.json`` (layerwise alignment) and ``train_summary.json`` (one per training stage). Writes
``report.md`` (plots as PNG files beside it) and a self-contained ``report.html`` (plots embedded as
base64). A run may hold any subset of these files; missing numbers show as "—".
"""

from __future__ import annotations

import base64
import glob
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignx.config import ConfigError, opt
from alignx.report import plots
from alignx.utils import atomic_write_text

RESULT_FILES = {"analysis": "analysis.json", "eval": "eval.json", "train": "train_summary.json"}
MISSING = "—"


@dataclass
class ReportConfig:
    runs: list[str] = opt([], "run directories or glob patterns; each is searched for analysis.json, eval.json, train_summary.json")
    output_dir: str = opt("runs/report", "where report.md, report.html and the plots are written")
    title: str = opt("AlignX run comparison", "report title")
    baseline: str = opt("", "run (directory name, path or run_name) that deltas are computed against; empty: the first run")
    align_layer: int = opt(-1, "layer of the alignment table; -1: the baseline's recommended layer (a run's own when its depth differs)")
    pooling: str = opt("mean", "pooling whose alignment numbers are reported (mean|last)")

    def __post_init__(self) -> None:
        if not self.runs:
            raise ConfigError("runs: give at least one run directory (or glob)")
        if self.pooling not in ("mean", "last"):
            raise ConfigError(f"pooling must be mean or last, got {self.pooling!r}")


# --------------------------------------------------------------------------------------------
# Loading runs
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    path: Path
    analysis: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    train: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    aliases: set[str] = field(default_factory=set)


def _read_result(path: Path, kind: str, notes: list[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        notes.append(f"{path}: unreadable ({e.__class__.__name__}: {e}); ignored")
        return None
    if not isinstance(data, dict) or data.get("kind", kind) != kind:
        notes.append(f"{path}: not a {kind!r} result (kind={data.get('kind') if isinstance(data, dict) else None!r}); ignored")
        return None
    return data


def _find(root: Path, filename: str) -> list[Path]:
    """Matches under root, shallowest first, then newest first."""
    if root.is_file():
        return [root] if root.name == filename else []
    found = list(root.rglob(filename))
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), -p.stat().st_mtime))


def load_run(path: Path) -> Run:
    run = Run(name=path.name if path.is_dir() else path.stem, path=path)
    for kind, filename in RESULT_FILES.items():
        files = _find(path, filename)
        if kind == "train":
            run.train = [d for f in files if (d := _read_result(f, kind, run.notes)) is not None]
            run.train.sort(key=lambda d: (str(d.get("stage", "")), d.get("steps") or 0))
            continue
        for f in files:
            data = _read_result(f, kind, run.notes)
            if data is not None:
                setattr(run, kind, data)
                others = [str(o) for o in files if o != f]
                if others:
                    run.notes.append(f"{kind}: used {f}; also found {', '.join(others)}")
                break
    for d in (run.eval, run.analysis):
        if d and d.get("run_name"):
            run.aliases.add(str(d["run_name"]))
    run.aliases |= {run.name, str(path), str(path.resolve())}
    return run


def discover_runs(patterns: list[str]) -> tuple[list[Run], list[str]]:
    """Runs for every directory/file matching the patterns (in the given order), plus warnings."""
    paths: list[Path] = []
    warnings: list[str] = []
    for pat in patterns:
        matches = sorted(glob.glob(pat, recursive=True)) if glob.has_magic(pat) else ([pat] if Path(pat).exists() else [])
        if not matches:
            warnings.append(f"{pat}: no such run directory; skipped")
        for m in matches:
            p = Path(m)
            if p.resolve() not in {q.resolve() for q in paths}:
                paths.append(p)
    runs = [load_run(p) for p in paths]
    for r in runs:
        if r.analysis is None and r.eval is None and not r.train:
            warnings.append(f"{r.path}: no {', '.join(RESULT_FILES.values())} found")
    _unique_names(runs)
    return runs, warnings


def _unique_names(runs: list[Run]) -> None:
    """Directory names, lengthened with parent directories until they are unique."""
    depth = 1
    while True:
        names = [r.name for r in runs]
        dups = {n for n in names if names.count(n) > 1}
        if not dups or depth > 8:
            break
        depth += 1
        for r in runs:
            if r.name in dups:
                r.name = "/".join(r.path.resolve().parts[-depth:])
    for i, r in enumerate(runs):  # identical paths at every depth: number them
        if [x.name for x in runs].count(r.name) > 1:
            r.name = f"{r.name}#{i + 1}"


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[Cell]]
    note: str = ""
    numeric: bool = True  # right-align every column but the first


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        return None
    return float(v)


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return None
    return d


def metric_rows(
    row_keys: list[str],
    values: dict[str, dict[str, float | None]],
    runs: list[str],
    baseline: str,
    scale: float = 1.0,
    digits: int = 1,
    higher_is_better: bool = True,
    stderr: dict[str, dict[str, float | None]] | None = None,
) -> list[list[Cell]]:
    """Rows of cells: the row key, then one cell per run with value*scale, the best in bold and the
    difference to the baseline in parentheses. values: {run: {row_key: value}}."""
    out = []
    for key in row_keys:
        vals = {r: _num(values.get(r, {}).get(key)) for r in runs}
        present = [v for v in vals.values() if v is not None]
        best = (max(present) if higher_is_better else min(present)) if len(present) > 1 else None
        base = vals.get(baseline)
        row = [Cell(key)]
        for r in runs:
            v = vals[r]
            if v is None:
                row.append(Cell(MISSING))
                continue
            text = f"{v * scale:.{digits}f}"
            se = _num((stderr or {}).get(r, {}).get(key))
            if se is not None:
                text += f" ±{se * scale:.{digits}f}"
            if r != baseline and base is not None:
                text += f" ({(v - base) * scale:+.{digits}f})"
            row.append(Cell(text, bold=best is not None and math.isclose(v, best, rel_tol=0, abs_tol=1e-12)))
        out.append(row)
    return out


def benchmark_tables(runs: list[Run], baseline: str) -> list[Table]:
    names = [r.name for r in runs]
    tasks = sorted({t for r in runs for t in (_get(r.eval, "benchmarks") or {})})
    tables = []
    for task in tasks:
        acc: dict[str, dict[str, float | None]] = {}
        se: dict[str, dict[str, float | None]] = {}
        for r in runs:
            per_lang = _get(r.eval, "benchmarks", task) or {}
            acc[r.name] = {lang: _num(_get(v, "acc")) for lang, v in per_lang.items()}
            se[r.name] = {lang: _num(_get(v, "acc_stderr")) for lang, v in per_lang.items()}
        langs = sorted({lang for a in acc.values() for lang in a})
        having = [n for n in names if any(v is not None for v in acc[n].values())]
        # The mean is only comparable over languages every run with this task has.
        common = [lang for lang in langs if all(acc[n].get(lang) is not None for n in having)]
        mean_key = f"mean ({len(common)} lang{'s' if len(common) != 1 else ''})"
        for n in having:
            acc[n][mean_key] = sum(acc[n][lang] for lang in common) / len(common) if common else None  # type: ignore[misc]
        rows = metric_rows(langs + ([mean_key] if common else []), acc, names, baseline, scale=100, stderr=se)
        tables.append(Table(f"{task}: accuracy (%)", ["language", *names], rows, _n_note(runs, "benchmarks", task)))
    return tables


def _n_note(runs: list[Run], *path: str) -> str:
    ns = {r.name: {k: _get(v, "n") for k, v in (_get(r.eval, *path) or {}).items()} for r in runs if _get(r.eval, *path)}
    sizes = sorted({n for d in ns.values() for n in d.values() if isinstance(n, int)})
    if not sizes:
        return ""
    return f"n per cell: {sizes[0]}" if len(sizes) == 1 else f"n per cell varies: {sizes[0]}..{sizes[-1]}"


TRANSLATION_METRICS = [
    # key, caption, scale, digits, higher is better
    ("spbleu", "spBLEU", 1.0, 1, True),
    ("chrf++", "chrF++", 1.0, 1, True),
    ("comet", "COMET (x100)", 100.0, 1, True),
    ("off_target", "off-target rate (%, lower is better)", 100.0, 1, False),
]


def translation_tables(runs: list[Run], baseline: str) -> list[Table]:
    names = [r.name for r in runs]
    directions = sorted({d for r in runs for d in (_get(r.eval, "translation") or {})})
    if not directions:
        return []
    tables = []
    for key, caption, scale, digits, higher in TRANSLATION_METRICS:
        vals = {r.name: {d: _num(_get(r.eval, "translation", d, key)) for d in directions} for r in runs}
        if key == "comet" and not any(v is not None for d in vals.values() for v in d.values()):
            continue  # COMET is optional; no empty table
        rows = metric_rows(directions, vals, names, baseline, scale, digits, higher)
        tables.append(Table(f"Translation: {caption}", ["direction", *names], rows))
    setup = []
    for r in runs:
        first = next(iter((_get(r.eval, "translation") or {}).values()), None)
        if isinstance(first, dict):
            setup.append(f"{r.name}: {first.get('shots', '?')}-shot, tokenizer {first.get('tokenizer', '?')}, n={first.get('n', '?')}")
    if tables and setup:
        tables[0].note = "; ".join(setup)
    return tables


def alignment_layer(run: Run, base: Run | None, cfg_layer: int) -> int | None:
    """Layer for a run's alignment column (see ReportConfig.align_layer)."""
    a = run.analysis
    if not a:
        return None
    n = a.get("num_layers")
    if cfg_layer >= 0:
        return cfg_layer if isinstance(n, int) and cfg_layer <= n else None
    if base is not None and base.analysis and base.analysis.get("num_layers") == n and isinstance(base.analysis.get("recommended_layer"), int):
        return base.analysis["recommended_layer"]
    return a.get("recommended_layer")


def alignment_table(runs: list[Run], base: Run | None, baseline: str, cfg: ReportConfig) -> Table | None:
    with_analysis = [r for r in runs if r.analysis]
    if not with_analysis:
        return None
    names = [r.name for r in runs]
    pivots = {r.analysis.get("pivot") for r in with_analysis}  # type: ignore[union-attr]
    vals: dict[str, dict[str, float | None]] = {}
    header = ["language"]
    for r in runs:
        layer = alignment_layer(r, base, cfg.align_layer)
        header.append(f"{r.name} (L{layer})" if layer is not None else r.name)
        curves = _get(r.analysis, "pooling", cfg.pooling, "mexa") or {}
        vals[r.name] = {lang: _num(_get(c, layer)) for lang, c in curves.items()} if layer is not None else {}
    langs = sorted({lang for v in vals.values() for lang in v})
    having = [n for n in names if vals[n]]
    common = [lang for lang in langs if all(vals[n].get(lang) is not None for n in having)]
    mean_key = f"mean ({len(common)} lang{'s' if len(common) != 1 else ''})"
    for n in having:
        vals[n][mean_key] = sum(vals[n][lang] for lang in common) / len(common) if common else None  # type: ignore[misc]
    rows = metric_rows(langs + ([mean_key] if common else []), vals, names, baseline, scale=1.0, digits=3)
    note = (
        f"MEXA against {', '.join(sorted(map(str, pivots)))} ({cfg.pooling} pooling) at the layer in each column header "
        "(baseline's recommended layer unless set by align_layer); chance is 1/n sentences."
    )
    return Table("Alignment: MEXA per language", header, rows, note)


def train_table(runs: list[Run]) -> Table | None:
    rows = []
    for r in runs:
        for t in r.train:
            losses = t.get("final_losses") or {}
            loss_txt = ", ".join(f"{k}={v:.4g}" if _num(v) is not None else f"{k}={v}" for k, v in losses.items()) or MISSING
            runtime = _num(t.get("runtime_s"))
            rows.append([
                Cell(r.name), Cell(str(t.get("stage", MISSING))), Cell(str(t.get("steps", MISSING))),
                Cell(f"{runtime / 60:.1f}" if runtime is not None else MISSING), Cell(loss_txt),
            ])
    if not rows:
        return None
    return Table("Training stages", ["run", "stage", "steps", "runtime (min)", "final losses"], rows, numeric=False)


def runs_table(runs: list[Run], baseline: str) -> Table:
    rows = []
    for r in runs:
        src = r.eval or r.analysis or (r.train[0] if r.train else {})
        env = src.get("env") or {}
        found = [k for k in ("eval", "analysis") if getattr(r, k)] + (["train"] if r.train else [])
        rows.append([
            Cell(r.name, bold=r.name == baseline), Cell(str(r.path)), Cell(str(src.get("model", MISSING))),
            Cell(", ".join(found) or MISSING), Cell(str(env.get("device", MISSING))), Cell(str(env.get("time", MISSING))),
        ])
    return Table("Runs (baseline in bold)", ["run", "path", "model", "results", "device", "time"], rows, numeric=False)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _md_cell(c: Cell) -> str:
    text = c.text.replace("|", "\\|")
    return f"**{text}**" if c.bold and text != MISSING else text


def render_markdown(title: str, blocks: list[Any]) -> str:
    lines = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Table):
            lines += [f"### {b.caption}", "", "| " + " | ".join(h.replace("|", "\\|") for h in b.header) + " |"]
            lines.append("|" + "|".join(["---"] + ["---:" if b.numeric else "---"] * (len(b.header) - 1)) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            lines += ["", f"_{b.note}_", ""] if b.note else [""]
        elif isinstance(b, Path):
            lines += [f"![{b.stem}]({b.name})", ""]
        elif isinstance(b, tuple):  # (level, heading)
            lines += ["#" * b[0] + " " + b[1], ""]
        else:
            lines += [str(b), ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px}
table.num td{text-align:right}td:first-child,table.text td{text-align:left}th{background:#f2f2f2}caption{font-weight:600;text-align:left;padding:4px 0}
.note{color:#555;font-size:.9em}img{max-width:100%}
"""


def render_html(title: str, blocks: list[Any]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(title)}</h1>"]
    for b in blocks:
        if isinstance(b, Table):
            parts.append(f"<table class='{'num' if b.numeric else 'text'}'><caption>{e(b.caption)}</caption><tr>" + "".join(f"<th>{e(h)}</th>" for h in b.header) + "</tr>")
            for row in b.rows:
                cells = "".join(f"<td>{'<b>' + e(c.text) + '</b>' if c.bold else e(c.text)}</td>" for c in row)
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</table>")
            if b.note:
                parts.append(f"<p class='note'>{e(b.note)}</p>")
        elif isinstance(b, Path):
            data = base64.b64encode(b.read_bytes()).decode("ascii")
            parts.append(f"<p><img alt='{e(b.stem)}' src='data:image/png;base64,{data}'></p>")
        elif isinstance(b, tuple):
            parts.append(f"<h{b[0]}>{e(b[1])}</h{b[0]}>")
        else:
            parts.append(f"<p>{e(str(b))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _pick_baseline(runs: list[Run], wanted: str) -> Run | None:
    if not runs:
        return None
    if not wanted:
        return runs[0]
    for r in runs:
        if wanted in r.aliases or str(Path(wanted).resolve()) in r.aliases:
            return r
    raise ConfigError(f"baseline {wanted!r} is not among the runs: {', '.join(r.name for r in runs)}")


def comparison_plots(runs: list[Run], out_dir: Path, pooling: str) -> list[Path]:
    paths = []
    curves: dict[str, dict[str, list[float]]] = {}
    pivot = "pivot"
    for r in runs:
        res = _get(r.analysis, "pooling", pooling)
        if isinstance(res, dict) and res.get("mexa"):
            curves[r.name] = {**res["mexa"], **({"mean": res["mexa_mean"]} if res.get("mexa_mean") else {})}
            pivot = r.analysis.get("pivot", pivot)  # type: ignore[union-attr]
    if curves:
        paths.append(plots.plot_mexa_runs(curves, pivot, out_dir / "mexa_layers.png"))
    chrf = {r.name: {d: _num(_get(v, "chrf++")) for d, v in (_get(r.eval, "translation") or {}).items()} for r in runs}
    if any(v is not None for d in chrf.values() for v in d.values()):
        paths.append(plots.plot_grouped_bars(chrf, "chrF++", "Translation chrF++ per direction", out_dir / "chrf_directions.png"))
    bench: dict[str, dict[str, float | None]] = {}
    for r in runs:
        for task, per_lang in (_get(r.eval, "benchmarks") or {}).items():
            accs = [a for a in (_num(_get(v, "acc")) for v in per_lang.values()) if a is not None]
            bench.setdefault(r.name, {})[task] = 100 * sum(accs) / len(accs) if accs else None
    if bench:
        paths.append(plots.plot_grouped_bars(bench, "accuracy (%)", "Benchmarks: mean accuracy over each run's languages", out_dir / "benchmarks.png"))
    return paths


def build_report(cfg: ReportConfig) -> dict[str, Any]:
    runs, warnings = discover_runs(cfg.runs)
    if not runs:
        raise ConfigError(f"runs: nothing matched {', '.join(cfg.runs)}")
    base = _pick_baseline(runs, cfg.baseline)
    baseline = base.name if base else ""
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    blocks: list[Any] = [runs_table(runs, baseline)]
    bench = benchmark_tables(runs, baseline)
    trans = translation_tables(runs, baseline)
    align = alignment_table(runs, base, baseline, cfg)
    train = train_table(runs)
    figs = {p.name: p for p in comparison_plots(runs, out_dir, cfg.pooling)}
    blocks.append((2, "Benchmarks"))
    blocks += bench or [MISSING + " no benchmark results in these runs"]
    if "benchmarks.png" in figs:
        blocks.append(figs["benchmarks.png"])
    blocks.append((2, "Translation"))
    blocks += trans or [MISSING + " no translation results in these runs"]
    if "chrf_directions.png" in figs:
        blocks.append(figs["chrf_directions.png"])
    blocks.append((2, "Cross-lingual alignment"))
    blocks.append(align or MISSING + " no analysis results in these runs")
    if "mexa_layers.png" in figs:
        blocks.append(figs["mexa_layers.png"])
    for r in runs:
        if r.analysis and r.analysis.get("recommendation"):
            blocks.append(f"{r.name}: {r.analysis['recommendation']}")
    if train:
        blocks += [(2, "Training"), train]
    notes = warnings + [f"{r.name}: {n}" for r in runs for n in r.notes]
    if notes:
        blocks.append((2, "Notes"))
        blocks += notes

    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md_path, render_markdown(cfg.title, blocks))
    atomic_write_text(html_path, render_html(cfg.title, blocks))
    return {"runs": [r.name for r in runs], "baseline": baseline, "markdown": str(md_path), "html": str(html_path),
            "plots": [str(p) for p in figs.values()], "notes": notes}


def main(cfg: ReportConfig) -> dict[str, Any]:
    result = build_report(cfg)
    for n in result["notes"]:
        print(f"report: {n}")
    print(f"report: {len(result['runs'])} runs -> {result['markdown']}, {result['html']}")
    return result
