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
    assert (mexa["seeds_a"], mexa["seeds_b"], mexa["clustered_by_pivot"]) == (2, 1, False)  # seeds resampled first
    assert rows["chrF++ en→X (in-domain)"]["delta"] > 0 and rows["off-target en→X (in-domain)"]["delta"] == pytest.approx(0.0)
    assert rows["perplexity en (relative; in-domain)"]["delta"] == pytest.approx(100 * (math.exp(1.0) / math.exp(1.1) - 1))
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
    chrf = next(r for r in res["differences"] if r["metric"] == "chrF++ en→X (in-domain)")  # ax_s1 has no eval.json yet
    assert chrf["delta"] == pytest.approx(0.0) and len(chrf["a_seeds"]) == 1
    assert any("ax_s2" in n for n in res["notes"]) and any(n.startswith("sft:cpt: skipped") for n in res["notes"])


def _downstream(root: Path, name: str, en: list[int], de: list[int], fr: list[int], xcopa_it: list[int]) -> None:
    ev = json.loads((root / name / "eval.json").read_text())
    clusters = [f"s{i}" for i in range(len(en))]
    ev["transfer"] = {"source_lang": "en", "acc": {
        lang: {"acc": sum(v) / len(v), "n": len(v), "items": {"correct": v, "cluster": clusters}} for lang, v in (("en", en), ("de", de), ("fr", fr))}}
    ev["benchmarks"] = {"xcopa": {"it": {"acc": sum(xcopa_it) / len(xcopa_it), "n": len(xcopa_it), "items": {"acc": xcopa_it}}}}
    (root / name / "eval.json").write_text(json.dumps(ev))


def test_compare_puts_downstream_families_first_with_transfer_and_benchmarks(tmp_path: Path):
    good = ["das ist ein Haus", "der Hund bellt laut", "guten Morgen"]
    for name, wins in (("ax", "1111"), ("cpt", "0000")):
        _arm(tmp_path, name, {"de": wins}, good, [10.0, 10.0, 10.0])
    _downstream(tmp_path, "ax", en=[1, 1, 1, 1], de=[1, 1, 0, 1], fr=[1, 0, 0, 1], xcopa_it=[1, 1, 0, 1, 1])
    _downstream(tmp_path, "cpt", en=[1, 1, 1, 0], de=[0, 1, 0, 0], fr=[1, 0, 0, 0], xcopa_it=[1, 0, 0, 1, 0])
    (tmp_path / "ax_s1").mkdir()  # a second seed still training: no results yet, every family uses the arms that have them
    cfg = load_config(CompareConfig, overrides={
        "runs_dir": str(tmp_path), "groups": {"axg": ["ax", "ax_s1"]}, "pairs": ["axg:cpt"],
        "analyses": {"in-domain": "analysis.json"}, "n_boot": 200,
        "evals": {"in-domain": "eval.json"}, "readouts": ["mean@1", "mean@0"], "trained_readout": "mean@1",
    })
    res = compare(cfg)
    fams = [r["family"] for r in res["differences"]]
    assert fams == sorted(fams, key=["translation", "transfer", "multiple choice", "forgetting", "alignment"].index)
    rows = {r["metric"]: r for r in res["differences"]}
    # transfer, by hand: ax de 3/4, fr 2/4 -> 62.5; cpt de 1/4, fr 1/4 -> 25
    acc = rows["transfer accuracy, mean over non-source languages (in-domain)"]
    assert acc["delta"] == pytest.approx(37.5) and acc["a_seeds"] == pytest.approx([62.5]) and acc["n"] == 8
    # gap (source - X per text): ax de (0,0,1,0) fr (0,1,1,0) -> 37.5; cpt de (1,0,1,0) fr (0,1,1,0) -> 50
    assert rows["transfer gap, source − X (in-domain)"]["delta"] == pytest.approx(37.5 - 50.0)
    assert rows["xcopa accuracy (in-domain)"]["delta"] == pytest.approx(100 * (4 / 5 - 2 / 5))
    assert "MEXA L1 mean (in-domain) [the readout L_CTR trains]" in rows and "MEXA L0 mean (in-domain)" in rows
    md = (tmp_path / "comparison.md").read_text()
    assert md.index("| transfer |") < md.index("| multiple choice |") < md.index("| alignment |")


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


