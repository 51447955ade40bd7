"""Data sources and formats (alignx.data.readers) and the Arrow path (alignx.data.dataset): every format reads the
same rows, bad rows name file:line, and the cached, batched Dataset.map rendering gives exactly the rows of the
row-by-row renderer."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignx.config import ConfigError, DataConfig
from alignx.data import dataset as data_mod
from alignx.data.readers import (
    DataError,
    Instruction,
    Pair,
    ReadStats,
    check_source,
    parse_hub_spec,
    read_instructions,
    read_parallel,
)
from alignx.data.render import (
    Example,
    _encode,
    both_directions,
    data_digest,
    lang_id,
    render_instruction,
    subsample,
    translation_text,
)
from conftest import make_sentencepiece_tokenizer, make_tokenizer

PAIRS = [
    Pair("Hello, world", "Hallo, Welt", "en", "de"),
    Pair("Two\nlines", "Zwei\nZeilen", "en", "de"),  # a newline inside a cell (quoted CSV, JSON)
    Pair("The cat sleeps.", "Кошка спит.", "en", "ru"),
]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _as_rows(pairs: list[Pair]) -> list[dict]:
    return [vars(p) for p in pairs]


# ---- formats ---------------------------------------------------------------------------------------------------


def test_every_parallel_format_reads_the_same_pairs(tmp_path):
    rows = _as_rows(PAIRS)
    files = {
        "jsonl": _jsonl(tmp_path / "a.jsonl", rows),
        "json-array": tmp_path / "b.json",
        "parquet": tmp_path / "c.parquet",
        "csv": tmp_path / "d.csv",
        "translation-jsonl": _jsonl(tmp_path / "e.jsonl", [{"translation": {p.src_lang: p.src, p.tgt_lang: p.tgt}} for p in PAIRS]),
        "translation-parquet": tmp_path / "f.parquet",
    }
    files["json-array"].write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), files["parquet"])
    csv_lines = ["tgt_lang,src,tgt,src_lang"] + [f'{p.tgt_lang},"{p.src}","{p.tgt}",{p.src_lang}' for p in PAIRS]
    files["csv"].write_text("\n".join(csv_lines) + "\n", encoding="utf-8")
    # an Arrow struct of a multi-pair dataset: the languages a row lacks are null
    structs = [{"translation": {"en": p.src, "de": p.tgt if p.tgt_lang == "de" else None, "ru": p.tgt if p.tgt_lang == "ru" else None}}
               for p in PAIRS]
    pq.write_table(pa.Table.from_pylist(structs), files["translation-parquet"])
    for name, path in files.items():
        assert read_parallel(path) == PAIRS, name


def test_tsv_and_moses_keep_their_old_layouts(tmp_path):
    (tmp_path / "a.tsv").write_text("".join(f"{p.src}\t{p.tgt}\t{p.src_lang}\t{p.tgt_lang}\n" for p in PAIRS[2:]), encoding="utf-8")
    (tmp_path / "c.en-ru.en").write_text("The cat sleeps.\n", encoding="utf-8")
    (tmp_path / "c.en-ru.ru").write_text("Кошка спит.\n", encoding="utf-8")
    assert read_parallel(tmp_path / "a.tsv") == read_parallel(tmp_path / "c.en-ru") == PAIRS[2:]


def test_every_instruction_format(tmp_path):
    rows = [
        {"instruction": "Say hi", "input": "in German", "output": "Hallo"},
        {"instruction": "And now?", "output": "Tschüss", "system": "Be brief.", "history": [["Hi", "Hallo"]], "lang": "deu"},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}], "system": "Be kind."},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"prompt": "Hi", "completion": "Hello"},
        {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
         "completion": [{"role": "assistant", "content": "Hello"}]},
    ]
    got = read_instructions(_jsonl(tmp_path / "i.jsonl", rows))
    user, hello = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}
    assert got == [
        Instruction([{"role": "user", "content": "Say hi\n\nin German"}, {"role": "assistant", "content": "Hallo"}], None, ("Say hi", "in German")),
        Instruction([{"role": "system", "content": "Be brief."}, user, {"role": "assistant", "content": "Hallo"},
                     {"role": "user", "content": "And now?"}, {"role": "assistant", "content": "Tschüss"}], "de", None),
        Instruction([{"role": "system", "content": "Be kind."}, user, hello], None, None),
        Instruction([user, hello], None, None),
        Instruction([user, hello], None, None),
        Instruction([{"role": "system", "content": "S"}, user, hello], None, None),
    ]
    (tmp_path / "i.csv").write_text('instruction,input,output\nSay hi,"in German",Hallo\n', encoding="utf-8")
    assert read_instructions(tmp_path / "i.csv") == got[:1]


@pytest.mark.parametrize(("name", "content", "where", "problem"), [
    ("a.json", '[\n  {"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "de"},\n  {"src": "a",\n   "tgt": "b"}\n]\n', "a.json:3",
     "missing field(s) src_lang, tgt_lang"),
    ("b.json", '[\n  {"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "de"},\n  {"src": }\n]', "b.json:3", "invalid JSON"),
    ("c.csv", 'src,tgt,src_lang,tgt_lang\na,b,en,de\n"x\ny",b,en\n', "c.csv:3", "expected 4 comma-separated columns"),
    ("d.jsonl", json.dumps({"translation": {"en": "a", "de": "b", "fr": "c"}}) + "\n", "d.jsonl:1",
     "a 'translation' row needs exactly two languages, got 3 (en, de, fr)"),
])
def test_bad_rows_name_file_and_line_in_every_format(tmp_path, name, content, where, problem):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=f"{where}: " + problem.replace("(", r"\(").replace(")", r"\)")):
        read_parallel(path)


def test_parquet_rows_and_sharegpt_roles_are_named(tmp_path):
    pq.write_table(pa.Table.from_pylist([vars(PAIRS[0]), {"src": "a", "tgt": "", "src_lang": "en", "tgt_lang": "de"}]), tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p\.parquet:row 2: empty source or target text"):
        read_parallel(tmp_path / "p.parquet")
    stats = ReadStats()
    assert read_parallel(tmp_path / "p.parquet", "skip", stats) == PAIRS[:1] and stats.skipped == {"empty source or target text": 1}
    bad = _jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "observation", "value": "x"}]}])
    with pytest.raises(DataError, match=r"s\.jsonl:1: each message of 'conversations' needs from system\|human\|user\|gpt\|assistant"):
        read_instructions(bad)


def test_headers_with_other_columns_spaces_or_missing_names(tmp_path):
    (tmp_path / "a.csv").write_text("id, tgt_lang ,src,tgt,src_lang,score\n7,de,Hello,Hallo, en ,0.9\n", encoding="utf-8")
    assert read_parallel(tmp_path / "a.csv") == [Pair("Hello", "Hallo", "en", "de")]  # extra columns ignored, names stripped
    (tmp_path / "b.tsv").write_text("src\ttgt\tlang\nHello\tHallo\tde\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"b\.tsv:1: the header line names src, tgt, lang but not src_lang, tgt_lang"):
        read_parallel(tmp_path / "b.tsv")


def test_parquet_rows_of_mixed_formats_carry_nulls(tmp_path):
    """A Parquet file (or hub split) holds the union of its rows' columns, null where a row has none."""
    rows = [{"instruction": "Say hi", "input": None, "output": "Hallo", "prompt": None, "completion": None},
            {"instruction": None, "input": None, "output": None, "prompt": "Hi", "completion": "Hello"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "i.parquet")
    got = read_instructions(tmp_path / "i.parquet")
    assert [r.messages[-1]["content"] for r in got] == ["Hallo", "Hello"] and got[0].alpaca == ("Say hi", "")
    pq.write_table(pa.Table.from_pylist([{**vars(PAIRS[0]), "translation": None}]), tmp_path / "p.parquet")
    assert read_parallel(tmp_path / "p.parquet") == PAIRS[:1]


def test_a_json_array_with_a_trailing_comma_or_a_broken_parquet_file_is_named(tmp_path):
    (tmp_path / "a.json").write_text('[\n  {"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "de"},\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.json:3: invalid JSON \(a comma before the closing '\]'\)"):
        read_parallel(tmp_path / "a.json")
    (tmp_path / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"b\.parquet:row 1: cannot read the Parquet file"):
        read_parallel(tmp_path / "b.parquet")


def test_unknown_format_fails_before_reading(tmp_path):
    (tmp_path / "x.xlsx").write_text("a", encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.xlsx: unknown data format '\.xlsx'"):
        check_source(tmp_path / "x.xlsx")


# ---- hub datasets ----------------------------------------------------------------------------------------------


def test_hub_specs_parse_and_load_through_datasets(monkeypatch):
    assert parse_hub_spec("hf:Helsinki-NLP/opus-100@de-en:validation") == ("Helsinki-NLP/opus-100", "de-en", "validation")
    assert parse_hub_spec("hf:tatsu-lab/alpaca") == ("tatsu-lab/alpaca", None, "train")
    for bad in ("hf:", "hf:a@:train", "hf:a:"):
        with pytest.raises(DataError, match="hf:NAME\\[@CONFIG\\]\\[:SPLIT\\]"):
            check_source(bad)
    import datasets

    calls = []

    def fake_load(name, config=None, split=None):  # the network is not reachable here: the call alignx makes is checked
        calls.append((name, config, split))
        return datasets.Dataset.from_list([{"translation": {"de": p.tgt, "en": p.src}} for p in PAIRS[:2]])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert read_parallel("hf:Helsinki-NLP/opus-100@de-en:validation") == [Pair(p.tgt, p.src, "de", "en") for p in PAIRS[:2]]
    assert calls == [("Helsinki-NLP/opus-100", "de-en", "validation")]


# ---- the Arrow path equals the row-by-row renderer -------------------------------------------------------------


def _translation_row(p: Pair, tok, d: DataConfig, loss_on_prompt: bool) -> Example | None:
    """A translation row as the row-by-row renderer before the Arrow path made it, written out here: transformers'
    tokenizer call on the whole text, spans by a scan of every token's offsets, EOS, the length rule, the labels."""
    text, (x_lo, x_hi), (y_lo, y_hi), special = translation_text(p, tok, d.template, d.translation_instruction)
    enc = tok(text, add_special_tokens=special, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def scan(lo: int, hi: int) -> tuple[int, int] | None:
        idx = [i for i, (a, b) in enumerate(offsets) if b > a and a < hi and b > lo]
        return (idx[0], idx[-1] + 1) if idx else None

    x, y = scan(x_lo, x_hi), scan(y_lo, y_hi)
    if x is None or y is None:
        return None
    if ids[-1] != tok.eos_token_id:
        ids.append(tok.eos_token_id)
    if len(ids) > d.max_length:
        if not d.truncate_pairs or y[0] >= d.max_length:
            return None
        ids, y = ids[: d.max_length], (y[0], min(y[1], d.max_length))
    labels = list(ids) if loss_on_prompt else [-100] * y[0] + ids[y[0]:]
    return Example(ids, labels, x, y, lang_id(p.src_lang), lang_id(p.tgt_lang))


def _row_by_row(d: DataConfig, stage: int, tok, loss_on_prompt: bool) -> list:
    """The rows as alignx rendered them before the Arrow path: lists in memory, one row at a time."""
    pairs = [p for path in d.parallel for p in subsample(read_parallel(path, d.on_bad_row), d.max_pairs, d.seed)]
    if d.both_directions:
        pairs = both_directions(pairs)
    out = [_translation_row(p, tok, d, loss_on_prompt) for p in pairs] if stage == 1 or d.translation_in_sft else []
    if stage == 2:
        out += [render_instruction(r, tok, d.max_length, d.use_chat_template, loss_on_prompt=loss_on_prompt,
                                   all_turns=d.assistant_turns == "all")
                for path in d.instructions for r in subsample(read_instructions(path, d.on_bad_row), d.max_pairs, d.seed)]
    return [e for e in out if e is not None]


def _sources(tmp_path: Path) -> tuple[list[str], list[str]]:
    many = [Pair(f"{p.src} ({i})", f"{p.tgt} ({i})", p.src_lang, p.tgt_lang) for i in range(12) for p in PAIRS]
    long = Pair("word " * 60, "Wort " * 60, "en", "de")  # ~490 tokens: dropped (or cut) at max_length 256
    a = _jsonl(tmp_path / "a.jsonl", _as_rows([*many[:20], long]))
    b = tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_pylist([{"translation": {p.src_lang: p.src, p.tgt_lang: p.tgt}} for p in many[20:]]), b)
    chats = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."},
                           {"role": "user", "content": "More?"}, {"role": "assistant", "content": "Yes " * (i * 8)}]} for i in range(8)]
    alpaca = [{"instruction": f"Task {i}", "input": "x" if i % 2 else "", "output": f"Done {i}."} for i in range(8)]
    return [str(a), str(b)], [str(_jsonl(tmp_path / "c.jsonl", chats)), str(_jsonl(tmp_path / "d.jsonl", alpaca))]


