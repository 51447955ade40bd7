"""Benchmark the stage-1 data path: the row-by-row renderer (alignx <= 0.1) vs the Arrow path (batched Dataset.map).

Command (quiet machine; the figures in benchmarks/README.md):
    PYTHONPATH=src python benchmarks/render_data.py --pairs 200000 --out benchmarks/results/render_data_cpu_gemma3.json
Smoke test:
    PYTHONPATH=src python benchmarks/render_data.py --pairs 2000 --out /tmp/r.json

Input: the shipped experiment's training pairs (experiments/cpu_gemma3/data/indomain/train.jsonl), repeated in order
up to ``--pairs`` rows and written to one JSONL file, rendered for stage 1 at the experiment's settings (default
template, both directions, data.max_length 96) with the real tokenizer of ``--model`` (default packaged:gemma3-270m).

Each measurement runs in a fresh subprocess (imports and the tokenizer loaded before the clock starts):
  old    ``src/`` of ``--before-rev`` (default: the last commit before the Arrow path), unpacked with git archive:
         read_parallel + both_directions + render_translation row by row into a list of Examples, as its
         alignx.train.stage.build_dataset did
  floor  the tokenizer alone: the Rust tokenizer's encode_batch over the rows' texts (built before the clock starts)
         in batches of 1000, threads as the tokenizers library chooses; no path can render faster than this
  new    alignx.data.dataset.build into an empty cache with data.num_proc 1: read into Arrow, rendered by batched
         Dataset.map, saved to the cache
  new_np alignx.data.dataset.build into another empty cache with data.num_proc = the number of cores
  hit    alignx.data.dataset.build again: the rows come from the cache (memory-mapped)
Rows/s counts rendered rows (both directions). Memory: sampled every 20 ms from /proc/self/status, the peak over the
run minus the value before it: ``anon`` (RssAnon: the process's own heap, what rows held in Python lists cost) and
``rss`` (RssAnon + RssFile: also the pages of memory-mapped Arrow files the run touched, which the kernel can drop
and re-read), per rendered token. Both paths are checked to give the same rows: a checksum of every row's ids,
labels, spans and language ids, in order, computed after the clock stops.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

try:
    import alignx  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alignx.utils import environment, write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BEFORE_REV = "3974352"  # main before the Arrow data path
SOURCE = REPO / "experiments" / "cpu_gemma3" / "data" / "indomain" / "train.jsonl"
MAX_LENGTH = 96
MODES = ("old", "floor", "new", "new_np", "hit")


def _status() -> dict[str, int]:
    """RssAnon and RssFile of this process, bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


class _Peak:
    """Samples /proc/self/status every 20 ms on a thread; ``peak`` holds the maxima of anon and anon + file."""

    def __init__(self) -> None:
        self.base = _status()
        self.peak = {"anon": 0, "rss": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.02)

    def _sample(self) -> None:
        s = _status()
        self.peak["anon"] = max(self.peak["anon"], s["RssAnon"])
        self.peak["rss"] = max(self.peak["rss"], s["RssAnon"] + s["RssFile"])

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    def delta(self) -> dict[str, int]:
        return {"anon": self.peak["anon"] - self.base["RssAnon"], "rss": self.peak["rss"] - self.base["RssAnon"] - self.base["RssFile"]}


def _config(pairs_file: str, cache: str, num_proc: int | None) -> Any:
    from alignx.config import DataConfig

    return DataConfig(parallel=[pairs_file], max_length=MAX_LENGTH, cache_dir=cache, num_proc=num_proc)