def _exact_cdf(values: list[float]):
    """CDF of a finite set of equally likely values."""
    ordered = sorted(values)

    def cdf(x: float) -> float:
        return sum(v <= x for v in ordered) / len(ordered)

    return cdf


def _brute_force(a, b, clusters=None):
    """Every equally likely resample of the two-level bootstrap, enumerated: A's seed draws x B's seed draws x item
    (or cluster) draws; the statistic is the mean over strata of the mean per-item difference. Written from the
    definition, with loops, independently of alignx.eval.stats."""
    import itertools

    seeds_a, seeds_b, strata = len(a), len(b), len(a[0])
    values = []
    for da in itertools.product(range(seeds_a), repeat=seeds_a):
        for db in itertools.product(range(seeds_b), repeat=seeds_b):
            diff = [[sum(a[s][k][i] for s in da) / seeds_a - sum(b[s][k][i] for s in db) / seeds_b
                     for i in range(len(a[0][k]))] for k in range(strata)]
            if clusters is None:
                draws = itertools.product(*[itertools.product(range(len(d)), repeat=len(d)) for d in diff])
                for per_stratum in draws:
                    values.append(sum(sum(d[i] for i in idx) / len(idx) for d, idx in zip(diff, per_stratum, strict=True)) / strata)
            else:
                ids = sorted({c for s in clusters for c in s})
                for drawn in itertools.product(ids, repeat=len(ids)):
                    means = []
                    for d, cl in zip(diff, clusters, strict=True):
                        picked = [d[i] for c in drawn for i in range(len(d)) if cl[i] == c]
                        means.append(sum(picked) / len(picked) if picked else sum(d) / len(d))
                    values.append(sum(means) / strata)
    return values


