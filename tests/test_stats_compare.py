"""Paired bootstrap statistics, per-item result data, and `alignx compare` over fake arm directories."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from sacrebleu.metrics import CHRF

from alignx.config import ConfigError, load_config
from alignx.eval.stats import paired_corpus_diff, paired_mean_diff, seed_spread
from alignx.eval.translation import chrf_from_stats, chrf_sentence_stats
from alignx.report.compare import CompareConfig, compare


def test_paired_mean_diff_point_value_by_hand_and_degenerate_interval():
    a = [[1, 0, 1, 1], [0, 0]]
    b = [[0, 0, 1, 0], [1, 0]]
    # mean over strata of the per-stratum mean difference: (2/4 + (-1/2)) / 2 = 0
    d = paired_mean_diff(a, b, n_boot=500)
    assert d["delta"] == pytest.approx((2 / 4 + -1 / 2) / 2) and d["n"] == 6 and d["strata"] == 2
    # A constant difference has no sampling spread.
    c = paired_mean_diff([3.0, 5.0, 7.0], [2.5, 4.5, 6.5], n_boot=300)
    assert c["delta"] == pytest.approx(0.5) and c["lo"] == pytest.approx(0.5) and c["hi"] == pytest.approx(0.5)


def test_paired_mean_diff_interval_matches_normal_theory():
    rng = random.Random(0)
    diffs = [rng.gauss(0.2, 1.0) for _ in range(400)]
    d = paired_mean_diff(diffs, [0.0] * 400, n_boot=4000, seed=1)
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (len(diffs) - 1))
    half = 1.96 * sd / math.sqrt(len(diffs))  # the textbook interval the bootstrap should approach
    assert d["lo"] == pytest.approx(mean - half, abs=0.25 * half)
    assert d["hi"] == pytest.approx(mean + half, abs=0.25 * half)
    with pytest.raises(ValueError):
        paired_mean_diff([1, 2], [1, 2, 3])


def test_paired_corpus_diff_is_the_corpus_metric_difference():
    hyps_a = ["the cat sat on the mat", "a dog barks", "hello world"]
    hyps_b = ["the cat", "dog", "hello"]
    refs = ["the cat sat on the mat", "the dog barks", "hello world"]
    sa, sb = chrf_sentence_stats(hyps_a, refs), chrf_sentence_stats(hyps_b, refs)
    chrf = CHRF(word_order=2)
    expected = chrf.corpus_score(hyps_a, [refs]).score - chrf.corpus_score(hyps_b, [refs]).score
    d = paired_corpus_diff(sa, sb, chrf_from_stats, n_boot=200)
    assert d["delta"] == pytest.approx(expected, abs=1e-9) and d["n"] == 3
    assert d["lo"] <= d["delta"] <= d["hi"]
    # relative: perplexity-style ratio of two corpus statistics
    r = paired_corpus_diff([[2.0, 1.0], [4.0, 2.0]], [[1.0, 1.0], [2.0, 2.0]], lambda s: s[0] / s[1], relative=True, n_boot=200)
    assert r["delta"] == pytest.approx(1.0) and r["lo"] == pytest.approx(1.0)


def test_seed_spread():
    s = seed_spread([1.0, 3.0])
    assert s["mean"] == 2.0 and s["sd"] == pytest.approx(math.sqrt(2)) and s["seeds"] == 2
    assert math.isnan(seed_spread([1.0])["sd"])


# ---------------------------------------------------------------------------- compare


def _arm(root: Path, name: str, wins: dict[str, str], hyps: list[str], nll: list[float]) -> None:
    d = root / name
    d.mkdir(parents=True)
    layers = 3
    analysis = {
        "kind": "analysis", "recommended_layer": 1, "num_layers": layers - 1,
        "pooling": {"mean": {
            "mexa_items": {lang: [w] * layers for lang, w in wins.items()},
            "pairs_digest": dict.fromkeys(wins, "same"),
        }},
    }
    (d / "analysis.json").write_text(json.dumps(analysis))
    refs = ["das ist ein Haus", "der Hund bellt laut", "guten Morgen"]
    entry = {"items": {"chrf_stats": chrf_sentence_stats(hyps, refs), "off_target": [0, 0, 1]}}
    ev = {"kind": "eval", "translation": {"en-de": entry},
          "perplexity": {"en": {"ppl": math.exp(sum(nll) / 30), "items": {"nll": nll, "tokens": [10, 10, 10]}}}}
    (d / "eval.json").write_text(json.dumps(ev))


def test_compare_pools_seeds_and_reports_intervals(tmp_path: Path):
    good = ["das ist ein Haus", "der Hund bellt laut", "guten Morgen"]
    _arm(tmp_path, "ax_s0", {"de": "1111011111", "fr": "1111111101"}, good, [10.0, 10.0, 10.0])
    _arm(tmp_path, "ax_s1", {"de": "1111111111", "fr": "1101111111"}, good, [10.0, 10.0, 10.0])
    _arm(tmp_path, "cpt", {"de": "0100010000", "fr": "0001000010"}, ["ein Haus", "Hund", "Morgen"], [11.0, 11.0, 11.0])
    cfg = load_config(CompareConfig, overrides={
        "runs_dir": str(tmp_path), "groups": {"ax": ["ax_s0", "ax_s1"]}, "pairs": ["ax:cpt"], "layer": 1,
        "analyses": {"in-domain": "analysis.json"}, "n_boot": 300,
        "labels": {"ax": "not the reference: test variant", "unused": "never compared"},
    })
    res = compare(cfg)
    assert res["labels"] == {"ax": "not the reference: test variant"}
    rows = {r["metric"]: r for r in res["differences"]}
    mexa = rows["MEXA L1 mean (in-domain)"]
    # seed-pooled A: de 19/20, fr 18/20; B: de 2/10, fr 2/10 -> mean over languages of the differences, in points
    expected = 100 * ((19 / 20 - 2 / 10) + (18 / 20 - 2 / 10)) / 2
    assert mexa["delta"] == pytest.approx(expected) and mexa["lo"] > 0 and mexa["n"] == 20
    assert mexa["a_seeds"] == pytest.approx([90.0, 95.0]) and mexa["b_seeds"] == pytest.approx([20.0])
    assert rows["chrF++ en→X"]["delta"] > 0 and rows["off-target en→X"]["delta"] == pytest.approx(0.0)
    assert rows["perplexity en (relative)"]["delta"] == pytest.approx(100 * (math.exp(1.0) / math.exp(1.1) - 1))
    assert res["seed_spread"]["ax"]["MEXA L1 mean (in-domain)"]["seeds"] == 2
    md = (tmp_path / "comparison.md").read_text()
    assert "ax vs cpt" in md and "(2 seeds)" in md and "- `ax`: not the reference: test variant" in md
    assert (tmp_path / "differences.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_in_progress_experiment_uses_what_exists(tmp_path: Path):
    _arm(tmp_path, "ax_s0", {"de": "1111"}, ["x", "y", "z"], [1.0, 1.0, 1.0])
    _arm(tmp_path, "cpt", {"de": "0000"}, ["x", "y", "z"], [1.0, 1.0, 1.0])
    (tmp_path / "ax_s1").mkdir()  # training, no results yet
    cfg = load_config(CompareConfig, overrides={
        "runs_dir": str(tmp_path), "groups": {"ax": ["ax_s0", "ax_s1", "ax_s2"]}, "pairs": ["ax:cpt", "sft:cpt"],
        "analyses": {"x": "analysis.json"}, "n_boot": 100, "layer": 0,
    })
    res = compare(cfg)
    mexa = next(r for r in res["differences"] if r["metric"].startswith("MEXA"))
    assert mexa["delta"] == pytest.approx(100.0) and mexa["a_seeds"] == [100.0]  # only ax_s0 has results
    chrf = next(r for r in res["differences"] if r["metric"] == "chrF++ en→X")  # ax_s1 has no eval.json yet
    assert chrf["delta"] == pytest.approx(0.0) and len(chrf["a_seeds"]) == 1
    assert any("ax_s2" in n for n in res["notes"]) and any(n.startswith("sft:cpt: skipped") for n in res["notes"])


def test_compare_refuses_arms_analysed_on_different_sentences(tmp_path: Path):
    _arm(tmp_path, "a", {"de": "11"}, ["x", "y", "z"], [1.0, 1.0, 1.0])
    _arm(tmp_path, "b", {"de": "01"}, ["x", "y", "z"], [1.0, 1.0, 1.0])
    data = json.loads((tmp_path / "b" / "analysis.json").read_text())
    data["pooling"]["mean"]["pairs_digest"]["de"] = "other"
    (tmp_path / "b" / "analysis.json").write_text(json.dumps(data))
    cfg = load_config(CompareConfig, overrides={"runs_dir": str(tmp_path), "pairs": ["a:b"], "analyses": {"x": "analysis.json"}, "n_boot": 100})
    with pytest.raises(ConfigError, match="different sentences"):
        compare(cfg)
    with pytest.raises(ConfigError, match="not 'a:b'"):
        load_config(CompareConfig, overrides={"pairs": ["a-b"]})


def test_chrf_sentence_stats_sum_to_corpus_score():
    hyps, refs = ["ein kleiner Hund", "la maison"], ["ein großer Hund", "la maison bleue"]
    summed = np.asarray(chrf_sentence_stats(hyps, refs)).sum(0)
    assert chrf_from_stats(summed) == pytest.approx(CHRF(word_order=2).corpus_score(hyps, [refs]).score)
