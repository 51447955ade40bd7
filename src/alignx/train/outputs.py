"""Who owns a training output directory: the run record, the fresh / resume / overwrite decision, checkpoints.

A training run writes ``alignx_run.json`` (its record: the settings that define what it trains, plus digests
of the rendered training rows and of the starting model) into ``output_dir`` and into every checkpoint.
With the directory locked (:func:`alignx.utils.output_lock`), :func:`claim` decides what a new run may do:

- an empty directory (or one holding only other commands' results, e.g. ``eval.json``): start;
- training outputs of a run, ``overwrite_output_dir=true``: replace them (after every input was checked);
- training outputs, no ``resume``: refuse, saying whether they are this run's (finished or not) or another's;
- ``resume``: only a directory whose record has these settings; :func:`choose_checkpoint` then takes the
  newest complete checkpoint and refuses one written from other data or another model state.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alignx.config import ConfigError, ModelConfig, TrainConfig, run_settings, settings_diff
from alignx.utils import environment, read_json, remove_path

log = logging.getLogger("alignx.train")

RUN_RECORD = "alignx_run.json"
CONFIG_FILE = "alignx_train.yaml"
SUMMARY = "train_summary.json"
# What a training run writes into its output_dir (checkpoint-N besides).
TRAIN_OUTPUTS = (RUN_RECORD, CONFIG_FILE, SUMMARY, "final", "final_adapter", "runs")
# Results other commands computed from a run's model: stale once that run is replaced.
DERIVED_RESULTS = ("eval.json", "eval.partial.json", "lm_eval_results.json", "analysis.json", "translations.*.jsonl")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


# --------------------------------------------------------------------------------------------
# Records and digests
# --------------------------------------------------------------------------------------------


def model_digest(cfg: ModelConfig) -> str:
    """Digest of the starting model: for a local directory, its config and samples of every weight file
    (a retrained model at the same path differs; a copied one does not); else the hub id."""
    from alignx.model.load import resolve_path

    path, gguf = resolve_path(cfg.name_or_path)
    root = Path(path)
    h = hashlib.blake2b(digest_size=16)
    if not root.is_dir():
        h.update(f"{cfg.name_or_path}|{gguf or cfg.gguf_file}".encode())
    else:
        for f in sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".gguf")):
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                for i in range(16):  # 16 evenly spaced 4 KiB samples: cheap for any model size
                    fh.seek(size * i // 16)
                    h.update(fh.read(4096))
    return h.hexdigest()


# The digest of the rendered rows a record holds: 2 = alignx.data.render.RowDigest (per-column int64 streams); records
# without the field hold the repr-based digest of earlier versions, which is not compared (their settings still are).
DATA_DIGEST_FORMAT = 2


def make_record(cfg: TrainConfig, data_digest: str, precision: str | None = None) -> dict[str, Any]:
    """The run's record: its settings, the digest of its rendered rows (:func:`alignx.data.render.data_digest`), of
    its starting model, and the precision ``model.autocast`` resolved to (``auto`` depends on the machine)."""
    return {
        "kind": "alignx-run",
        "settings": run_settings(cfg),
        "precision": precision,
        "data": data_digest,
        "data_digest_format": DATA_DIGEST_FORMAT,
        "model": model_digest(cfg.model),
        "created": environment()["time"],
    }


def read_record(directory: str | Path) -> dict[str, Any] | None:
    """The run record in ``directory``; for directories of older alignx versions, the settings of their
    ``alignx_train.yaml``; None when there is neither. Settings come in today's names (:func:`run_settings`:
    a setting added since reads as what alignx did before it, a renamed value as its new name)."""
    directory = Path(directory)
    if (directory / RUN_RECORD).is_file():
        try:
            rec = read_json(directory / RUN_RECORD)
        except ValueError:
            return {"settings": None}
        if not isinstance(rec, dict):
            return {"settings": None}
        if isinstance(rec.get("settings"), dict):
            rec["settings"] = run_settings(rec["settings"])
        return rec
    if (directory / CONFIG_FILE).is_file():
        try:
            values = yaml.safe_load((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return {"settings": None}
        return {"settings": run_settings(values) if isinstance(values, dict) else None}
    return None


def mismatch(recorded: dict[str, Any] | None, record: dict[str, Any]) -> str | None:
    """Why ``recorded`` (of a directory or checkpoint) is not the run described by ``record``; None if it is."""
    if recorded is None or recorded.get("settings") is None:
        return "without a readable record of its settings"
    if recorded["settings"] != record["settings"]:
        return f"with other settings ({settings_diff(recorded['settings'], record['settings'])})"
    same_format = recorded.get("data_digest_format") == record.get("data_digest_format")  # older records: another digest
    if same_format and recorded.get("data") and record.get("data") and recorded["data"] != record["data"]:
        return "from other training data (the rendered rows differ)"
    if recorded.get("model") and record.get("model") and recorded["model"] != record["model"]:
        return "from another state of the model at model.name_or_path (its files changed)"
    # Records of versions before the field are not compared (auto meant bf16 on GPUs, fp32 on every CPU then).
    if recorded.get("precision") and record.get("precision") and recorded["precision"] != record["precision"]:
        return (f"under another precision (autocast {recorded['precision']}, here {record['precision']}): set "
                f"model.autocast={recorded['precision']} to continue it")
    return None


# --------------------------------------------------------------------------------------------
# The directory
# --------------------------------------------------------------------------------------------


def checkpoints(directory: str | Path) -> list[Path]:
    """Complete ``checkpoint-N`` directories, newest first. They are renamed into place only when complete;
    the trainer state is the last file a checkpoint gets, so it also marks complete ones of older versions."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True) if (p / "trainer_state.json").is_file()]


