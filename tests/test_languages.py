"""Language codes: any ISO 639-1/639-3, BCP-47 or FLORES-200 code; the languages alignx started with unchanged.

Expected values are written out here, not computed with :mod:`alignx.languages`: the 81 rows and the
extra spellings alignx's closed table held before it moved onto langcodes, and names/scripts of
low-resource languages as ISO 639-3, CLDR and FLORES-200 give them.
"""

from __future__ import annotations

import pytest

from alignx import languages
from alignx.data.render import lang_id
from alignx.data.sources.clean import script_ratio
from alignx.eval import langid
from alignx.eval.translation import parse_direction

# (code, ISO 639-3, FLORES-200, English name, script): the table alignx shipped before langcodes.
# fmt: off
BUILT_IN = [
    ("af", "afr", "afr_Latn", "Afrikaans", "Latn"),
    ("am", "amh", "amh_Ethi", "Amharic", "Ethi"),
    ("ar", "arb", "arb_Arab", "Arabic", "Arab"),
    ("az", "azj", "azj_Latn", "Azerbaijani", "Latn"),
    ("be", "bel", "bel_Cyrl", "Belarusian", "Cyrl"),
    ("bg", "bul", "bul_Cyrl", "Bulgarian", "Cyrl"),
    ("bn", "ben", "ben_Beng", "Bengali", "Beng"),
    ("ca", "cat", "cat_Latn", "Catalan", "Latn"),
    ("cs", "ces", "ces_Latn", "Czech", "Latn"),
    ("cy", "cym", "cym_Latn", "Welsh", "Latn"),
    ("da", "dan", "dan_Latn", "Danish", "Latn"),
    ("de", "deu", "deu_Latn", "German", "Latn"),
    ("el", "ell", "ell_Grek", "Greek", "Grek"),
    ("en", "eng", "eng_Latn", "English", "Latn"),
    ("eo", "epo", "epo_Latn", "Esperanto", "Latn"),
    ("es", "spa", "spa_Latn", "Spanish", "Latn"),
    ("et", "est", "est_Latn", "Estonian", "Latn"),
    ("eu", "eus", "eus_Latn", "Basque", "Latn"),
    ("fa", "pes", "pes_Arab", "Persian", "Arab"),
    ("fi", "fin", "fin_Latn", "Finnish", "Latn"),
    ("fr", "fra", "fra_Latn", "French", "Latn"),
    ("ga", "gle", "gle_Latn", "Irish", "Latn"),
    ("gl", "glg", "glg_Latn", "Galician", "Latn"),
    ("gu", "guj", "guj_Gujr", "Gujarati", "Gujr"),
    ("ha", "hau", "hau_Latn", "Hausa", "Latn"),
    ("he", "heb", "heb_Hebr", "Hebrew", "Hebr"),
    ("hi", "hin", "hin_Deva", "Hindi", "Deva"),
    ("hr", "hrv", "hrv_Latn", "Croatian", "Latn"),
    ("ht", "hat", "hat_Latn", "Haitian Creole", "Latn"),
    ("hu", "hun", "hun_Latn", "Hungarian", "Latn"),
    ("hy", "hye", "hye_Armn", "Armenian", "Armn"),
    ("id", "ind", "ind_Latn", "Indonesian", "Latn"),
    ("is", "isl", "isl_Latn", "Icelandic", "Latn"),
    ("it", "ita", "ita_Latn", "Italian", "Latn"),
    ("ja", "jpn", "jpn_Jpan", "Japanese", "Jpan"),
    ("ka", "kat", "kat_Geor", "Georgian", "Geor"),
    ("kk", "kaz", "kaz_Cyrl", "Kazakh", "Cyrl"),
    ("km", "khm", "khm_Khmr", "Khmer", "Khmr"),
    ("kn", "kan", "kan_Knda", "Kannada", "Knda"),
    ("ko", "kor", "kor_Hang", "Korean", "Hang"),
    ("lo", "lao", "lao_Laoo", "Lao", "Laoo"),
    ("lt", "lit", "lit_Latn", "Lithuanian", "Latn"),
    ("lv", "lvs", "lvs_Latn", "Latvian", "Latn"),
    ("mk", "mkd", "mkd_Cyrl", "Macedonian", "Cyrl"),
    ("ml", "mal", "mal_Mlym", "Malayalam", "Mlym"),
    ("mn", "khk", "khk_Cyrl", "Mongolian", "Cyrl"),
    ("mr", "mar", "mar_Deva", "Marathi", "Deva"),
    ("ms", "zsm", "zsm_Latn", "Malay", "Latn"),
    ("my", "mya", "mya_Mymr", "Burmese", "Mymr"),
    ("nb", "nob", "nob_Latn", "Norwegian Bokmal", "Latn"),
    ("ne", "npi", "npi_Deva", "Nepali", "Deva"),
    ("nl", "nld", "nld_Latn", "Dutch", "Latn"),
    ("om", "gaz", "gaz_Latn", "Oromo", "Latn"),
    ("pa", "pan", "pan_Guru", "Punjabi", "Guru"),
    ("pl", "pol", "pol_Latn", "Polish", "Latn"),
    ("pt", "por", "por_Latn", "Portuguese", "Latn"),
    ("qu", "quy", "quy_Latn", "Quechua", "Latn"),
    ("ro", "ron", "ron_Latn", "Romanian", "Latn"),
    ("ru", "rus", "rus_Cyrl", "Russian", "Cyrl"),
    ("si", "sin", "sin_Sinh", "Sinhala", "Sinh"),
    ("sk", "slk", "slk_Latn", "Slovak", "Latn"),
    ("sl", "slv", "slv_Latn", "Slovenian", "Latn"),
    ("so", "som", "som_Latn", "Somali", "Latn"),
    ("sq", "als", "als_Latn", "Albanian", "Latn"),
    ("sr", "srp", "srp_Cyrl", "Serbian", "Cyrl"),
    ("sv", "swe", "swe_Latn", "Swedish", "Latn"),
    ("sw", "swh", "swh_Latn", "Swahili", "Latn"),
    ("ta", "tam", "tam_Taml", "Tamil", "Taml"),
    ("te", "tel", "tel_Telu", "Telugu", "Telu"),
    ("th", "tha", "tha_Thai", "Thai", "Thai"),
    ("tl", "tgl", "tgl_Latn", "Tagalog", "Latn"),
    ("tr", "tur", "tur_Latn", "Turkish", "Latn"),
    ("uk", "ukr", "ukr_Cyrl", "Ukrainian", "Cyrl"),
    ("ur", "urd", "urd_Arab", "Urdu", "Arab"),
    ("uz", "uzn", "uzn_Latn", "Uzbek", "Latn"),
    ("vi", "vie", "vie_Latn", "Vietnamese", "Latn"),
    ("xh", "xho", "xho_Latn", "Xhosa", "Latn"),
    ("yo", "yor", "yor_Latn", "Yoruba", "Latn"),
    ("zh", "zho", "zho_Hans", "Chinese (Simplified)", "Hans"),
    ("zh-Hant", "zho", "zho_Hant", "Chinese (Traditional)", "Hant"),
    ("zu", "zul", "zul_Latn", "Zulu", "Latn"),
]
# Spellings the old table accepted besides each row's code, FLORES code and ISO 639-3 code.
OLD_ALIASES = {
    "zh-cn": "zh", "zh_cn": "zh", "zh-hans": "zh", "zh-sg": "zh", "cmn": "zh", "chi": "zh", "zho_hans": "zh",
    "zh-tw": "zh-Hant", "zh_tw": "zh-Hant", "zh-hk": "zh-Hant", "zh-hant": "zh-Hant", "zho_hant": "zh-Hant",
    "pt-br": "pt", "pt_br": "pt", "pt-pt": "pt", "en-us": "en", "en_us": "en", "en-gb": "en", "en_gb": "en",
    "ara": "ar", "per": "fa", "fas": "fa", "swa": "sw", "msa": "ms", "nor": "nb", "no": "nb", "lav": "lv",
    "mon": "mn", "nep": "ne", "orm": "om", "sqi": "sq", "uzb": "uz", "aze": "az", "est": "et", "que": "qu",
    "ger": "de", "fre": "fr", "dut": "nl", "gre": "el", "cze": "cs", "rum": "ro", "slo": "sk", "arm": "hy",
    "geo": "ka", "baq": "eu", "wel": "cy", "ice": "is", "mac": "mk", "bur": "my", "alb": "sq", "may": "ms",
}
# Every FLORES-200 code (flores200/README: 204 language-script pairs).
FLORES_200 = [
    "ace_Arab", "ace_Latn", "acm_Arab", "acq_Arab", "aeb_Arab", "afr_Latn", "ajp_Arab", "aka_Latn", "amh_Ethi",
    "apc_Arab", "arb_Arab", "arb_Latn", "ars_Arab", "ary_Arab", "arz_Arab", "asm_Beng", "ast_Latn", "awa_Deva",
    "ayr_Latn", "azb_Arab", "azj_Latn", "bak_Cyrl", "bam_Latn", "ban_Latn", "bel_Cyrl", "bem_Latn", "ben_Beng",
    "bho_Deva", "bjn_Arab", "bjn_Latn", "bod_Tibt", "bos_Latn", "bug_Latn", "bul_Cyrl", "cat_Latn", "ceb_Latn",
    "ces_Latn", "cjk_Latn", "ckb_Arab", "crh_Latn", "cym_Latn", "dan_Latn", "deu_Latn", "dik_Latn", "dyu_Latn",
    "dzo_Tibt", "ell_Grek", "eng_Latn", "epo_Latn", "est_Latn", "eus_Latn", "ewe_Latn", "fao_Latn", "fij_Latn",
    "fin_Latn", "fon_Latn", "fra_Latn", "fur_Latn", "fuv_Latn", "gla_Latn", "gle_Latn", "glg_Latn", "grn_Latn",
    "guj_Gujr", "hat_Latn", "hau_Latn", "heb_Hebr", "hin_Deva", "hne_Deva", "hrv_Latn", "hun_Latn", "hye_Armn",
    "ibo_Latn", "ilo_Latn", "ind_Latn", "isl_Latn", "ita_Latn", "jav_Latn", "jpn_Jpan", "kab_Latn", "kac_Latn",
    "kam_Latn", "kan_Knda", "kas_Arab", "kas_Deva", "kat_Geor", "knc_Arab", "knc_Latn", "kaz_Cyrl", "kbp_Latn",
    "kea_Latn", "khm_Khmr", "kik_Latn", "kin_Latn", "kir_Cyrl", "kmb_Latn", "kmr_Latn", "kon_Latn", "kor_Hang",
    "lao_Laoo", "lij_Latn", "lim_Latn", "lin_Latn", "lit_Latn", "lmo_Latn", "ltg_Latn", "ltz_Latn", "lua_Latn",
    "lug_Latn", "luo_Latn", "lus_Latn", "lvs_Latn", "mag_Deva", "mai_Deva", "mal_Mlym", "mar_Deva", "min_Arab",
    "min_Latn", "mkd_Cyrl", "plt_Latn", "mlt_Latn", "mni_Beng", "khk_Cyrl", "mos_Latn", "mri_Latn", "mya_Mymr",
    "nld_Latn", "nno_Latn", "nob_Latn", "npi_Deva", "nso_Latn", "nus_Latn", "nya_Latn", "oci_Latn", "gaz_Latn",
    "ory_Orya", "pag_Latn", "pan_Guru", "pap_Latn", "pes_Arab", "pol_Latn", "por_Latn", "prs_Arab", "pbt_Arab",
    "quy_Latn", "ron_Latn", "run_Latn", "rus_Cyrl", "sag_Latn", "san_Deva", "sat_Olck", "scn_Latn", "shn_Mymr",
    "sin_Sinh", "slk_Latn", "slv_Latn", "smo_Latn", "sna_Latn", "snd_Arab", "som_Latn", "sot_Latn", "spa_Latn",
    "als_Latn", "srd_Latn", "srp_Cyrl", "ssw_Latn", "sun_Latn", "swe_Latn", "swh_Latn", "szl_Latn", "tam_Taml",
    "tat_Cyrl", "tel_Telu", "tgk_Cyrl", "tgl_Latn", "tha_Thai", "tir_Ethi", "taq_Latn", "taq_Tfng", "tpi_Latn",
    "tsn_Latn", "tso_Latn", "tuk_Latn", "tum_Latn", "tur_Latn", "twi_Latn", "tzm_Tfng", "uig_Arab", "ukr_Cyrl",
    "umb_Latn", "urd_Arab", "uzn_Latn", "vec_Latn", "vie_Latn", "war_Latn", "wol_Latn", "xho_Latn", "ydd_Hebr",
    "yor_Latn", "yue_Hant", "zho_Hans", "zho_Hant", "zsm_Latn", "zul_Latn",
]
# fmt: on


