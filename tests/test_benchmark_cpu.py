"""The training-step benchmark: its losses equal the spec's computation (default run); the CPU run of the
whole script with its JSON report (deselected by default; run with ``pytest -m benchmark``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


def _load_script():
    return load_benchmark("train_step")


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
        assert r["tokens_per_s"] > 0 and r["tokens_per_s_median"] > 0 and r["mfu"] is None, name  # no peak FLOP/s on CPU
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
    assert set(report["targets"]) == {"mfu_ge_0.45", "alignment_overhead_le_0.05", "memory_c_over_a_le_0.6",
                                      "memory_c_over_a_le_0.5"}
    assert report["targets"]["mfu_ge_0.45"]["met"] is None  # unmeasurable on CPU
    assert report["timing"]["mode"] == "per_process" and ratios["alignment_overhead_c_over_b_paired"] is None


@pytest.mark.benchmark
def test_interleaved_run_writes_json(tmp_path: Path) -> None:
    """--interleave: memory from one subprocess per variant, timing round-robin in one process."""
    bench = _load_script()
    out = tmp_path / "bench.json"
    bench.main(["--preset", "tiny", "--batch", "2", "--seq", "64", "--steps", "3", "--warmup", "1",
                "--variants", "a,b,c", "--interleave", "--device", "cpu", "--quiet", "--out", str(out)])
    report = json.loads(out.read_text())

    assert report["failed"] == {} and set(report["variants"]) == {"a", "b", "c"}
    assert report["timing"]["mode"] == "interleaved" and report["timing"]["at_least_5_timed_steps"] is False
    assert report["timing"]["torch_threads"] >= 1
    assert set(report["environment"]["load_average_1_5_15min"]) == {"before", "before_timing", "after"}
    for name, r in report["variants"].items():
        assert r["step_time_s"]["n"] == 3 and r["step_time_s"]["q1"] <= r["step_time_s"]["median"] <= r["step_time_s"]["q3"]
        assert r["memory"]["peak_bytes"] > 0 and "own subprocess" in r["memory"]["measured_in"], name
        assert [s["round"] for s in r["steps"]] == [0, 1, 2], name
    # first losses come from the variant's own fresh model, so they keep the default mode's relations
    assert report["variants"]["b"]["loss_first"] == pytest.approx(report["variants"]["a"]["loss_first"], rel=1e-4)
    assert report["ratios"]["alignment_overhead_c_over_b_paired"]["n"] == 3
    assert report["targets"]["memory_c_over_a_le_0.5"]["met"] in (True, False)


def test_variant_losses_equal_the_reference_computation() -> None:
    """What variants a/b/c report as their first loss is the spec's NTP and NTP + 0.3 L_CTR + 0.4 L_LAM on the
    same model and batch, computed by tests/reference_alignx.py (in-process, micro preset)."""
    import torch

    import reference_alignx as ref
    from alignx.config import LossConfig
    from alignx.model.alignx_model import AlignXModel

    bench = _load_script()
    args = bench.parse_args(["--preset", "micro", "--steps", "1", "--warmup", "1", "--device", "cpu", "--quiet"])
    got = {v: bench.run_variant(v, args) for v in ("a", "b", "c", "c_sep")}

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
    # c_sep: the same rows' NTP and L_LAM (same model and head), L_CTR from the sentences encoded alone
    sep = got["c_sep"]["terms_first"]
    assert sep["ntp"] == pytest.approx(ntp, rel=1e-5) and sep["lam"] == pytest.approx(lam, rel=1e-5)
    assert abs(sep["ctr"] - ctr) > 1e-4


def test_interleaved_rounds_rotate_and_share_batches(tmp_path: Path) -> None:
    """The interleaved timing steps every variant once per round, in an order rotated by the round, on the same batch;
    on a real architecture given as a model directory (a tiny Gemma-3 saved here), pretrained or random weights."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(123)  # not the benchmark's --seed, so its random init differs from these weights
    cfg = Gemma3TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=16,
                           pad_token_id=0, eos_token_id=1, bos_token_id=2)
    saved = Gemma3ForCausalLM(cfg)
    saved.save_pretrained(tmp_path / "gemma")

    bench = _load_script()
    args = bench.parse_args(["--model", str(tmp_path / "gemma"), "--batch", "3", "--seq", "32", "--steps", "3",
                             "--warmup", "1", "--variants", "a,b,c", "--interleave", "--device", "cpu", "--quiet"])
    assert (args.batch, args.seq) == (3, 32)
    assert args.model_config["model_type"] == "gemma3_text" and args.model_config["vocab_size"] == 512

    lm = bench.build_lm(args, torch.device("cpu"), torch.float32)
    assert torch.equal(lm.model.layers[0].mlp.up_proj.weight, saved.model.layers[0].mlp.up_proj.weight)
    args.weights = "random"
    random_lm = bench.build_lm(args, torch.device("cpu"), torch.float32)
    assert not torch.equal(random_lm.model.layers[0].mlp.up_proj.weight, saved.model.layers[0].mlp.up_proj.weight)
    assert random_lm.config.num_hidden_layers == 4 and random_lm.config.vocab_size == 512

    timed = bench.run_interleaved(["a", "b", "c"], args)
    steps = timed["variants"]
    for v, position in (("a", [2, 1, 0]), ("b", [0, 2, 1]), ("c", [1, 0, 2])):  # rounds 1..3 after 1 warm-up round
        assert [s["round"] for s in steps[v]["steps"]] == [0, 1, 2], v
        assert [s["position"] for s in steps[v]["steps"]] == position, v
        assert steps[v]["step_time_s"]["n"] == 3 and steps[v]["losses_finite"], v
        assert steps[v]["cpu_time_s"]["n"] == 3 and all(s["cpu_seconds"] > 0 for s in steps[v]["steps"]), v
    for r in range(3):  # one batch per round, shared by all variants
        assert len({steps[v]["steps"][r]["tokens"] for v in "abc"}) == 1
    paired = bench.paired_overhead(steps, "c", "b")
    expected = sorted(c["seconds"] / b["seconds"] - 1 for c, b in zip(steps["c"]["steps"], steps["b"]["steps"], strict=True))
    assert paired["n"] == 3 and paired["median"] == pytest.approx(expected[1])


