"""Speed of ``alignx analyze`` and of few-shot translation generation: the code at a git revision ("before")
against this checkout ("after"), on the same model, inputs and settings; checks the results are the same.

Reference command (CPU, SmolLM2; see benchmarks/README.md):
    python benchmarks/analysis_speed.py --model packaged:smollm2-135m --out benchmarks/results/cpu_smollm2_analysis.json

"before" is ``src/`` of ``--before-rev`` (default: the main commit this branch was built on), unpacked with
``git archive`` into a temporary directory; "after" is ``src/`` next to this script. Each variant runs in its
own subprocess with ``PYTHONPATH`` set to its ``src/`` (the worker checks which ``alignx`` it imported), in
rounds of (before, after) so slow drift of the machine hits both. Per round and variant:

analysis   ``analyze_model`` (encode + every metric + language matrix + PCA + analysis.json; plots off) on
           ``--langs`` x ``--max-sentences`` pairs with the pivot; the encode stage is timed on its own too.
           sentences/s = distinct sentences encoded / wall time.
translation ``translation.generate`` on k-shot prompts built as ``alignx eval`` builds them, per direction;
           sentences/s = test sentences / wall time.

The report holds the config, the environment (versions, CPU count, torch threads, load average before and
after), per-variant times (median of the rounds), the after/before speed-ups, and the equivalence checks:
largest absolute difference of every analysis number, per-pair MEXA outcomes that differ (where), digests and
counts, and translation hypotheses that differ. Timings on a busy machine are meaningless: check the load average.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AFTER_SRC = REPO / "src"
# The main commit this branch started from: "before" = the analysis and translation code as it was there.
DEFAULT_BEFORE_REV = "2a0c245"
ANALYSIS_KEYS = ("mexa", "cos_pair", "cos_random", "retrieval_top1", "retrieval_top1_from_pivot", "cka")


# --------------------------------------------------------------------------------------------
# Worker (runs inside one variant's PYTHONPATH)
# --------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch

    from alignx.config import ModelConfig
    from alignx.model.load import load_model_and_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name_or_path=args.model))
    return model.to(args.device).eval(), tokenizer


def worker_analysis(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    import alignx.eval.analyze as analyze
    from alignx.config import ModelConfig

    cfg = analyze.AnalyzeConfig(
        model=ModelConfig(name_or_path=args.model), parallel=args.parallel, languages=args.langs,
        max_sentences=args.max_sentences, min_sentences=2, pooling=args.pooling, centering=args.centering,
        batch_size=args.batch_size, max_length=args.max_length, plots=False, output_dir=str(out_dir), device=args.device,
    )  # fmt: skip
    pairs = analyze.prepare_pairs(cfg)
    model, tokenizer = _load(args)
    texts = list(dict.fromkeys(s for lang in pairs for pair in pairs[lang] for s in pair))
    tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"])
    # Untimed warm-up (allocator, thread pools, kernels): the same call on a few sentences.
    analyze.encode_poolings(model, tokenizer, texts[: 2 * cfg.batch_size], cfg.pooling, batch_size=cfg.batch_size,
                            max_length=cfg.max_length, progress=False)  # fmt: skip
    timed: dict[str, float] = {}
    encode = analyze.encode_poolings

    def timed_encode(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        result = encode(*a, **k)
        _sync(args.device)
        timed["encode_s"] = time.perf_counter() - t0
        return result

    analyze.encode_poolings = timed_encode  # the name analyze_model calls, in both versions
    _sync(args.device)
    t0 = time.perf_counter()
    analyze.analyze_model(model, tokenizer, pairs, cfg)
    _sync(args.device)
    total = time.perf_counter() - t0
    return {
        "total_s": total,
        "encode_s": timed["encode_s"],
        "metrics_s": total - timed["encode_s"],
        "sentences": len(texts),
        "tokens": tokens,
        "pairs": {lang: len(p) for lang, p in pairs.items()},
        "sentences_per_s": len(texts) / total,
        "encode_sentences_per_s": len(texts) / timed["encode_s"],
        "analysis_json": str(out_dir / "analysis.json"),
    }


def worker_translation(args: argparse.Namespace) -> dict[str, Any]:
    from alignx.eval import translation

    sets = translation.load_translation_sets(args.translation_files, args.translation_dev_files, None, args.directions,
                                             limit=args.translation_limit)  # fmt: skip
    model, tokenizer = _load(args)
    prompts_by_dir = {
        f"{s}-{t}": [translation.build_prompt(p.src, translation.select_shots(dev, args.shots, 0, i, p), s, t) for i, p in enumerate(test)]
        for (s, t), (test, dev) in sets.items()
    }
    first = next(iter(prompts_by_dir.values()))
    translation.generate(model, tokenizer, first[:2], batch_size=2, max_new_tokens=4, desc="warm-up")  # untimed
    out: dict[str, Any] = {}
    for direction, prompts in prompts_by_dir.items():
        _sync(args.device)
        t0 = time.perf_counter()
        hyps = translation.generate(model, tokenizer, prompts, batch_size=args.gen_batch_size, max_new_tokens=args.max_new_tokens, desc=direction)
        _sync(args.device)
        seconds = time.perf_counter() - t0
        prompt_tokens = sum(len(ids) for ids in tokenizer(prompts)["input_ids"])
        out[direction] = {"seconds": seconds, "n": len(prompts), "prompt_tokens": prompt_tokens,
                          "sentences_per_s": len(prompts) / seconds, "hyps": hyps}  # fmt: skip
    total = sum(d["seconds"] for d in out.values())
    return {"directions": out, "total_s": total, "sentences_per_s": sum(d["n"] for d in out.values()) / total}


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import alignx

    where = Path(alignx.__file__).resolve()
    if not str(where).startswith(str(Path(args.src).resolve())):
        raise SystemExit(f"worker imported alignx from {where}, not from {args.src}: check PYTHONPATH / editable installs")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result: dict[str, Any] = {"alignx_file": str(where), "threads": torch.get_num_threads()}
    if args.worker == "analysis":
        result.update(worker_analysis(args, Path(args.worker_out).parent / "analysis"))
    else:
        result.update(worker_translation(args))
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    result["rss_before_gib"] = rss0 / 2**20
    if args.device.startswith("cuda"):
        result["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


# --------------------------------------------------------------------------------------------
# Parent: variants, rounds, comparison, report
# --------------------------------------------------------------------------------------------


def git(*argv: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *argv], check=True, capture_output=True, text=True).stdout.strip()


def unpack_src(rev: str, dest: Path) -> Path:
    """``src/`` of ``rev`` under ``dest`` (git archive, so the working tree is untouched)."""
    blob = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def _worker_argv(args: argparse.Namespace, kind: str, src: Path, out: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--worker-out", str(out), "--src", str(src),
            "--model", args.model, "--device", args.device, "--threads", str(args.threads)]  # fmt: skip
    if kind == "analysis":
        argv += ["--parallel", *args.parallel, "--max-sentences", str(args.max_sentences), "--batch-size", str(args.batch_size),
                 "--max-length", str(args.max_length), "--pooling", *args.pooling, "--centering", *args.centering]  # fmt: skip
        if args.langs:
            argv += ["--langs", *args.langs]
    else:
        argv += ["--translation-files", *args.translation_files, "--translation-dev-files", *args.translation_dev_files,
                 "--directions", *args.directions, "--translation-limit", str(args.translation_limit), "--shots", str(args.shots),
                 "--gen-batch-size", str(args.gen_batch_size), "--max-new-tokens", str(args.max_new_tokens)]  # fmt: skip
    return argv


def run_variant(args: argparse.Namespace, kind: str, src: Path, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    out = work / "result.json"
    env = {**os.environ, "PYTHONPATH": str(src), "TOKENIZERS_PARALLELISM": "false"}
    print(f"[analysis_speed] {kind} with {src}", file=sys.stderr, flush=True)
    proc = subprocess.run(_worker_argv(args, kind, src, out), env=env, check=False,
                          stderr=subprocess.PIPE if args.quiet else None, text=True)  # fmt: skip
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"{kind} worker for {src} exited with {proc.returncode}" + (f":\n{proc.stderr[-3000:]}" if proc.stderr else ""))
    return json.loads(out.read_text(encoding="utf-8"))


def _max_abs_diff(a: Any, b: Any) -> float:
    """Largest |a - b| over two nested lists of numbers (None/NaN equal to themselves); inf when shapes differ."""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return math.inf
        return max((_max_abs_diff(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(float(a) - float(b))


def compare_analyses(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What differs between two analysis.json files of the same inputs."""
    diffs: dict[str, float] = {}
    where: dict[str, list[dict[str, Any]]] = {}  # (lang, layer) of every value above 1e-9 that differs
    items_differ: list[dict[str, Any]] = []
    same_meta = before["languages"] == after["languages"] and before["num_layers"] == after["num_layers"]
    for variant, res_b in before["pooling"].items():
        res_a = after["pooling"].get(variant, {})
        same_meta &= res_b["n"] == res_a.get("n") and res_b["pairs_digest"] == res_a.get("pairs_digest")
        diffs[f"{variant}.mexa_mean"] = _max_abs_diff(res_b["mexa_mean"], res_a["mexa_mean"])
        for key in ANALYSIS_KEYS:
            if key not in res_b:
                continue
            diffs[f"{variant}.{key}"] = _max_abs_diff([res_b[key][lang] for lang in before["languages"]],
                                                      [res_a[key][lang] for lang in before["languages"]])  # fmt: skip
            for lang in before["languages"]:
                for layer, (x, y) in enumerate(zip(res_b[key][lang], res_a[key][lang], strict=True)):
                    if _max_abs_diff(x, y) > 1e-9:
                        where.setdefault(f"{variant}.{key}", []).append({"lang": lang, "layer": layer, "before": x, "after": y})
        for lang in before["languages"]:
            for layer, (x, y) in enumerate(zip(res_b["mexa_items"][lang], res_a["mexa_items"][lang], strict=True)):
                n_diff = sum(c != d for c, d in zip(x, y, strict=True))
                if n_diff:
                    items_differ.append({"variant": variant, "lang": lang, "layer": layer, "pairs_differing": n_diff, "n": len(x)})
    diffs["lang_matrix.mexa"] = _max_abs_diff(before["lang_matrix"]["mexa"], after["lang_matrix"]["mexa"])
    diffs["lang_matrix.cos"] = _max_abs_diff(before["lang_matrix"]["cos"], after["lang_matrix"]["cos"])
    diffs["pca.points"] = _max_abs_diff(before["pca"]["points"], after["pca"]["points"])
    return {
        "max_abs_diff": diffs,
        "differing_above_1e-9": where,
        "mexa_items_differing": items_differ,
        "same_languages_layers_counts_digests": bool(same_meta),
        "same_recommended_layer": before["recommended_layer"] == after["recommended_layer"],
    }