@pytest.mark.parametrize(("stage", "settings"), [
    (1, {}),
    (1, {"max_pairs": 15, "truncate_pairs": True, "template": "alpaca", "num_proc": 2}),
    (1, {"both_directions": False, "max_length": 94}),
    (2, {"max_pairs": 6, "assistant_turns": "all", "max_length": 100}),
    (2, {"use_chat_template": False, "translation_in_sft": False, "num_proc": 2}),
])
def test_arrow_path_gives_the_rows_of_the_row_by_row_renderer(tmp_path, stage, settings):
    tok = make_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    parallel, instructions = _sources(tmp_path)
    d = DataConfig(parallel=parallel, instructions=instructions if stage == 2 else [], cache_dir=str(tmp_path / "cache"),
                   **{"max_length": 256, **settings})
    loss_on_prompt = stage == 1
    expected = _row_by_row(d, stage, tok, loss_on_prompt)
    data = data_mod.build(d, stage, tok, loss_on_prompt)
    assert not data.cache_hit and data_mod.examples(data.dataset) == expected
    assert data.digest == data_digest(expected)
    assert data.counts["examples"] == len(expected) == len(data.dataset)
    assert data.counts["tokens"] == sum(len(e.input_ids) for e in expected)
    assert data.counts["target_tokens"] == sum(sum(t != -100 for t in e.labels) for e in expected)
    assert data.dataset["length"] == [len(e.input_ids) for e in expected]
    if stage == 1 and d.max_length == 256 and not d.truncate_pairs:
        assert data.counts["dropped"] == {"too long": 2}  # the long pair, both directions