def _fields(lang: languages.Language) -> tuple[str, str, str, str, str]:
    return (lang.code, lang.iso3, lang.flores, lang.name, lang.script)


@pytest.mark.parametrize("row", BUILT_IN, ids=lambda r: r[0])
def test_built_in_languages_are_unchanged(row):
    code, iso3, flores, _, _ = row
    for spelling in (code, flores, flores.lower(), flores.replace("_", "-"), code.upper(), f" {code} "):
        assert _fields(languages.get(spelling)) == row, spelling
    if code != "zh-Hant":  # zho is plain Chinese
        assert _fields(languages.get(iso3)) == row


def test_old_aliases_are_unchanged():
    by_code = {row[0]: row for row in BUILT_IN}
    for alias, code in OLD_ALIASES.items():
        for spelling in (alias, alias.upper(), alias.replace("_", "-")):
            assert _fields(languages.get(spelling)) == by_code[code], spelling


def test_built_in_order_and_ids_are_unchanged():
    assert [_fields(lang) for lang in languages.all_languages()] == BUILT_IN
    assert [lang_id(row[0]) for row in BUILT_IN] == list(range(81))
    assert lang_id("deu_Latn") == 11 and lang_id("zho_Hant") == 79


# (canonical, ISO 639-3, FLORES-style code, name, script, other spellings): ISO 639-3, FLORES-200,
# ISO 639-1 and BCP-47 with a region or script, as data sets write them.
LOW_RESOURCE = [
    ("qu", "quy", "quy_Latn", "Quechua", "Latn", ["quy", "quy_Latn", "qu", "que", "qu-PE", "QUY"]),
    ("fo", "fao", "fao_Latn", "Faroese", "Latn", ["fao", "fao_Latn", "fo", "fo-FO", "FO"]),
    ("yo", "yor", "yor_Latn", "Yoruba", "Latn", ["yor", "yor_Latn", "yo", "yo-NG", "yo_Latn"]),
    ("ti", "tir", "tir_Ethi", "Tigrinya", "Ethi", ["tir", "tir_Ethi", "ti", "ti-ER", "ti-Ethi-ET"]),
    ("gug", "gug", "gug_Latn", "Paraguayan Guaraní", "Latn", ["gug", "gug_Latn", "gug-PY", "GUG"]),
    ("kab", "kab", "kab_Latn", "Kabyle", "Latn", ["kab", "kab_Latn", "kab-DZ", "kab-Latn"]),
    ("ltg", "ltg", "ltg_Latn", "Latgalian", "Latn", ["ltg", "ltg_Latn", "ltg-LV"]),
    ("mi", "mri", "mri_Latn", "Māori", "Latn", ["mri", "mri_Latn", "mi", "mao", "mi-NZ"]),
    ("szl", "szl", "szl_Latn", "Silesian", "Latn", ["szl", "szl_Latn", "szl-PL"]),
    ("tzm", "tzm", "tzm_Latn", "Central Atlas Tamazight", "Latn", ["tzm", "tzm-Latn", "tzm-MA"]),
    ("ace", "ace", "ace_Latn", "Acehnese", "Latn", ["ace", "ace_Latn", "ace-ID"]),
    ("bjn", "bjn", "bjn_Latn", "Banjar", "Latn", ["bjn", "bjn_Latn", "bjn-ID"]),
    ("dik", "dik", "dik_Latn", "Southwestern Dinka", "Latn", ["dik", "dik_Latn", "dik-SS"]),
    ("fur", "fur", "fur_Latn", "Friulian", "Latn", ["fur", "fur_Latn", "fur-IT"]),
    ("lij", "lij", "lij_Latn", "Ligurian", "Latn", ["lij", "lij_Latn", "lij-IT"]),
    ("mag", "mag", "mag_Deva", "Magahi", "Deva", ["mag", "mag_Deva", "mag-IN"]),
    ("nus", "nus", "nus_Latn", "Nuer", "Latn", ["nus", "nus_Latn", "nus-SS"]),
    ("shn", "shn", "shn_Mymr", "Shan", "Mymr", ["shn", "shn_Mymr", "shn-MM"]),
    ("taq", "taq", "taq_Latn", "Tamasheq", "Latn", ["taq", "taq_Latn", "taq-ML"]),
    ("zgh", "zgh", "zgh_Tfng", "Standard Moroccan Tamazight", "Tfng", ["zgh", "zgh_Tfng", "zgh-MA", "zgh-Tfng"]),
]


