"""The training-step benchmark: its losses equal the spec's computation (default run); the CPU run of the
whole script with its JSON report (deselected by default; run with ``pytest -m benchmark``)."""

from __future__ import annotations

import importlib.util
import json
import math
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
    # (c) trains the same NTP as (b) and adds the alignment terms (their values: the test below)
    assert report["variants"]["c"]["terms_first"]["ntp"] == pytest.approx(report["variants"]["b"]["loss_first"], rel=1e-5)
    # hooks and output_hidden_states compute the same loss
    assert report["variants"]["c"]["loss_first"] == pytest.approx(report["variants"]["c_hs"]["loss_first"], rel=1e-5)
    ratios = report["ratios"]
    assert ratios["memory_c_over_a"] > 0 and ratios["alignment_overhead_c_over_b"] is not None
    assert ratios["memory_hooks_minus_hidden_states_bytes"] is not None
    assert set(report["targets"]) == {"mfu_ge_0.45", "alignment_overhead_le_0.05", "memory_c_over_a_le_0.6"}
    assert report["targets"]["mfu_ge_0.45"]["met"] is None  # unmeasurable on CPU


def test_variant_losses_equal_the_reference_computation() -> None:
    """What variants a/b/c report as their first loss is the spec's NTP and NTP + 0.3 L_CTR + 0.4 L_LAM on the
    same model and batch, computed by tests/reference_alignx.py (in-process, micro preset)."""
    import torch

    import reference_alignx as ref
    from alignx.config import LossConfig
    from alignx.model.alignx_model import AlignXModel

    bench = _load_script()
    args = bench.parse_args(["--preset", "micro", "--steps", "1", "--warmup", "1", "--device", "cpu", "--quiet"])
    got = {v: bench.run_variant(v, args) for v in ("a", "b", "c")}

    # the model, L_LAM head and first batch variant c started from, rebuilt as run_variant builds them
    lm = bench.build_model("micro", torch.device("cpu"), torch.float32)
    head = AlignXModel(lm, LossConfig(lambda_ctr=0.3, lambda_lam=0.4), with_alignment=True).lam_head
    batch = bench.synthetic_batches(2, 4, 64, lm.config.vocab_size, seed=0)[0]
    index = [[int(batch[k][b]) for k in ("x_start", "x_end", "y_start", "y_end")] for b in range(4)]
    langs = [(str(int(a)), str(int(b))) for a, b in zip(batch["src_lang"], batch["tgt_lang"], strict=True)]
    with torch.no_grad():
        out = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        ntp = ref.ntp(out.logits, batch["labels"]).item()
        ctr = ref.ctr(out.hidden_states[2], index, tau=0.1).item()
        lam = ref.lam(out.hidden_states[-1], index, langs, head.gate.weight, head.up.weight, head.down.weight).item()

    assert got["a"]["loss_first"] == pytest.approx(ntp, rel=1e-5)
    assert got["b"]["loss_first"] == pytest.approx(ntp, rel=1e-5)
    assert got["c"]["terms_first"] == pytest.approx({"ntp": ntp, "ctr": ctr, "lam": lam}, rel=1e-5, abs=1e-6)
    assert got["c"]["loss_first"] == pytest.approx(ntp + 0.3 * ctr + 0.4 * lam, rel=1e-5)
    assert ctr > 1e-3 and abs(lam - math.log(2)) > 1e-4  # neither term is trivially 0 or at chance
