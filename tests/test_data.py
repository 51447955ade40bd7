"""Readers (file:line errors, skip-and-count), language normalisation and span rendering."""

from __future__ import annotations

import json

import pytest

from alignx import languages
from alignx.data.readers import DataError, ReadStats, read_instructions, read_parallel
from alignx.data.render import Collator, render_instruction, render_translation
from alignx.objectives.ntp import IGNORE_INDEX

TEMPLATE = "Translate the following sentence from {src_name} to {tgt_name}. // Input: {src} // Output: "


@pytest.mark.parametrize(
    ("code", "canonical"),
    [("de", "de"), ("deu", "de"), ("deu_Latn", "de"), ("ZH-cn", "zh"), ("zho_Hant", "zh-Hant"), ("pt_BR", "pt"), ("swh_Latn", "sw")],
)
def test_language_normalisation(code, canonical):
    assert languages.normalize(code) == canonical


def test_unknown_language_is_a_clear_error():
    with pytest.raises(languages.UnknownLanguageError, match="unknown language code 'xx'"):
        languages.normalize("xx")


def test_read_jsonl_tsv_moses(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"src": "Hi", "tgt": "Hallo", "src_lang": "eng_Latn", "tgt_lang": "deu"}) + "\n\n")
    (tmp_path / "b.tsv").write_text("tgt\tsrc\tsrc_lang\ttgt_lang\nBonjour\tHello\ten\tfr\n")
    (tmp_path / "opus.en-ru-train.en").write_text("Hello\nBye\n")
    (tmp_path / "opus.en-ru-train.ru").write_text("Привет\nПока\n")
    a = read_parallel(tmp_path / "a.jsonl")
    b = read_parallel(tmp_path / "b.tsv")
    c = read_parallel(tmp_path / "opus.en-ru-train")
    assert (a[0].src, a[0].tgt, a[0].src_lang, a[0].tgt_lang) == ("Hi", "Hallo", "en", "de")
    assert (b[0].src, b[0].tgt, b[0].tgt_lang) == ("Hello", "Bonjour", "fr")
    assert [(p.src, p.tgt, p.src_lang, p.tgt_lang) for p in c] == [("Hello", "Привет", "en", "ru"), ("Bye", "Пока", "en", "ru")]


