"""Readers for translation-memory formats: gettext PO catalogues and TMX files -> pair dicts.

Both yield ``{"src", "tgt", "src_lang", "tgt_lang", "id", "source"}`` with ``id = "<file>:<line>"``
and raise :class:`ImportFormatError` naming ``file:line`` for malformed input.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from alignx import languages
from alignx.data.sources.clean import strip_markup


class ImportFormatError(ValueError):
    """Malformed PO/TMX input; the message starts with ``file:line``."""


def normalize_locale(code: str) -> str:
    """Canonical code for a locale tag: known spellings first (zh-TW, pt-BR), else the base language (de_DE -> de)."""
    try:
        return languages.normalize(code)
    except languages.UnknownLanguageError:
        base = re.split(r"[-_@.]", code.strip(), maxsplit=1)[0]
        if base and base != code:
            return languages.normalize(base)
        raise


# --------------------------------------------------------------------------------------------
# gettext PO
# --------------------------------------------------------------------------------------------

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "?": "?", "'": "'"}
_KEYWORD = re.compile(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(\".*)$")


def _unquote(text: str, where: str) -> str:
    """Decode one C-style quoted PO string (with its quotes), e.g. ``"a\\tb\\"c"``."""
    text = text.strip()
    if len(text) < 2 or not text.startswith('"') or not text.endswith('"'):
        raise ImportFormatError(f"{where}: expected a quoted string, got {text!r}")
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == '"':
            raise ImportFormatError(f"{where}: unescaped quote inside string {text!r}")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ImportFormatError(f"{where}: string ends with a lone backslash")
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1 :]).group(0)  # type: ignore[union-attr]
            out.append(chr(int(digits, 8)))
            i += 1 + len(digits)
        elif nxt == "x" and re.match(r"[0-9a-fA-F]{1,2}", body[i + 2 :]):
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2 :]).group(0)  # type: ignore[union-attr]
            out.append(chr(int(digits, 16)))
            i += 2 + len(digits)
        else:
            raise ImportFormatError(f"{where}: unknown escape \\{nxt}")
    return "".join(out)


@dataclass
class PoEntry:
    line: int  # line of the msgid keyword
    msgid: str = ""
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False


def parse_po(path: str | Path) -> list[PoEntry]:
    """All entries of a PO file (header and obsolete ones included), strings unescaped."""
    path = Path(path)
    entries: list[PoEntry] = []
    cur: PoEntry | None = None
    flags: set[str] = set()
    target: tuple[str, int] | None = None  # which field a continuation line extends
    seen_msgstr = False

    def finish() -> None:
        nonlocal cur, seen_msgstr
        if cur is not None:
            if not seen_msgstr:
                raise ImportFormatError(f"{path}:{cur.line}: msgid without msgstr")
            entries.append(cur)
        cur, seen_msgstr = None, False

    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}:{lineno}"
            line = raw.strip()
            obsolete = line.startswith("#~")
            if obsolete:
                line = line[2:].strip()
            if not line:
                continue
            if line.startswith("#"):
                if line.startswith("#,"):
                    if cur is not None and seen_msgstr:
                        finish()
                    flags |= {f.strip() for f in line[2:].split(",") if f.strip()}
                elif cur is not None and seen_msgstr:
                    finish()
                continue
            if line.startswith('"'):
                if cur is None or target is None:
                    raise ImportFormatError(f"{where}: string continuation outside an entry")
                text = _unquote(line, where)
                name, idx = target
                if name == "msgstr":
                    cur.msgstr[idx] += text
                else:
                    setattr(cur, name, (getattr(cur, name) or "") + text)
                continue
            match = _KEYWORD.match(line)
            if match is None:
                raise ImportFormatError(f"{where}: unrecognised line {line[:60]!r}")
            keyword, index, rest = match.group(1), match.group(2), match.group(3)
            value = _unquote(rest, where)
            if keyword in ("msgctxt", "msgid") and (cur is None or seen_msgstr or (keyword == "msgid" and cur.msgid)):
                if cur is not None:
                    finish()
                cur = PoEntry(line=lineno, flags=flags, obsolete=obsolete)
                flags = set()
            if cur is None:
                raise ImportFormatError(f"{where}: {keyword} before msgid")
            if keyword == "msgctxt":
                cur.msgctxt, target = value, ("msgctxt", 0)
            elif keyword == "msgid":
                cur.msgid, cur.line, target = value, lineno, ("msgid", 0)
            elif keyword == "msgid_plural":
                cur.msgid_plural, target = value, ("msgid_plural", 0)
            else:
                idx = int(index) if index is not None else 0
                if index is not None and cur.msgid_plural is None:
                    raise ImportFormatError(f"{where}: msgstr[{idx}] without msgid_plural")
                cur.msgstr[idx] = value
                target, seen_msgstr = ("msgstr", idx), True
    finish()
    return entries


def po_header(entries: list[PoEntry]) -> dict[str, str]:
    for e in entries:
        if e.msgid == "" and e.msgctxt is None and not e.obsolete:
            head = e.msgstr.get(0, "")
            return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in head.splitlines() if ":" in ln)}
    return {}


_ACCEL = re.compile(r"(?<![\w_~])[_~](?=\w)")


