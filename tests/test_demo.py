"""The embedded demo end to end on a tiny model (the real run uses the packaged Gemma-3-270M)."""

from __future__ import annotations

import json

from alignx.config import load_config
from alignx.demo import DemoConfig, main
from conftest import save_tiny_model


def test_demo_runs_all_steps_and_reports(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "tiny", "llama")
    cfg = load_config(
        DemoConfig,
        [],
        [f"model={model}", f"output_dir={tmp_path / 'demo'}", "stage1_steps=2", "stage2_steps=1", "batch_size=4",
         "analysis_languages=[de,zh]", "analysis_sentences=10", "mc_limit=2", "translation_directions=[en-de]",
         "translation_sentences=2", "translation_shots=1", "pairs_per_language=10", "languages=[de,zh]",
         "max_length=512"],  # the test tokenizer is byte-level on a tiny vocabulary: long rows
    )
    summary = main(cfg)
    root = tmp_path / "demo"
    for rel in ("base/analysis.json", "base/eval.json", "stage1/analysis.json", "stage1/final/lam_head.safetensors",
                "stage2/final/model.safetensors", "stage2/eval.json", "report/report.html", "demo_summary.json"):
        assert (root / rel).exists(), rel
    assert set(summary["alignment"]["runs"]) == {"base", "stage1", "stage2"}
    assert summary["alignment"]["layer"] == 2  # the layer stage 1 trained (4 layers // 2)
    assert {"loss_ntp", "loss_ctr", "loss_lam"} <= set(summary["train"]["stage1"]["last"])
    assert set(summary["eval"]["base"]["mc_acc"]) == {"de", "zh"}
    # training used only the chosen languages
    langs = {json.loads(line)["tgt_lang"] for line in (root / "train_pairs.jsonl").open()}
    assert langs == {"de", "zh"}
    # The change vs base is the mean over languages of the per-language MEXA difference at the layer, by hand
    layer = summary["alignment"]["layer"]
    a1 = json.loads((root / "stage1" / "analysis.json").read_text())["pooling"]["mean"]["mexa"]
    a0 = json.loads((root / "base" / "analysis.json").read_text())["pooling"]["mean"]["mexa"]
    change = summary["alignment"]["change_vs_base"]["mean"]["stage1"]
    expected = 100 * sum(a1[lang][layer] - a0[lang][layer] for lang in ("de", "zh")) / 2
    assert abs(change["points"] - expected) < 1e-9 and change["pairs"] == 20 and change["languages"] == 2
    assert change["ci95"][0] <= change["points"] <= change["ci95"][1]
    out = capsys.readouterr().out
    assert "mean-pooled" in out and "report.html" in out and "change vs base" in out and "paired bootstrap" in out