def test_bad_rows_name_file_and_line_or_are_counted(tmp_path):
    good = json.dumps({"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "de"})
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join([good, "{not json", json.dumps({"src": "a", "tgt": "b", "src_lang": "en"}), good]) + "\n")
    with pytest.raises(DataError, match=r"p\.jsonl:2: invalid JSON"):
        read_parallel(path)
    stats = ReadStats()
    rows = read_parallel(path, on_bad_row="skip", stats=stats)
    assert len(rows) == 2 and sum(stats.skipped.values()) == 2
    path.write_text(json.dumps({"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "klingon"}) + "\n")
    with pytest.raises(DataError, match=r"p\.jsonl:1: unknown language code 'klingon'"):
        read_parallel(path)


def test_moses_line_count_mismatch(tmp_path):
    (tmp_path / "c.de-en.de").write_text("a\nb\n")
    (tmp_path / "c.de-en.en").write_text("a\n")
    with pytest.raises(DataError, match="has 2 lines but"):
        read_parallel(tmp_path / "c.de-en")


def test_read_instructions_alpaca_and_chat(tmp_path):
    path = tmp_path / "i.jsonl"
    path.write_text(
        json.dumps({"instruction": "Say hi", "input": "in German", "output": "Hallo", "lang": "deu_Latn"}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n"
    )
    with pytest.raises(DataError, match=r"i\.jsonl:3: the last message must be the assistant"):
        read_instructions(path)
    rows = read_instructions(path, on_bad_row="skip")
    assert rows[0].messages[0]["content"] == "Say hi\n\nin German" and rows[0].lang == "de"
    assert rows[0].alpaca == ("Say hi", "in German") and rows[1].alpaca is None
    assert rows[1].messages[-1] == {"role": "assistant", "content": "Hello"}


def _decode_span(tok, ids, span):
    return tok.decode(ids[span[0] : span[1]]).strip()


def test_translation_spans_cover_exactly_x_and_y(tokenizer):
    from alignx.data.readers import Pair

    pair = Pair("Where is the train station?", "Wo ist der Bahnhof?", "en", "de")
    ex = render_translation(pair, tokenizer, TEMPLATE, 512, loss_on_prompt=True)
    assert _decode_span(tokenizer, ex.input_ids, ex.x_span) == pair.src
    assert _decode_span(tokenizer, ex.input_ids, ex.y_span) == pair.tgt
    assert ex.input_ids[-1] == tokenizer.eos_token_id and ex.y_span[1] == len(ex.input_ids) - 1  # EOS outside y
    assert ex.input_ids[0] == tokenizer.bos_token_id
    assert ex.labels == ex.input_ids
    assert ex.src_lang != ex.tgt_lang
    ex2 = render_translation(pair, tokenizer, TEMPLATE, 512, loss_on_prompt=False)
    assert all(t == IGNORE_INDEX for t in ex2.labels[: ex2.y_span[0]]) and ex2.labels[ex2.y_span[0] :] == ex2.input_ids[ex2.y_span[0] :]


def test_overlong_translation_rows_dropped_or_cut(tokenizer):
    """Default: a row that does not fit is dropped. truncate=True (reference): cut, dropped only once y is gone."""
    from alignx.data.readers import Pair
    from alignx.data.render import RenderStats

    pair = Pair("Where is the train station?", "Wo ist der Bahnhof?", "en", "de")
    full = render_translation(pair, tokenizer, TEMPLATE, 512, True)
    n, (y0, y1) = len(full.input_ids), full.y_span
    assert y1 == n - 1 and y1 - y0 >= 3  # y, then EOS
    stats = RenderStats()
    assert render_translation(pair, tokenizer, TEMPLATE, n, True, stats).input_ids == full.input_ids
    assert render_translation(pair, tokenizer, TEMPLATE, n - 1, True, stats) is None
    assert stats.dropped == {"too long": 1} and stats.rendered == 1

    cut = RenderStats()
    no_eos = render_translation(pair, tokenizer, TEMPLATE, n - 1, True, cut, truncate=True)
    assert no_eos.input_ids == full.input_ids[:-1] and no_eos.y_span == (y0, y1)  # y whole, EOS cut
    part = render_translation(pair, tokenizer, TEMPLATE, y0 + 2, False, cut, truncate=True)
    assert part.input_ids == full.input_ids[: y0 + 2] and part.y_span == (y0, y0 + 2) and part.x_span == full.x_span
    assert part.labels == [IGNORE_INDEX] * y0 + full.input_ids[y0 : y0 + 2]
    assert render_translation(pair, tokenizer, TEMPLATE, y0, True, cut, truncate=True) is None  # y cut away
    assert cut.dropped == {"target truncated away": 1} and cut.rendered == 2


def test_instruction_rows_alpaca_lora_prompt_and_prompt_loss(tokenizer):
    """Without a chat template, Alpaca rows render as Alpaca-LoRA's prompt_input / prompt_no_input exactly."""
    from alignx.data.readers import Instruction

    with_input = Instruction(
        [{"role": "user", "content": "Say hi\n\nin German"}, {"role": "assistant", "content": "Hallo"}], "de", ("Say hi", "in German")
    )
    expected = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nSay hi\n\n### Input:\n"
        "in German\n\n### Response:\nHallo"
    )
    ex = render_instruction(with_input, tokenizer, 512, use_chat_template=False, loss_on_prompt=True)
    assert ex.input_ids == tokenizer(expected)["input_ids"] + [tokenizer.eos_token_id]
    assert ex.labels == ex.input_ids  # train_on_inputs
    no_input = Instruction([{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hallo"}], None, ("Say hi", ""))
    expected = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nSay hi\n\n### Response:\nHallo"
    )
    ex = render_instruction(no_input, tokenizer, 512, use_chat_template=False)
    assert ex.input_ids == tokenizer(expected)["input_ids"] + [tokenizer.eos_token_id]
    n_prompt = len(tokenizer(expected[: -len("Hallo")])["input_ids"])
    assert ex.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    # instruction rows are cut; dropped only when no label would be left
    assert render_instruction(no_input, tokenizer, n_prompt, use_chat_template=False) is None
    kept = render_instruction(no_input, tokenizer, n_prompt, use_chat_template=False, loss_on_prompt=True)
    assert kept.input_ids == ex.input_ids[:n_prompt] == kept.labels


def test_instruction_masks_prompt_with_and_without_chat_template(tokenizer):
    from alignx.data.readers import Instruction

    row = Instruction([{"role": "user", "content": "Translate 'cat' to German."}, {"role": "assistant", "content": "Katze"}])
    ex = render_instruction(row, tokenizer, 512, use_chat_template=True)  # no template -> Alpaca format
    answer = [t for t in ex.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(answer).replace("</s>", "").strip() == "Katze"
    tokenizer.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    try:
        ex = render_instruction(row, tokenizer, 512, use_chat_template=True)
        answer = [t for t in ex.labels if t != IGNORE_INDEX]
        assert "Katze" in tokenizer.decode(answer) and "Translate" not in tokenizer.decode(answer)
    finally:
        tokenizer.chat_template = None


def test_collator_pads_and_shifts(tokenizer):
    from alignx.data.readers import Pair

    exs = [
        render_translation(Pair("Hi", "Hallo", "en", "de"), tokenizer, TEMPLATE, 512, True),
        render_translation(Pair("Where is the train station?", "Wo ist der Bahnhof?", "en", "de"), tokenizer, TEMPLATE, 512, True),
    ]
    batch = Collator(tokenizer.pad_token_id)(exs)
    B, T = batch["input_ids"].shape
    assert T % 8 == 0 and len(exs[1].input_ids) <= T
    assert batch["attention_mask"][0].sum() == len(exs[0].input_ids)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert batch["shift_labels"][0, : len(exs[0].input_ids) - 1].tolist() == exs[0].input_ids[1:]
    assert batch["y_end"].tolist() == [e.y_span[1] for e in exs]


def test_moses_files_split_at_newlines_only(tmp_path):
    """Moses/OPUS files are split at \\n only: U+2028, U+0085, form feeds and a lone \\r stay inside their line
    (str.splitlines split them and shifted every later pair); CRLF endings and a BOM are dropped."""
    en = [f"sentence {i}" for i in range(10)]
    de = [f"Satz {i}" for i in range(10)]
    en[2], en[5], de[4], de[7] = "line\u2028separator", "next\x85line", "form\x0cfeed", "lone\rreturn"
    (tmp_path / "c.de-en.en").write_text("\ufeff" + "\r\n".join(en) + "\r\n", encoding="utf-8", newline="")
    (tmp_path / "c.de-en.de").write_text("\n".join(de), encoding="utf-8", newline="")  # no final newline
    pairs = read_parallel(tmp_path / "c.de-en")
    assert [(p.src, p.tgt) for p in pairs] == list(zip(de, en, strict=True))


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_bytes(b"Hello\tHallo\ten\tde\nCaf\xe9\tCafe\ten\tde\n")
    with pytest.raises(DataError, match=r"p\.tsv:2: invalid UTF-8 \(byte 0xe9 at column 4\)"):
        read_parallel(path)


def test_same_language_pairs_are_refused_or_skipped_and_counted(tmp_path):
    """A pair whose two languages are one after normalisation (en-en, or deu / de) is not a translation: refused
    with file:line, or under on_bad_row=skip skipped and counted. Both row layouts."""
    good = json.dumps({"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "de"})
    same = json.dumps({"src": "Hello", "tgt": "Hello there", "src_lang": "en", "tgt_lang": "en"})
    normalised = json.dumps({"translation": {"deu": "Hallo", "de": "Hallo Welt"}})
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join([good, same, normalised, good]) + "\n")
    with pytest.raises(DataError, match=r"p\.jsonl:2: source and target are both 'en'.*data\.on_bad_row=skip"):
        read_parallel(path)
    stats = ReadStats()
    rows = read_parallel(path, on_bad_row="skip", stats=stats)
    assert len(rows) == 2 and sum(stats.skipped.values()) == 2


def test_suspicious_pairs_are_kept_but_counted(tmp_path):
    """Identical source and target text (an untranslated string) and text with no letter of its language's script
    (Latin text labelled ja) are kept, counted by reason, and named in the summary; digits-only text is not flagged."""
    rows = [
        {"src": "Open the file", "tgt": "Datei öffnen", "src_lang": "en", "tgt_lang": "de"},
        {"src": "LibreOffice", "tgt": "LibreOffice", "src_lang": "en", "tgt_lang": "de"},
        {"src": "Open the file", "tgt": "Open the file, please", "src_lang": "en", "tgt_lang": "ja"},
        {"src": "Open the file", "tgt": "ファイルを開く", "src_lang": "en", "tgt_lang": "ja"},
        {"src": "Page 12", "tgt": "12", "src_lang": "en", "tgt_lang": "ru"},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    stats = ReadStats()
    assert len(read_parallel(path, stats=stats)) == 5
    assert dict(stats.flagged) == {"identical source and target text": 1, "ja text not in its script": 1}
    assert "kept but flagged: 1 identical source and target text, 1 ja text not in its script" in stats.summary()
    (tmp_path / "c.en-en.en").write_text("a\n")
    with pytest.raises(DataError, match=r"c\.en-en: both files are 'en'"):
        read_parallel(tmp_path / "c.en-en")


def test_moses_prefixes_of_opus100_split_names(tmp_path):
    """OPUS-100 ships opus.de-en-{train,dev,test}.{de,en}: a split name after the pair is not part of a code."""
    from alignx.data.readers import moses_files

    for split in ("train", "dev", "test", "devtest", "v1"):
        (tmp_path / f"opus.de-en-{split}.de").write_text(f"Hallo {split}\n", encoding="utf-8")
        (tmp_path / f"opus.de-en-{split}.en").write_text(f"Hello {split}\n", encoding="utf-8")
        fa, fb, a, b = moses_files(tmp_path / f"opus.de-en-{split}")
        assert (fa.name, fb.name, a, b) == (f"opus.de-en-{split}.de", f"opus.de-en-{split}.en", "de", "en")
        pairs = read_parallel(tmp_path / f"opus.de-en-{split}")
        assert [(p.src, p.tgt, p.src_lang, p.tgt_lang) for p in pairs] == [(f"Hallo {split}", f"Hello {split}", "de", "en")]
    # subtagged codes and a classic Moses prefix still resolve; a prefix whose pair has no files does not
    (tmp_path / "c.en-zh_CN.en").write_text("a\n", encoding="utf-8")
    (tmp_path / "c.en-zh_CN.zh_CN").write_text("b\n", encoding="utf-8")
    assert moses_files(tmp_path / "c.en-zh_CN")[2:] == ("en", "zh_CN")
    assert moses_files(tmp_path / "opus.fr-en-dev") is None
    assert moses_files(tmp_path / "missing_dir" / "x.de-en") is None
