"""`alignx experiment`: run several arms (pipeline override files) on the same data and budget, evaluate, compare.

An arm is a YAML of PipelineConfig overrides layered on the experiment's base pipeline files, e.g.
``arms/alignx_no_ctr.yaml`` = ``{stage1: {loss: {lambda_ctr: 0}}}``. An arm with both stages off
(``run_stage1: false, run_stage2: false``) evaluates the base model. Each arm writes
``<output_dir>/<arm>/{stage1,stage2}/``, ``eval.json``, ``analysis.json`` and ``arm.json``; the
report compares them all. Arms whose ``arm.json`` exists are skipped (``rerun=true`` forces them).

Each arm is locked while it runs, not the whole output directory: several ``alignx experiment`` processes
with the same config (other GPUs, other machines on a shared disk) split the arms between them, each
skipping an arm another process holds. The report is written by whichever finishes with the directory free.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignx.config import ConfigError, load_config, opt, to_dict
from alignx.pipeline import PipelineConfig
from alignx.pipeline import main as run_pipeline
from alignx.utils import OutputDirBusy, environment, output_lock, read_json, write_json

log = logging.getLogger("alignx.experiment")


@dataclass
class ExperimentConfig:
    name: str = opt("alignx-experiment", "experiment name (report title)")
    output_dir: str = opt("runs/experiment", "one sub-directory per arm, plus the report")
    pipeline: list[str] = opt([], "base PipelineConfig YAML files shared by every arm")
    arms: list[str] = opt([], "arm override YAML files (PipelineConfig keys); the arm's name is the file stem")
    only: list[str] = opt([], "run only these arm names (default: all)")
    eval: list[str] = opt([], "EvalConfig YAML files (model and output_dir are filled in per arm); empty: no eval")
    extra_evals: dict[str, list[str]] = opt({}, "name -> EvalConfig YAML files of further evaluations (e.g. an out-of-domain set), written to <arm>/eval_<name>/")
    analyze: list[str] = opt([], "AnalyzeConfig YAML files (model and output_dir filled in per arm); empty: no analysis")
    extra_analyses: dict[str, list[str]] = opt({}, "name -> AnalyzeConfig YAML files of further analyses (e.g. an out-of-domain set), written to <arm>/analysis_<name>/")
    compare: list[str] = opt([], "CompareConfig YAML files: after the arms, differences with paired-bootstrap CIs (runs_dir filled in)")
    baseline: str = opt("base", "arm the report computes deltas against")
    keep_checkpoints: bool = opt(False, "keep the stages' checkpoint-N dirs (weights + optimiser state, ~12 bytes/parameter) once final/ is written")
    rerun: bool = opt(
        False, "re-run arms that already have arm.json; a stage whose settings changed since replaces its old outputs (stages "
        "already trained with the same settings are still skipped)",
    )
    workers: int = opt(
        0,
        "arms run at once, each worker a process with (CPU cores / workers) torch threads that takes the next arm no "
        "other worker holds (the arm locks, as separate `alignx experiment` runs share them). 0 (auto): 2 on a machine "
        "without a GPU that has at least 2 cores and 2 arms, else 1. On the 2-core dev box 2 workers of 1 thread train "
        "1.30x the arm-steps per hour of 1 worker of 2 threads (benchmarks/cpu_training.py), at twice the memory",
    )

    def __post_init__(self) -> None:
        if not self.arms:
            raise ConfigError("arms: give at least one arm YAML")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0: auto), got {self.workers}")
        extra = [p for files in [*self.extra_analyses.values(), *self.extra_evals.values()] for p in files]
        for path in [*self.arms, *self.pipeline, *self.eval, *self.analyze, *extra, *self.compare]:
            if not Path(path).exists():
                raise ConfigError(f"{path}: file not found")


def final_model(pipe: PipelineConfig, root: Path) -> str:
    """The model an arm ends with: stage 2's, else stage 1's, else the base model."""
    if pipe.run_stage2:
        return str(root / "stage2" / "final")
    if pipe.run_stage1:
        return str(root / "stage1" / "final")
    return pipe.stage1.model.name_or_path


def _done(path: Path, cfg: Any) -> bool:
    """Whether ``path`` (an eval.json / analysis.json) was written with exactly these settings, for the same model: an
    arm that stopped between its evaluations, or gained a new one, does not redo the finished ones. The model's
    weights are part of it through the stages, which a changed setting retrains (and their results are then newer)."""
    if not path.is_file():
        return False
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    model = Path(cfg.model.name_or_path)
    newer = model.exists() and any(p.stat().st_mtime > path.stat().st_mtime for p in [model, *model.glob("*")])
    return old.get("config") == to_dict(cfg) and not newer


def run_arm(cfg: ExperimentConfig, arm_file: str) -> dict[str, Any]:
    import torch

    from alignx.eval import analyze as analyze_mod
    from alignx.eval import run as eval_mod

    name = Path(arm_file).stem
    root = Path(cfg.output_dir) / name
    # A session that stopped mid-arm resumes at the first unfinished stage.
    over: dict[str, Any] = {"output_dir": str(root), "skip_finished": True}
    if cfg.rerun:
        over.update({"stage1.overwrite_output_dir": True, "stage2.overwrite_output_dir": True})
    pipe = load_config(PipelineConfig, [*cfg.pipeline, arm_file], over)
    start = time.time()
    train = run_pipeline(pipe)
    if not cfg.keep_checkpoints:
        for stage in ("stage1", "stage2"):
            if (root / stage / "final").exists():
                for ckpt in sorted((root / stage).glob("checkpoint-*")):
                    shutil.rmtree(ckpt)
    model_path = final_model(pipe, root)
    base_model = copy.deepcopy(pipe.stage1.model)
    model_over = {"model.name_or_path": model_path, "run_name": name, "output_dir": str(root)}
    if not (pipe.run_stage1 or pipe.run_stage2) and base_model.gguf_file:
        model_over["model.gguf_file"] = base_model.gguf_file
    results: dict[str, Any] = {"arm": name, "model": model_path}
    # (result key, config class, command, YAML files, output dir, file written, name of an extra one)
    jobs: list[tuple[str, Any, Any, list[str], Path, str, str | None]] = []
    for kind, cls, run, main_files, extras, result in (
        ("eval", eval_mod.EvalConfig, eval_mod.main, cfg.eval, cfg.extra_evals, "eval.json"),
        ("analysis", analyze_mod.AnalyzeConfig, analyze_mod.main, cfg.analyze, cfg.extra_analyses, "analysis.json"),
    ):
        if main_files:
            jobs.append((kind, cls, run, list(main_files), root, result, None))
        jobs += [(f"{kind}_{extra}", cls, run, list(files), root / f"{kind}_{extra}", result, extra) for extra, files in extras.items()]
    for key, cls, run, files, out_dir, result, extra in jobs:
        results[key] = str(out_dir / result)
        over = {**model_over, "output_dir": str(out_dir), **({"run_name": f"{name} ({extra})"} if extra else {})}
        job_cfg = load_config(cls, files, over)
        if not _done(out_dir / result, job_cfg):  # finished with these settings: kept
            run(job_cfg)
    summary = {
        "kind": "arm",
        **results,
        "runtime_s": round(time.time() - start, 1),
        "train": {k: {kk: v[kk] for kk in ("steps", "runtime_s", "final_losses", "first_losses", "data")} for k, v in train.items()},
        "pipeline": to_dict(pipe),
        "env": environment(),
        "process": {"pid": os.getpid(), "torch_threads": torch.get_num_threads(), "workers": cfg.workers or 1},
    }
    write_json(root / "arm.json", summary)
    return summary


def resolve_workers(cfg: ExperimentConfig) -> int:
    """``cfg.workers``, or for 0 (auto) 2 on a CPU-only machine with at least 2 cores and 2 arms to run, else 1."""
    if cfg.workers:
        return cfg.workers
    import torch

    arms = [a for a in cfg.arms if not cfg.only or Path(a).stem in cfg.only]
    return 2 if not torch.cuda.is_available() and cpu_cores() >= 2 and len(arms) >= 2 else 1


def main(cfg: ExperimentConfig) -> dict[str, Any]:
    workers = resolve_workers(cfg)
    done = _run_workers(cfg, workers) if workers > 1 else _run_arms(cfg)
    try:
        with output_lock(cfg.output_dir, "experiment report"):  # report.* and comparison.* under it
            _report(cfg)
    except OutputDirBusy as e:
        log.warning("report not written: %s (the process that holds it writes it)", e)
    return done


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _worker(cfg: ExperimentConfig, threads: int) -> dict[str, Any]:
    """One worker process of :func:`_run_workers`: ``threads`` torch threads, then the arms no other worker holds."""
    import torch

    from alignx.utils import setup_logging

    setup_logging()
    torch.set_num_threads(threads)
    return _run_arms(cfg)


def _run_workers(cfg: ExperimentConfig, workers: int) -> dict[str, Any]:
    """``workers`` processes running :func:`_run_arms` at once (spawned: no state shared but the arm locks), with
    the cores split between them; the arms each finished, merged."""
    import multiprocessing

    threads = max(1, cpu_cores() // workers)
    log.info("%d workers of %d torch thread(s) each share the arms (workers=1 runs them one by one)", workers, threads)
    cfg = dataclasses.replace(cfg, workers=workers)  # what each arm.json records
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        parts = pool.starmap(_worker, [(cfg, threads)] * workers)
    done: dict[str, Any] = {}
    for part in parts:
        done.update(part)
    return {Path(a).stem: done[Path(a).stem] for a in cfg.arms if Path(a).stem in done}


def _run_arms(cfg: ExperimentConfig) -> dict[str, Any]:
    arms = [a for a in cfg.arms if not cfg.only or Path(a).stem in cfg.only]
    done: dict[str, Any] = {}
    for i, arm in enumerate(arms, 1):
        name = Path(arm).stem
        root = Path(cfg.output_dir) / name
        try:
            with output_lock(root, "experiment"):
                if (root / "arm.json").exists() and not cfg.rerun:
                    log.info("[%d/%d] %s: already done (%s), skipping", i, len(arms), name, root / "arm.json")
                    done[name] = read_json(root / "arm.json")
                    continue
                log.info("[%d/%d] arm %s", i, len(arms), name)
                done[name] = run_arm(cfg, arm)
        except OutputDirBusy as e:
            log.info("[%d/%d] %s: skipped, %s", i, len(arms), name, e)
    return done


def _report(cfg: ExperimentConfig) -> None:
    from alignx.report import report as report_mod

    runs = [str(Path(cfg.output_dir) / Path(a).stem) for a in cfg.arms if (Path(cfg.output_dir) / Path(a).stem / "arm.json").exists()]
    baseline = cfg.baseline if any(Path(r).name == cfg.baseline for r in runs) else ""
    report_mod.main(load_config(report_mod.ReportConfig, [], {"runs": runs, "output_dir": cfg.output_dir, "title": cfg.name, "baseline": baseline}))
    if cfg.compare:
        from alignx.report import compare as compare_mod

        compare_mod.main(load_config(compare_mod.CompareConfig, cfg.compare, {"runs_dir": cfg.output_dir}))
