"""GNOME user help (Debian ``gnome-user-docs``): Mallard pages aligned block by block.

Each language's help is the same set of Mallard pages under ``/usr/share/help/<dir>/gnome-help``,
produced from the English (``C``) pages by itstool, which translates text blocks in place and keeps
the markup. So the i-th text block (``title``, ``desc``, ``p``, ``item`` text ...) of a translated
page is the translation of the i-th block of the English page. A page whose block count differs
from the English one is skipped rather than guessed; blocks left untranslated (identical to the
English text) are dropped. The domain (desktop how-tos) differs from LibreOffice help's, which makes
it the out-of-domain held-out set of the replication.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from alignx import languages
from alignx.data.sources import MissingSourceError, SourceInfo, debian_version, target_dirs
from alignx.data.sources.clean import normalize_text

INFO = SourceInfo(
    name="gnome_help",
    description="GNOME user help (Mallard pages), block-aligned per page",
    licence="CC-BY-SA-3.0",
    licence_url="https://creativecommons.org/licenses/by-sa/3.0/",
    homepage="https://help.gnome.org",
    install="apt-get install --no-install-recommends gnome-user-docs",
    default_root="/usr/share/help",
)

PACKAGE = "gnome-user-docs"
_MAL = "{http://projectmallard.org/1.0/}"
# Elements whose own text is one translation unit (itstool's Mallard rules), innermost first.
_BLOCKS = {"title", "desc", "p", "subtitle", "cite", "code", "screen"}
_SKIP = {"info", "code", "screen", "media"}  # metadata, code listings, media are not prose
_DIRS: dict[str, tuple[str, ...]] = {"en": ("C",), "zh": ("zh_CN",), "zh-Hant": ("zh_TW",), "pt": ("pt_BR", "pt")}


def language_dir(root: Path, code: str) -> Path:
    code = languages.normalize(code)
    for name in _DIRS.get(code, (code, code.replace("-", "_"))):
        d = root / name / "gnome-help"
        if d.is_dir():
            return d
    raise MissingSourceError(f"GNOME help for {code} not found under {root}: run `{INFO.install}`")


def package_versions(root: str | Path | None, codes: list[str]) -> dict[str, str | None]:
    return {PACKAGE: debian_version(PACKAGE)}


def page_blocks(text: str) -> list[str]:
    """The text blocks of a Mallard page in document order (inline markup flattened, whitespace normalised)."""
    try:
        tree = ET.fromstring(text)
    except ET.ParseError:
        return []
    out: list[str] = []

    def walk(el: ET.Element) -> None:
        tag = el.tag.removeprefix(_MAL) if isinstance(el.tag, str) else ""
        if tag in _SKIP:
            return
        if tag in _BLOCKS:
            out.append(normalize_text("".join(el.itertext())))
            return
        for child in el:
            walk(child)

    walk(tree)
    return out


def iter_pairs(
    langs: list[str], root: str | Path | None = None, pivot: str = "en", progress: bool = True, skip_missing: bool = False
) -> Iterator[dict]:
    """Pivot->X pairs for ``langs``: i-th block of the pivot page with the i-th block of the translated page."""
    root = Path(root or INFO.default_root)
    pivot_dir = language_dir(root, pivot)
    targets = target_dirs(langs, pivot, skip_missing, lambda code: language_dir(root, code))
    pages = sorted(pivot_dir.glob("*.page"))
    for path in tqdm(pages, desc="gnome-help pages", disable=not progress, unit="page"):
        src_blocks = page_blocks(path.read_text(encoding="utf-8", errors="replace"))
        for code, lang_dir in targets:
            other = lang_dir / path.name
            if not other.exists():
                continue
            tgt_blocks = page_blocks(other.read_text(encoding="utf-8", errors="replace"))
            if len(tgt_blocks) != len(src_blocks):
                continue
            for i, (src, tgt) in enumerate(zip(src_blocks, tgt_blocks, strict=True)):
                if src and tgt and src != tgt:
                    yield {"src": src, "tgt": tgt, "src_lang": pivot, "tgt_lang": code, "id": f"{path.name}#{i}", "source": INFO.name}
