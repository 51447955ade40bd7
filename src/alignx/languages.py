"""Language codes: any ISO 639-1, ISO 639-3, BCP-47 or FLORES-200 code -> one canonical alignx code.

Every language code that enters alignx (data files, configs, CLI) goes through :func:`normalize`.
Parsing, English names and usual scripts come from ``langcodes`` (IANA registry + Unicode CLDR);
this module only decides what counts as the same language:

- the canonical code is ISO 639-1 where one exists, else ISO 639-3, with a script suffix only when
  the script is not the language's usual one: ``pt-BR`` -> ``pt``, ``zh-TW`` -> ``zh-Hant``,
  ``sr-Latn`` stays ``sr-Latn``. A region counts only through the script it implies.
- FLORES-200 files a few languages under an individual language of a macrolanguage (``arb_Arab``,
  ``pes_Arab`` ...); :data:`_FLORES_INDIVIDUAL` maps those to the macrolanguage's two-letter code,
  so ``ar``, ``ara`` and ``arb_Arab`` are one language and ``flores("ar") == "arb_Arab"``.
- the languages alignx started with keep their prompt names and row ids (:func:`all_languages`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import langcodes
from langcodes.data_dicts import LIKELY_SUBTAGS


@dataclass(frozen=True)
class Language:
    code: str  # canonical code used everywhere inside alignx
    iso3: str  # ISO 639-3 (the individual language FLORES uses, e.g. "arb" for "ar")
    flores: str  # FLORES-200 code, e.g. "zho_Hans"
    name: str  # English name
    script: str  # ISO 15924 script ("Zzzz" when neither the code nor CLDR says)

    @property
    def iso1(self) -> str | None:
        return self.code if len(self.code) == 2 else None


# fmt: off
# FLORES-200 code -> alignx code: FLORES names these languages by one individual language of a
# macrolanguage, the standard variety that the macrolanguage's ISO 639-1 code means in practice.
# Not here: members FLORES keeps apart from their macrolanguage's standard variety (prs Dari, azb
# South Azerbaijani, yue Cantonese, the Arabic varieties acm apc ars ary arz ..., ltg Latgalian,
# ckb/kmr Kurdish, knc Kanuri, fuv Fulfulde), and est/zho/grn/kon, which are macrolanguage codes already.
_FLORES_INDIVIDUAL: dict[str, str] = {
    "arb": "ar", "pes": "fa", "swh": "sw", "npi": "ne", "ory": "or", "khk": "mn", "lvs": "lv", "zsm": "ms",
    "uzn": "uz", "azj": "az", "als": "sq", "gaz": "om", "plt": "mg", "ydd": "yi", "ayr": "ay", "pbt": "ps",
    "quy": "qu",
}
# Spellings that langcodes reads as another language than alignx (and FLORES) do.
_SAME_LANGUAGE: dict[str, str] = {
    "no": "nb", "nor": "nb",  # Norwegian text is Bokmål (FLORES nob_Latn) unless it says nn
    "cmn": "zh",  # Mandarin: what "zh" means in data sets
    "tl": "tl", "tgl": "tl", "fil": "tl",  # langcodes folds tl into fil; FLORES has tgl_Latn
    "prs": "prs",  # langcodes reads Dari as fa-AF; FLORES keeps prs_Arab apart from pes_Arab
}
# Usual script where CLDR's likely subtags have none (FLORES-200 languages, Paraguayan Guarani) or
# differ from what alignx's script checks count (CLDR's Korean "Kore" mixes Hangul and Han).
_SCRIPTS: dict[str, str] = {
    "ko": "Hang", "acm": "Arab", "acq": "Arab", "ajp": "Arab", "azb": "Arab", "prs": "Arab", "cjk": "Latn",
    "dik": "Latn", "gug": "Latn", "kmr": "Latn", "knc": "Latn", "lus": "Latn", "tw": "Latn",
}
# Prompt names alignx has always used where langcodes says otherwise (Bangla, Norwegian Bokmål, Chinese).
_NAMES: dict[str, str] = {"bn": "Bengali", "nb": "Norwegian Bokmal", "zh": "Chinese (Simplified)"}
# The languages alignx was built with, in row-id order (:func:`all_languages`, data.render.lang_id).
_BUILT_IN: tuple[str, ...] = (
    "af", "am", "ar", "az", "be", "bg", "bn", "ca", "cs", "cy", "da", "de", "el", "en", "eo", "es", "et", "eu", "fa",
    "fi", "fr", "ga", "gl", "gu", "ha", "he", "hi", "hr", "ht", "hu", "hy", "id", "is", "it", "ja", "ka", "kk", "km",
    "kn", "ko", "lo", "lt", "lv", "mk", "ml", "mn", "mr", "ms", "my", "nb", "ne", "nl", "om", "pa", "pl", "pt", "qu",
    "ro", "ru", "si", "sk", "sl", "so", "sq", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "uz", "vi",
    "xh", "yo", "zh", "zh-Hant", "zu",
)
# fmt: on
_LANGUAGE_OVERRIDES = {**_FLORES_INDIVIDUAL, **_SAME_LANGUAGE}
_ISO3 = {code: flores3 for flores3, code in _FLORES_INDIVIDUAL.items()}
# Codes that name no language: ISO 639 local use (qaa-qtz), undetermined, uncoded, multiple, no linguistic content.
_NOT_A_LANGUAGE = re.compile(r"q[a-t][a-z]|und|mis|mul|zxx")
_ISO639 = re.compile(r"[a-z]{2,3}")  # not x-private or other tags without a language subtag
UNKNOWN_SCRIPT = "Zzzz"  # ISO 15924 "uncoded script"


class UnknownLanguageError(ValueError):
    pass


def _cldr_script(key: str) -> str | None:
    """The script of CLDR's likely subtags for ``key`` (``sr``, ``zh-TW``), None where CLDR has no entry.

    ``Language.maximize()`` would fall back to en-Latn-US where CLDR has no data, a wrong guess for
    e.g. the Arabic varieties, so the likely-subtags table is read directly.
    """
    likely = LIKELY_SUBTAGS.get(key)
    return langcodes.Language.get(likely, normalize=False).script if likely else None


def _usual_script(lang: str) -> str | None:
    return _SCRIPTS.get(lang) or _cldr_script(lang)


def _unknown(code: str) -> UnknownLanguageError:
    return UnknownLanguageError(
        f"unknown language code {code!r}: use an ISO 639-1/639-3, BCP-47 or FLORES-200 code (e.g. 'de', 'deu', 'pt-BR', 'deu_Latn')"
    )


@lru_cache(maxsize=4096)
def _lookup(code: str) -> Language:
    text = code.strip().replace(" ", "").replace("_", "-")
    primary, _, rest = text.partition("-")
    override = _LANGUAGE_OVERRIDES.get(primary.lower())
    if override is not None:
        text = f"{override}-{rest}" if rest else override
    try:
        # Overridden languages are not normalised again (langcodes would turn tl into fil).
        tag = langcodes.Language.get(text, normalize=override is None)
    except langcodes.LanguageTagError:
        raise _unknown(code) from None
    lang = _LANGUAGE_OVERRIDES.get(tag.language or "", tag.language or "")  # zh-cmn-Hans became cmn-Hans
    # An extlang left after normalisation is no registered pair (zh-yue already became yue; cot-zul is two words).
    if not _ISO639.fullmatch(lang) or _NOT_A_LANGUAGE.fullmatch(lang) or tag.extlangs or not tag.is_valid():
        raise _unknown(code)
    usual = _usual_script(lang)
    script = tag.script
    if script is None and tag.territory:  # a region matters only where it implies another script (zh-TW)
        implied = _cldr_script(f"{lang}-{tag.territory}")
        script = implied if implied != _cldr_script(lang) else None
    script = script or usual
    canonical = lang if script is None or script == usual else f"{lang}-{script}"
    iso3 = _ISO3.get(lang) or langcodes.Language.make(language=lang).to_alpha3()
    script = script or UNKNOWN_SCRIPT
    name = _NAMES.get(canonical) or langcodes.Language.make(language=lang, script=None if canonical == lang else script).display_name()
    return Language(canonical, iso3, f"{iso3}_{script}", name, script)


def get(code: str) -> Language:
    """The :class:`Language` for any spelling (``de``, ``deu``, ``deu_Latn``, ``zh-CN``, ``quy``, ``sr-Latn`` ...)."""
    if not isinstance(code, str):
        raise _unknown(code)
    return _lookup(code)


def normalize(code: str) -> str:
    """Canonical alignx code for any spelling: ``normalize('deu_Latn') == 'de'``."""
    return get(code).code


def name(code: str) -> str:
    """English name of the language, e.g. for prompts: ``name('ja') == 'Japanese'``."""
    return get(code).name


def flores(code: str) -> str:
    return get(code).flores


def speakers(code: str) -> int:
    """Speakers of the language as written, region included (CLDR via langcodes; 0 where unknown).

    Tells apart readings of an ambiguous string: ``pt-BR`` has 200 million speakers, ``en-PT`` 3 million.
    """
    try:
        return langcodes.Language.get(code.strip().replace("_", "-")).speaking_population()
    except (langcodes.LanguageTagError, LookupError):
        return 0


def all_languages() -> tuple[Language, ...]:
    """The languages alignx was built with, in a fixed order (any other code works as well)."""
    return tuple(get(code) for code in _BUILT_IN)