def incomplete_checkpoints(directory: str | Path) -> list[Path]:
    """``checkpoint-N`` directories without a trainer state: left half-written by a killed run of an older
    alignx (this one renames only complete checkpoints into place)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _CHECKPOINT.match(p.name) and p.is_dir() and not (p / "trainer_state.json").is_file())


def training_outputs(directory: str | Path) -> list[str]:
    """Names of the training outputs present in ``directory`` (empty: no run owns it)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    names = [n for n in TRAIN_OUTPUTS if (directory / n).exists()]
    return names + sorted(p.name for p in directory.iterdir() if _CHECKPOINT.match(p.name))


def check_resume_path(cfg: TrainConfig) -> None:
    """An explicit ``resume`` directory must be a complete checkpoint."""
    if cfg.resume in (None, "latest"):
        return
    path = Path(cfg.resume)
    if not path.is_dir():
        raise ConfigError(f"resume={cfg.resume}: no such checkpoint directory (or use resume=latest)")
    if not (path / "trainer_state.json").is_file():
        raise ConfigError(f"resume={cfg.resume}: not a complete checkpoint (no trainer_state.json); use resume=latest or another checkpoint")


@dataclass
class Claim:
    """What a run may do in its output directory (see module docstring)."""

    replace: bool = False  # remove the previous run's outputs once every input is checked
    resume: str | None = None  # "latest" or a checkpoint path


def claim(cfg: TrainConfig) -> Claim:
    """Decide, from the settings alone (before the data is read), whether this run may use ``cfg.output_dir``."""
    out = Path(cfg.output_dir)
    present = training_outputs(out)
    if not present:
        return Claim(resume=cfg.resume)
    if cfg.overwrite_output_dir:
        return Claim(replace=True)
    recorded = read_record(out)
    settings = run_settings(cfg)
    why = mismatch(recorded, {"settings": settings})
    shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
    if cfg.resume is None:
        if why is None and (out / SUMMARY).is_file() and (out / "final").is_dir():
            raise ConfigError(f"output_dir {out} already holds a finished run of these settings (final/): "
                              "set overwrite_output_dir=true to train it again, or choose another output_dir")
        if why is None:
            newest = checkpoints(out)
            at = newest[0].name if newest else "no complete checkpoint"
            raise ConfigError(f"output_dir {out} holds an unfinished run of these settings ({at}): continue it with "
                              "resume=latest, start over with overwrite_output_dir=true, or choose another output_dir")
        raise ConfigError(f"output_dir {out} holds the outputs of another run ({shown}), written {why}: "
                          "choose another output_dir, or set overwrite_output_dir=true to replace them")
    if why is not None:
        raise ConfigError(f"resume={cfg.resume}: output_dir {out} holds a run written {why}; resume with its settings, "
                          "or start over with overwrite_output_dir=true or another output_dir")
    return Claim(resume=cfg.resume)


def choose_checkpoint(cfg: TrainConfig, granted: Claim, record: dict[str, Any]) -> str | None:
    """The checkpoint to resume from: the given one, or the newest complete one in ``output_dir``, provided it
    was written by this run (same settings, data and starting model); None starts from the beginning."""
    if granted.resume is None:
        return None
    if granted.resume != "latest":
        path = Path(granted.resume)
        why = mismatch(read_record(path) or read_record(path.parent), record)
        if why is not None:
            raise ConfigError(f"resume={path}: this checkpoint was written {why}; resume would not continue this run")
        return str(path)
    out = Path(cfg.output_dir)
    found = checkpoints(out)
    if not found:
        log.info("resume=latest: no complete checkpoint in %s, starting from the beginning", out)
        return None
    newest = found[0]
    why = mismatch(read_record(newest) or read_record(out), record)
    if why is not None:
        raise ConfigError(f"resume=latest: {newest} was written {why}: start over with overwrite_output_dir=true, "
                          "or choose another output_dir")
    log.info("resume=latest: continuing from %s", newest)
    return str(newest)


def clear_outputs(directory: str | Path) -> list[str]:
    """Remove a replaced run's training outputs and the results computed from its model."""
    directory = Path(directory)
    removed = []
    for name in training_outputs(directory):
        remove_path(directory / name)
        removed.append(name)
    for pattern in DERIVED_RESULTS:
        for p in directory.glob(pattern):
            remove_path(p)
            removed.append(p.name)
    return removed
