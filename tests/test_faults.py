"""Faults during training: kill -9 at several points (mid-step, mid-checkpoint, mid-export, before the summary), a full
disk while a checkpoint is saved, and a second run into a directory another run holds.

After each fault the output directory holds only complete checkpoints, and ``resume=latest`` finishes the run with
exactly ``max_steps`` steps and final weights equal, bit for bit (CPU), to those of an uninterrupted run.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignx import cli
from alignx.config import TrainConfig, load_config
from alignx.train import stage
from alignx.train.trainer import AlignXTrainer
from alignx.utils import output_lock
from conftest import message, save_tiny_model, write_pairs

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_fault_worker.py")
MAX_STEPS = 6


def _args(model: Path, pairs: Path, out: Path, *extra: str) -> list[str]:
    return [f"model.name_or_path={model}", f"data.parallel=[{pairs}]", f"output_dir={out}", f"optim.max_steps={MAX_STEPS}",
            "optim.batch_size=4", "optim.lr=5e-3", "optim.warmup_ratio=0", "logging_steps=1", "save_steps=2", "report_to=none",
            "loss.ntp_chunk_size=16", *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), env.get("PYTHONPATH", "")]),
               ALIGNX_LOG="WARNING", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return env


def _weights(final: Path) -> dict[str, torch.Tensor]:
    return {**load_file(final / "model.safetensors"), **{f"lam_head.{k}": v for k, v in load_file(final / "lam_head.safetensors").items()}}


def _assert_same_run(summary: dict, baseline: dict) -> None:
    assert summary["steps"] == MAX_STEPS
    assert [h["step"] for h in summary["history"]] == list(range(1, MAX_STEPS + 1))
    assert summary["history"] == baseline["history"]  # every logged loss term of every step
    a, b = _weights(Path(summary["final_model"])), _weights(Path(baseline["final_model"]))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    out = Path(summary["output_dir"])
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".old-*")) and not (out / ".alignx.lock").exists()


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread) -> dict:
    root = tmp_path_factory.mktemp("faults")
    model, pairs = save_tiny_model(root / "tiny"), write_pairs(root / "pairs.jsonl")
    baseline = stage.main(load_config(TrainConfig, [], _args(model, pairs, root / "uninterrupted")))
    return {"model": model, "pairs": pairs, "baseline": baseline}


@pytest.mark.parametrize(
    ("point", "resumed_at", "left_behind"),
    [
        ("step:5", 4, None),  # killed inside step 5: checkpoint-4 is the newest
        ("checkpoint:4", 2, ".tmp-checkpoint-4"),  # killed mid-save: the partial checkpoint never became checkpoint-4
        ("final", 6, ".tmp-final"),  # killed mid-export: resumes at the last step and trains no step more
        ("summary", 6, None),  # final/ in place, no summary yet: the run is unfinished, resumed at its last step
    ],
)
def test_sigkill_then_resume_equals_uninterrupted_run(run, tmp_path, point, resumed_at, left_behind):
    out = tmp_path / "run"
    args = _args(run["model"], run["pairs"], out)
    proc = subprocess.run([sys.executable, str(WORKER), point, "train", *args], env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert checkpoints and all((out / c / "trainer_state.json").is_file() for c in checkpoints)  # only complete ones
    if left_behind:
        assert (out / left_behind).is_dir()
    assert not (out / "train_summary.json").exists()
    with pytest.raises(ValueError, match="holds an unfinished run of these settings"):  # a fresh run does not mix in
        stage.main(load_config(TrainConfig, [], args))
    summary = stage.main(load_config(TrainConfig, [], [*args, "resume=latest"]))
    assert summary["resumed_from"]["step"] == resumed_at
    _assert_same_run(summary, run["baseline"])


def test_disk_full_while_saving_a_checkpoint(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    args = _args(run["model"], run["pairs"], out)
    real = AlignXTrainer._save_optimizer_and_scheduler

    def disk_full(self: AlignXTrainer, output_dir: str) -> None:
        if self.state.global_step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(output_dir, "optimizer.pt"))
        real(self, output_dir)

    monkeypatch.setattr(AlignXTrainer, "_save_optimizer_and_scheduler", disk_full)
    assert cli.main(["train", *args]) == 1
    line = message(capsys.readouterr().err, "train")
    assert line.startswith("alignx train: cannot write ") and line.endswith("optimizer.pt: No space left on device (nothing half-written is left behind)")
    assert sorted(p.name for p in out.iterdir()) == ["alignx_run.json", "alignx_train.yaml", "checkpoint-2"]
    monkeypatch.undo()
    _assert_same_run(stage.main(load_config(TrainConfig, [], [*args, "resume=latest"])), run["baseline"])


def test_second_run_into_a_locked_directory_fails_at_once(run, tmp_path, capsys):
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom alignx.utils import output_lock\nwith output_lock(sys.argv[1], 'train'):\n"
         "    print('held', flush=True)\n    time.sleep(120)", str(out)],
        env=_env(), stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in out.iterdir())
        assert cli.main(["train", *_args(run["model"], run["pairs"], out)]) == 1
        line = message(capsys.readouterr().err, "train")
        assert line.startswith(f"alignx train: {out} is in use by another run (alignx train, pid {holder.pid} on ")
        assert sorted(p.name for p in out.iterdir()) == before == [".alignx.lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out, "train"):  # the kernel dropped the killed holder's lock: nothing stale to clean by hand
        pass
    assert not (out / ".alignx.lock").exists()


def test_read_only_output_directory_is_one_line(run, tmp_path, monkeypatch, capsys):
    """The first write of a run is its lock: a directory it may not write to fails there, before any work."""
    real_open = os.open

    def read_only(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - (tests run as root, so chmod cannot do it)
        if str(path).endswith(".alignx.lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    out = tmp_path / "ro"
    out.mkdir()
    monkeypatch.setattr(os, "open", read_only)
    assert cli.main(["train", *_args(run["model"], run["pairs"], out)]) == 1
    assert message(capsys.readouterr().err, "train") == (
        f"alignx train: cannot write {out}/.alignx.lock: Read-only file system (nothing half-written is left behind)")
    assert not list(out.iterdir())


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 671144192 vs 671144080"),  # torch.save, seen here
    RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed"),
    Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'),
])
def test_a_full_disk_in_torch_or_safetensors_words_is_named(error):
    """torch's zip writer and safetensors do not raise ENOSPC: their messages still end the run in one line that says
    the disk is the likely cause, not an 'internal error'."""
    line, status = cli.failure("train", error)
    assert status == 1 and "\n" not in line
    assert line.startswith("alignx train: a file could not be written, most likely because the disk is full")
    assert "df -h" in line and "internal error" not in line
    assert cli.failure("train", RuntimeError("shape mismatch"))[0].startswith("alignx train: internal error")
    truncated = RuntimeError("[enforce fail at inline_container.cc:145] . PytorchStreamReader failed reading zip archive: failed finding central directory")
    assert cli.failure("train", truncated)[0].startswith("alignx train: internal error")  # reading a broken file is not a full disk