@pytest.mark.parametrize("make", [make_tokenizer, make_sentencepiece_tokenizer])
def test_spans_from_char_to_token_equal_a_scan_of_the_offsets(make):
    """x / y token spans come from the Rust encoding's char_to_token, widened over neighbours; here they are checked
    against a scan of every token's offsets (tokens with start < end that overlap the characters), including
    characters split into several tokens with the same offsets (CJK and emoji the byte-level BPE never saw; the
    SentencePiece tokenizer's byte fallback)."""
    tok = make()
    pairs = [Pair("The cat 🐈 sleeps.", "猫在睡觉🐈。", "en", "zh"), Pair("🐈🐈", "ø", "en", "da"), *PAIRS]
    for template in ("alpaca", "Translate: {src} => "):
        texts = [translation_text(p, tok, template, "Translate.") for p in pairs]
        for (text, x, y, special), enc in zip(texts, _encode(tok, [(t[0], t[3]) for t in texts]), strict=True):
            assert enc.enc is not None  # the Rust encoding's path, not the offset scan of the fallback
            ref = tok(text, add_special_tokens=special, return_offsets_mapping=True)
            assert enc.ids == ref["input_ids"]
            for lo, hi in (x, y):
                idx = [i for i, (a, b) in enumerate(ref["offset_mapping"]) if b > a and a < hi and b > lo]
                assert enc.span(lo, hi) == (idx[0], idx[-1] + 1)


