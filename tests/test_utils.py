"""Atomic writes and output-directory locks (alignx.utils)."""

from __future__ import annotations

import json
import os

import pytest

from alignx import utils


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = utils.write_json(tmp_path / "result.json", {"v": 1})

    def refuse(src, dst):  # noqa: ANN001 - the rename that would publish the new content fails (e.g. a full disk)
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        utils.write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary sibling left


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "final"
    with utils.atomic_dir(dest) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), utils.atomic_dir(dest) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("killed half-way")
    assert (dest / "a").read_text() == "old"
    with utils.atomic_dir(dest) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_output_lock_is_reentrant_and_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "b"
    with utils.output_lock(out, "train"):
        info = json.loads((out / utils.LOCK_NAME).read_text())
        assert info["command"] == "train" and info["pid"] == os.getpid()
        with utils.output_lock(out, "eval"):  # the same process may enter again (e.g. experiment -> report)
            pass
        assert (out / utils.LOCK_NAME).exists()
    assert not (tmp_path / "a").exists()  # created by the lock, empty again: removed
    (tmp_path / "kept").mkdir()
    with utils.output_lock(tmp_path / "kept", "eval"):
        (tmp_path / "kept" / "eval.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["eval.json"]


def test_remove_stale_removes_only_temporary_siblings(tmp_path):
    for name in (".tmp-checkpoint-4", ".old-final", "checkpoint-2", "eval.json"):
        (tmp_path / name).mkdir() if "checkpoint" in name or "final" in name else (tmp_path / name).write_text("x")
    assert utils.remove_stale(tmp_path) == [".old-final", ".tmp-checkpoint-4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "eval.json"]