def compare_translations(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for direction, b in before["directions"].items():
        a = after["directions"][direction]["hyps"]
        differ = [i for i, (x, y) in enumerate(zip(b["hyps"], a, strict=True)) if x != y]
        out[direction] = {"n": len(a), "hyps_differing": len(differ), "first_differing": differ[:5]}
    return out


def _median(rounds: list[dict[str, Any]], *path: str) -> float:
    def get(r: dict[str, Any]) -> float:
        for p in path:
            r = r[p]
        return float(r)  # type: ignore[arg-type]

    return statistics.median(get(r) for r in rounds)


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 3) if den else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="packaged:smollm2-135m", help="model.name_or_path (hub id, local dir, packaged:<key>)")
    p.add_argument("--before-rev", default=DEFAULT_BEFORE_REV, help="git revision whose src/ is 'before'")
    p.add_argument("--parallel", nargs="+", default=["experiments/cpu_gemma3/data/indomain/heldout.jsonl"], help="analysis pairs")
    p.add_argument("--langs", nargs="*", default=[], help="analysis languages (default: every language paired with en in the files)")
    p.add_argument("--max-sentences", type=int, default=200, help="analysis pairs per language")
    p.add_argument("--batch-size", type=int, default=16, help="analysis sentences per forward pass (AnalyzeConfig default)")
    p.add_argument("--max-length", type=int, default=128, help="analysis truncation (AnalyzeConfig default)")
    p.add_argument("--pooling", nargs="+", default=["mean", "last"])
    p.add_argument("--centering", nargs="+", default=["raw"])
    p.add_argument("--translation-files", nargs="*", default=["src/alignx/assets/demo/parallel_heldout.jsonl"])
    p.add_argument("--translation-dev-files", nargs="*", default=["src/alignx/assets/demo/parallel_train.jsonl"])
    p.add_argument("--directions", nargs="*", default=["en-de", "de-en", "en-zh", "zh-en"], help="empty: skip translation")
    p.add_argument("--translation-limit", type=int, default=32, help="test sentences per direction")
    p.add_argument("--shots", type=int, default=3)
    p.add_argument("--gen-batch-size", type=int, default=16, help="translation prompts per generate call")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--rounds", type=int, default=1, help="rounds of (before, after) per part; medians are reported")
    p.add_argument("--skip-analysis", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=None, help="result JSON path")
    p.add_argument("--quiet", action="store_true", help="hide the workers' progress bars")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--src", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.max_sentences < 2 or args.translation_limit < 1:
        p.error("--rounds >= 1, --max-sentences >= 2 and --translation-limit >= 1")
    for name in ("parallel", "translation_files", "translation_dev_files"):
        setattr(args, name, [_data_path(f) for f in getattr(args, name)])
    return args


