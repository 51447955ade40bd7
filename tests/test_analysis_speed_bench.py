"""The analysis/translation speed benchmark: its equivalence check (default run) and one tiny end-to-end run of
the script, before = the committed HEAD, after = this checkout (deselected by default; ``pytest -m benchmark``)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from conftest import load_benchmark, save_tiny_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "analysis_speed.py"


def _load_script():
    return load_benchmark("analysis_speed")


def _analysis() -> dict:
    res = {
        "mexa": {"de": [0.5, 1.0]}, "mexa_items": {"de": ["10", "11"]}, "cos_pair": {"de": [0.9, 0.8]},
        "cos_random": {"de": [0.1, float("nan")]}, "retrieval_top1": {"de": [0.5, 1.0]},
        "retrieval_top1_from_pivot": {"de": [1.0, 1.0]}, "mexa_mean": [0.5, 1.0], "n": {"de": 2}, "pairs_digest": {"de": "ab"},
    }  # fmt: skip
    return {
        "languages": ["de"], "num_layers": 1, "pooling": {"mean": res}, "recommended_layer": 1,
        "lang_matrix": {"mexa": [[1.0, 0.5], [0.5, 1.0]], "cos": [[1.0, None], [None, 1.0]]}, "pca": {"points": [[0.0, 1.0]]},
    }  # fmt: skip


def test_compare_analyses_finds_every_difference():
    bench = _load_script()
    same = bench.compare_analyses(_analysis(), _analysis())
    assert all(v == 0.0 for v in same["max_abs_diff"].values())  # NaN and None equal themselves
    assert same["mexa_items_differing"] == [] and same["same_languages_layers_counts_digests"] and same["same_recommended_layer"]

    other = copy.deepcopy(_analysis())
    other["pooling"]["mean"]["cos_pair"]["de"][1] = 0.8 + 1e-3
    other["pooling"]["mean"]["mexa_items"]["de"][0] = "01"
    other["pooling"]["mean"]["pairs_digest"]["de"] = "cd"
    diff = bench.compare_analyses(_analysis(), other)
    assert diff["max_abs_diff"]["mean.cos_pair"] == pytest.approx(1e-3)
    assert diff["differing_above_1e-9"] == {"mean.cos_pair": [{"lang": "de", "layer": 1, "before": 0.8, "after": 0.8 + 1e-3}]}
    assert diff["mexa_items_differing"] == [{"variant": "mean", "lang": "de", "layer": 0, "pairs_differing": 2, "n": 2}]
    assert not diff["same_languages_layers_counts_digests"]


@pytest.mark.benchmark
def test_script_runs_before_and_after_on_a_tiny_model(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("needs git (the 'before' code comes from git archive)")
    bench = _load_script()
    model = save_tiny_model(tmp_path / "tiny", "llama")
    out = tmp_path / "speed.json"
    report = bench.main(["--model", str(model), "--before-rev", "HEAD", "--langs", "de", "fr", "--max-sentences", "4",
                         "--batch-size", "3", "--directions", "en-de", "--translation-limit", "2", "--max-new-tokens", "4",
                         "--gen-batch-size", "2", "--threads", "1", "--quiet", "--out", str(out)])  # fmt: skip
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["revisions"]["before"] and "load_average_1_5_15min" in data["environment"]
    analysis = data["analysis"]
    assert analysis["inputs"]["pairs"] == {"de": 4, "fr": 4}
    assert analysis["before"]["sentences_per_s"] > 0 and analysis["after"]["sentences_per_s"] > 0
    assert analysis["equivalence"]["same_languages_layers_counts_digests"]
    assert analysis["equivalence"]["mexa_items_differing"] == []
    assert max(analysis["equivalence"]["max_abs_diff"].values()) < 1e-5
    assert data["translation"]["equivalence"]["en-de"]["hyps_differing"] == 0
    assert report["targets"]["analysis_speedup_at_least_2x"]["met"] in (True, False)