@pytest.mark.parametrize("row", LOW_RESOURCE, ids=lambda r: r[0])
def test_low_resource_codes_in_every_notation(row):
    *expected, spellings = row
    for spelling in spellings:
        assert _fields(languages.get(spelling)) == tuple(expected), spelling
    assert languages.normalize(spellings[0]) == expected[0] and languages.name(spellings[1]) == expected[3]


# FLORES-200 code -> (canonical, name). The macrolanguage rows: FLORES writes an individual language
# (arb, pes ...), the two-letter code names the same language. The others are kept apart on purpose.
FLORES_CASES = {
    "arb_Arab": ("ar", "Arabic"), "pes_Arab": ("fa", "Persian"), "swh_Latn": ("sw", "Swahili"),
    "npi_Deva": ("ne", "Nepali"), "ory_Orya": ("or", "Odia"), "khk_Cyrl": ("mn", "Mongolian"),
    "lvs_Latn": ("lv", "Latvian"), "zsm_Latn": ("ms", "Malay"), "uzn_Latn": ("uz", "Uzbek"),
    "azj_Latn": ("az", "Azerbaijani"), "als_Latn": ("sq", "Albanian"), "gaz_Latn": ("om", "Oromo"),
    "plt_Latn": ("mg", "Malagasy"), "ydd_Hebr": ("yi", "Yiddish"), "ayr_Latn": ("ay", "Aymara"),
    "pbt_Arab": ("ps", "Pashto"), "quy_Latn": ("qu", "Quechua"), "zho_Hans": ("zh", "Chinese (Simplified)"),
    "zho_Hant": ("zh-Hant", "Chinese (Traditional)"), "est_Latn": ("et", "Estonian"),
    "deu_Latn": ("de", "German"), "tgl_Latn": ("tl", "Tagalog"),
    # kept apart from their macrolanguage's standard variety, as FLORES does
    "prs_Arab": ("prs", "Dari"), "azb_Arab": ("azb", "South Azerbaijani"), "yue_Hant": ("yue", "Cantonese"),
    "arz_Arab": ("arz", "Egyptian Arabic"), "ltg_Latn": ("ltg", "Latgalian"), "ckb_Arab": ("ckb", "Central Kurdish"),
    # a second script of one language: the code says which
    "taq_Tfng": ("taq-Tfng", "Tamasheq (Tifinagh)"), "kas_Deva": ("ks-Deva", "Kashmiri (Devanagari)"),
    "arb_Latn": ("ar-Latn", "Arabic (Latin)"), "ace_Arab": ("ace-Arab", "Acehnese (Arabic)"),
}  # fmt: skip


