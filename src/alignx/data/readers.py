"""Readers for parallel text and instruction data, with errors that name file:line.

Parallel formats
- ``.jsonl``: ``{"src", "tgt", "src_lang", "tgt_lang"}`` per line.
- ``.tsv``: ``src<TAB>tgt<TAB>src_lang<TAB>tgt_lang`` per line, or a header line naming the columns
  (``src tgt src_lang tgt_lang`` in any order).
- Moses / OPUS style: a path prefix ``corpus.de-en`` (or ``opus.de-en-train``) whose two files
  ``<prefix>.de`` and ``<prefix>.en`` hold aligned lines.
Instruction formats (``.jsonl``)
- Alpaca: ``{"instruction", "input" (optional), "output", "lang" (optional)}``.
- Chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``.

Every file is UTF-8 and split into lines at ``\n`` only, as the Moses/OPUS tools do (Python's
``str.splitlines`` would also split at U+2028, U+0085, form feeds... inside a sentence and shift the
alignment of two Moses files); a trailing ``\r`` is dropped. Invalid UTF-8 is an error naming file:line.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignx import languages


class DataError(ValueError):
    """Bad input data; the message starts with ``file:line:``."""


@dataclass
class Pair:
    src: str
    tgt: str
    src_lang: str
    tgt_lang: str


@dataclass
class Instruction:
    messages: list[dict[str, str]]  # chat turns; the last one is the assistant's answer
    lang: str | None = None
    alpaca: tuple[str, str] | None = None  # (instruction, input) of an Alpaca row, for the Alpaca-LoRA prompt


@dataclass
class ReadStats:
    read: int = 0
    skipped: Counter = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def reject(self, err: DataError, on_bad_row: str) -> None:
        """A bad row: re-raise it (``on_bad_row='error'``) or count its reason, the text after ``file:line: ``."""
        if on_bad_row == "error":
            raise err
        self.skip(str(err).split(": ", 1)[-1][:60])

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.read} rows"
        parts = ", ".join(f"{n} {r}" for r, n in self.skipped.most_common())
        return f"{self.read} rows ({sum(self.skipped.values())} skipped: {parts})"


def check_data_file(path: str | Path) -> Path:
    """``path`` as an existing, non-empty regular file, else a DataError saying what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give a data file")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; give a file with rows")
    return path


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file split at ``\n`` only (see module docstring)."""
    path = check_data_file(path)
    with path.open("rb") as fh:
        for i, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{i}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); convert the file to UTF-8") from None
            if i == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
            yield i, line.removesuffix("\n").removesuffix("\r")


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 file split at ``\n`` only; a final newline does not start another line."""
    return [line for _, line in iter_lines(path)]


_PAIR_RE = re.compile(r"(?<![A-Za-z])([a-z]{2,3}(?:[_-][A-Za-z]{2,4})?)-([a-z]{2,3}(?:[_-][A-Za-z]{2,4})?)(?![A-Za-z])")


def moses_files(path: Path) -> tuple[Path, Path, str, str] | None:
    """(file a, file b, code a, code b) of a Moses/OPUS prefix such as ``corpus.de-en``, or None."""
    for m in _PAIR_RE.finditer(path.name):
        a, b = m.group(1), m.group(2)
        fa, fb = path.with_name(f"{path.name}.{a}"), path.with_name(f"{path.name}.{b}")
        if fa.exists() and fb.exists():
            return fa, fb, a, b
    return None


def _lang(code: Any, where: str) -> str:
    if not isinstance(code, str) or not code.strip():
        raise DataError(f"{where}: missing language code")
    try:
        return languages.normalize(code)
    except languages.UnknownLanguageError as e:
        raise DataError(f"{where}: {e}") from None


