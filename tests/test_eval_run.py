"""Batched generation and the whole ``alignx eval`` stage on a tiny random Llama saved to disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignx.config import ConfigError, ModelConfig, load_config
from alignx.eval import translation
from alignx.eval.run import EvalConfig, main
from alignx.utils import read_json
from conftest import tiny_lm

FIX = Path(__file__).parent / "fixtures"


def _texts() -> list[str]:
    return [line for p in (FIX / "translation").glob("*.jsonl") for line in p.read_text(encoding="utf-8").splitlines()]


def _saved_tiny(path: Path) -> Path:
    """The tiny Llama and its tokenizer, trained on the fixture texts, saved as a model directory."""
    model, tok = tiny_lm(_texts())
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_generation_is_padding_invariant_and_cut_at_newline():
    model, tok = tiny_lm(_texts())
    prompts = ["English: The cat sleeps.\nGerman:", "Translate the following sentences from English to German.\n\nEnglish: I would like a cup of coffee.\nGerman:"]
    batched = translation.generate(model, tok, prompts, batch_size=2, max_new_tokens=12)
    alone = [translation.generate(model, tok, [p], batch_size=1, max_new_tokens=12)[0] for p in prompts]
    assert batched == alone  # left padding + attention mask: the short prompt is unaffected by the long one
    assert all("\n" not in h for h in batched)
    assert tok.padding_side == "right"  # restored
    # the raw continuation really is the greedy one
    enc = tok(prompts[0], return_tensors="pt")
    raw = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=0)[0, enc["input_ids"].shape[1] :]
    assert tok.decode(raw, skip_special_tokens=True).strip().startswith(batched[0])


def test_eval_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="shots"):
        EvalConfig(shots=-1)
    with pytest.raises(ConfigError, match="direction"):
        EvalConfig(directions=["english-german"])
    with pytest.raises(ConfigError, match="flores_dir needs directions"):
        EvalConfig(flores_dir=str(FIX / "translation" / "flores"))
    with pytest.raises(ConfigError, match="not found"):
        EvalConfig(translation_files=[str(tmp_path / "missing.jsonl")])
    cfg = load_config(EvalConfig, overrides=["tasks=alignx_xcopa,alignx_mc", "directions=en-de,de-en", "shots=4", "model.name_or_path=x"])
    assert cfg.tasks == ["alignx_xcopa", "alignx_mc"] and cfg.directions == ["en-de", "de-en"] and cfg.shots == 4


def test_main_writes_eval_json(tmp_path):
    pytest.importorskip("alignx.model.load")
    model, tok = tiny_lm(_texts() + [json.dumps(r) for r in (FIX / "benchmarks" / "mc_heldout.jsonl").read_text().splitlines()])
    model_dir = tmp_path / "tiny-llama"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    cfg = EvalConfig(
        model=ModelConfig(name_or_path=str(model_dir)),
        tasks=["alignx_mc"],
        benchmark_data_dir=str(FIX / "benchmarks"),
        translation_files=[str(FIX / "translation" / "test.jsonl")],
        translation_dev_files=[str(FIX / "translation" / "dev.jsonl")],
        shots=1,
        limit=2,
        max_new_tokens=6,
        batch_size=4,
        output_dir=str(tmp_path / "out"),
        perplexity_files=[str(FIX / "translation" / "test.jsonl")],
        perplexity_langs=["en", "deu"],
    )
    returned = main(cfg)
    result = read_json(tmp_path / "out" / "eval.json")
    assert result == json.loads(json.dumps(returned, default=str))
    assert result["kind"] == "eval" and result["run_name"] == "tiny-llama" and result["model"] == str(model_dir)
    assert result["config"]["shots"] == 1 and result["config"]["model"]["name_or_path"] == str(model_dir)
    assert result["env"]["versions"]["torch"]
    assert set(result["benchmarks"]) == {"mc"}
    for entry in result["benchmarks"]["mc"].values():
        assert entry["n"] == 2 and {"acc", "acc_stderr", "acc_norm"} <= set(entry)
    # lm-eval's raw results beside eval.json: strict JSON (NaN would be refused), the same numbers
    raw = json.loads((tmp_path / "out" / "lm_eval_results.json").read_text(encoding="utf-8"), parse_constant=pytest.fail)
    for lang, entry in result["benchmarks"]["mc"].items():
        assert raw["results"][f"alignx_mc_{lang}"]["acc,none"] == entry["acc"]
    assert raw["config"]["model_dtype"] == "torch.float32" and raw["n-samples"]["alignx_mc_en"]["effective"] == 2
    assert set(result["translation"]) == {"en-de", "en-zh"}
    for direction, entry in result["translation"].items():
        assert {"spbleu", "chrf++", "off_target", "n", "comet", "tokenizer", "shots", "samples"} <= set(entry)
        assert f"|tok:{entry['tokenizer']}|" in entry["bleu_signature"] and "|nw:2|" in entry["chrf_signature"]
        assert entry["n"] == 2 and entry["shots"] == 1 and entry["comet"] is None
        assert 0 <= entry["spbleu"] <= 100 and 0 <= entry["chrf++"] <= 100 and 0 <= entry["off_target"] <= 1
        assert [set(s) for s in entry["samples"]] == [{"src", "ref", "hyp"}] * 2
        rows = (tmp_path / "out" / f"translations.{direction}.jsonl").read_text(encoding="utf-8").splitlines()
        hyps = [json.loads(r)["hyp"] for r in rows]
        refs = [json.loads(r)["ref"] for r in rows]
        # the stored score is the corpus score of the stored outputs
        assert entry["chrf++"] == pytest.approx(translation.corpus_scores(hyps, refs, entry["tokenizer"])["chrf++"])
        # per-sentence items (for paired bootstraps) rebuild the stored corpus numbers
        items = entry["items"]
        assert len(items["chrf_stats"]) == 2 and len(items["off_target"]) == 2
        assert translation.chrf_from_stats([sum(c) for c in zip(*items["chrf_stats"], strict=True)]) == pytest.approx(entry["chrf++"], abs=1e-3)
        assert sum(items["off_target"]) / 2 == pytest.approx(entry["off_target"])
    # perplexity: every sentence scored alone; the summed NLL equals HF's mean loss x predicted tokens
    import torch

    ppl = result["perplexity"]
    assert set(ppl) == {"en", "de"}
    en_texts = []
    for line in (FIX / "translation" / "test.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for text, lang in ((row["src"], row["src_lang"]), (row["tgt"], row["tgt_lang"])):
            if lang in ("en", "eng_Latn") and text not in en_texts:
                en_texts.append(text)
    assert ppl["en"]["n"] == len(en_texts)
    reloaded = type(model).from_pretrained(model_dir).eval()
    for text, nll, count in zip(en_texts, ppl["en"]["items"]["nll"], ppl["en"]["items"]["tokens"], strict=True):
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            mean = reloaded(input_ids=ids, labels=ids).loss.item()
        assert count == ids.shape[1] - 1 and nll == pytest.approx(mean * count, rel=1e-4)
    assert result["translation"]["en-zh"]["tokenizer"] in ("zh", "flores101")


def test_failed_evaluation_keeps_finished_parts_and_the_older_result(tmp_path, monkeypatch, capsys):
    """A part that fails after others finished: the finished ones go to eval.partial.json, the older eval.json and
    translation files stay as they were (they are replaced only together, at the end), and the error is one line."""
    from alignx import cli
    from alignx.eval import run as eval_run
    from conftest import message

    model_dir = _saved_tiny(tmp_path / "m")
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval.json").write_text('{"kind": "eval", "note": "older"}\n')
    (out / "lm_eval_results.json").write_text('{"note": "older"}\n')  # belongs to the older eval.json

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003
        raise RuntimeError("perplexity exploded")

    monkeypatch.setattr(eval_run, "run_perplexity", broken)
    argv = ["eval", f"model.name_or_path={model_dir}", f"translation_files=[{FIX / 'translation' / 'test.jsonl'}]", "shots=0",
            "limit=2", "max_new_tokens=4", f"perplexity_files=[{FIX / 'translation' / 'test.jsonl'}]", f"output_dir={out}"]
    assert cli.main(argv) == 1
    assert message(capsys.readouterr().err, "eval") == (
        "alignx eval: internal error: RuntimeError: perplexity exploded (ALIGNX_DEBUG=1 shows the traceback)")
    partial = read_json(out / "eval.partial.json")
    assert partial["kind"] == "eval.partial" and partial["error"] == "RuntimeError: perplexity exploded"
    assert set(partial["translation"]) == {"en-de", "en-zh"} and "perplexity" not in partial
    assert read_json(out / "eval.json") == {"kind": "eval", "note": "older"}
    assert read_json(out / "lm_eval_results.json") == {"note": "older"}
    assert sorted(p.name for p in out.iterdir()) == ["eval.json", "eval.partial.json", "lm_eval_results.json"]


def test_run_without_benchmarks_drops_an_older_lm_eval_file(tmp_path):
    """lm_eval_results.json sits beside the eval.json whose benchmarks it holds: a new eval.json without
    benchmarks must not leave an older run's file next to it."""
    model_dir = _saved_tiny(tmp_path / "m")
    out = tmp_path / "out"
    out.mkdir()
    (out / "lm_eval_results.json").write_text('{"note": "older"}\n')
    cfg = EvalConfig(model=ModelConfig(name_or_path=str(model_dir)), translation_files=[str(FIX / "translation" / "test.jsonl")],
                     shots=0, limit=1, max_new_tokens=2, output_dir=str(out))  # fmt: skip
    main(cfg)
    assert read_json(out / "eval.json")["benchmarks"] == {} and not (out / "lm_eval_results.json").exists()


def test_replacing_a_run_removes_its_lm_eval_results(tmp_path):
    """overwrite_output_dir: lm-eval's raw results came from the replaced model, like eval.json."""
    from alignx.train.outputs import clear_outputs

    for name in ("eval.json", "lm_eval_results.json", "translations.en-de.jsonl", "notes.txt"):
        (tmp_path / name).write_text("{}\n")
    clear_outputs(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
