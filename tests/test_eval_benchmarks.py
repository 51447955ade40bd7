"""Shipped lm-eval task YAMLs, rendering with a data dir, task resolution, and real lm-eval runs
with a tiny random Llama on the real XCOPA (if present) and the fixture benchmarks."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from alignx import languages
from alignx.config import ConfigError
from alignx.eval import benchmarks
from alignx.eval.benchmarks import PLACEHOLDER, TASKS_DIR
from conftest import tiny_lm

FIX = Path(__file__).parent / "fixtures" / "benchmarks"
# The real XCOPA lives in the shared folder beside the checkout (CI lays a copy there too).
XCOPA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
BENCHES = ["belebele", "mgsm", "mmlu", "pawsx", "xcopa", "xnli", "xstorycloze", "xwinograd"]


# --- shipped YAMLs ------------------------------------------------------------------------------


def _yaml(path: Path) -> dict:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=benchmarks._Loader)  # noqa: S506


def test_every_benchmark_ships_template_languages_and_group():
    groups = benchmarks.shipped_groups()
    assert sorted(g.removeprefix("alignx_") for g in groups) == BENCHES
    utils = importlib.import_module("alignx.eval.tasks.utils")
    for bench in BENCHES:
        bench_dir = TASKS_DIR / bench
        template = _yaml(bench_dir / "_template_yaml")
        assert template["dataset_path"] == "json"
        files = sorted(bench_dir.glob("alignx_*.yaml"))
        assert len(files) >= 6
        assert sorted(groups[f"alignx_{bench}"]) == sorted(f.stem for f in files)
        for path in files:
            cfg = _yaml(path)
            assert cfg["include"] == "_template_yaml" and cfg["task"] == path.stem
            languages.get(cfg["task"].rsplit("_", 1)[1])  # a known language code
            data_files = cfg["dataset_kwargs"]["data_files"]
            assert data_files and all(p.startswith(f"{PLACEHOLDER}/{bench}/") for p in data_files.values())
            for value in [*cfg.values(), *template.values()]:
                if isinstance(value, benchmarks._FunctionRef):
                    assert callable(getattr(utils, value.rsplit(".", 1)[1]))


def test_render_fills_data_dir_and_drops_missing(tmp_path):
    rendered = benchmarks.render_tasks(FIX, tmp_path)
    assert {"alignx_xnli_de", "alignx_pawsx_fr", "alignx_belebele_sw", "alignx_mgsm_de", "alignx_mc_en"} <= set(rendered.available)
    assert "alignx_xcopa_sw" in rendered.missing and "xcopa/sw/test.sw.jsonl" in rendered.missing["alignx_xcopa_sw"]
    paws = _yaml(tmp_path / "pawsx" / "alignx_pawsx_de.yaml")
    assert paws["dataset_kwargs"]["data_files"] == {"test": str(FIX.resolve() / "pawsx/de/test.jsonl")}
    assert paws["validation_split"] is None  # no validation file in the fixtures: split dropped
    assert "!function" in (tmp_path / "pawsx" / "_template_yaml").read_text()
    group = _yaml(tmp_path / "xnli" / "_alignx_xnli.yaml")
    assert group["task"] == ["alignx_xnli_de", "alignx_xnli_sw"]
    assert not (tmp_path / "xcopa" / "_alignx_xcopa.yaml").exists()
    assert PLACEHOLDER not in "".join(p.read_text() for p in tmp_path.rglob("*.yaml"))


def test_resolve_task_names(tmp_path):
    rendered = benchmarks.render_tasks(FIX, tmp_path)
    local, stock = benchmarks.resolve_tasks(["alignx_xwinograd", "alignx_mc_de", "hellaswag", "alignx_mc_de"], rendered)
    assert local == ["alignx_xwinograd_en", "alignx_xwinograd_fr", "alignx_mc_de"] and stock == ["hellaswag"]
    with pytest.raises(ConfigError, match=r"alignx_xcopa_sw: data file not found: .*test.sw.jsonl"):
        benchmarks.resolve_tasks(["alignx_xcopa_sw"], rendered)
    with pytest.raises(ConfigError, match="alignx_xcopa: no language has data"):
        benchmarks.resolve_tasks(["alignx_xcopa"], rendered)
    with pytest.raises(ValueError, match="unknown alignx task"):
        benchmarks.resolve_tasks(["alignx_nope"], rendered)
    assert benchmarks.split_task_name("belebele_deu_Latn") == ("belebele", "de")
    assert benchmarks.split_task_name("xcopa_sw") == ("xcopa", "sw")
    assert benchmarks.split_task_name("hellaswag") == ("hellaswag", "all")
    assert benchmarks.split_task_name("alignx_xwinograd_ja", rendered) == ("xwinograd", "ja")


@pytest.mark.parametrize(
    ("task", "split"),
    [("belebele_quy_Latn", ("belebele", "qu")), ("belebele_hin_Latn", ("belebele", "hi-Latn")),
     ("global_piqa_parallel_cloze_asm_beng", ("global_piqa_parallel_cloze", "as")),
     ("afrimgsm_cot_zul", ("afrimgsm_cot", "zu")), ("_mmmlu_pt_br", ("_mmmlu", "pt")), ("mlqa_en_de", ("mlqa_en", "de")),
     ("lambada_mt_de", ("lambada_mt", "de")),
     # English words that are ISO 639-3 codes (law: Lauje, cot: Caquinte) or deprecated ones (in: Indonesian)
     ("mmlu_pro_law", ("mmlu_pro_law", "all")), ("afrimgsm_cot", ("afrimgsm_cot", "all")),
     ("flan_held_in", ("flan_held_in", "all")), ("flores_de-gl", ("flores_de-gl", "all"))],
)  # fmt: skip
def test_stock_task_language_suffixes(task, split):
    """Any FLORES-200 code names a language; bare ISO codes only alignx's built-in ones, as before."""
    assert benchmarks.split_task_name(task) == split


