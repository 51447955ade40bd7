"""Text cleaning and pair filters shared by every source.

Sources only strip their own markup and call :func:`normalize_text`; which pairs are kept is decided
here, in one place, from :class:`PairFilter` (thresholds come from the build config).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from alignx import languages

_TAG = re.compile(r"<[^>]+>")
_BLOCK_TAG = re.compile(r"<(?:br|p|div|li|tr|td|th|h\d)\b[^>]*>|</(?:p|div|li|tr|td|th|h\d)>", re.I)
_SPACE = re.compile(r"\s+")
# Zero-width and bidi control characters that survive HTML extraction and break dedup.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad"), None)
# ASCII runs and other-letter runs apart, so "在LibreOffice" yields "在" and "LibreOffice".
_WORD = re.compile(r"[A-Za-z0-9]+|[^\W_A-Za-z0-9]+")


def normalize_text(text: str) -> str:
    """Unescape entities, NFC, drop invisible characters, collapse whitespace."""
    text = unicodedata.normalize("NFC", html.unescape(text)).translate(_INVISIBLE)
    return _SPACE.sub(" ", text).strip()


def strip_markup(text: str) -> str:
    """Remove inline XML/HTML tags (e.g. ``<b>`` in PO strings) and normalise."""
    if "<" not in text:
        return normalize_text(text)
    # Block tags separate words; inline tags (<b>, <span>) sit inside them (CJK has no spaces to spare).
    return normalize_text(_TAG.sub("", _BLOCK_TAG.sub(" ", text)))


def dedup_key(text: str) -> str:
    """Key under which two sentences count as the same: case, width, punctuation and spaces ignored."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def letter_ratio(text: str) -> float:
    """Share of letters among the non-space characters (menus of digits/symbols score low)."""
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return 0.0
    return sum(unicodedata.category(ch).startswith("L") for ch in chars) / len(chars)


def token_overlap(src: str, tgt: str) -> float:
    """Share of the target's letters that sit in words copied verbatim from the source.

    High for untranslated product names and menu paths ("Extras - Optionen - LibreOffice Writer"
    vs "Tools - Options - LibreOffice Writer"), low for real translations, also between related
    languages, because cognates are rarely spelled identically word for word.
    """
    src_words = set(_WORD.findall(src))
    total = shared = 0
    for word in _WORD.findall(tgt):
        n = sum(ch.isalpha() for ch in word)
        total += n
        if word in src_words:
            shared += n
    return shared / total if total else 1.0


# ISO 15924 -> prefixes of Unicode character names that belong to the script.
_SCRIPT_PREFIXES: dict[str, tuple[str, ...]] = {
    "Latn": ("LATIN",),
    "Cyrl": ("CYRILLIC",),
    "Grek": ("GREEK",),
    "Arab": ("ARABIC",),
    "Hebr": ("HEBREW",),
    "Deva": ("DEVANAGARI",),
    "Beng": ("BENGALI",),
    "Thai": ("THAI",),
    "Hang": ("HANGUL",),
    "Hans": ("CJK",),
    "Hant": ("CJK",),
    "Jpan": ("CJK", "HIRAGANA", "KATAKANA"),
    "Khmr": ("KHMER",),
    "Taml": ("TAMIL",),
    "Telu": ("TELUGU",),
    "Geor": ("GEORGIAN",),
    "Armn": ("ARMENIAN",),
    "Ethi": ("ETHIOPIC",),
}


def script_ratio(text: str, script: str) -> float | None:
    """Share of letters written in ``script`` (None when the script is not in the table)."""
    prefixes = _SCRIPT_PREFIXES.get(script)
    if prefixes is None:
        return None
    letters = [ch for ch in text if unicodedata.category(ch).startswith("L")]
    if not letters:
        return 0.0
    return sum(unicodedata.name(ch, "").startswith(prefixes) for ch in letters) / len(letters)


@dataclass
class PairFilter:
    """Decides whether a (pivot, target) pair is kept; counts the reason for every drop."""

    min_chars: int = 3
    max_chars: int = 400
    min_src_words: int = 1
    max_src_words: int = 0  # 0: no cap
    max_overlap: float = 0.5
    min_letter_ratio: float = 0.5
    min_script_ratio: float = 0.5
    dropped: Counter = field(default_factory=Counter)

    def reason(self, src: str, tgt: str, tgt_lang: str) -> str | None:
        """Why the pair is dropped, or None when it is kept."""
        if not src or not tgt:
            return "empty"
        if dedup_key(src) == dedup_key(tgt):
            return "identical"
        if min(len(src), len(tgt)) < self.min_chars:
            return "too_short"
        if max(len(src), len(tgt)) > self.max_chars:
            return "too_long"
        n_words = len(src.split())
        if n_words < self.min_src_words:
            return "too_few_words"
        if self.max_src_words and n_words > self.max_src_words:
            return "too_many_words"
        if min(letter_ratio(src), letter_ratio(tgt)) < self.min_letter_ratio:
            return "few_letters"
        if token_overlap(src, tgt) > self.max_overlap:
            return "copied_tokens"
        ratio = script_ratio(tgt, languages.get(tgt_lang).script)
        if ratio is not None and ratio < self.min_script_ratio:
            return "wrong_script"
        return None

    def keep(self, src: str, tgt: str, tgt_lang: str) -> bool:
        why = self.reason(src, tgt, tgt_lang)
        if why is not None:
            self.dropped[why] += 1
        return why is None
