"""One table of languages: ISO 639-1, ISO 639-3, FLORES-200 code, English name, script.

Every language code that enters alignx (data files, configs, CLI) goes through :func:`normalize`,
which maps any of the known spellings to the canonical short code (ISO 639-1 where one exists,
else ISO 639-3), plus an optional region/script suffix kept for the Chinese and Portuguese variants.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str  # canonical code used everywhere inside alignx
    iso3: str  # ISO 639-3
    flores: str  # FLORES-200 code, e.g. "zho_Hans"
    name: str  # English name
    script: str  # ISO 15924 script

    @property
    def iso1(self) -> str | None:
        return self.code if len(self.code) == 2 else None


# fmt: off
_TABLE: tuple[Language, ...] = (
    Language("af", "afr", "afr_Latn", "Afrikaans", "Latn"),
    Language("am", "amh", "amh_Ethi", "Amharic", "Ethi"),
    Language("ar", "arb", "arb_Arab", "Arabic", "Arab"),
    Language("az", "azj", "azj_Latn", "Azerbaijani", "Latn"),
    Language("be", "bel", "bel_Cyrl", "Belarusian", "Cyrl"),
    Language("bg", "bul", "bul_Cyrl", "Bulgarian", "Cyrl"),
    Language("bn", "ben", "ben_Beng", "Bengali", "Beng"),
    Language("ca", "cat", "cat_Latn", "Catalan", "Latn"),
    Language("cs", "ces", "ces_Latn", "Czech", "Latn"),
    Language("cy", "cym", "cym_Latn", "Welsh", "Latn"),
    Language("da", "dan", "dan_Latn", "Danish", "Latn"),
    Language("de", "deu", "deu_Latn", "German", "Latn"),
    Language("el", "ell", "ell_Grek", "Greek", "Grek"),
    Language("en", "eng", "eng_Latn", "English", "Latn"),
    Language("eo", "epo", "epo_Latn", "Esperanto", "Latn"),
    Language("es", "spa", "spa_Latn", "Spanish", "Latn"),
    Language("et", "est", "est_Latn", "Estonian", "Latn"),
    Language("eu", "eus", "eus_Latn", "Basque", "Latn"),
    Language("fa", "pes", "pes_Arab", "Persian", "Arab"),
    Language("fi", "fin", "fin_Latn", "Finnish", "Latn"),
    Language("fr", "fra", "fra_Latn", "French", "Latn"),
    Language("ga", "gle", "gle_Latn", "Irish", "Latn"),
    Language("gl", "glg", "glg_Latn", "Galician", "Latn"),
    Language("gu", "guj", "guj_Gujr", "Gujarati", "Gujr"),
    Language("ha", "hau", "hau_Latn", "Hausa", "Latn"),
    Language("he", "heb", "heb_Hebr", "Hebrew", "Hebr"),
    Language("hi", "hin", "hin_Deva", "Hindi", "Deva"),
    Language("hr", "hrv", "hrv_Latn", "Croatian", "Latn"),
    Language("ht", "hat", "hat_Latn", "Haitian Creole", "Latn"),
    Language("hu", "hun", "hun_Latn", "Hungarian", "Latn"),
    Language("hy", "hye", "hye_Armn", "Armenian", "Armn"),
    Language("id", "ind", "ind_Latn", "Indonesian", "Latn"),
    Language("is", "isl", "isl_Latn", "Icelandic", "Latn"),
    Language("it", "ita", "ita_Latn", "Italian", "Latn"),
    Language("ja", "jpn", "jpn_Jpan", "Japanese", "Jpan"),
    Language("ka", "kat", "kat_Geor", "Georgian", "Geor"),
    Language("kk", "kaz", "kaz_Cyrl", "Kazakh", "Cyrl"),
    Language("km", "khm", "khm_Khmr", "Khmer", "Khmr"),
    Language("kn", "kan", "kan_Knda", "Kannada", "Knda"),
    Language("ko", "kor", "kor_Hang", "Korean", "Hang"),
    Language("lo", "lao", "lao_Laoo", "Lao", "Laoo"),
    Language("lt", "lit", "lit_Latn", "Lithuanian", "Latn"),
    Language("lv", "lvs", "lvs_Latn", "Latvian", "Latn"),
    Language("mk", "mkd", "mkd_Cyrl", "Macedonian", "Cyrl"),
    Language("ml", "mal", "mal_Mlym", "Malayalam", "Mlym"),
    Language("mn", "khk", "khk_Cyrl", "Mongolian", "Cyrl"),
    Language("mr", "mar", "mar_Deva", "Marathi", "Deva"),
    Language("ms", "zsm", "zsm_Latn", "Malay", "Latn"),
    Language("my", "mya", "mya_Mymr", "Burmese", "Mymr"),
    Language("nb", "nob", "nob_Latn", "Norwegian Bokmal", "Latn"),
    Language("ne", "npi", "npi_Deva", "Nepali", "Deva"),
    Language("nl", "nld", "nld_Latn", "Dutch", "Latn"),
    Language("om", "gaz", "gaz_Latn", "Oromo", "Latn"),
    Language("pa", "pan", "pan_Guru", "Punjabi", "Guru"),
    Language("pl", "pol", "pol_Latn", "Polish", "Latn"),
    Language("pt", "por", "por_Latn", "Portuguese", "Latn"),
    Language("qu", "quy", "quy_Latn", "Quechua", "Latn"),
    Language("ro", "ron", "ron_Latn", "Romanian", "Latn"),
    Language("ru", "rus", "rus_Cyrl", "Russian", "Cyrl"),
    Language("si", "sin", "sin_Sinh", "Sinhala", "Sinh"),
    Language("sk", "slk", "slk_Latn", "Slovak", "Latn"),
    Language("sl", "slv", "slv_Latn", "Slovenian", "Latn"),
    Language("so", "som", "som_Latn", "Somali", "Latn"),
    Language("sq", "als", "als_Latn", "Albanian", "Latn"),
    Language("sr", "srp", "srp_Cyrl", "Serbian", "Cyrl"),
    Language("sv", "swe", "swe_Latn", "Swedish", "Latn"),
    Language("sw", "swh", "swh_Latn", "Swahili", "Latn"),
    Language("ta", "tam", "tam_Taml", "Tamil", "Taml"),
    Language("te", "tel", "tel_Telu", "Telugu", "Telu"),
    Language("th", "tha", "tha_Thai", "Thai", "Thai"),
    Language("tl", "tgl", "tgl_Latn", "Tagalog", "Latn"),
    Language("tr", "tur", "tur_Latn", "Turkish", "Latn"),
    Language("uk", "ukr", "ukr_Cyrl", "Ukrainian", "Cyrl"),
    Language("ur", "urd", "urd_Arab", "Urdu", "Arab"),
    Language("uz", "uzn", "uzn_Latn", "Uzbek", "Latn"),
    Language("vi", "vie", "vie_Latn", "Vietnamese", "Latn"),
    Language("xh", "xho", "xho_Latn", "Xhosa", "Latn"),
    Language("yo", "yor", "yor_Latn", "Yoruba", "Latn"),
    Language("zh", "zho", "zho_Hans", "Chinese (Simplified)", "Hans"),
    Language("zh-Hant", "zho", "zho_Hant", "Chinese (Traditional)", "Hant"),
    Language("zu", "zul", "zul_Latn", "Zulu", "Latn"),
)
# Spellings seen in real data sets that are not in the columns above.
_ALIASES: dict[str, str] = {
    "zh-cn": "zh", "zh_cn": "zh", "zh-hans": "zh", "zh-sg": "zh", "cmn": "zh", "chi": "zh", "zho_hans": "zh",
    "zh-tw": "zh-Hant", "zh_tw": "zh-Hant", "zh-hk": "zh-Hant", "zh-hant": "zh-Hant", "zho_hant": "zh-Hant",
    "pt-br": "pt", "pt_br": "pt", "pt-pt": "pt", "en-us": "en", "en_us": "en", "en-gb": "en", "en_gb": "en",
    "ara": "ar", "per": "fa", "fas": "fa", "swa": "sw", "msa": "ms", "nor": "nb", "no": "nb", "lav": "lv",
    "mon": "mn", "nep": "ne", "orm": "om", "sqi": "sq", "uzb": "uz", "aze": "az", "est": "et", "que": "qu",
    "ger": "de", "fre": "fr", "dut": "nl", "gre": "el", "cze": "cs", "rum": "ro", "slo": "sk", "arm": "hy",
    "geo": "ka", "baq": "eu", "wel": "cy", "ice": "is", "mac": "mk", "bur": "my", "alb": "sq", "may": "ms",
}
# fmt: on

_BY_KEY: dict[str, Language] = {}
for _lang in _TABLE:
    for _key in (_lang.code, _lang.flores):
        _BY_KEY[_key.lower()] = _lang
    _BY_KEY.setdefault(_lang.iso3.lower(), _lang)
for _alias, _code in _ALIASES.items():
    _BY_KEY[_alias] = _BY_KEY[_code.lower()]


class UnknownLanguageError(ValueError):
    pass


def get(code: str) -> Language:
    """The :class:`Language` for any known spelling (``de``, ``deu``, ``deu_Latn``, ``zh-CN`` ...)."""
    key = code.strip().lower().replace(" ", "")
    lang = _BY_KEY.get(key) or _BY_KEY.get(key.replace("_", "-"))
    if lang is None:
        raise UnknownLanguageError(
            f"unknown language code {code!r}: use ISO 639-1/3 or a FLORES-200 code (e.g. 'de', 'deu', 'deu_Latn')"
        )
    return lang


def normalize(code: str) -> str:
    """Canonical alignx code for any known spelling: ``normalize('deu_Latn') == 'de'``."""
    return get(code).code


def name(code: str) -> str:
    """English name of the language, e.g. for prompts: ``name('ja') == 'Japanese'``."""
    return get(code).name


def flores(code: str) -> str:
    return get(code).flores


def all_languages() -> tuple[Language, ...]:
    return _TABLE