def read_po(
    path: str | Path,
    tgt_lang: str | None = None,
    src_lang: str = "en",
    strip_accelerators: bool = True,
) -> Iterator[dict]:
    """msgid -> msgstr pairs of a PO file; fuzzy, obsolete, untranslated and header entries are skipped.

    Plural entries give msgid -> msgstr[0] and, when the language has more than one form,
    msgid_plural -> msgstr[1]. The target language comes from ``tgt_lang`` or the header's
    ``Language:`` field. Markup tags are removed; with ``strip_accelerators`` the mnemonic
    markers ``_File`` / ``~File`` are too.
    """
    path = Path(path)
    entries = parse_po(path)
    header = po_header(entries)
    lang_field = tgt_lang or header.get("Language")
    if not lang_field:
        raise ImportFormatError(f"{path}:1: no target language: the header has no 'Language:' field and none was given")
    try:
        tgt = normalize_locale(lang_field)
        src = normalize_locale(src_lang)
    except languages.UnknownLanguageError as e:
        raise ImportFormatError(f"{path}:1: {e}") from None
    nplurals = re.search(r"nplurals\s*=\s*(\d+)", header.get("Plural-Forms", ""))
    n_forms = int(nplurals.group(1)) if nplurals else 2

    def clean(text: str) -> str:
        text = _ACCEL.sub("", text, count=1) if strip_accelerators else text
        return strip_markup(text)

    for e in entries:
        if e.obsolete or "fuzzy" in e.flags or e.msgid == "":
            continue
        candidates = [(e.msgid, e.msgstr.get(0, ""))]
        if e.msgid_plural is not None and n_forms > 1:
            candidates.append((e.msgid_plural, e.msgstr.get(1, "")))
        for k, (s, t) in enumerate(candidates):
            if not t.strip():
                continue
            row = {"src": clean(s), "tgt": clean(t), "src_lang": src, "tgt_lang": tgt, "id": f"{path}:{e.line}", "source": "po"}
            if k:
                row["id"] += ":plural"
            if e.msgctxt:
                row["context"] = e.msgctxt
            yield row


# --------------------------------------------------------------------------------------------
# TMX
# --------------------------------------------------------------------------------------------

# Inline elements whose content is formatting code, not text (TMX 1.4 spec).
_TMX_CODE = {"bpt", "ept", "it", "ph", "ut", "sub"}


def read_tmx(path: str | Path, src_lang: str | None = "en") -> Iterator[dict]:
    """One pair per (translation unit, non-source variant). ``src_lang=None`` takes the header's srclang.

    Units without a variant in the source language are skipped; language codes go through
    :func:`alignx.languages.normalize` (unknown ones raise, naming file:line).
    """
    path = Path(path)
    parser = xml.parsers.expat.ParserCreate()
    units: list[tuple[int, dict[str, str]]] = []
    state: dict = {"srclang": None, "tu": None, "tu_line": 0, "lang": None, "seg": None, "code_depth": 0}

    def where() -> str:
        return f"{path}:{parser.CurrentLineNumber}"

    def norm(code: str) -> str:
        try:
            return normalize_locale(code)
        except languages.UnknownLanguageError as e:
            raise ImportFormatError(f"{where()}: {e}") from None

    def start(name: str, attrs: dict[str, str]) -> None:
        if name == "header":
            lang = attrs.get("srclang")
            state["srclang"] = norm(lang) if lang and lang != "*all*" else None
        elif name == "tu":
            state["tu"], state["tu_line"] = {}, parser.CurrentLineNumber
        elif name == "tuv":
            lang = attrs.get("xml:lang") or attrs.get("lang")
            if not lang:
                raise ImportFormatError(f"{where()}: <tuv> without xml:lang")
            if state["tu"] is None:
                raise ImportFormatError(f"{where()}: <tuv> outside <tu>")
            state["lang"] = norm(lang)
        elif name == "seg":
            if state["lang"] is None:
                raise ImportFormatError(f"{where()}: <seg> outside <tuv>")
            state["seg"] = []
        elif name in _TMX_CODE and state["seg"] is not None:
            state["code_depth"] += 1

    def end(name: str) -> None:
        if name == "seg" and state["seg"] is not None:
            # The first variant per language wins; TMX allows several.
            state["tu"].setdefault(state["lang"], strip_markup("".join(state["seg"])))
            state["seg"] = None
        elif name == "tuv":
            state["lang"] = None
        elif name == "tu":
            units.append((state["tu_line"], state["tu"]))
            state["tu"] = None
        elif name in _TMX_CODE and state["seg"] is not None:
            state["code_depth"] -= 1

    def data(text: str) -> None:
        if state["seg"] is not None and state["code_depth"] == 0:
            state["seg"].append(text)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    with path.open("rb") as fh:
        try:
            parser.ParseFile(fh)
        except xml.parsers.expat.ExpatError as e:
            raise ImportFormatError(f"{path}:{e.lineno}: invalid XML ({xml.parsers.expat.errors.messages[e.code]})") from None
    src = normalize_locale(src_lang) if src_lang else state["srclang"]
    if src is None:
        raise ImportFormatError(f"{path}:1: no source language: give src_lang or a header srclang")
    for line, variants in units:
        if src not in variants:
            continue
        for lang, text in variants.items():
            if lang != src:
                yield {"src": variants[src], "tgt": text, "src_lang": src, "tgt_lang": lang, "id": f"{path}:{line}", "source": "tmx"}


def read_file(path: str | Path, src_lang: str = "en", tgt_lang: str | None = None) -> Iterator[dict]:
    """Dispatch on the extension: .po/.pot -> :func:`read_po`, .tmx -> :func:`read_tmx`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".po":
        return read_po(path, tgt_lang=tgt_lang, src_lang=src_lang)
    if suffix == ".tmx":
        return read_tmx(path, src_lang=src_lang)
    raise ImportFormatError(f"{path}:1: unsupported translation-memory format {suffix!r} (use .po or .tmx)")
