"""Parallel text from locally installed packages (Debian, npm), aligned against an English pivot.

Each source module exposes ``INFO`` (:class:`SourceInfo`) and
``iter_pairs(languages, root, pivot="en", progress=True) -> Iterator[dict]`` yielding pair dicts
``{"src", "tgt", "src_lang", "tgt_lang", "id", "source"}`` with the pivot on the source side, in a
deterministic order. A missing package raises :class:`MissingSourceError` saying what to install.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class MissingSourceError(RuntimeError):
    """The package holding a source's files is not installed (the message says which)."""


@dataclass(frozen=True)
class SourceInfo:
    name: str
    description: str
    licence: str
    licence_url: str
    homepage: str
    install: str  # shell command that installs the package(s), {lang} is the package language suffix
    default_root: str | None
    notes: str = ""


def find_npm_root(package: str, root: str | Path | None, marker: str, install: str, setting: str) -> Path:
    """Directory of an installed npm package: ``root`` if given, else ./node_modules or the global folders.

    ``marker`` is a path inside the package that proves it is the right one; the error names the npm
    command and the config ``setting`` that points at it.
    """
    search = (f"node_modules/{package}", f"/usr/lib/node_modules/{package}", f"/usr/local/lib/node_modules/{package}")
    for c in [Path(root)] if root else [Path(p) for p in search]:
        if (c / marker).exists():
            return c
    where = root or " or ".join(search)
    raise MissingSourceError(f"npm package {package} not found at {where}: run `{install}` (then {setting}=<dir>/node_modules/{package})")


def target_dirs(langs: list[str], pivot: str, skip_missing: bool, locate: Callable[[str], Path]) -> list[tuple[str, Path]]:
    """(code, directory) of every non-pivot language in ``langs`` (normalised, deduplicated, in order).

    ``locate(code)`` finds a language's directory or raises :class:`MissingSourceError`; a missing
    language is skipped when ``skip_missing`` (another source may have it), else the error propagates.
    """
    from alignx import languages

    out = []
    for code in dict.fromkeys(languages.normalize(c) for c in langs):
        if code == pivot:
            continue
        try:
            out.append((code, locate(code)))
        except MissingSourceError:
            if not skip_missing:
                raise
    return out


def npm_version(package_dir: Path) -> str | None:
    meta = package_dir / "package.json"
    return json.loads(meta.read_text(encoding="utf-8")).get("version") if meta.exists() else None


def debian_version(package: str, doc_dir: Path | None = None) -> str | None:
    """Version of a Debian package: from dpkg's status file, else the shipped changelog's first line."""
    status = Path("/var/lib/dpkg/status")
    if status.exists():
        block = re.search(rf"^Package: {re.escape(package)}\n(?:.+\n)*?Version: (\S+)", status.read_text("utf-8", "replace"), re.M)
        if block:
            return block.group(1)
    for base in [doc_dir, Path("/usr/share/doc")]:
        log = base / package / "changelog.Debian.gz" if base else None
        if log and log.exists():
            with gzip.open(log, "rt", encoding="utf-8", errors="replace") as fh:
                match = re.match(r"\S+ \(([^)]+)\)", fh.readline())
            if match:
                return match.group(1)
    return None


def _registry() -> dict[str, Any]:
    # Imported lazily so that `sources` itself has no import cycle with the modules.
    from alignx.data.sources import gnome_help, libreoffice_help, quran, udhr

    return {m.INFO.name: m for m in (libreoffice_help, udhr, quran, gnome_help)}


def get_source(name: str) -> Any:
    reg = _registry()
    if name not in reg:
        raise KeyError(f"unknown data source {name!r}; known: {', '.join(sorted(reg))}")
    return reg[name]


def source_names() -> list[str]:
    return sorted(_registry())


PairIter = Callable[..., Iterator[dict]]
