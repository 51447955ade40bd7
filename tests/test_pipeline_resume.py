"""`alignx pipeline` with skip_finished (how experiments resume): a stage is skipped only when its
train_summary.json records exactly the same settings and its final model exists."""

from __future__ import annotations

import json
from pathlib import Path

from alignx.config import TrainConfig, load_config, to_dict
from alignx.pipeline import _finished


def test_finished_stage_needs_same_settings_and_final_model(tmp_path):
    cfg = load_config(TrainConfig, overrides={"output_dir": str(tmp_path), "loss.lambda_ctr": 0.5})
    assert _finished(cfg) is None  # nothing there
    final = tmp_path / "final"
    summary = {"kind": "train", "final_model": str(final), "config": json.loads(json.dumps(to_dict(cfg)))}
    (tmp_path / "train_summary.json").write_text(json.dumps(summary))
    assert _finished(cfg) is None  # no final model yet
    final.mkdir()
    (final / "config.json").write_text("{}")
    assert _finished(cfg)["final_model"] == str(final)
    other = load_config(TrainConfig, overrides={"output_dir": str(tmp_path), "loss.lambda_ctr": 0.3})
    assert _finished(other) is None  # different settings: train again


def test_pipeline_resumes_unfinished_stage_skips_finished_one_and_refuses_changed_settings(tmp_path, monkeypatch, caplog, one_thread):
    """The experiment flow: a session stopped mid-stage; the next one (skip_finished) resumes that stage from its
    newest checkpoint and ends with the weights of an uninterrupted run; a finished stage is skipped even after
    `alignx eval` wrote into its directory; changed settings are refused unless the stage may overwrite."""
    import pytest
    import torch
    from safetensors.torch import load_file

    from alignx.eval.run import EvalConfig
    from alignx.eval.run import main as eval_main
    from alignx.pipeline import PipelineConfig
    from alignx.pipeline import main as pipeline_main
    from alignx.train import stage
    from alignx.train.trainer import AlignXTrainer
    from conftest import save_tiny_model, write_pairs

    model, pairs = save_tiny_model(tmp_path / "tiny"), write_pairs(tmp_path / "pairs.jsonl")
    train = {"model.name_or_path": str(model), "data.parallel": [str(pairs)], "optim.max_steps": 4, "optim.batch_size": 4,
             "optim.lr": 5e-3, "optim.warmup_ratio": 0, "save_steps": 2, "logging_steps": 1, "report_to": "none"}
    straight = stage.main(load_config(TrainConfig, [], {**train, "output_dir": str(tmp_path / "straight")}))
    over = {"output_dir": str(tmp_path / "arm"), "run_stage2": False, "skip_finished": True, **{f"stage1.{k}": v for k, v in train.items()}}

    real = AlignXTrainer.compute_loss

    def stop_in_step_3(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if self.state.global_step == 2:
            raise KeyboardInterrupt  # the session ends mid-run
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AlignXTrainer, "compute_loss", stop_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        pipeline_main(load_config(PipelineConfig, [], over))
    monkeypatch.undo()
    stage_dir = tmp_path / "arm" / "stage1"
    assert sorted(p.name for p in stage_dir.glob("checkpoint-*")) == ["checkpoint-2"] and not (stage_dir / "final").exists()

    caplog.set_level("INFO")
    resumed = pipeline_main(load_config(PipelineConfig, [], over))["stage1"]
    assert "resuming the unfinished run" in caplog.text
    assert resumed["steps"] == 4 and resumed["resumed_from"]["step"] == 2
    a, b = load_file(stage_dir / "final" / "model.safetensors"), load_file(Path(straight["final_model"]) / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # alignx eval writes its own result into the stage directory; the stage stays finished and is skipped
    eval_main(load_config(EvalConfig, [], {"model.name_or_path": str(stage_dir / "final"), "perplexity_files": [str(pairs)],
                                           "output_dir": str(stage_dir)}))
    before = (stage_dir / "final" / "model.safetensors").stat().st_mtime_ns
    caplog.clear()
    assert pipeline_main(load_config(PipelineConfig, [], over))["stage1"]["steps"] == 4
    assert "already finished with these settings" in caplog.text
    assert (stage_dir / "final" / "model.safetensors").stat().st_mtime_ns == before

    # the arm changed: its old stage is not mixed with the new settings ...
    changed = {**over, "stage1.optim.lr": 1e-3}
    with pytest.raises(ValueError, match=r"holds the outputs of another run .* \(optim\.lr: 0\.005 -> 0\.001\)"):
        pipeline_main(load_config(PipelineConfig, [], changed))
    # ... unless the stage may overwrite (experiment rerun=true): the old outputs and results from its model go
    replaced = pipeline_main(load_config(PipelineConfig, [], {**changed, "stage1.overwrite_output_dir": True}))["stage1"]
    assert replaced["steps"] == 4 and replaced["config"]["optim"]["lr"] == 1e-3
    assert not (stage_dir / "eval.json").exists()


def test_records_with_the_older_data_digest_are_compared_by_settings_only():
    """Records written before the Arrow data path hold a digest of another kind: resuming them compares their settings,
    not the digests (which would always differ); records of today's kind still catch other training rows."""
    from alignx.train import outputs

    settings = {"stage": 1}
    today = {"settings": settings, "data": "b" * 32, "data_digest_format": outputs.DATA_DIGEST_FORMAT, "model": "m"}
    older = {"settings": settings, "data": "a" * 32, "model": "m"}  # no data_digest_format
    assert outputs.mismatch(older, today) is None
    assert outputs.mismatch({**today, "data": "c" * 32}, today) == "from other training data (the rendered rows differ)"
    assert outputs.mismatch({**older, "settings": {"stage": 2}}, today).startswith("with other settings")