# ---- the cache -------------------------------------------------------------------------------------------------


def test_cache_is_hit_and_invalidated_by_data_settings_and_tokenizer(tmp_path):
    tok = make_tokenizer()
    path = _jsonl(tmp_path / "a.jsonl", _as_rows(PAIRS))
    d = DataConfig(parallel=[str(path)], cache_dir=str(tmp_path / "cache"))
    first = data_mod.build(d, 1, tok, True)
    again = data_mod.build(d, 1, tok, True)
    assert (first.cache_hit, again.cache_hit) == (False, True) and again.digest == first.digest
    assert data_mod.examples(again.dataset) == data_mod.examples(first.dataset)
    # same size, same modification time, other text: a rewrite the digest of the bytes sees
    stat = path.stat()
    path.write_text(path.read_text(encoding="utf-8").replace("Hallo", "Hallö"[:4] + "x"), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    changed = data_mod.build(d, 1, tok, True)
    assert not changed.cache_hit and changed.digest != first.digest
    assert not data_mod.build(DataConfig(parallel=[str(path)], cache_dir=d.cache_dir, max_length=100), 1, tok, True).cache_hit
    other = make_tokenizer(extra_texts=["Hallox Welt"] * 20)
    assert not data_mod.build(d, 1, other, True).cache_hit
    templated = make_tokenizer()
    templated.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # data.chat_template lands here
    assert not data_mod.build(d, 1, templated, True).cache_hit
    assert data_mod.build(d, 1, tok, True).cache_hit  # the entries live side by side
    assert len(list(Path(d.cache_dir).iterdir())) == 5 and not list(Path(d.cache_dir).glob(".tmp-*"))


def test_bad_row_stops_the_build_and_leaves_no_cache_entry(tmp_path):
    tok = make_tokenizer()
    path = _jsonl(tmp_path / "a.jsonl", [*_as_rows(PAIRS), {"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "klingon"}])
    d = DataConfig(parallel=[str(path)], cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"a\.jsonl:4: unknown language code 'klingon'"):
        data_mod.build(d, 1, tok, True)
    assert not list((tmp_path / "cache").iterdir())
    skipped = data_mod.build(DataConfig(parallel=[str(path)], cache_dir=d.cache_dir, on_bad_row="skip"), 1, tok, True)
    assert skipped.counts["rows_read"] == 4 and sum(skipped.counts["rows_skipped"].values()) == 1 and len(skipped.dataset) == 6


def test_no_rows_left_is_a_clear_error(tmp_path):
    d = DataConfig(parallel=[str(_jsonl(tmp_path / "a.jsonl", _as_rows(PAIRS)))], cache_dir=str(tmp_path / "cache"), max_length=4)
    with pytest.raises(ConfigError, match=r"stage 1 has no training rows.*6 too long dropped.*check data.max_length"):
        data_mod.build(d, 1, make_tokenizer(), True)
    with pytest.raises(ConfigError, match="data.num_proc must be >= 1"):
        DataConfig(num_proc=0)


def test_hub_probe_and_offline_hub_source_fail_fast(monkeypatch):
    """hub_reachable opens a TCP connection to HF_ENDPOINT (a listening local socket: yes; a closed port: no). An hf:
    source with the hub unreachable and not in the HF cache fails in one line within seconds (the cache only, no
    retries: datasets alone spent ~30 s and a dozen log lines)."""
    import socket
    import time

    from huggingface_hub import constants

    from alignx.data import readers

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        assert readers.hub_reachable(timeout=2.0)
    finally:
        server.close()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")  # nothing listens there now
    assert not readers.hub_reachable(timeout=2.0)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as on a user's machine without the offline flags
    start = time.monotonic()
    with pytest.raises(readers.DataError, match=r"hf:alignx-test/no-such-dataset: the hub is not reachable.*local file"):
        readers.load_hub("hf:alignx-test/no-such-dataset")
    assert time.monotonic() - start < 5.0
    assert constants.HF_HUB_OFFLINE is False  # offline mode was switched on for the call only


@pytest.mark.parametrize("damage", ["overwrite", "truncate", "record"])
def test_a_damaged_cache_entry_is_rendered_again(tmp_path, caplog, damage):
    """Bytes overwritten in place across the rows (same size), a half-truncated Arrow file or an unreadable record:
    the next build warns naming the entry and renders the rows again, identical to the clean ones."""
    tok = make_tokenizer()
    d = DataConfig(parallel=[str(_jsonl(tmp_path / "a.jsonl", _as_rows(PAIRS * 20)))], cache_dir=str(tmp_path / "cache"))
    first = data_mod.build(d, 1, tok, True)
    clean = data_mod.examples(first.dataset)  # read before the damage: the rows are memory-mapped from the entry
    entry = Path(first.cache)
    arrow = next(entry / f for f in json.loads((entry / "alignx_data.json").read_text())["files"])
    raw = bytearray(arrow.read_bytes())
    if damage == "overwrite":  # every 512th byte of the second half: token ids of many rows, the size kept
        for i in range(len(raw) // 2, len(raw) - 64, 512):
            raw[i] ^= 0x5A
        arrow.write_bytes(bytes(raw))
    elif damage == "truncate":
        arrow.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        (entry / "alignx_data.json").write_text("{not json")
    caplog.set_level("WARNING")
    again = data_mod.build(d, 1, tok, True)
    assert not again.cache_hit and f"the cache entry {entry} is damaged" in caplog.text
    assert again.digest == first.digest
    assert data_mod.examples(again.dataset) == clean
    assert data_mod.build(d, 1, tok, True).cache_hit  # the new entry checks out
    assert not list(entry.parent.glob(".tmp-*"))


def test_a_damaged_entry_that_cannot_be_removed_is_one_line(tmp_path, monkeypatch):
    tok = make_tokenizer()
    d = DataConfig(parallel=[str(_jsonl(tmp_path / "a.jsonl", _as_rows(PAIRS)))], cache_dir=str(tmp_path / "cache"))
    entry = Path(data_mod.build(d, 1, tok, True).cache)
    (entry / "alignx_data.json").write_text("{not json")

    def refuse(self, target):  # noqa: ANN001, ANN202 - a read-only cache directory
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "rename", refuse)
    with pytest.raises(DataError, match=rf"{re.escape(str(entry))}: damaged cache entry that cannot be removed.*rm -r"):
        data_mod.build(d, 1, tok, True)