@pytest.mark.parametrize(("flores", "expected"), FLORES_CASES.items())
def test_flores_codes(flores, expected):
    lang = languages.get(flores)
    assert (lang.code, lang.name, lang.flores) == (*expected, flores)
    assert languages.flores(lang.code) == flores  # and back, e.g. "ar" -> "arb_Arab"


def test_macrolanguage_spellings_meet():
    for spellings in (["ar", "ara", "arb", "arb_Arab"], ["fa", "fas", "per", "pes"], ["ne", "nep", "npi"],
                      ["or", "ori", "ory_Orya"], ["ps", "pus", "pbt"], ["mg", "mlg", "plt_Latn"],
                      ["zh", "zho", "chi", "cmn", "zh-CN", "zh-Hans", "zh-cmn-Hans"], ["tl", "tgl", "fil", "fil-PH"],
                      ["nb", "no", "nor", "nob", "no-NO"], ["zh-Hant", "zh-TW", "zh-HK", "zh-MO", "zho_Hant"]):  # fmt: skip
        assert {languages.normalize(s) for s in spellings} == {spellings[0]}, spellings
    assert languages.normalize("prs") != languages.normalize("fa")  # Dari is not Western Persian in FLORES


def test_every_flores_200_code_round_trips():
    assert len(FLORES_200) == len(set(FLORES_200)) == 204
    codes = [languages.normalize(c) for c in FLORES_200]
    assert len(set(codes)) == 204  # no two FLORES languages merge
    assert [languages.flores(c) for c in codes] == FLORES_200
    # each language's bare ISO code has a script (CLDR's, or the table's where CLDR has none)
    assert all(languages.get(c.split("_")[0]).script != languages.UNKNOWN_SCRIPT for c in FLORES_200)