def json_object(line: str, where: str) -> dict[str, Any]:
    """One JSONL line as a dict, or a DataError naming ``where`` (file:line)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object")
    return row


def _check_pair(src: Any, tgt: Any, where: str) -> tuple[str, str]:
    if not isinstance(src, str) or not isinstance(tgt, str):
        raise DataError(f"{where}: 'src' and 'tgt' must be strings")
    src, tgt = src.strip(), tgt.strip()
    if not src or not tgt:
        raise DataError(f"{where}: empty source or target text")
    return src, tgt


def read_parallel(path: str | Path, on_bad_row: str = "error", stats: ReadStats | None = None) -> list[Pair]:
    """Read a parallel file (format from the name, see module docstring).

    ``on_bad_row='error'`` raises :class:`DataError` at the first bad row; ``'skip'`` skips it and
    counts the reason in ``stats``.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    before = stats.read
    pairs: list[Pair] = []

    if not path.exists():
        moses = moses_files(path)
        if moses is None:
            raise DataError(f"{path}: no such file (nor Moses-style pair {path}.<a> / {path}.<b>)")
        fa, fb, a, b = moses
        la, lb = _lang(a, str(fa)), _lang(b, str(fb))
        lines_a, lines_b = read_lines(fa), read_lines(fb)
        if len(lines_a) != len(lines_b):
            raise DataError(f"{fb}:{min(len(lines_a), len(lines_b)) + 1}: {fa.name} has {len(lines_a)} lines but {fb.name} has {len(lines_b)}")
        for i, (x, y) in enumerate(zip(lines_a, lines_b, strict=True), 1):
            stats.read += 1
            try:
                s, t = _check_pair(x, y, f"{fa}:{i}")
                pairs.append(Pair(s, t, la, lb))
            except DataError as e:
                stats.reject(e, on_bad_row)
        return _nonempty(pairs, stats, before, fa)

    check_data_file(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".tsv"):
        raise DataError(f"{path}: unknown parallel format {suffix!r} (use .jsonl, .tsv or a Moses prefix)")
    lines = iter_lines(path)
    if suffix in (".jsonl", ".json"):
        for i, line in lines:
            if not line.strip():
                continue
            stats.read += 1
            where = f"{path}:{i}"
            try:
                row = json_object(line, where)
                missing = [k for k in ("src", "tgt", "src_lang", "tgt_lang") if k not in row]
                if missing:
                    raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
                s, t = _check_pair(row["src"], row["tgt"], where)
                pairs.append(Pair(s, t, _lang(row["src_lang"], where), _lang(row["tgt_lang"], where)))
            except DataError as e:
                stats.reject(e, on_bad_row)
    elif suffix == ".tsv":
        columns = ["src", "tgt", "src_lang", "tgt_lang"]
        for i, line in lines:
            if not line.strip():
                continue
            cells = line.split("\t")
            if i == 1 and set(cells) == set(columns):
                columns = cells
                continue
            stats.read += 1
            where = f"{path}:{i}"
            try:
                if len(cells) != 4:
                    raise DataError(f"{where}: expected 4 tab-separated columns (src, tgt, src_lang, tgt_lang), got {len(cells)}")
                row = dict(zip(columns, cells, strict=True))
                s, t = _check_pair(row["src"], row["tgt"], where)
                pairs.append(Pair(s, t, _lang(row["src_lang"], where), _lang(row["tgt_lang"], where)))
            except DataError as e:
                stats.reject(e, on_bad_row)
    return _nonempty(pairs, stats, before, path)


def read_instructions(path: str | Path, on_bad_row: str = "error", stats: ReadStats | None = None) -> list[Instruction]:
    """Read Alpaca-style or chat-style instruction JSONL (see module docstring)."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    before = stats.read
    rows: list[Instruction] = []
    for i, line in iter_lines(path):
        if not line.strip():
            continue
        stats.read += 1
        where = f"{path}:{i}"
        try:
            row = json_object(line, where)
            lang = _lang(row["lang"], where) if row.get("lang") else None
            if "messages" in row:
                msgs = row["messages"]
                if not isinstance(msgs, list) or not msgs:
                    raise DataError(f"{where}: 'messages' must be a non-empty list")
                for m in msgs:
                    if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
                        raise DataError(f"{where}: each message needs role system|user|assistant and string content")
                if msgs[-1]["role"] != "assistant":
                    raise DataError(f"{where}: the last message must be the assistant's answer")
                rows.append(Instruction([{"role": m["role"], "content": m["content"]} for m in msgs], lang))
            elif "instruction" in row and "output" in row:
                inst, inp, out = row["instruction"], row.get("input") or "", row["output"]
                if not all(isinstance(v, str) for v in (inst, inp, out)):
                    raise DataError(f"{where}: instruction, input and output must be strings")
                if not inst.strip() or not out.strip():
                    raise DataError(f"{where}: empty instruction or output")
                user = inst.strip() + ("\n\n" + inp.strip() if inp.strip() else "")
                turns = [{"role": "user", "content": user}, {"role": "assistant", "content": out.strip()}]
                rows.append(Instruction(turns, lang, (inst.strip(), inp.strip())))
            else:
                raise DataError(f"{where}: expected Alpaca fields instruction/output or chat 'messages'")
        except DataError as e:
            stats.reject(e, on_bad_row)
    return _nonempty(rows, stats, before, path)


def _nonempty(rows: list, stats: ReadStats, before: int, path: Path) -> list:
    """``rows``, or a DataError when the file held no rows at all (only blank lines)."""
    if stats.read == before:
        raise DataError(f"{path}: no rows (only blank lines); give a file with rows")
    return rows