def checksum(rows: Any) -> str:
    """blake2b over each row's (ids, labels, x span, y span, source and target language ids), in order."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for r in rows:
        r = r if isinstance(r, dict) else vars(r)
        spans = [tuple(r[k]) if r[k] is not None else None for k in ("x_span", "y_span")]
        h.update(repr((list(r["input_ids"]), list(r["labels"]), *spans, r["src_lang"], r["tgt_lang"])).encode())
    return h.hexdigest()


def worker(mode: str, model: str, pairs_file: str, cache: str, num_proc: int | None) -> dict[str, Any]:
    from alignx.config import ModelConfig
    from alignx.data.readers import read_parallel
    from alignx.data.render import both_directions, render_translation
    from alignx.model.load import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(name_or_path=model), padding_side="right")
    if mode in ("old", "floor"):
        from alignx.config import DataConfig

        d = DataConfig(parallel=[pairs_file], max_length=MAX_LENGTH)
    else:
        import datasets  # noqa: F401 - imported before the baseline: a fixed cost, not one per token
        import pyarrow  # noqa: F401

        from alignx.data import dataset as data_mod

        d = _config(pairs_file, cache, num_proc)
    if mode == "floor":
        from alignx.data.render import translation_text

        texts = [translation_text(p, tokenizer, d.template, d.translation_instruction)[0] for p in both_directions(read_parallel(pairs_file))]
        backend = tokenizer.backend_tokenizer
        start = time.perf_counter()
        tokens = sum(len(e.ids) for i in range(0, len(texts), 1000) for e in backend.encode_batch(texts[i : i + 1000]))
        seconds = time.perf_counter() - start
        return {"mode": mode, "seconds": round(seconds, 3), "rows": len(texts), "tokens": tokens, "rows_per_s": round(len(texts) / seconds, 1)}
    with _Peak() as peak:
        start = time.perf_counter()
        if mode == "old":
            rendered = [render_translation(p, tokenizer, d.template, d.max_length, True, instruction=d.translation_instruction)
                        for p in both_directions(read_parallel(pairs_file))]
            rows = [e for e in rendered if e is not None]
            seconds = time.perf_counter() - start
            tokens, hit = sum(len(e.input_ids) for e in rows), False
        else:
            data = data_mod.build(d, 1, tokenizer, True)
            seconds = time.perf_counter() - start
            rows, tokens, hit = data.dataset, data.counts["tokens"], data.cache_hit
    mem = peak.delta()
    digest = checksum(rows)
    return {"mode": mode, "seconds": round(seconds, 3), "rows": len(rows), "tokens": tokens, "rows_per_s": round(len(rows) / seconds, 1),
            "cache_hit": hit, "digest": digest, "peak_anon_bytes": mem["anon"], "peak_rss_bytes": mem["rss"],
            "anon_bytes_per_token": round(mem["anon"] / tokens, 2), "rss_bytes_per_token": round(mem["rss"] / tokens, 2),
            "num_proc": num_proc}


def _write_pairs(path: Path, n: int) -> None:
    lines = [line for line in SOURCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(lines[i % len(lines)] + "\n")


def _run(mode: str, args: argparse.Namespace, pairs_file: Path, cache: Path, src: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", mode, "--model", args.model, "--pairs-file", str(pairs_file), "--cache", str(cache)]
    num_proc = args.num_proc or (os.cpu_count() if mode == "new_np" else 1)
    cmd += ["--num-proc", str(num_proc)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    mem = f", peak anon {result['anon_bytes_per_token']} B/token, rss {result['rss_bytes_per_token']} B/token" if "peak_rss_bytes" in result else ""
    print(f"{mode}: {result['rows']} rows in {result['seconds']} s ({result['rows_per_s']} rows/s){mem}", file=sys.stderr)
    return result


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios of the runs. The floor tokenises every row (the paths drop too-long rows after tokenising them), so it is
    compared by time on the same input; the paths by rendered rows/s."""
    old = results["old"]
    new = max((results["new"], results["new_np"]), key=lambda r: r["rows_per_s"])  # the faster new run
    return {
        "faster_new_run": new["mode"],
        "rows_per_s_new_over_old": round(new["rows_per_s"] / old["rows_per_s"], 2),
        "rows_per_s_new_1proc_over_old": round(results["new"]["rows_per_s"] / old["rows_per_s"], 2),
        "floor_speedup_over_old": round(old["seconds"] / results["floor"]["seconds"], 2),
        "tokenizer_share_of_old_time": round(results["floor"]["seconds"] / old["seconds"], 3),
        "anon_per_token_new_over_old": round(new["anon_bytes_per_token"] / old["anon_bytes_per_token"], 3),
        "rss_per_token_new_over_old": round(new["rss_bytes_per_token"] / old["rss_bytes_per_token"], 3),
        "cache_hit_seconds": results["hit"]["seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--model", default="packaged:gemma3-270m")
    ap.add_argument("--num-proc", type=int, default=None, help="data.num_proc of both new runs (default: 1 and one per core)")
    ap.add_argument("--before-rev", default=DEFAULT_BEFORE_REV, help="git revision whose src/ is the old path")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--pairs-file", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.pairs_file, args.cache, args.num_proc)))
        return
    from analysis_speed import git, unpack_src

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="alignx-render-bench-") as tmp:
        pairs_file, cache = Path(tmp) / "pairs.jsonl", Path(tmp) / "cache"
        _write_pairs(pairs_file, args.pairs)
        old_src = unpack_src(git("rev-parse", args.before_rev), Path(tmp) / "before")
        results = {}
        for mode in MODES:  # new_np renders into a cache of its own; hit reads new's
            where = cache.with_name("cache_np") if mode == "new_np" else cache
            results[mode] = _run(mode, args, pairs_file, where, old_src if mode == "old" else REPO / "src")
    ratios = summarise(results)
    out = {
        "benchmark": "render_data",
        "command": "PYTHONPATH=src python " + " ".join(sys.argv),
        "revisions": {"old": git("rev-parse", args.before_rev), "new": git("rev-parse", "HEAD"),
                      "new_has_uncommitted_changes": bool(git("status", "--porcelain", "src"))},
        "config": {"pairs": args.pairs, "source": str(SOURCE.relative_to(REPO)), "model": args.model, "max_length": MAX_LENGTH,
                   "both_directions": True, "num_proc": args.num_proc, "cpu_count": os.cpu_count()},
        "results": results,
        "same_rows": len({results[m]["digest"] for m in ("old", "new", "new_np", "hit")}) == 1,
        "ratios": ratios,
        "targets": {"rows_per_s_ratio_at_least": 5.0, "memory_per_token_ratio_at_most": 0.25, "cache_hit_seconds_under": 5.0},
        "met": {"rows_per_s": ratios["rows_per_s_new_over_old"] >= 5.0, "anon_memory": ratios["anon_per_token_new_over_old"] <= 0.25,
                "rss_memory": ratios["rss_per_token_new_over_old"] <= 0.25, "cache_hit": ratios["cache_hit_seconds"] < 5.0},
        "environment": {**environment(), "load_average_before": load_before, "load_average_after": os.getloadavg()},
    }
    print(json.dumps({"ratios": ratios, "same_rows": out["same_rows"], "met": out["met"]}, indent=1))
    if args.out:
        write_json(args.out, out)


if __name__ == "__main__":
    main()
