"""CPU run of the training-step benchmark (deselected by default; run with ``pytest -m benchmark``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("alignx_bench_train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.benchmark
def test_tiny_preset_two_steps_writes_json(tmp_path: Path) -> None:
    bench = _load_script()
    out = tmp_path / "bench.json"
    bench.main(["--preset", "tiny", "--batch", "2", "--seq", "64", "--steps", "2", "--warmup", "1",
                "--variants", "a,b,c,c_hs", "--device", "cpu", "--quiet", "--out", str(out)])
    report = json.loads(out.read_text())

    assert report["failed"] == {}
    assert set(report["variants"]) == {"a", "b", "c", "c_hs"}
    assert report["config"]["preset"] == "tiny" and report["config"]["dtype"] == "float32"
    assert "6 * N" in report["mfu"]["formula"] and report["mfu"]["peak_flops"] is None
    assert report["mfu"]["flops_per_token"] > report["mfu"]["flops_per_token_excl_head"] > 0
    assert "versions" in report["environment"] and report["environment"]["versions"]["torch"]
    for name, r in report["variants"].items():
        assert r["step_time_s"]["median"] > 0, name
        assert 0 < r["tokens_per_step"] <= r["padded_tokens_per_step"] == 2 * 64, name
        assert r["tokens_per_s"] > 0 and r["mfu"] is None, name  # no peak FLOP/s on CPU
        assert r["memory"]["peak_bytes"] > 0, name
        assert r["losses_finite"], name
    # same model, same batches: the NTP-only AlignX loss starts at the plain HF loss
    assert report["variants"]["b"]["loss_first"] == pytest.approx(report["variants"]["a"]["loss_first"], rel=1e-4)
    # (c) adds weighted L_CTR + L_LAM to the same NTP, so its first loss is larger
    assert report["variants"]["c"]["loss_first"] > report["variants"]["b"]["loss_first"]
    # hooks and output_hidden_states compute the same loss
    assert report["variants"]["c"]["loss_first"] == pytest.approx(report["variants"]["c_hs"]["loss_first"], rel=1e-5)
    ratios = report["ratios"]
    assert ratios["memory_c_over_a"] > 0 and ratios["alignment_overhead_c_over_b"] is not None
    assert ratios["memory_hooks_minus_hidden_states_bytes"] is not None
    assert set(report["targets"]) == {"mfu_ge_0.45", "alignment_overhead_le_0.05", "memory_c_over_a_le_0.6"}
    assert report["targets"]["mfu_ge_0.45"]["met"] is None  # unmeasurable on CPU