def _data_path(path: str) -> str:
    """Absolute path of a data file: as given when it exists from here, else relative to the repository."""
    p = Path(path)
    return str(p.resolve() if p.exists() or p.is_absolute() else REPO / p)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        result = run_worker(args)
        Path(args.worker_out).write_text(json.dumps(result), encoding="utf-8")
        return result

    sys.path.insert(0, str(AFTER_SRC))
    import torch

    from alignx.utils import environment, write_json

    before_rev = git("rev-parse", args.before_rev)
    after_rev = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "src"))
    load_before = os.getloadavg()
    parts = ([] if args.skip_analysis else ["analysis"]) + (["translation"] if args.directions else [])
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {part: {"before": [], "after": []} for part in parts}
    with tempfile.TemporaryDirectory(prefix="alignx-analysis-speed-") as tmp:
        before_src = unpack_src(before_rev, Path(tmp) / "before")
        for part in parts:
            for r in range(args.rounds):
                for variant, src in (("before", before_src), ("after", AFTER_SRC)):
                    result = run_variant(args, part, src, Path(tmp) / f"{part}-{variant}-{r}")
                    if part == "analysis":  # keep the JSON before the temporary directory goes
                        result["analysis"] = json.loads(Path(result.pop("analysis_json")).read_text(encoding="utf-8"))
                    runs[part][variant].append(result)

    report: dict[str, Any] = {
        "benchmark": "alignx analyze + few-shot translation generation: before vs after",
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else None,
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "worker_out", "src", "out", "quiet")},
        "revisions": {"before": before_rev, "after": after_rev, "after_src_has_uncommitted_changes": dirty},
        "environment": {**environment(), "cpu_count": os.cpu_count(), "torch_threads": args.threads or torch.get_num_threads(),
                        "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()}},  # fmt: skip
    }
    if "analysis" in runs:
        b, a = runs["analysis"]["before"], runs["analysis"]["after"]
        summary = {v: {k: round(_median(rs, k), 3) for k in ("total_s", "encode_s", "metrics_s", "sentences_per_s", "encode_sentences_per_s", "peak_rss_gib")}
                   for v, rs in (("before", b), ("after", a))}  # fmt: skip
        report["analysis"] = {
            "inputs": {"sentences": a[0]["sentences"], "tokens": a[0]["tokens"], "pairs": a[0]["pairs"]},
            **summary,
            "speedup_total": _ratio(summary["after"]["sentences_per_s"], summary["before"]["sentences_per_s"]),
            "speedup_encode": _ratio(summary["after"]["encode_sentences_per_s"], summary["before"]["encode_sentences_per_s"]),
            "speedup_metrics": _ratio(summary["before"]["metrics_s"], summary["after"]["metrics_s"]),
            "rounds": {"before": [{k: v for k, v in r.items() if k != "analysis"} for r in b],
                       "after": [{k: v for k, v in r.items() if k != "analysis"} for r in a]},  # fmt: skip
            "equivalence": compare_analyses(b[0]["analysis"], a[0]["analysis"]),
        }
        report["targets"] = {"analysis_speedup_at_least_2x": {"value": report["analysis"]["speedup_total"],
                                                              "met": (report["analysis"]["speedup_total"] or 0) >= 2.0}}  # fmt: skip
    if "translation" in runs:
        b, a = runs["translation"]["before"], runs["translation"]["after"]
        per_dir = {
            d: {"n": a[0]["directions"][d]["n"], "prompt_tokens": a[0]["directions"][d]["prompt_tokens"],
                **{v: round(_median(rs, "directions", d, "sentences_per_s"), 3) for v, rs in (("before_sentences_per_s", b), ("after_sentences_per_s", a))}}
            for d in a[0]["directions"]
        }  # fmt: skip
        before_sps, after_sps = _median(b, "sentences_per_s"), _median(a, "sentences_per_s")
        report["translation"] = {
            "before_sentences_per_s": round(before_sps, 3),
            "after_sentences_per_s": round(after_sps, 3),
            "speedup": _ratio(after_sps, before_sps),
            "directions": per_dir,
            "equivalence": compare_translations(b[0], a[0]),
            "samples": {d: a[0]["directions"][d]["hyps"][:3] for d in a[0]["directions"]},
        }
    print(json.dumps({k: report[k] for k in ("analysis", "translation", "targets") if k in report}, indent=1, default=str)[:6000])
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
