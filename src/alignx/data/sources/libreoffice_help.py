"""LibreOffice help (Debian ``libreoffice-help-<lang>``): paragraphs aligned by their ``par_``/``hd_`` id.

Every language's help is the same tree of HTML pages under ``/usr/share/libreoffice/help/<dir>/text``;
each translatable paragraph or heading carries the same id in every language, so pairs come from
joining pages on (relative path, id, occurrence). Mac-only variants of key names (``class="MAC"``)
and code listings are skipped. Guide pages also give "how to" sections (a heading followed by
list-item steps) that become instruction data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from tqdm import tqdm

from alignx import languages
from alignx.data.sources import MissingSourceError, SourceInfo, debian_version, target_dirs
from alignx.data.sources.clean import normalize_text

INFO = SourceInfo(
    name="libreoffice_help",
    description="LibreOffice 7.x help pages, paragraph-aligned by par_/hd_ id",
    licence="MPL-2.0",
    licence_url="https://www.mozilla.org/en-US/MPL/2.0/",
    homepage="https://help.libreoffice.org",
    install="apt-get install --no-install-recommends libreoffice-help-en-us libreoffice-help-{lang}",
    default_root="/usr/share/libreoffice/help",
)

# Canonical alignx code -> help directory names to try, in order.
_DIRS: dict[str, tuple[str, ...]] = {
    "en": ("en-US", "en-GB"),
    "zh": ("zh-CN",),
    "zh-Hant": ("zh-TW",),
    "pt": ("pt-BR", "pt"),
    "nb": ("nb", "no"),
}
_ID = re.compile(r"^(par|hd)_id")
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_SKIP_CLASSES = {"MAC", "bascode", "pycode", "code", "codeintable"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}


@dataclass
class Segment:
    key: str  # "<id>#<occurrence>" inside the page
    tag: str
    cls: str
    text: str


class _PageParser(HTMLParser):
    """Collects the text of every element whose id starts with par_id/hd_id (innermost wins)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.segments: list[Segment] = []
        self._parts: list[list[str]] = []
        self._stack: list[tuple[str, int | None, bool]] = []  # (tag, segment index, skipping)
        self._seen: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag == "br" and self._current() is not None:
                self._parts[self._current()].append(" ")
            return
        a = dict(attrs)
        cls = a.get("class") or ""
        skipping = (bool(self._stack) and self._stack[-1][2]) or tag in ("script", "style") or bool(_SKIP_CLASSES & set(cls.split()))
        seg = None
        ident = a.get("id") or ""
        if _ID.match(ident) and not skipping:
            n = self._seen.get(ident, 0)
            self._seen[ident] = n + 1
            seg = len(self.segments)
            self.segments.append(Segment(f"{ident}#{n}", tag, cls, ""))
            self._parts.append([])
        self._stack.append((tag, seg, skipping))

    def handle_endtag(self, tag: str) -> None:
        # Tolerate unclosed children: pop up to the matching open tag, if any.
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1][2]:
            return
        cur = self._current()
        if cur is not None:
            self._parts[cur].append(data)

    def _current(self) -> int | None:
        for _, seg, _ in reversed(self._stack):
            if seg is not None:
                return seg
        return None

    def result(self) -> list[Segment]:
        for seg, parts in zip(self.segments, self._parts, strict=True):
            seg.text = normalize_text("".join(parts))
        return [s for s in self.segments if s.text]


def parse_page(text: str) -> list[Segment]:
    parser = _PageParser()
    parser.feed(text)
    parser.close()
    return parser.result()


def package_name(directory: str) -> str:
    return f"libreoffice-help-{directory.lower()}"


def language_dir(root: Path, code: str) -> Path:
    """The help directory of a language, or MissingSourceError naming the package to install."""
    code = languages.normalize(code)
    names = _DIRS.get(code, (code,))
    for d in names:
        if (root / d / "text").is_dir():
            return root / d
    raise MissingSourceError(
        f"LibreOffice help for {code!r} not found under {root}/{names[0]}/text: "
        f"run `apt-get install --no-install-recommends {package_name(names[0])}` (or point libreoffice_root at an extracted copy)"
    )


def available_languages(root: str | Path | None = None) -> list[str]:
    root = Path(root or INFO.default_root)
    found = []
    for d in sorted(root.glob("*/text")):
        try:
            found.append(languages.normalize(d.parent.name))
        except languages.UnknownLanguageError:
            continue
    return sorted(set(found))


