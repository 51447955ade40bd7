"""Stage-1 training on a CPU through the real trainer: fp32 against bf16 autocast, and processes x threads.

Reference command (the 2-core AVX512-BF16 dev box, Gemma-3-270M, the cpu_gemma3 experiment's stage 1):
    python benchmarks/cpu_training.py --out benchmarks/results/cpu_gemma3_training.json

Every run is ``alignx train`` in its own subprocess (HF Trainer, accelerate's autocast, the real data path) on the
stage-1 setting of ``experiments/cpu_gemma3`` (its pipeline.yaml stage 1 with the primary arm's loss:
L_CTR on sentences encoded alone, tau 0.002, lambda_ctr 0.3, lambda_lam 0.4; 8 rows x at most 96 tokens), logging
every step. Parts:

curves   one run per precision (``model.autocast=none`` then ``bf16``), ``--steps`` steps, all threads: the loss and
         each term per step, their relative difference bf16 vs fp32 (target: within 2 %), and steps/s from the
         trainer's own runtime (model loading and data rendering excluded).
workers  ``--worker-steps`` steps of bf16 training (a) as one process with 2 threads and (b) as two processes at
         once with 1 thread each (seeds 0 and 1, as two arms of an experiment would run): arm-steps per hour,
         i.e. summed steps/s x 3600. The two processes' training windows are recorded to show they overlapped.

The machine must be otherwise idle (the JSON records the load average before and after).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from alignx.utils import environment, read_json, write_json  # noqa: E402

STAGE1 = [
    "stage=1", "model.name_or_path=packaged:gemma3-270m",
    "data.parallel=[experiments/cpu_gemma3/data/indomain/train.jsonl]", "data.max_length=96",
    "loss.ntp_chunk_mib=0", "loss.ctr_inputs=separate", "loss.tau=0.002", "loss.lambda_ctr=0.3",
    "optim.batch_size=8", "optim.lr=1e-4", "optim.warmup_ratio=0.1",
    "logging_steps=1", "save_steps=100000", "report_to=none",
]
TERMS = ("loss", "loss_ntp", "loss_ctr", "loss_lam")


def train(out: Path, steps: int, autocast: str, seed: int = 0, threads: int | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads
    argv = [sys.executable, "-m", "alignx.cli", "train", *STAGE1, f"optim.max_steps={steps}", f"optim.seed={seed}",
            f"model.autocast={autocast}", f"output_dir={out}"]
    log = (out.parent / f"{out.name}.log").open("wb")
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    if proc.wait() != 0:
        raise SystemExit(f"training into {out} failed (exit {proc.returncode}); see {out.parent / (out.name + '.log')}")
    summary = read_json(out / "train_summary.json")
    per_step = [{k: h[k] for k in ("step", *TERMS) if k in h} for h in summary["history"] if "loss" in h]
    return {"steps": summary["steps"], "runtime_s": summary["runtime_s"], "steps_per_s": summary["steps"] / summary["runtime_s"],
            "precision": summary["precision"], "threads": None, "history": per_step}


def curves(work: Path, steps: int) -> dict[str, Any]:
    runs = {}
    for autocast in ("none", "bf16"):
        out = work / f"curve_{autocast}"
        print(f"[cpu_training] curves: {steps} steps, model.autocast={autocast}", file=sys.stderr, flush=True)
        runs[autocast] = finish(train(out, steps, autocast), out)
    return {"runs": runs, **compare_curves(runs)}


def compare_curves(runs: dict[str, Any]) -> dict[str, Any]:
    """bf16 against fp32 step by step: relative and absolute difference of the loss and each term, beside how much
    the fp32 curve itself moves from one step to the next (the scale a difference is read against)."""
    fp32, bf16 = runs["none"]["history"], runs["bf16"]["history"]
    diff: dict[str, Any] = {}
    for t in TERMS:
        pairs = [(a[t], b[t]) for a, b in zip(fp32, bf16, strict=True) if t in a and t in b and a[t]]
        if not pairs:
            continue
        rel = [abs(b - a) / abs(a) for a, b in pairs]
        absolute = [abs(b - a) for a, b in pairs]
        steps = [abs(y - x) for (x, _), (y, _) in zip(pairs, pairs[1:], strict=False)]
        diff[t] = {"relative_max": max(rel), "relative_mean": sum(rel) / len(rel), "absolute_max": max(absolute),
                   "absolute_mean": sum(absolute) / len(absolute), "fp32_mean_value": sum(a for a, _ in pairs) / len(pairs),
                   "fp32_step_to_step_change_mean": sum(steps) / len(steps) if steps else None, "n": len(pairs)}
    return {
        "difference_bf16_vs_fp32": diff,
        "speedup_bf16_over_fp32": runs["bf16"]["steps_per_s"] / runs["none"]["steps_per_s"],
        "target_total_loss_within_2pct": {"value": diff["loss"]["relative_max"], "met": diff["loss"]["relative_max"] <= 0.02},
    }


def workers(work: Path, steps: int) -> dict[str, Any]:
    print(f"[cpu_training] workers: 1 process x 2 threads, {steps} steps", file=sys.stderr, flush=True)
    one = finish(train(work / "w1x2", steps, "bf16", seed=0, threads=2), work / "w1x2")
    print(f"[cpu_training] workers: 2 processes x 1 thread, {steps} steps each", file=sys.stderr, flush=True)
    t0 = time.time()
    procs = {seed: train(work / f"w2x1_{seed}", steps, "bf16", seed=seed, threads=1) for seed in (0, 1)}
    two = {seed: finish(p, work / f"w2x1_{seed}") for seed, p in procs.items()}
    wall = time.time() - t0
    for r in (one, *two.values()):
        r.pop("history")
    return {
        "one_process_two_threads": {**one, "arm_steps_per_hour": 3600 * one["steps_per_s"]},
        "two_processes_one_thread": {
            "runs": two, "wall_s_including_load": wall,
            "arm_steps_per_hour": 3600 * sum(r["steps_per_s"] for r in two.values()),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=50, help="steps of each curve run")
    p.add_argument("--worker-steps", type=int, default=20, help="steps of each run of the workers part")
    p.add_argument("--parts", default="curves,workers")
    p.add_argument("--out", required=True)
    p.add_argument("--resummarise", action="store_true",
                   help="recompute the curves' comparison in --out from the histories it holds (no training)")
    args = p.parse_args()
    if args.resummarise:
        report = read_json(args.out)
        report["curves"] = {"runs": report["curves"]["runs"], **compare_curves(report["curves"]["runs"])}
        write_json(args.out, report)
        print(f"rewrote {args.out}")
        return
    parts = [x for x in args.parts.split(",") if x]
    report: dict[str, Any] = {
        "benchmark": "alignx stage-1 training on a CPU: fp32 vs bf16 autocast; processes x threads",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": STAGE1,
        "environment": {**environment(), "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        if "curves" in parts:
            report["curves"] = curves(Path(tmp), args.steps)
        if "workers" in parts:
            w = workers(Path(tmp), args.worker_steps)
            a, b = w["one_process_two_threads"]["arm_steps_per_hour"], w["two_processes_one_thread"]["arm_steps_per_hour"]
            w["better"] = "2 processes x 1 thread" if b > a else "1 process x 2 threads"
            w["ratio_2x1_over_1x2"] = b / a
            report["workers"] = w
    report["environment"]["load_average_after"] = os.getloadavg()
    write_json(args.out, report)
    if "curves" in report:
        c = report["curves"]
        print(f"bf16 / fp32 steps/s: {c['speedup_bf16_over_fp32']:.2f}x; largest relative loss difference "
              f"{c['difference_bf16_vs_fp32']['loss']['relative_max']:.4f}")
    if "workers" in report:
        print(f"arm-steps/hour: 1x2 {report['workers']['one_process_two_threads']['arm_steps_per_hour']:.0f}, 2x1 "
              f"{report['workers']['two_processes_one_thread']['arm_steps_per_hour']:.0f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
