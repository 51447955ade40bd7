"""`alignx pipeline`: stage 1 (AlignX CPT) then stage 2 (SFT) from one YAML.

The YAML has two sections, ``stage1`` and ``stage2``, each a full train config; stage 2 starts from
stage 1's ``final/`` model unless ``stage2.model.name_or_path`` is set. Outputs land in
``<output_dir>/stage1`` and ``<output_dir>/stage2``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignx.config import ConfigError, TrainConfig, opt, run_settings, section
from alignx.train import outputs
from alignx.train import stage as train_stage
from alignx.utils import read_json

log = logging.getLogger("alignx.pipeline")


def _stage2_default() -> TrainConfig:
    cfg = TrainConfig()
    cfg.stage = 2
    return cfg


@dataclass
class PipelineConfig:
    output_dir: str = opt("runs/alignx", "root of both stages' outputs")
    run_stage1: bool = opt(True, "run stage 1 (false: SFT-only arm)")
    run_stage2: bool = opt(True, "run stage 2")
    skip_finished: bool = opt(
        False,
        "skip a stage whose train_summary.json records exactly this stage's settings and whose final/ exists, and resume "
        "(resume=latest) a stage a stopped session left unfinished with these settings (how experiments resume)",
    )
    stage1: TrainConfig = section(TrainConfig, "stage 1 settings (stage is forced to 1)")
    stage2: TrainConfig = section(_stage2_default, "stage 2 settings (stage is forced to 2; model defaults to stage 1's final model)")

    def __post_init__(self) -> None:
        if self.run_stage2 and self.stage2.data.packing:  # stage 2 is forced later, after its own checks ran as stage 1
            raise ConfigError("stage2.data.packing=true: packing is for stage 1 only; set stage2.data.packing=false")


def _finished(cfg: TrainConfig) -> dict[str, Any] | None:
    """The summary of an earlier, complete run of these settings, else None.

    Settings that say how a run is started, logged or computed, not what it trains (:data:`OPERATIONAL`: resume, logging
    and saving steps, data workers and cache, the chunking of the NTP sum), may differ."""
    path = Path(cfg.output_dir) / "train_summary.json"
    if not path.exists():
        return None
    done = read_json(path)
    same = isinstance(done.get("config"), dict) and run_settings(done["config"]) == run_settings(cfg)
    if not same or not (Path(done.get("final_model", "")) / "config.json").exists():
        return None
    log.info("stage %d: already finished with these settings (%s), skipping", cfg.stage, path)
    return done


def _run(cfg: TrainConfig, skip_finished: bool) -> dict[str, Any]:
    if skip_finished:
        done = _finished(cfg)
        if done:
            return done
        started = outputs.read_record(cfg.output_dir)
        if cfg.resume is None and not cfg.overwrite_output_dir and started and started.get("settings") == run_settings(cfg):
            log.info("stage %d: resuming the unfinished run in %s", cfg.stage, cfg.output_dir)
            cfg = copy.deepcopy(cfg)
            cfg.resume = "latest"
    return train_stage.main(cfg)


def main(cfg: PipelineConfig) -> dict[str, Any]:
    root = Path(cfg.output_dir)
    results: dict[str, Any] = {}
    s1 = copy.deepcopy(cfg.stage1)
    s1.stage = 1
    s1.output_dir = str(root / "stage1")
    s2 = copy.deepcopy(cfg.stage2)
    s2.stage = 2
    s2.output_dir = str(root / "stage2")
    if not s2.model.name_or_path:
        s2.model = copy.deepcopy(s1.model)
    if cfg.run_stage1:
        results["stage1"] = _run(s1, cfg.skip_finished)
        if not cfg.stage2.model.name_or_path:
            s2.model.name_or_path = results["stage1"]["final_model"]
            s2.model.gguf_file = None
    if cfg.run_stage2:
        results["stage2"] = _run(s2, cfg.skip_finished)
    return results
