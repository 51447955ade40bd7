"""The Quran (npm ``quran-json``): verse-aligned Arabic original and translations, English pivot.

``dist/quran.json`` holds the Arabic text, ``dist/quran_<lang>.json`` a translation per language
(bn en es fr id ru sv tr ur zh). Licence caution: the package is CC-BY-4.0 (package.json) /
CC-BY-SA-4.0 (LICENSE.txt), but the translations come from tanzil.net and quranenc.com, whose terms
restrict commercial use; alignx never ships this source's text, it is opt-in at build time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from alignx import languages
from alignx.data.sources import MissingSourceError, SourceInfo, find_npm_root, npm_version
from alignx.data.sources.clean import normalize_text

INFO = SourceInfo(
    name="quran",
    description="Quran verses: Arabic original + translations, verse-aligned",
    licence="CC-BY-4.0 / CC-BY-SA-4.0 (package); translations under tanzil.net / quranenc.com terms (non-commercial)",
    licence_url="https://tanzil.net/trans/",
    homepage="https://github.com/risan/quran-json",
    install="npm install quran-json@3.1.2",
    default_root=None,
    notes="opt-in; not used for the shipped demo because of the translations' terms",
)


def find_root(root: str | Path | None) -> Path:
    return find_npm_root("quran-json", root, "dist/quran.json", INFO.install, "quran_root")


def package_version(root: str | Path | None) -> str | None:
    return npm_version(find_root(root))


def _verses(path: Path, field: str) -> dict[str, str]:
    chapters = json.loads(path.read_text(encoding="utf-8"))
    return {f"{ch['id']}:{v['id']}": normalize_text(v[field]) for ch in chapters for v in ch["verses"]}


def _lang_verses(base: Path, code: str) -> dict[str, str] | None:
    if code == "ar":
        return _verses(base / "dist" / "quran.json", "text")
    path = base / "dist" / f"quran_{code}.json"
    return _verses(path, "translation") if path.exists() else None


def iter_pairs(langs: list[str], root: str | Path | None = None, pivot: str = "en", progress: bool = True, skip_missing: bool = False
) -> Iterator[dict]:
    base = find_root(root)
    pivot_verses = _lang_verses(base, languages.normalize(pivot))
    if pivot_verses is None:
        raise MissingSourceError(f"quran-json has no translation for pivot {pivot!r}")
    for code in (languages.normalize(c) for c in langs):
        if code == pivot:
            continue
        verses = _lang_verses(base, code)
        if verses is None:
            if not skip_missing:
                raise MissingSourceError(f"quran-json has no translation for {code!r} (it has ar bn en es fr id ru sv tr ur zh)")
            continue
        for key, src in pivot_verses.items():
            if key in verses:
                yield {"src": src, "tgt": verses[key], "src_lang": pivot, "tgt_lang": code, "id": f"quran:{key}", "source": INFO.name}