@pytest.mark.parametrize(
    ("code", "canonical", "script"),
    [("sr-Latn", "sr-Latn", "Latn"), ("sr-Cyrl", "sr", "Cyrl"), ("sr-ME", "sr-Latn", "Latn"), ("pt-BR", "pt", "Latn"),
     ("uz-AF", "uz-Arab", "Arab"), ("pa-PK", "pa-Arab", "Arab"), ("es-419", "es", "Latn"), ("de-CH-1996", "de", "Latn"),
     ("kor_Hang", "ko", "Hang"), ("yue", "yue", "Hant"), ("ie", "ie", "Zzzz")],
)  # fmt: skip
def test_bcp47_scripts_and_regions(code, canonical, script):
    """A script counts when it is not the usual one; a region only through the script it implies."""
    lang = languages.get(code)
    assert (lang.code, lang.script) == (canonical, script)


def test_new_codes_degrade_gracefully_in_script_checks():
    # Interlingue: CLDR knows no script, so the script filters and the off-target check cannot judge it
    assert script_ratio("Li material es bon.", languages.get("ie").script) is None
    ident = langid.LanguageIdentifier("script")
    assert ident.method_for("ie") == "none" and ident.off_target_flags(["Li material es bon.", "", "42"], "ie") == [False, True, True]
    # Tifinagh (zgh) is checked by script: Latin output for a zgh target is off target
    assert ident.method_for("zgh") == "script"
    assert ident.off_target_flags(["ⴰⵣⵓⵍ ⴼⵍⴰⵡⵏ", "Hello there"], "zgh") == [False, True]
    # ids: new languages get distinct int64 ids past the built-in rows; quy is the built-in Quechua row
    ids = {lang_id(c) for c in ("zgh", "taq-Tfng", "taq", "fo", "ar-Latn", "sr-Latn")}
    assert len(ids) == 6 and all(80 < i < 2**63 for i in ids)
    assert lang_id("quy_Latn") == lang_id("qu") == 56


@pytest.mark.parametrize("bad", ["xx", "klingon", "english", "qaa", "und", "zxx", "x-foo", "", "de_DE.UTF-8", "cot-zul"])
def test_unknown_code_is_one_clear_line(bad):
    with pytest.raises(languages.UnknownLanguageError) as err:
        languages.normalize(bad)
    message = str(err.value)
    assert message.startswith(f"unknown language code {bad!r}: use an ISO 639-1/639-3, BCP-47 or FLORES-200 code")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "pair"),
    [("en-de", ("en", "de")), ("quy_Latn-fao_Latn", ("qu", "fo")), ("sr-Latn-de", ("sr-Latn", "de")),
     ("de-sr-Latn", ("de", "sr-Latn")), ("taq-Tfng-en", ("taq-Tfng", "en")), ("pt-br-en", ("pt", "en")),
     ("en-pt-br", ("en", "pt")), ("fr-CA-de", ("fr", "de")), ("de-ch-fr", ("de", "fr"))],
)  # fmt: skip
def test_directions_with_any_codes(text, pair):
    """Codes with '-' in them: a region goes to the language written there (en-pt-br is not en-PT + Breton)."""
    assert parse_direction(text) == pair
