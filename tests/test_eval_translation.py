"""Translation metrics, prompts, shot selection, data readers and language id (no model needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from alignx.config import ConfigError
from alignx.eval import langid, translation
from alignx.eval.translation import Pair

FIX = Path(__file__).parent / "fixtures" / "translation"


# --- metrics ------------------------------------------------------------------------------------


def test_perfect_hypotheses_score_100():
    refs = ["The cat sleeps on the sofa.", "I would like a cup of coffee."]
    scores = translation.corpus_scores(refs, refs, "13a")
    assert scores["spbleu"] == pytest.approx(100.0)
    assert scores["chrf++"] == pytest.approx(100.0)


def test_bleu_matches_hand_computed_value():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (same length: brevity penalty 1)
    # clipped n-gram precisions: 1-gram 5/6, 2-gram 3/5, 3-gram 2/4, 4-gram 1/3
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    scores = translation.corpus_scores(["the cat sat on the mat"], ["the cat sat on a mat"], "13a")
    assert scores["spbleu"] == pytest.approx(expected, abs=1e-3)
    assert 0 < scores["chrf++"] < 100


def test_bleu_is_corpus_level_not_sentence_average():
    # pooled counts: 1-gram (5+2)/(6+2), 2-gram (3+1)/(5+1), 3-gram 2/4, 4-gram 1/3 (the short pair adds no 3/4-grams)
    hyps, refs = ["the cat sat on the mat", "good morning"], ["the cat sat on a mat", "good morning"]
    expected = 100 * (7 / 8 * 4 / 6 * 2 / 4 * 1 / 3) ** 0.25
    assert translation.corpus_scores(hyps, refs, "13a")["spbleu"] == pytest.approx(expected, abs=1e-3)


def test_disjoint_hypothesis_scores_zero_chrf():
    scores = translation.corpus_scores(["xyz"], ["abc"], "13a")
    assert scores["chrf++"] == pytest.approx(0.0)
    assert scores["spbleu"] == pytest.approx(0.0)


def test_chinese_needs_a_segmenting_tokenizer():
    # one wrong character: 13a sees a single "word" (BLEU 0), zh/char tokenizers give partial credit
    hyp, ref = ["我们明天去博物馆。"], ["我们今天去博物馆。"]
    assert translation.corpus_scores(hyp, ref, "13a")["spbleu"] == pytest.approx(0.0)
    assert translation.corpus_scores(hyp, ref, "zh")["spbleu"] > 20


def test_bleu_tokenizer_fallback_when_flores_model_absent(monkeypatch, tmp_path):
    import sacrebleu.utils

    monkeypatch.setattr(sacrebleu.utils, "SACREBLEU_DIR", str(tmp_path))  # no SentencePiece model there
    assert not translation.flores_tokenizer_available()
    assert translation.resolve_bleu_tokenizer("auto", "de") == "13a"
    assert translation.resolve_bleu_tokenizer("auto", "zh") == "zh"
    assert translation.resolve_bleu_tokenizer("auto", "ja") == "char"
    assert translation.resolve_bleu_tokenizer("auto", "th") == "char"
    assert translation.resolve_bleu_tokenizer("char", "de") == "char"
    with pytest.raises(ConfigError, match="sentencepiece"):
        translation.resolve_bleu_tokenizer("flores101", "de")
    with pytest.raises(ValueError, match="bleu_tokenize"):
        translation.resolve_bleu_tokenizer("moses", "de")


def test_bleu_tokenizer_uses_flores_when_model_present(monkeypatch, tmp_path):
    pytest.importorskip("sentencepiece")
    import sacrebleu.utils

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sacrebleu_tokenizer_spm.model").write_bytes(b"x")
    monkeypatch.setattr(sacrebleu.utils, "SACREBLEU_DIR", str(tmp_path))
    assert translation.resolve_bleu_tokenizer("auto", "zh") == "flores101"


def test_comet_is_null_with_a_reason_when_unconfigured():
    score, why = translation.comet_score(["a"], ["b"], ["c"], None)
    assert score is None and "comet_model" in why
    score, why = translation.comet_score(["a"], ["b"], ["c"], "/nonexistent/model.ckpt")
    assert score is None and why


# sacrebleu's signature layout (sacrebleu/metrics/bleu.py, chrf.py): "key:value" fields joined by "|"
BLEU_SIGNATURE = r"nrefs:1\|case:mixed\|eff:no\|tok:{tok}\|smooth:exp\|version:\d+\.\d+\.\d+"
CHRF_SIGNATURE = r"nrefs:1\|case:mixed\|eff:yes\|nc:6\|nw:2\|space:no\|version:\d+\.\d+\.\d+"


@pytest.mark.parametrize("tok", ["13a", "zh", "char"])
def test_scores_carry_sacrebleu_signatures(tok):
    import sacrebleu

    scores = translation.corpus_scores(["the cat sat on the mat"], ["the cat sat on a mat"], tok)
    assert re.fullmatch(BLEU_SIGNATURE.format(tok=tok), scores["bleu_signature"])
    assert re.fullmatch(CHRF_SIGNATURE, scores["chrf_signature"])
    assert scores["bleu_signature"].endswith(f"version:{sacrebleu.__version__}")


def _fake_comet(monkeypatch) -> list[str]:
    """A stand-in ``comet`` package whose loader records every checkpoint it loads (unbabel-comet is optional)."""
    import importlib.machinery
    import sys
    import types

    loads: list[str] = []

    class Model:
        def predict(self, data, batch_size, gpus, progress_bar):  # noqa: ANN001, ANN202
            return types.SimpleNamespace(system_score=0.5 + 0.01 * len(data))

    def load_from_checkpoint(path):  # noqa: ANN001, ANN202
        loads.append(path)
        return Model()

    module = types.ModuleType("comet")
    module.__spec__ = importlib.machinery.ModuleSpec("comet", None)
    module.load_from_checkpoint = load_from_checkpoint
    monkeypatch.setitem(sys.modules, "comet", module)
    return loads


def test_comet_checkpoint_loads_once_per_run(monkeypatch, tmp_path):
    loads = _fake_comet(monkeypatch)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"")
    # generation is not under test: every hypothesis is the reference's first word
    monkeypatch.setattr(translation, "generate", lambda model, tok, prompts, **kw: ["Die"] * len(prompts))
    sets = {(s, t): ([Pair(f"src {i}", f"Die {i}", s, t) for i in range(n)], []) for s, t, n in
            [("en", "de", 2), ("de", "en", 3), ("en", "zh", 4)]}  # fmt: skip
    results = translation.run_translation(None, None, sets, comet_model=str(ckpt), langid="script", rows_out={})
    assert loads == [str(ckpt)]  # one load for three directions
    assert [results[d]["comet"] for d in ("en-de", "de-en", "en-zh")] == pytest.approx([0.52, 0.53, 0.54])
    for entry in results.values():
        assert re.fullmatch(BLEU_SIGNATURE.format(tok=entry["tokenizer"]), entry["bleu_signature"])
        assert re.fullmatch(CHRF_SIGNATURE, entry["chrf_signature"])
    # a second run loads again: the scorer belongs to one evaluation run
    translation.run_translation(None, None, {("en", "de"): sets[("en", "de")]}, comet_model=str(ckpt), langid="script", rows_out={})
    assert loads == [str(ckpt)] * 2


# --- language identification --------------------------------------------------------------------

DE = "Die Katze schläft den ganzen Nachmittag auf dem weichen Sofa im Wohnzimmer."
EN = "The cat sleeps on the soft sofa in the living room all afternoon."
ZH = "猫整个下午都在客厅柔软的沙发上睡觉。"
JA = "猫は午後ずっと居間の柔らかいソファで寝ています。"


def test_script_detection():
    assert langid.dominant_script(DE) == "Latn"
    assert langid.dominant_script(ZH) == "Hani"
    assert langid.dominant_script("Привет, как дела?") == "Cyrl"
    assert langid.dominant_script("123 !?") is None
    assert langid.script_matches(JA, "ja") and langid.script_matches(ZH, "zh")
    assert not langid.script_matches(EN, "zh")


def test_off_target_rate_script_fallback():
    ident = langid.LanguageIdentifier("script")
    assert ident.method == "script"
    # script check: English for a German target is the same script -> counted on target
    assert ident.off_target_rate([DE, EN, ZH, ""], "de") == pytest.approx(2 / 4)
    assert ident.off_target_rate([ZH, EN], "zh") == pytest.approx(1 / 2)
    assert ident.off_target_rate([], "de") == 0.0


def test_off_target_rate_py3langid():
    pytest.importorskip("py3langid")
    ident = langid.LanguageIdentifier("py3langid")
    assert ident.detect(DE) == "de" and ident.detect(EN) == "en" and ident.detect(ZH) == "zh"
    assert ident.off_target_rate([DE, EN, ZH, ""], "de") == pytest.approx(3 / 4)
    assert ident.off_target_rate([ZH, EN], "zh-Hant") == pytest.approx(1 / 2)  # variant: same base language
    assert ident.method_for("de") == "py3langid"


# --- prompts and shots --------------------------------------------------------------------------


def _pairs(n: int) -> list[Pair]:
    return [Pair(f"source {i}", f"Ziel {i}", "en", "de") for i in range(n)]


def test_k_shot_prompt_layout():
    shots = [Pair("Good morning.", "Guten Morgen.", "en", "de"), Pair("Thank you.", "Danke.", "en", "de")]
    prompt = translation.build_prompt("The cat sleeps.", shots, "en", "de")
    assert prompt.startswith("Translate the following sentences from English to German.")
    assert "English: Good morning.\nGerman: Guten Morgen.\n\nEnglish: Thank you.\nGerman: Danke." in prompt
    assert prompt.endswith("\n\nEnglish: The cat sleeps.\nGerman:")
    zero = translation.build_prompt("The cat sleeps.", [], "en", "de")
    assert zero.count("English:") == 1


def test_shots_never_leak_the_test_pair():
    pool = _pairs(6)
    for i, test in enumerate(pool):  # pool == test set: the worst case
        shots = translation.select_shots(pool, 5, seed=0, index=i, test=test)
        assert len(shots) == 5 and test not in shots
        prompt = translation.build_prompt(test.src, shots, "en", "de")
        assert test.tgt not in prompt and prompt.count(test.src) == 1


def test_shot_selection_is_seeded():
    pool, test = _pairs(20), Pair("x", "y", "en", "de")
    a = translation.select_shots(pool, 4, seed=1, index=3, test=test)
    assert a == translation.select_shots(pool, 4, seed=1, index=3, test=test)
    assert any(translation.select_shots(pool, 4, seed=s, index=3, test=test) != a for s in range(2, 6))
    assert translation.select_shots(pool, 0, seed=1, index=0, test=test) == []
    with pytest.raises(ValueError, match="dev pairs"):
        translation.select_shots(pool[:3], 4, seed=0, index=0, test=test)


# --- data readers -------------------------------------------------------------------------------


def test_read_jsonl_and_group_directions():
    pairs = translation.read_parallel_jsonl(FIX / "test.jsonl")
    groups = translation.group_by_direction(pairs)
    assert set(groups) == {("en", "de"), ("en", "zh")}
    reverse = translation.group_by_direction(pairs, ["de-en"])[("de", "en")]
    assert len(reverse) == 4 and reverse[0].src_lang == "de" and reverse[0].src.startswith("Die Katze")


def test_read_jsonl_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "de"}\n{"src": "a", "tgt_lang": "de"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing .*tgt"):
        translation.read_parallel_jsonl(bad)
    bad.write_text('{"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "klingon"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: unknown language"):
        translation.read_parallel_jsonl(bad)


def test_read_flores_dir_layouts(tmp_path):
    pairs = translation.read_flores_dir(FIX / "flores", "eng_Latn", "zh")  # devtest/ subdir layout
    assert len(pairs) == 4 and pairs[0].tgt_lang == "zh" and pairs[0].tgt == "猫在沙发上睡觉。"
    (tmp_path / "eng.devtest").write_text("a\nb\n")  # FLORES-101 flat layout with ISO 639-3 names
    (tmp_path / "deu.devtest").write_text("c\n")
    with pytest.raises(ValueError, match="not line-aligned"):
        translation.read_flores_dir(tmp_path, "en", "de")
    with pytest.raises(FileNotFoundError, match="no FLORES file for fr"):
        translation.read_flores_dir(tmp_path, "en", "fr")


def test_load_translation_sets_dev_pools():
    sets = translation.load_translation_sets([str(FIX / "test.jsonl")], [str(FIX / "dev.jsonl")], directions=["en-de"])
    test, dev = sets[("en", "de")]
    assert len(test) == 4 and len(dev) == 2 and not {p.src for p in test} & {p.src for p in dev}
    sets = translation.load_translation_sets(flores_dir=str(FIX / "flores"), directions=["en-zh", "de-en"], limit=2)
    assert [len(t) for t, _ in sets.values()] == [2, 2] and len(sets[("en", "zh")][1]) == 2
    with pytest.raises(ValueError, match="direction"):
        translation.parse_direction("english-german")
    assert translation.parse_direction("en-zh-Hant") == ("en", "zh-Hant")


def test_fixture_files_are_valid_jsonl():
    for path in FIX.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            assert set(json.loads(line)) == {"src", "tgt", "src_lang", "tgt_lang"}


def test_length_caps_cut_each_row_at_its_own_cap_whatever_its_batch():
    """A row stops at its own cap and is cut there: its output is the same alone or batched with longer-capped rows,
    and equals the uncapped output's first tokens."""
    import torch

    from conftest import make_tokenizer, tiny_config

    tok = make_tokenizer()
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(tiny_config("llama", len(tok))).eval()
    prompts = ["English: the house\nGerman:", "English: a dog barks loudly at night\nGerman:", "English: hi\nGerman:"]
    caps = [2, 7, 4]
    batched = translation.generate(model, tok, prompts, batch_size=3, max_new_tokens=20, caps=caps)
    alone = [translation.generate(model, tok, [p], batch_size=1, max_new_tokens=20, caps=[c])[0] for p, c in zip(prompts, caps, strict=True)]
    assert batched == alone
    free = translation.generate(model, tok, prompts, batch_size=3, max_new_tokens=20)
    # greedy: a capped row is the start of its uncapped output; the random model writes no newline soon, so the caps cut
    assert all(full.startswith(out) for out, full in zip(batched, free, strict=True))
    assert all(len(out) < len(full) for out, full in zip(batched, free, strict=True))


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2"])
def test_shared_prefix_cache_gives_the_outputs_of_full_prompts(arch):
    """Prompts with one start (fixed demonstrations): encoding the shared tokens once and continuing every batch from
    a copy of their cache gives the same greedy outputs as encoding each full prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    from conftest import make_tokenizer, tiny_config

    tok = make_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tok))).eval()
    shots = [Pair("the cat", "die Katze", "en", "de"), Pair("a red house", "ein rotes Haus", "en", "de")]
    srcs = ["good morning", "the dog barks loudly at night", "hi", "where is the station, please?", "yes"]
    prompts = [translation.build_prompt(s, shots, "en", "de") for s in srcs]
    shared = translation.generate(model, tok, prompts, batch_size=2, max_new_tokens=6)
    full = translation.generate(model, tok, prompts, batch_size=2, max_new_tokens=6, share_prefix=False)
    alone = [translation.generate(model, tok, [p], batch_size=1, max_new_tokens=6)[0] for p in prompts]
    assert shared == full == alone
    encoded = [tok(p) for p in prompts]
    assert translation._common_prefix([{k: list(v) for k, v in e.items()} for e in encoded]) >= translation.MIN_SHARED_PREFIX


def test_fixed_shots_share_no_sentence_with_the_test_set():
    test = [Pair(f"s{i}", f"t{i}", "en", "de") for i in range(3)]
    pool = [*test, Pair("a", "b", "en", "de"), Pair("c", "d", "en", "de"), Pair("s1", "x", "en", "de")]
    shots = translation.select_fixed_shots(pool, 2, 0, test)
    assert sorted(p.src for p in shots) == ["a", "c"]
    assert translation.select_fixed_shots(pool, 2, 0, test) == shots  # seeded
    with pytest.raises(ConfigError, match="fixed demonstrations need 3"):
        translation.select_fixed_shots(pool, 3, 0, test)
