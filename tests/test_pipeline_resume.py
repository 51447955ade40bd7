"""`alignx pipeline` with skip_finished (how experiments resume): a stage is skipped only when its
train_summary.json records exactly the same settings and its final model exists."""

from __future__ import annotations

import json

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
