"""`alignx experiment` end to end on a tiny model: arms, extra analyses, eval items, compare, resume."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from alignx.config import load_config
from alignx.experiment import ExperimentConfig, cpu_cores, main
from conftest import SENTENCES, save_tiny_model, write_pairs


def _yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def test_experiment_arms_compare_and_resume(tmp_path: Path, caplog):
    model = save_tiny_model(tmp_path / "tiny", "llama")
    pairs = write_pairs(tmp_path / "pairs.jsonl", SENTENCES * 2)
    stage = {"data": {"parallel": [str(pairs)], "max_length": 512}, "optim": {"max_steps": 2, "batch_size": 4, "lr": 1e-3},
             "save_steps": 1, "report_to": "none", "logging_steps": 1}
    pipeline = _yaml(tmp_path / "pipeline.yaml", {"run_stage2": False, "stage1": {"model": {"name_or_path": str(model)}, **stage}})
    arms = [
        _yaml(tmp_path / "base.yaml", {"run_stage1": False}),
        _yaml(tmp_path / "cpt.yaml", {"stage1": {"loss": {"lambda_ctr": 0.0, "lambda_lam": 0.0}}}),
        _yaml(tmp_path / "centred.yaml", {"stage1": {"loss": {"ctr_center": True, "lambda_ctr": 1.0}}}),
    ]
    analyze = _yaml(tmp_path / "analyze.yaml", {"parallel": [str(pairs)], "pooling": ["mean"], "min_sentences": 2, "plots": False})
    ev = _yaml(tmp_path / "eval.yaml", {"translation_files": [str(pairs)], "directions": ["en-de"], "shots": 1, "limit": 3,
                                        "max_new_tokens": 4, "perplexity_files": [str(pairs)]})
    compare = _yaml(tmp_path / "compare.yaml", {"pairs": ["centred:cpt", "cpt:base"], "layer": 1, "n_boot": 200,
                                                "analyses": {"in": "analysis.json", "ood": "analysis_ood/analysis.json"}})
    cfg = load_config(ExperimentConfig, [], {
        "output_dir": str(tmp_path / "runs"), "pipeline": [pipeline], "arms": arms, "analyze": [analyze],
        "extra_analyses": {"ood": [analyze]}, "eval": [ev], "extra_evals": {"ood": [ev]}, "compare": [compare],
        "workers": 1,  # one process: caplog sees it
    })
    main(cfg)
    runs = tmp_path / "runs"
    for arm in ("base", "cpt", "centred"):
        assert (runs / arm / "arm.json").exists() and (runs / arm / "analysis_ood" / "analysis.json").exists()
        assert json.loads((runs / arm / "eval_ood" / "eval.json").read_text())["run_name"] == f"{arm} (ood)"
    # checkpoints are removed once final/ exists; the trained model stays
    assert (runs / "cpt" / "stage1" / "final" / "config.json").exists()
    assert not list((runs / "cpt" / "stage1").glob("checkpoint-*"))
    comparison = json.loads((runs / "comparison.json").read_text())
    metrics = {(r["a"], r["metric"]) for r in comparison["differences"]}
    assert {("centred", "MEXA L1 mean (in)"), ("centred", "MEXA L1 mean (ood)"), ("centred", "chrF++ en→X (in-domain)"),
            ("centred", "perplexity en (relative; in-domain)"), ("centred", "chrF++ en→X (out-of-domain)"),
            ("cpt", "MEXA L1 mean (in)")} <= metrics
    assert (runs / "comparison.md").exists() and (runs / "differences.png").exists()
    # Resume: a finished arm is skipped; an arm whose stage finished but whose evaluation did not resumes
    # after the training (the stage is not trained again).
    (runs / "centred" / "arm.json").unlink()
    before = (runs / "centred" / "stage1" / "final" / "model.safetensors").stat().st_mtime_ns
    evaluated = {p: p.stat().st_mtime_ns for p in (runs / "centred").glob("**/*.json") if p.name in ("eval.json", "analysis.json")}
    (runs / "centred" / "analysis_ood" / "analysis.json").unlink()  # stopped before its last analysis
    caplog.set_level("INFO")
    main(cfg)
    assert "cpt: already done" in caplog.text
    assert "already finished with these settings" in caplog.text
    assert (runs / "centred" / "stage1" / "final" / "model.safetensors").stat().st_mtime_ns == before
    assert (runs / "centred" / "arm.json").exists()
    # finished evaluations with the same settings are kept; only the missing one ran again
    for path, mtime in evaluated.items():
        assert path.exists() and (path.stat().st_mtime_ns == mtime) == (path.parent.name != "analysis_ood"), path


def test_experiment_skips_an_arm_another_process_holds(tmp_path: Path, caplog):
    """Two `alignx experiment` processes on one output dir split the arms: an arm locked elsewhere is skipped."""
    import subprocess
    import sys

    model = save_tiny_model(tmp_path / "tiny", "llama")
    pipeline = _yaml(tmp_path / "pipeline.yaml", {"run_stage2": False, "stage1": {"model": {"name_or_path": str(model)}}})
    arms = [_yaml(tmp_path / "held.yaml", {"run_stage1": False}), _yaml(tmp_path / "base.yaml", {"run_stage1": False})]
    runs = tmp_path / "runs"
    (runs / "held").mkdir(parents=True)
    holder = subprocess.Popen(  # another process owns runs/held/ (flock, as alignx's own lock)
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(runs / 'held' / '.alignx.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        caplog.set_level("INFO")
        done = main(load_config(ExperimentConfig, [], {"output_dir": str(runs), "pipeline": [pipeline], "arms": arms, "workers": 1}))
    finally:
        holder.kill()
        holder.wait()
    assert set(done) == {"base"} and (runs / "base" / "arm.json").exists()
    assert not (runs / "held" / "arm.json").exists()
    assert "held: skipped" in caplog.text and "in use by another run" in caplog.text
    assert (runs / "report.md").exists()


def test_experiment_workers_split_the_arms(tmp_path: Path):
    """workers=2: two spawned processes share the arms through the arm locks; every arm runs exactly once, each
    worker with half the cores' torch threads, and the report sees them all."""
    model = save_tiny_model(tmp_path / "tiny", "llama")
    pairs = write_pairs(tmp_path / "pairs.jsonl", SENTENCES)
    stage = {"model": {"name_or_path": str(model)}, "data": {"parallel": [str(pairs)], "max_length": 512},
             "optim": {"max_steps": 1, "batch_size": 4}, "save_steps": 100, "report_to": "none"}
    pipeline = _yaml(tmp_path / "pipeline.yaml", {"run_stage2": False, "stage1": stage})
    names = ["base", "cpt", "ctr"]
    arms = [_yaml(tmp_path / "base.yaml", {"run_stage1": False}),
            _yaml(tmp_path / "cpt.yaml", {"stage1": {"loss": {"lambda_ctr": 0.0, "lambda_lam": 0.0}}}),
            _yaml(tmp_path / "ctr.yaml", {"stage1": {"loss": {"lambda_ctr": 1.0}}})]
    runs = tmp_path / "runs"
    over = {"output_dir": str(runs), "pipeline": [pipeline], "arms": arms}
    from alignx.experiment import resolve_workers

    auto = resolve_workers(load_config(ExperimentConfig, [], over))
    assert auto == (1 if torch.cuda.is_available() or cpu_cores() < 2 else 2)  # workers=0: auto
    done = main(load_config(ExperimentConfig, [], {**over, "workers": 2}))
    assert list(done) == names
    for n in names:
        process = json.loads((runs / n / "arm.json").read_text())["process"]
        assert process["torch_threads"] == max(1, cpu_cores() // 2) and process["workers"] == 2
    assert (runs / "report.md").exists()
    for n in ("cpt", "ctr"):
        assert (runs / n / "stage1" / "final" / "config.json").exists()