def package_versions(root: str | Path | None, codes: list[str]) -> dict[str, str | None]:
    root = Path(root or INFO.default_root)
    doc_dir = root.parents[1] / "doc" if len(root.parents) > 1 else None  # <prefix>/usr/share/doc
    out = {}
    for code in codes:
        try:
            pkg = package_name(language_dir(root, code).name)
        except MissingSourceError:
            continue
        out[pkg] = debian_version(pkg, doc_dir)
    return out


def _pages(lang_dir: Path) -> dict[str, Path]:
    return {p.relative_to(lang_dir).as_posix(): p for p in sorted((lang_dir / "text").rglob("*.html"))}


def _read_segments(path: Path) -> list[Segment]:
    return parse_page(path.read_text(encoding="utf-8", errors="replace"))


def _targets(root: Path, langs: list[str], pivot: str, skip_missing: bool) -> list[tuple[str, Path]]:
    return target_dirs(langs, pivot, skip_missing, lambda code: language_dir(root, code))


def iter_pairs(
    langs: list[str], root: str | Path | None = None, pivot: str = "en", progress: bool = True, skip_missing: bool = False
) -> Iterator[dict]:
    """Pivot->X pairs for the languages in ``langs``; a language not installed raises unless ``skip_missing``."""
    root = Path(root or INFO.default_root)
    pivot_dir = language_dir(root, pivot)
    targets = _targets(root, langs, pivot, skip_missing)
    pages = _pages(pivot_dir)
    for rel, path in tqdm(pages.items(), desc="libreoffice-help pages", disable=not progress, unit="page"):
        src_segments = {s.key: s for s in _read_segments(path)}
        for code, lang_dir in targets:
            other = lang_dir / rel
            if not other.exists():
                continue
            for seg in _read_segments(other):
                src = src_segments.get(seg.key)
                if src is None:
                    continue
                yield {
                    "src": src.text,
                    "tgt": seg.text,
                    "src_lang": pivot,
                    "tgt_lang": code,
                    "id": f"{rel}#{seg.key}",
                    "source": INFO.name,
                    "cls": seg.cls,
                }


def _howto_sections(segments: list[Segment], min_steps: int) -> list[tuple[Segment, list[Segment]]]:
    """(heading, steps): a heading followed directly by at least ``min_steps`` list items."""
    out = []
    i = 0
    while i < len(segments):
        head = segments[i]
        j = i + 1
        while j < len(segments) and "listitem" in segments[j].cls.split():
            j += 1
        if head.tag in _HEADINGS and j - i - 1 >= min_steps:
            out.append((head, segments[i + 1 : j]))
        i = max(j, i + 1)
    return out


def iter_howtos(
    langs: list[str],
    root: str | Path | None = None,
    pivot: str = "en",
    min_steps: int = 2,
    progress: bool = True,
    skip_missing: bool = False,
) -> Iterator[dict]:
    """How-to sections of the guide pages, one dict per language in which every step is translated.

    Yields ``{"id", "lang", "heading", "steps", "pivot_heading", "pivot_steps"}``; the pivot's own
    version is yielded too (``lang == pivot``).
    """
    root = Path(root or INFO.default_root)
    pivot_dir = language_dir(root, pivot)
    targets = _targets(root, langs, pivot, skip_missing)
    guides = {rel: p for rel, p in _pages(pivot_dir).items() if "/guide/" in rel}
    for rel, path in tqdm(guides.items(), desc="libreoffice-help how-tos", disable=not progress, unit="page"):
        for head, steps in _howto_sections(_read_segments(path), min_steps):
            ident = f"{rel}#{head.key}"
            base = {"id": ident, "pivot_heading": head.text, "pivot_steps": [s.text for s in steps]}
            yield {**base, "lang": pivot, "heading": head.text, "steps": [s.text for s in steps]}
            keys = [head.key] + [s.key for s in steps]
            for code, lang_dir in targets:
                other = lang_dir / rel
                if not other.exists():
                    continue
                by_key = {s.key: s for s in _read_segments(other)}
                if not all(k in by_key for k in keys):
                    continue
                texts = [by_key[k].text for k in keys]
                # Untranslated sections fall back to English text: require every part to differ.
                if any(t == e for t, e in zip(texts, [head.text] + base["pivot_steps"], strict=True)):
                    continue
                yield {**base, "lang": code, "heading": texts[0], "steps": texts[1:]}