def test_short_rows_hold_both_spans() -> None:
    """--seq down to 32: every synthetic row keeps a non-empty x and y span inside the row, EOS last."""
    bench = _load_script()
    for batch in bench.synthetic_batches(4, 8, 32, 100, seed=1, pad_id=0, eos_id=1):
        lengths = batch["attention_mask"].sum(dim=1)
        assert batch["input_ids"].shape == (8, 32)
        assert bool((batch["x_end"] > batch["x_start"]).all()) and bool((batch["y_end"] > batch["y_start"]).all())
        assert bool((batch["y_end"] < lengths).all()) and bool((batch["x_end"] <= batch["y_start"]).all())
        assert all(int(batch["input_ids"][i, n - 1]) == 1 for i, n in enumerate(lengths.tolist()))


def test_bad_inputs_exit_2(tmp_path: Path) -> None:
    bench = _load_script()
    broken, encoder = tmp_path / "broken", tmp_path / "encoder"  # config.json alone: enough for --weights random
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    encoder.mkdir()
    (encoder / "config.json").write_text('{"model_type": "t5"}')
    for argv in (["--model", str(tmp_path / "missing")], ["--preset", "micro", "--model", "packaged:x"],
                 ["--preset", "micro", "--interleave", "--grad-ckpt"], ["--preset", "micro", "--variants", "a,z"],
                 ["--model", str(broken), "--weights", "random"], ["--model", str(encoder), "--weights", "random"]):
        with pytest.raises(SystemExit) as e:
            bench.parse_args(argv)
        assert e.value.code == 2, argv


def test_plot_reads_result_json(tmp_path: Path) -> None:
    """plot_train_step.py draws a committed result (per-process CPU run) to a PNG; a missing file exits 2."""
    plot = load_benchmark("plot_train_step")
    results = SCRIPT.parent / "results"
    out = tmp_path / "steps.png"
    plot.main([str(results / "cpu_tiny.json"), str(results / "h200_gemma3-270m_shape.json"), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit) as e:
        plot.main([str(tmp_path / "missing.json"), "--out", str(out)])
    assert e.value.code == 2


def test_random_weights_need_only_a_config(tmp_path: Path) -> None:
    """--weights random takes a directory holding config.json alone (a config carried to a GPU machine);
    the model's own weights (the default) still need the weight files."""
    from transformers import LlamaConfig

    bench = _load_script()
    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4).save_pretrained(tmp_path)
    args = bench.parse_args(["--model", str(tmp_path), "--weights", "random"])
    assert args.model_config["model_type"] == "llama" and args.model_config["num_hidden_layers"] == 2
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--model", str(tmp_path)])
    assert e.value.code == 2