@pytest.mark.parametrize("clustered", [False, True])
def test_hierarchical_bootstrap_reproduces_the_brute_force_interval(clustered):
    from alignx.eval.stats import hierarchical_mean_diff

    a = [[[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]]  # 2 seeds x 2 languages x 3 items
    b = [[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]  # 1 seed
    if not clustered:  # one language keeps the enumeration small: 4 seed draws x 27 item draws
        a, b = [[s[0]] for s in a], [[s[0]] for s in b]
    clusters = [["s1", "s2", "s3"], ["s1", "s2", "s3"]] if clustered else None
    exact = _brute_force(a, b, clusters)
    cdf = _exact_cdf(exact)
    got = hierarchical_mean_diff(a, b, clusters=clusters, n_boot=40_000, seed=3)
    expected_delta = sum(exact) / len(exact)  # the bootstrap mean equals the point estimate here (means of means)
    assert got["delta"] == pytest.approx(expected_delta, abs=1e-12)
    eps = 1e-9
    # The sampled 2.5 % / 97.5 % quantiles sit where the exact distribution crosses them (atoms are >= 1/216 wide).
    assert cdf(got["lo"] - eps) <= 0.025 + 0.01 and cdf(got["lo"] + eps) >= 0.025 - 0.01
    assert cdf(got["hi"] - eps) <= 0.975 + 0.01 and cdf(got["hi"] + eps) >= 0.975 - 0.01
    assert got["seeds_a"] == 2 and got["seeds_b"] == 1 and got["clusters"] == (3 if clustered else None)


def test_hierarchical_bootstrap_widens_when_the_seeds_disagree():
    """Same seed means, items identical: seeds that agree give the item-only interval; seeds that disagree (one
    shifted up, one down) give a wider one, which averaging the seeds before resampling items would not show."""
    from alignx.eval.stats import hierarchical_mean_diff, paired_mean_diff

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, size=(2, 60)).astype(float)  # 2 languages x 60 pairs of 0/1 outcomes
    b = [base.tolist()]
    agree = [(base + 0.1).tolist()] * 3
    disagree = [(base + 0.1 + shift).tolist() for shift in (-0.3, 0.0, 0.3)]
    same = hierarchical_mean_diff(agree, b, n_boot=4000)
    spread = hierarchical_mean_diff(disagree, b, n_boot=4000)
    pooled = paired_mean_diff(np.mean(disagree, axis=0).tolist(), base.tolist(), n_boot=4000)
    assert same["delta"] == pytest.approx(0.1) and spread["delta"] == pytest.approx(0.1)
    assert (same["hi"] - same["lo"]) < 1e-9  # no item variance in the difference, and the seeds agree
    assert spread["hi"] - spread["lo"] > 0.3  # the seed shifts (+-0.3) dominate
    assert pooled["hi"] - pooled["lo"] < 1e-9  # pooled first, the seed disagreement vanishes


def test_hierarchical_bootstrap_refuses_mismatched_items():
    from alignx.eval.stats import hierarchical_mean_diff

    with pytest.raises(ValueError, match="same items"):
        hierarchical_mean_diff([[[1.0, 0.0]]], [[[1.0, 0.0, 1.0]]])
    with pytest.raises(ValueError, match="every seed of A"):
        hierarchical_mean_diff([[[1.0, 0.0]], [[1.0]]], [[[1.0, 0.0]]])
    with pytest.raises(ValueError, match="one id per item"):
        hierarchical_mean_diff([[[1.0, 0.0]]], [[[1.0, 0.0]]], clusters=[["x"]])


def test_compare_clusters_pairs_that_share_a_pivot_sentence(tmp_path: Path):
    """Analyses that record pivot_ids: pairs of de and fr with the same English sentence are drawn together."""
    _arm(tmp_path, "ax", {"de": "1111011111", "fr": "1111111101"}, ["x", "y", "z"], [1.0, 1.0, 1.0])
    _arm(tmp_path, "cpt", {"de": "0100010000", "fr": "0001000010"}, ["x", "y", "z"], [1.0, 1.0, 1.0])
    for arm in ("ax", "cpt"):
        path = tmp_path / arm / "analysis.json"
        a = json.loads(path.read_text())
        a["pivot_ids"] = {"de": [f"e{i}" for i in range(10)], "fr": [f"e{i}" for i in range(10)]}
        path.write_text(json.dumps(a))
    cfg = load_config(CompareConfig, overrides={"runs_dir": str(tmp_path), "pairs": ["ax:cpt"], "layer": 1,
                                                "analyses": {"in": "analysis.json"}, "n_boot": 300})
    mexa = next(r for r in compare(cfg)["differences"] if r["metric"].startswith("MEXA"))
    assert mexa["clustered_by_pivot"] is True and mexa["clusters"] == 10 and mexa["n"] == 20
    assert mexa["delta"] == pytest.approx(100 * ((9 / 10 - 2 / 10) + (9 / 10 - 2 / 10)) / 2)


def test_hierarchical_corpus_diff_pools_every_seed_for_the_point_and_resamples_seeds():
    """Point estimate: the corpus metric of the seed-summed statistics (A - B); one seed per side gives the paired
    bootstrap's distribution; seeds that disagree widen the interval."""
    from alignx.eval.stats import hierarchical_corpus_diff

    def ratio(s):
        return s[0] / s[1]

    rng = np.random.default_rng(1)
    tokens = np.full(40, 10.0)
    b = [[np.stack([rng.uniform(10, 20, 40), tokens], axis=1)]]
    a1 = [[np.stack([b[0][0][:, 0] + 1.0, tokens], axis=1)]]
    one = hierarchical_corpus_diff(a1, b, ratio, n_boot=2000, seed=0)
    ref = paired_corpus_diff(a1[0][0], b[0][0], ratio, n_boot=2000, seed=0)
    assert one["delta"] == pytest.approx(0.1) and ref["delta"] == pytest.approx(0.1)
    assert one["hi"] - one["lo"] == pytest.approx(ref["hi"] - ref["lo"], abs=0.02)
    a2 = [[np.stack([b[0][0][:, 0] + 1.0 + shift, tokens], axis=1)] for shift in (-5.0, 5.0)]
    two = hierarchical_corpus_diff(a2, b, ratio, n_boot=2000, seed=0)
    assert two["delta"] == pytest.approx(0.1)  # (sum over both seeds' NLL) / (both seeds' tokens) - B's
    assert two["hi"] - two["lo"] > 0.5  # the +-5 seed shifts (+-0.5 per token) dominate
    assert (two["seeds_a"], two["seeds_b"]) == (2, 1)
