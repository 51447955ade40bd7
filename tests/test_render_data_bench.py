"""The data-rendering benchmark: its row checksum and ratios (default run), and one tiny end-to-end run of the script
against the committed HEAD (deselected by default; ``pytest -m benchmark``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignx.config import DataConfig
from alignx.data import dataset as data_mod
from alignx.data.readers import read_parallel
from alignx.data.render import both_directions, render_translation
from conftest import load_benchmark, make_tokenizer, save_tiny_model, write_pairs

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "render_data.py"


def _load_script():
    return load_benchmark("render_data")


def test_checksum_is_the_same_for_examples_and_dataset_rows_and_sees_a_change(tmp_path):
    bench = _load_script()
    tok = make_tokenizer()
    path = write_pairs(tmp_path / "p.jsonl")
    d = DataConfig(parallel=[str(path)], cache_dir=str(tmp_path / "cache"))
    rows = [e for e in (render_translation(p, tok, d.template, d.max_length, True, instruction=d.translation_instruction)
                        for p in both_directions(read_parallel(path))) if e is not None]
    data = data_mod.build(d, 1, tok, True)
    assert bench.checksum(rows) == bench.checksum(data.dataset)
    rows[3].labels[-1] = -100
    assert bench.checksum(rows) != bench.checksum(data.dataset)


def test_summarise_compares_paths_by_rows_and_the_floor_by_time():
    bench = _load_script()
    run = {"rows": 90, "tokens": 900, "seconds": 10.0, "rows_per_s": 9.0, "anon_bytes_per_token": 40.0, "rss_bytes_per_token": 40.0}
    results = {
        "old": {**run, "mode": "old"},
        "floor": {"mode": "floor", "rows": 100, "seconds": 2.5, "rows_per_s": 40.0},
        "new": {**run, "mode": "new", "seconds": 5.0, "rows_per_s": 18.0, "anon_bytes_per_token": 4.0, "rss_bytes_per_token": 8.0},
        "new_np": {**run, "mode": "new_np", "seconds": 4.0, "rows_per_s": 22.5, "anon_bytes_per_token": 2.0, "rss_bytes_per_token": 6.0},
        "hit": {**run, "mode": "hit", "seconds": 0.5},
    }
    r = bench.summarise(results)
    assert r["faster_new_run"] == "new_np" and r["rows_per_s_new_over_old"] == 2.5 and r["rows_per_s_new_1proc_over_old"] == 2.0
    assert r["floor_speedup_over_old"] == 4.0 and r["tokenizer_share_of_old_time"] == 0.25
    assert r["anon_per_token_new_over_old"] == 0.05 and r["rss_per_token_new_over_old"] == 0.15 and r["cache_hit_seconds"] == 0.5


@pytest.mark.benchmark
def test_render_benchmark_end_to_end(tmp_path):
    model = save_tiny_model(tmp_path / "tiny", "llama")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--pairs", "300", "--model", str(model), "--before-rev", "HEAD",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["same_rows"] and set(result["results"]) == {"old", "floor", "new", "new_np", "hit"}
    assert result["results"]["hit"]["cache_hit"] and not result["results"]["new"]["cache_hit"]
