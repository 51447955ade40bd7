"""`alignx analyze` on a tiny random model and `alignx report` over fake run directories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignx.config import ConfigError, ModelConfig, load_config
from alignx.eval.analyze import (
    AnalyzeConfig,
    analyze_model,
    middle_layers,
    prepare_pairs,
    read_pivot_pairs,
    recommend_layer,
)
from alignx.report.report import ReportConfig, build_report

WORDS = {
    "en": ["red", "house", "dog", "water", "sun", "tree", "book", "child", "river", "bread", "moon", "stone"],
    "de": ["rot", "Haus", "Hund", "Wasser", "Sonne", "Baum", "Buch", "Kind", "Fluss", "Brot", "Mond", "Stein"],
    "fr": ["rouge", "maison", "chien", "eau", "soleil", "arbre", "livre", "enfant", "rivière", "pain", "lune", "pierre"],
}


def parallel_rows() -> list[dict]:
    """en-de and en-fr pairs sharing 12 English sentences; 2 extra en-de pairs not translated to fr."""
    rows = []
    for i in range(12):
        en = f"the {WORDS['en'][i]} and the {WORDS['en'][(i + 3) % 12]}"
        rows.append({"src": en, "tgt": f"{WORDS['de'][i]} und {WORDS['de'][(i + 3) % 12]}", "src_lang": "en", "tgt_lang": "de"})
        # the pivot may sit on either side
        rows.append({"src": f"{WORDS['fr'][i]} et {WORDS['fr'][(i + 3) % 12]}", "tgt": en, "src_lang": "fra_Latn", "tgt_lang": "eng_Latn"})
    rows.append({"src": "one more", "tgt": "noch eins", "src_lang": "en", "tgt_lang": "de"})
    rows.append({"src": "and another", "tgt": "und noch eins", "src_lang": "en", "tgt_lang": "de"})
    rows.append({"src": "ignored", "tgt": "ignoré", "src_lang": "de", "tgt_lang": "fr"})  # no pivot side
    return rows


def tiny_model_and_tokenizer(texts: list[str]) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval(), hf_tok


@pytest.fixture()
def parallel_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in parallel_rows()) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- analyze


def test_read_pivot_pairs_orients_and_reports_bad_rows(parallel_file: Path, tmp_path: Path):
    pairs = read_pivot_pairs([str(parallel_file)], "en")
    assert sorted(pairs) == ["de", "fr"]
    assert len(pairs["de"]) == 14 and len(pairs["fr"]) == 12
    assert pairs["fr"][0] == ("the red and the water", "rouge et eau")  # pivot first whatever the side
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(parallel_rows()[0]) + '\n{"src": "x", "tgt": "y", "src_lang": "en"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: missing field\(s\) tgt_lang"):
        read_pivot_pairs([str(bad)], "en")


def test_middle_band_and_recommendation_skip_extremes():
    assert middle_layers(32) == (8, 24)
    assert middle_layers(4) == (1, 3)
    assert middle_layers(1) == (1, 1)
    # Global maximum at the embeddings (layer 0) is not recommended; the middle peak is.
    curve = [0.9, 0.2, 0.5, 0.4, 0.3, 0.6, 0.2, 0.1, 0.95]
    rec = recommend_layer(curve, 8)
    assert rec["layer"] == 5 and rec["band"] == [2, 6]
    assert rec["global_layer"] == 8


def test_analyze_model_writes_json_and_plots(parallel_file: Path, tmp_path: Path):
    out = tmp_path / "analysis"
    cfg = load_config(AnalyzeConfig, overrides={
        "parallel": [str(parallel_file)], "output_dir": str(out), "max_sentences": 10, "min_sentences": 5,
        "batch_size": 4, "with_cka": True, "run_name": "tiny", "languages": ["deu", "fr"],
    })
    pairs = prepare_pairs(cfg)
    assert {k: len(v) for k, v in pairs.items()} == {"de": 10, "fr": 10}
    # Sentences translated into both languages are preferred, so de and fr share their pivot sentences.
    assert {p for p, _ in pairs["de"]} == {p for p, _ in pairs["fr"]}
    model, tok = tiny_model_and_tokenizer([s for r in parallel_rows() for s in (r["src"], r["tgt"])])
    result = analyze_model(model, tok, pairs, cfg)

    data = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    assert data["kind"] == "analysis" and data["run_name"] == "tiny" and data["pivot"] == "en"
    assert data["languages"] == ["de", "fr"] and data["num_layers"] == 4
    for pooling in ("mean", "last"):
        res = data["pooling"][pooling]
        for key in ("mexa", "cos_pair", "cos_random", "retrieval_top1", "retrieval_top1_from_pivot", "cka"):
            assert set(res[key]) == {"de", "fr"}
            assert len(res[key]["de"]) == 5  # embeddings + 4 layers
        assert all(0.0 <= v <= 1.0 for v in res["mexa"]["de"])
        assert len(res["mexa_mean"]) == 5
    lo, hi = data["recommended"]["band"]
    assert lo <= data["recommended_layer"] <= hi
    assert str(data["recommended_layer"]) in data["recommendation"]
    lm = data["lang_matrix"]
    assert lm["langs"] == ["en", "de", "fr"] and lm["layer"] == data["recommended_layer"]
    assert lm["n"][1][2] == 10 and lm["mexa"][1][2] is not None and lm["mexa"][0][0] == 1.0
    # The pivot row of the matrix is the per-language MEXA curve at that layer
    assert lm["mexa"][0][1] == pytest.approx(data["pooling"]["mean"]["mexa"]["de"][lm["layer"]])
    assert len(data["pca"]["points"]) == 10 + 20 and data["pca"]["lang"].count("en") == 10
    assert "env" in data and data["config"]["max_sentences"] == 10
    assert result["recommended_layer"] == data["recommended_layer"]
    for name in data["plots"]:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"layers_mean.png", "layers_last.png", f"lang_matrix_L{lm['layer']}.png", f"pca_L{lm['layer']}.png"} <= set(data["plots"])


def test_analyze_copies_are_perfectly_aligned(tmp_path: Path):
    """A "language" whose translations are copies of the pivot sentences: every metric is perfect at
    every layer, while a language paired with shuffled sentences stays near chance (checks the wiring)."""
    en = [f"the {a} and the {b}" for a in WORDS["en"][:6] for b in WORDS["en"][6:9]]  # 18 sentences
    shuffled = en[5:] + en[:5]
    pairs = {"de": list(zip(en, en, strict=True)), "fr": list(zip(en, shuffled, strict=True))}
    cfg = AnalyzeConfig(output_dir=str(tmp_path), plots=False, pooling=["mean", "last"])
    model, tok = tiny_model_and_tokenizer(en * 3)
    data = analyze_model(model, tok, pairs, cfg)
    for pooling in ("mean", "last"):
        res = data["pooling"][pooling]
        # Last-token embeddings (layer 0) of sentences ending in the same word tie: ties never count.
        first = 1 if pooling == "last" else 0
        assert res["mexa"]["de"][first:] == [1.0] * (5 - first)
        assert res["retrieval_top1"]["de"][first:] == [1.0] * (5 - first)
        assert all(c == pytest.approx(1.0) for c in res["cos_pair"]["de"])
        assert max(res["mexa"]["fr"]) <= 0.2
    assert data["pooling"]["last"]["mexa"]["de"][0] == 0.0
    assert data["lang_matrix"]["n"][1][2] == 18


def test_lang_matrix_without_multiway_overlap(tmp_path: Path):
    """de and fr translate different English sentences: only the pivot row is filled."""
    pairs = {
        "de": [(f"en a{i}", f"de a{i}") for i in range(4)],
        "fr": [(f"en b{i}", f"fr b{i}") for i in range(4)],
    }
    cfg = AnalyzeConfig(output_dir=str(tmp_path), plots=False, pooling=["mean"], heatmap_layer=1)
    model, tok = tiny_model_and_tokenizer([s for v in pairs.values() for p in v for s in p] * 3)
    data = analyze_model(model, tok, pairs, cfg)
    lm = data["lang_matrix"]
    assert lm["layer"] == 1 and lm["n"][1][2] == 0 and lm["mexa"][1][2] is None
    assert lm["mexa"][0][1] is not None and lm["mexa"][0][2] is not None
    assert "de-fr" in lm["note"]


def test_analyze_config_checks():
    with pytest.raises(ConfigError, match="pooling"):
        AnalyzeConfig(pooling=["max"])
    with pytest.raises(ConfigError, match="unknown language code 'xx'"):
        AnalyzeConfig(languages=["xx"])
    assert AnalyzeConfig(pivot="eng_Latn").pivot == "en"
    assert isinstance(AnalyzeConfig().model, ModelConfig)


# ---------------------------------------------------------------------------- report


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _analysis(run: str, mexa_de: list[float], rec: int) -> dict:
    return {"kind": "analysis", "run_name": run, "model": "m", "pivot": "en", "languages": ["de"], "num_layers": 4,
            "pooling": {"mean": {"mexa": {"de": mexa_de}, "mexa_mean": mexa_de}}, "recommended_layer": rec,
            "recommendation": f"peak at {rec}"}


def test_report_over_two_runs(tmp_path: Path):
    base, ours = tmp_path / "base", tmp_path / "alignx"
    _write(base / "eval" / "eval.json", {
        "kind": "eval", "run_name": "base", "model": "m",
        "benchmarks": {"xcopa": {"it": {"acc": 0.55, "acc_stderr": 0.02, "n": 500}, "sw": {"acc": 0.50, "acc_stderr": 0.02, "n": 500}}},
        "translation": {"en-de": {"spbleu": 10.0, "chrf++": 30.0, "off_target": 0.2, "n": 50, "comet": None,
                                  "tokenizer": "flores200", "shots": 3, "samples": []}},
    })
    _write(base / "analysis" / "analysis.json", _analysis("base", [0.1, 0.3, 0.5, 0.4, 0.2], 2))
    _write(ours / "eval.json", {
        "kind": "eval", "run_name": "alignx", "model": "m2",
        "benchmarks": {"xcopa": {"it": {"acc": 0.60, "acc_stderr": 0.02, "n": 500}}},  # sw missing
        "translation": {"en-de": {"spbleu": 12.5, "chrf++": 29.0, "off_target": 0.05, "n": 50, "comet": None,
                                  "tokenizer": "flores200", "shots": 3, "samples": []},
                        "en-fr": {"spbleu": 20.0, "chrf++": 45.0, "off_target": 0.0, "n": 50}},
    })
    _write(ours / "train_summary.json", {"kind": "train", "stage": 1, "final_losses": {"ntp": 2.5, "ctr": 0.7}, "steps": 100, "runtime_s": 600})
    (tmp_path / "empty").mkdir()
    (ours / "broken").mkdir()
    (ours / "broken" / "analysis.json").write_text("{not json", encoding="utf-8")

    cfg = load_config(ReportConfig, overrides={"runs": [str(base), str(ours), str(tmp_path / "empty"), str(tmp_path / "nope*")],
                                               "output_dir": str(tmp_path / "report"), "baseline": "base"})
    result = build_report(cfg)
    assert result["runs"] == ["base", "alignx", "empty"] and result["baseline"] == "base"
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")

    def row(caption: str, key: str) -> list[str]:
        section = md[md.index(caption):]
        line = next(line for line in section.splitlines() if line.startswith(f"| {key} "))
        return [c.strip() for c in line.strip("|").split("|")]

    assert row("xcopa", "it") == ["it", "55.0 ±2.0", "**60.0 ±2.0 (+5.0)**", "—"]
    assert row("xcopa", "sw") == ["sw", "50.0 ±2.0", "—", "—"]
    assert row("xcopa", "mean (1 lang)")[1:3] == ["55.0", "**60.0 (+5.0)**"]
    assert row("spBLEU", "en-de") == ["en-de", "10.0", "**12.5 (+2.5)**", "—"]
    assert row("chrF++", "en-de") == ["en-de", "**30.0**", "29.0 (-1.0)", "—"]
    assert row("chrF++", "en-fr") == ["en-fr", "—", "45.0", "—"]
    assert row("off-target", "en-de") == ["en-de", "20.0", "**5.0 (-15.0)**", "—"]
    assert "COMET" not in md  # no run has COMET
    assert row("MEXA per language", "de") == ["de", "0.500", "—", "—"]
    assert "| alignx | 1 | 100 | 10.0 | ntp=2.5, ctr=0.7 |" in md
    assert "unreadable" in md and "nope*: no such run directory" in md
    for png in ("mexa_layers.png", "chrf_directions.png", "benchmarks.png"):
        assert f"]({png})" in md and (tmp_path / "report" / png).exists()
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(imgs) == 3 and "<b>60.0 ±2.0 (+5.0)</b>" in html
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")


def test_report_alignment_layer_follows_baseline(tmp_path: Path):
    _write(tmp_path / "a" / "analysis.json", _analysis("a", [0.1, 0.3, 0.5, 0.4, 0.2], 2))
    _write(tmp_path / "b" / "analysis.json", _analysis("b", [0.1, 0.6, 0.55, 0.7, 0.2], 3))
    result = build_report(ReportConfig(runs=[str(tmp_path / "*")], output_dir=str(tmp_path / "out"), baseline="b"))
    md = Path(result["markdown"]).read_text(encoding="utf-8")
    assert "| language | a (L3) | b (L3) |" in md  # both at the baseline's recommended layer
    assert "| de | 0.400 (-0.300) | **0.700** |" in md
    with pytest.raises(ConfigError, match="baseline 'zzz'"):
        build_report(ReportConfig(runs=[str(tmp_path / "a")], output_dir=str(tmp_path / "o2"), baseline="zzz"))


def test_analyze_centred_variant_and_per_pair_outcomes(parallel_file: Path, tmp_path: Path):
    from alignx.eval.alignment import center_rows, mexa_score

    cfg = load_config(AnalyzeConfig, overrides={
        "parallel": [str(parallel_file)], "output_dir": str(tmp_path), "max_sentences": 10, "min_sentences": 5,
        "batch_size": 4, "pooling": ["mean"], "centering": ["raw", "centred"], "plots": False,
    })
    pairs = prepare_pairs(cfg)
    model, tok = tiny_model_and_tokenizer([s for r in parallel_rows() for s in (r["src"], r["tgt"])])
    data = analyze_model(model, tok, pairs, cfg)
    assert set(data["pooling"]) == {"mean", "mean_centred"}
    for variant in ("mean", "mean_centred"):
        res = data["pooling"][variant]
        for lang in ("de", "fr"):
            assert len(res["mexa_items"][lang]) == data["num_layers"] + 1
            for layer, items in enumerate(res["mexa_items"][lang]):
                assert len(items) == 10 and set(items) <= {"0", "1"}
                assert res["mexa"][lang][layer] == pytest.approx(items.count("1") / 10)
        assert len(res["pairs_digest"]["de"]) == 16
    # centre_rows by hand: subtracting the column means leaves every column with mean 0
    x = torch.tensor([[1.0, 10.0], [3.0, 14.0]])
    assert center_rows(x).tolist() == [[-1.0, -2.0], [1.0, 2.0]]
    # Centred MEXA ignores any offset shared by all sentences.
    torch.manual_seed(0)
    a, b = torch.randn(20, 8), torch.randn(20, 8)
    offset = torch.full((1, 8), 30.0)
    plain, shifted = center_rows(torch.cat([a, b])), center_rows(torch.cat([a + offset, b + offset]))
    assert mexa_score(shifted[:20], shifted[20:]) == mexa_score(plain[:20], plain[20:])
    with pytest.raises(ConfigError, match="centering"):
        load_config(AnalyzeConfig, overrides={"centering": ["whitened"]})


def test_standardised_variant_scales_every_dimension_to_unit_variance():
    from alignx.eval.alignment import mexa_score, standardize_rows

    x = torch.tensor([[1.0, 10.0, 5.0], [3.0, 14.0, 5.0], [5.0, 6.0, 5.0]])
    # by hand: column means 3, 10, 5; population standard deviations sqrt(8/3), sqrt(32/3), 0 (a constant column -> 0)
    s1, s2 = (8 / 3) ** 0.5, (32 / 3) ** 0.5
    expected = [[-2 / s1, 0.0, 0.0], [0.0, 4 / s2, 0.0], [2 / s1, -4 / s2, 0.0]]
    torch.testing.assert_close(standardize_rows(x), torch.tensor(expected))
    # A rogue dimension (huge, varying from sentence to sentence) hides the pairs from the raw and the centred cosine,
    # not from the standardised one.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 16, generator=g)
    b = a + 0.3 * torch.randn(30, 16, generator=g)
    rogue = 1000.0 * torch.rand(60, 1, generator=g)
    both = torch.cat([torch.cat([a, b]), rogue], dim=1)
    centred = both - both.mean(dim=0, keepdim=True)
    assert mexa_score(centred[:30], centred[30:]) < 0.3
    st = standardize_rows(both)
    assert mexa_score(st[:30], st[30:]) > 0.9