def test_mc_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "mc.jsonl"
    bad.write_text(json.dumps({"lang": "en", "question": "q", "choices": ["a", "b"], "label": 2}) + "\n")
    with pytest.raises(ValueError, match=r"mc.jsonl:1: 'label' must be an index"):
        benchmarks.read_mc_file(bad)
    bad.write_text("\n" + json.dumps({"lang": "en", "question": "q", "choices": ["a"], "label": 0}) + "\n")
    with pytest.raises(ValueError, match=r"mc.jsonl:2: 'choices'"):
        benchmarks.read_mc_file(bad)
    rows = benchmarks.read_mc_file(FIX / "mc_heldout.jsonl")
    assert sorted(rows) == ["de", "en"] and len(rows["de"]) == 3


# --- real lm-eval runs --------------------------------------------------------------------------


def _continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | context), tokenised as lm-eval does (whole string, then split)."""
    ctx = tokenizer.encode(context, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].log_softmax(-1)
    return sum(logits[i - 1, whole[i]].item() for i in range(len(ctx), len(whole)))


@pytest.mark.skipif(not (XCOPA_ROOT / "xcopa" / "sw" / "test.sw.jsonl").exists(), reason="real XCOPA not present")
def test_xcopa_real_data_matches_manual_scoring():
    from alignx.eval.tasks.utils import xcopa_choices, xcopa_text_sw

    docs = [json.loads(line) for line in (XCOPA_ROOT / "xcopa/sw/test.sw.jsonl").read_text(encoding="utf-8").splitlines()[:5]]
    model, tok = tiny_lm([d["premise"] + " " + d["choice1"] + " " + d["choice2"] for d in docs])
    result = benchmarks.run_benchmarks(model, tok, ["alignx_xcopa_sw"], XCOPA_ROOT, limit=5, batch_size=4)
    entry = result["xcopa"]["sw"]
    assert entry["n"] == 5 and entry["acc_stderr"] is not None
    # independent re-scoring of the same 5 docs with the same prompt: lm-eval must agree
    correct = 0
    for doc in docs:
        ctx = xcopa_text_sw(doc)
        scores = [_continuation_logprob(model, tok, ctx, " " + c) for c in xcopa_choices(doc)]
        correct += int(max(range(2), key=scores.__getitem__) == doc["label"])
    assert entry["acc"] == pytest.approx(correct / 5)


def test_fixture_benchmarks_run_through_lm_eval():
    texts = [line for p in FIX.rglob("*.jsonl") for line in p.read_text(encoding="utf-8").splitlines()]
    model, tok = tiny_lm(texts)
    tasks = [f"alignx_{b}" for b in BENCHES if b not in ("xcopa", "mmlu")] + ["alignx_mc"]
    raw: dict = {}
    result = benchmarks.run_benchmarks(model, tok, tasks, FIX, limit=3, batch_size=8, max_gen_toks=8, raw_out=raw)
    # lm-eval's own results object, as strict JSON (no NaN), agreeing with the summary
    assert json.loads(json.dumps(raw, allow_nan=False)) == raw
    assert raw["results"]["alignx_xnli_de"]["acc,none"] == result["xnli"]["de"]["acc"]
    assert raw["n-samples"]["alignx_mc_en"]["effective"] == 3 and "alignx_xnli_de" in raw["configs"]
    expected = {
        "xnli": {"de": 3, "sw": 3}, "xstorycloze": {"en": 3, "sw": 3}, "xwinograd": {"en": 3, "fr": 3},
        "pawsx": {"de": 3, "fr": 3}, "belebele": {"de": 3, "sw": 3}, "mgsm": {"de": 3, "sw": 3}, "mc": {"de": 3, "en": 3},
    }  # fmt: skip
    assert {b: {lang: e["n"] for lang, e in langs.items()} for b, langs in result.items()} == expected
    for langs in result.values():
        for entry in langs.values():
            assert 0.0 <= entry["acc"] <= 1.0 and entry["acc_stderr"] is not None
    assert "acc_norm" in result["belebele"]["de"] and "acc_norm" in result["mc"]["en"]
    assert result["mgsm"]["de"]["metric"] == "exact_match,flexible-extract"


def test_lm_eval_results_become_plain_json():
    """What lm-eval's results hold besides numbers: numpy scalars, NaN stderrs, dtypes, task functions, sets."""
    import numpy as np

    def doc_to_text(doc):  # noqa: ANN001, ANN202
        return doc

    raw = {
        "results": {"t": {"acc,none": np.float64(0.5), "acc_stderr,none": float("nan"), "n": np.int64(3), "alias": "t"}},
        "configs": {"t": {"doc_to_text": doc_to_text, "fewshot": (1, 2), "tags": {"b", "a"}}},
        "config": {"model_dtype": torch.float32, "limit": None, "bootstrap_iters": 1000, "weights": torch.tensor([1.0, 2.0])},
        ("tuple", "key"): np.array([[1, 2]]),
        "inf": float("inf"),
        "ok": True,
    }
    plain = benchmarks.lm_eval_json(raw)
    assert json.loads(json.dumps(plain, allow_nan=False)) == plain
    assert plain["results"]["t"] == {"acc,none": 0.5, "acc_stderr,none": None, "n": 3, "alias": "t"}
    assert type(plain["results"]["t"]["n"]) is int and plain["inf"] is None and plain["ok"] is True
    assert plain["configs"]["t"]["fewshot"] == [1, 2] and plain["configs"]["t"]["tags"] == ["a", "b"]
    assert plain["configs"]["t"]["doc_to_text"].startswith("<function") and plain["config"]["model_dtype"] == "torch.float32"
    assert plain["config"]["weights"] == [1.0, 2.0] and plain["('tuple', 'key')"] == [[1, 2]]
