"""Readers for parallel text and instruction data, with errors that name file:line (or file:row N).

A source is a local file or a hub dataset ``hf:NAME[@CONFIG][:SPLIT]`` (split ``train`` when left out;
loaded with :func:`datasets.load_dataset`, so it needs the network or a populated HF cache).
Files by suffix:
- ``.jsonl``: one JSON object per line; ``.json``: a JSON array of objects, or JSON lines;
- ``.parquet``: rows of a Parquet file (``file:row N`` in errors);
- ``.csv`` / ``.tsv``: a header line naming the columns (a parallel ``.tsv`` may also have no header:
  ``src<TAB>tgt<TAB>src_lang<TAB>tgt_lang``); ``.tsv`` cells are split at tabs, ``.csv`` follows RFC 4180 quoting;
- Moses / OPUS style (parallel only): a path prefix ``corpus.de-en`` (or ``opus.de-en-train``) whose two files
  ``<prefix>.de`` and ``<prefix>.en`` hold aligned lines.

Row formats, recognised per row by their fields
- Parallel: alignx pairs ``{"src", "tgt", "src_lang", "tgt_lang"}``; HF ``translation`` rows
  ``{"translation": {"de": ..., "en": ...}}`` (OPUS-100, WMT, FLORES+ layout; the first language is the source).
- Instructions (an optional ``lang`` field names the language of any of them):
  ``messages`` ``[{"role": "system"|"user"|"assistant", "content"}]``;
  ShareGPT ``conversations`` ``[{"from": "system"|"human"|"gpt", "value"}]`` (``user``/``assistant`` also
  accepted) with an optional top-level ``system``;
  ``prompt`` / ``completion``, both strings or both lists of messages (TRL's conversational form);
  Alpaca ``{"instruction", "input" (optional), "output", "system" (optional), "history" (optional,
  ``[[query, answer], ...]``)}``, LLaMA-Factory's alpaca layout.
  The last turn must be the assistant's answer.

Every text file is UTF-8 and split into lines at ``\n`` only, as the Moses/OPUS tools do (Python's
``str.splitlines`` would also split at U+2028, U+0085, form feeds... inside a sentence and shift the
alignment of two Moses files); a trailing ``\r`` is dropped. Invalid UTF-8 is an error naming file:line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

from alignx import languages
from alignx.data.sources.clean import script_ratio


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
    flagged: Counter = field(default_factory=Counter)  # kept rows that look wrong (see flag_pair), by reason

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def flag_pair(self, pair: Pair) -> None:
        """Count, without dropping, a pair whose two texts are the same (an untranslated string) or whose text has
        letters but none in its language's script (Latin text labelled ``ja``, say): the data summary reports them."""
        if pair.src.casefold() == pair.tgt.casefold():
            self.flagged["identical source and target text"] += 1
        for text, lang in ((pair.src, pair.src_lang), (pair.tgt, pair.tgt_lang)):
            if not _in_script(text, lang):
                self.flagged[f"{lang} text not in its script"] += 1

    def reject(self, err: DataError, on_bad_row: str) -> None:
        """A bad row: re-raise it (``on_bad_row='error'``) or count its reason, the text after ``file:line: ``."""
        if on_bad_row == "error":
            raise err
        self.skip(str(err).split(": ", 1)[-1][:60])

    def summary(self) -> str:
        text = f"{self.read} rows"
        if self.skipped:
            parts = ", ".join(f"{n} {r}" for r, n in self.skipped.most_common())
            text += f" ({sum(self.skipped.values())} skipped: {parts})"
        if self.flagged:
            text += f" (kept but flagged: {', '.join(f'{n} {r}' for r, n in self.flagged.most_common())})"
        return text


def _in_script(text: str, lang: str) -> bool:
    """False when the first 16 letters of ``text`` hold none of ``lang``'s usual script (scripts the table of
    :func:`alignx.data.sources.clean.script_ratio` knows; True for others and for text without letters)."""
    letters = "".join([ch for ch in text[:80] if ch.isalpha()][:16])
    if not letters:
        return True
    ratio = script_ratio(letters, languages.get(lang).script)
    return ratio is None or ratio > 0


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


def moses_files(path: Path) -> tuple[Path, Path, str, str] | None:
    """(file a, file b, code a, code b) of a Moses/OPUS prefix such as ``corpus.de-en`` or ``opus.de-en-dev``, or None.

    The candidates are the files that exist (``<prefix>.<a>`` and ``<prefix>.<b>``) whose two suffixes appear in the
    prefix as ``a-b`` between non-letters, so a split or version after the pair (OPUS-100's ``-train``, ``-dev``,
    ``-test``; ``-v1``) is not read as part of a language code. The leftmost ``a-b`` in the prefix wins.
    """
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return None
    head = path.name + "."
    # any file kind: a FIFO or device named like a pair is refused later, by name, rather than missed here
    suffixes = sorted(p.name[len(head):] for p in parent.iterdir() if p.name.startswith(head) and not p.is_dir())
    found = []
    for a in suffixes:
        for b in suffixes:
            if m := re.search(rf"(?<![A-Za-z]){re.escape(a)}-{re.escape(b)}(?![A-Za-z])", path.name):  # a == b: refused later, by name
                found.append((m.start(), a, b))
    if not found:
        return None
    _, a, b = min(found)
    return path.with_name(head + a), path.with_name(head + b), a, b


def _lang(code: Any, where: str) -> str:
    if not isinstance(code, str) or not code.strip():
        raise DataError(f"{where}: missing language code")
    try:
        return languages.normalize(code.strip())
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


HUB_PREFIX = "hf:"
PAIR_FIELDS = ("src", "tgt", "src_lang", "tgt_lang")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")
_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def parse_hub_spec(spec: str) -> tuple[str, str | None, str]:
    """(name, config, split) of ``hf:NAME[@CONFIG][:SPLIT]``; a ConfigError-like DataError for a malformed one."""
    body = spec[len(HUB_PREFIX):]
    body, _, split = body.partition(":")
    name, _, config = body.partition("@")
    if not name or (config == "" and "@" in body) or (split == "" and ":" in spec[len(HUB_PREFIX):]):
        raise DataError(f"{spec}: a hub dataset is hf:NAME[@CONFIG][:SPLIT], e.g. hf:Helsinki-NLP/opus-100@de-en:train")
    return name, config or None, split or "train"


HUB_PROBE_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub's endpoint (``HF_ENDPOINT``) opens within ``timeout`` seconds."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """datasets and huggingface_hub in offline mode for the duration (the HF cache only, no retries)."""
    import datasets
    from huggingface_hub import constants

    before = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = before


def load_hub(spec: str) -> Any:
    """The :class:`datasets.Dataset` of a hub spec (see :func:`parse_hub_spec`).

    Without a connection to the hub (probed for :data:`HUB_PROBE_TIMEOUT_S` seconds, unless offline mode is already
    on) the dataset comes from the HF cache only, so an uncached one fails at once with one line instead of after
    ``datasets``' retries (about 30 s and a dozen log lines)."""
    import datasets
    from huggingface_hub import constants

    name, config, split = parse_hub_spec(spec)
    offline = bool(constants.HF_HUB_OFFLINE) or not hub_reachable()
    try:
        with _hub_offline() if offline else contextlib.nullcontext():
            return datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - connection, missing config or split: one line that says which
        if offline:
            raise DataError(f"{spec}: the hub is not reachable (offline) and the HF cache does not hold this dataset "
                            f"({type(e).__name__}); give a local file (.jsonl, .parquet, a Moses prefix) or load it once "
                            "where the network is, to fill the cache") from None
        raise DataError(f"{spec}: cannot load the hub dataset ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        "check the name, config and split, and that the network or the HF cache has it") from None


def _json_array(path: Path) -> Iterator[tuple[str, Any]]:
    """(file:line, element) of a JSON array file, each element with the line it starts on."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {col}); convert the file to UTF-8") from None
    dec = json.JSONDecoder()
    ws = re.compile(r"\s*")
    i, line, counted = ws.match(text, text.index("[") + 1).end(), 1, 0
    while i < len(text) and text[i] != "]":
        line += text.count("\n", counted, i)
        counted = i
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        yield f"{path}:{line}", obj
        i = ws.match(text, i).end()
        if i < len(text) and text[i] == ",":
            i = ws.match(text, i + 1).end()
            if i < len(text) and text[i] == "]":
                at = text.count("\n", 0, i) + 1
                raise DataError(f"{path}:{at}: invalid JSON (a comma before the closing ']')")
        elif i >= len(text) or text[i] != "]":
            at = text.count("\n", 0, i) + 1
            raise DataError(f"{path}:{at}: invalid JSON (expected ',' or ']' between array elements)")


def _table_rows(path: Path, delimiter: str, header: tuple[str, ...] | None) -> Iterator[tuple[str, Any]]:
    """(file:line, row dict) of a CSV / TSV file with a header line; ``header`` (a parallel .tsv) is the column
    order of a file without one, recognised when the first line is not a permutation of it."""

    lines = iter_lines(path)
    if delimiter == "\t":  # cells split at tabs only (no quoting), as the Moses/OPUS tools write them
        rows: Iterator[tuple[int, list[str]]] = ((i, line.split("\t")) for i, line in lines if line.strip())
    else:
        rows = (r for r in _csv_rows(path, lines) if any(c.strip() for c in r[1]))
    columns: list[str] | None = None
    for i, cells in rows:
        where = f"{path}:{i}"
        if columns is None:
            names = [c.strip() for c in cells]
            if header is not None and not set(header) & set(names):
                columns = list(header)  # no header line: the columns in their documented order
            else:
                if len(set(names)) != len(names) or not all(names):
                    raise DataError(f"{where}: the header line must name each column once ({', '.join(names)})")
                missing = [c for c in header or () if c not in names]
                if missing:
                    raise DataError(f"{where}: the header line names {', '.join(names)} but not {', '.join(missing)}; "
                                    f"name all of {', '.join(header)} (other columns are ignored)")
                columns = names
                continue
        if len(cells) != len(columns):
            kind = "tab-separated" if delimiter == "\t" else "comma-separated"
            yield where, DataError(f"{where}: expected {len(columns)} {kind} columns ({', '.join(columns)}), got {len(cells)}")
            continue
        yield where, dict(zip(columns, cells, strict=True))


def _csv_rows(path: Path, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, cells) of RFC 4180 CSV over numbered lines (a quoted cell may span lines)."""
    import csv

    last = 0

    def text() -> Iterator[str]:
        nonlocal last
        for last, line in lines:  # noqa: B007 - `last` is read by the loop below
            yield line + "\n"

    csv.field_size_limit(sys.maxsize)  # a long document in one cell is a cell, not an error
    reader = csv.reader(text())
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{path}:{last}: invalid CSV ({e})") from None
        yield start, cells
        start = last + 1


def records(source: str | Path, header: tuple[str, ...] | None = None) -> Iterator[tuple[str, Any]]:
    """(where, row) for each row of a file or hub dataset; ``where`` is ``file:line`` (``file:row N`` for Parquet and
    hub rows). A row that cannot be read as a mapping comes as a DataError in place of the row, so the caller can
    skip it (``data.on_bad_row=skip``) or raise it; errors that stop the file are raised."""
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        for n, row in enumerate(load_hub(source), 1):
            yield f"{source}:row {n}", row
        return
    path = check_data_file(source)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = 0
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
            for batch in batches:
                for row in batch.to_pylist():
                    n += 1
                    yield f"{path}:row {n}", row
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}:row {n + 1}: cannot read the Parquet file ({_one_line(e)[:200]})") from None
    elif suffix in (".csv", ".tsv"):
        yield from _table_rows(path, "\t" if suffix == ".tsv" else ",", header)
    elif suffix == ".json" and _first_char(path) == "[":
        yield from _json_array(path)
    elif suffix in (".jsonl", ".json"):
        for i, line in iter_lines(path):
            if line.strip():
                where = f"{path}:{i}"
                try:
                    yield where, json_object(line, where)
                except DataError as e:
                    yield where, e
    else:
        raise DataError(f"{path}: unknown data format {suffix!r}; use {', '.join(FILE_SUFFIXES)}, a Moses prefix or hf:NAME")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _first_char(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(4096).decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    return head[:1]


def check_source(source: str | Path) -> None:
    """A DataError unless ``source`` is a well-formed hub spec, a Moses prefix, or a non-empty file of a known format."""
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        parse_hub_spec(source)
        return
    path = Path(source)
    moses = moses_files(path) if not path.exists() else None
    if moses is not None:  # both files regular and non-empty: a FIFO or device would block the digest and the read
        check_data_file(moses[0])
        check_data_file(moses[1])
        return
    check_data_file(path)
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise DataError(f"{path}: unknown data format {path.suffix.lower()!r}; use {', '.join(FILE_SUFFIXES)}, a Moses prefix or hf:NAME")


def source_identity(source: str | Path) -> str:
    """What a data source holds, for a cache key: a digest of the file's bytes (both files of a Moses prefix; hashing
    runs at about 1 GB/s, and a digest, unlike a modification time, misses no rewrite), or a hub dataset's spec and
    the fingerprint of its loaded data."""
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        return f"{source}|{load_hub(source)._fingerprint}"
    path = Path(source)
    files = [path] if path.exists() else list(moses_files(path) or (path,))[:2]
    parts = []
    for f in files:
        check_data_file(f)  # only regular files are opened (a FIFO would block here for ever)
        with Path(f).open("rb") as fh:
            parts.append(f"{Path(f).name}|{hashlib.file_digest(fh, 'blake2b').hexdigest()[:32]}")
    return ";".join(parts)


def pair_from_row(row: Any, where: str) -> Pair:
    """A parallel row (an alignx pair or an HF ``translation`` row) as a :class:`Pair`, or a DataError."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object")
    if row.get("translation") is not None:
        tr = row["translation"]
        if not isinstance(tr, dict):
            raise DataError(f"{where}: 'translation' must map two language codes to their sentences")
        tr = {k: v for k, v in tr.items() if v is not None}  # Arrow structs of a multi-pair dataset fill absent languages with null
        if len(tr) != 2:
            raise DataError(f"{where}: a 'translation' row needs exactly two languages, got {len(tr)} ({', '.join(tr) or 'none'})")
        (a, sa), (b, sb) = tr.items()
        s, t = _check_pair(sa, sb, where)
        return _crossing(Pair(s, t, _lang(a, where), _lang(b, where)), where)
    missing = [k for k in PAIR_FIELDS if row.get(k) is None]  # Parquet / hub rows carry every column, null where absent
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)} (or give a 'translation' row)")
    s, t = _check_pair(row["src"], row["tgt"], where)
    return _crossing(Pair(s, t, _lang(row["src_lang"], where), _lang(row["tgt_lang"], where)), where)


def _crossing(pair: Pair, where: str) -> Pair:
    """``pair`` when its two languages differ (after normalising the codes), else a DataError: an en-en row would
    train "Translate English to English" and give L_CTR a sentence and itself as a translation pair."""
    if pair.src_lang == pair.tgt_lang:
        raise DataError(f"{where}: source and target are both {pair.src_lang!r}; a parallel row must cross languages "
                        "(fix or remove it, or set data.on_bad_row=skip to skip and count such rows)")
    return pair


def _messages(turns: Any, where: str, role_key: str, text_key: str, roles: dict[str, str], field: str) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: '{field}' must be a non-empty list")
    out = []
    for m in turns:
        if not isinstance(m, dict) or m.get(role_key) not in roles or not isinstance(m.get(text_key), str):
            raise DataError(f"{where}: each message of '{field}' needs {role_key} {'|'.join(dict.fromkeys(roles))} and string {text_key}")
        out.append({"role": roles[m[role_key]], "content": m[text_key]})
    return out


_CHAT_ROLES = {r: r for r in ("system", "user", "assistant")}


def choice_row(row: dict[str, Any], where: str, text_fields: tuple[str, ...]) -> tuple[str, list[str], int]:
    """(language code, choices, label) of a multiple-choice row with non-empty string ``text_fields``, ``lang``, a
    ``choices`` list of at least 2 non-empty strings and a ``label`` index into it; a DataError naming ``where``."""
    for key in ("lang", *text_fields):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise DataError(f"{where}: needs a non-empty string '{key}' (rows {{{', '.join(('lang', *text_fields, 'choices', 'label'))}}})")
    choices, label = row.get("choices"), row.get("label")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise DataError(f"{where}: 'choices' must be a list of at least 2 non-empty strings")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
        raise DataError(f"{where}: 'label' must be an index into choices (0..{len(choices) - 1}), got {label!r}")
    return _lang(row["lang"], where), choices, label


def instruction_from_row(row: Any, where: str) -> Instruction:
    """An instruction row in any supported format (see module docstring) as an :class:`Instruction`, or a DataError."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object")
    lang = _lang(row["lang"], where) if row.get("lang") else None
    alpaca = None
    if row.get("messages") is not None:
        msgs = _messages(row["messages"], where, "role", "content", _CHAT_ROLES, "messages")
    elif row.get("conversations") is not None:
        msgs = _messages(row["conversations"], where, "from", "value", _SHAREGPT_ROLES, "conversations")
        system = row.get("system")
        if isinstance(system, str) and system.strip() and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": system})
    elif row.get("prompt") is not None and row.get("completion") is not None:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            if not prompt.strip() or not completion.strip():
                raise DataError(f"{where}: empty prompt or completion")
            msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        elif isinstance(prompt, list) and isinstance(completion, list):
            msgs = _messages(prompt + completion, where, "role", "content", _CHAT_ROLES, "prompt + completion")
        else:
            raise DataError(f"{where}: 'prompt' and 'completion' must both be strings or both lists of messages")
    elif row.get("instruction") is not None and row.get("output") is not None:
        inst, inp, out = row["instruction"], row.get("input") or "", row["output"]
        if not all(isinstance(v, str) for v in (inst, inp, out)):
            raise DataError(f"{where}: instruction, input and output must be strings")
        if not inst.strip() or not out.strip():
            raise DataError(f"{where}: empty instruction or output")
        system, history = row.get("system") or "", row.get("history") or []
        if not isinstance(system, str):
            raise DataError(f"{where}: 'system' must be a string")
        if not isinstance(history, list) or not all(
            isinstance(h, list | tuple) and len(h) == 2 and all(isinstance(t, str) for t in h) for h in history
        ):
            raise DataError(f"{where}: 'history' must be a list of [query, answer] string pairs")
        msgs = [{"role": "system", "content": system.strip()}] if system.strip() else []
        for query, answer in history:
            msgs += [{"role": "user", "content": query.strip()}, {"role": "assistant", "content": answer.strip()}]
        user = inst.strip() + ("\n\n" + inp.strip() if inp.strip() else "")
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": out.strip()}]
        if len(msgs) == 2:  # a plain Alpaca row: the Alpaca-LoRA prompt renders it exactly
            alpaca = (inst.strip(), inp.strip())
    else:
        raise DataError(f"{where}: expected instruction rows as 'messages', ShareGPT 'conversations', 'prompt'/'completion' "
                        "or Alpaca 'instruction'/'output'")
    if msgs[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's answer")
    return Instruction(msgs, lang, alpaca)


def iter_parallel(source: str | Path, on_bad_row: str = "error", stats: ReadStats | None = None) -> Iterator[Pair]:
    """The pairs of a parallel source (see module docstring), in order. ``on_bad_row='error'`` raises
    :class:`DataError` at the first bad row; ``'skip'`` skips it and counts the reason in ``stats``. A source with no
    rows at all is a DataError once it is read."""
    stats = stats if stats is not None else ReadStats()
    before = stats.read
    if not (isinstance(source, str) and source.startswith(HUB_PREFIX)) and not Path(source).exists():
        pairs = _moses_pairs(Path(source), on_bad_row, stats)
    else:
        pairs = _parsed(records(source, header=PAIR_FIELDS), pair_from_row, on_bad_row, stats)
    for pair in pairs:
        stats.flag_pair(pair)
        yield pair
    _nonempty(stats, before, source)


def _moses_pairs(path: Path, on_bad_row: str, stats: ReadStats) -> Iterator[Pair]:
    moses = moses_files(path)
    if moses is None:
        raise DataError(f"{path}: no such file (nor Moses-style pair {path}.<a> / {path}.<b>)")
    fa, fb, a, b = moses
    la, lb = _lang(a, str(fa)), _lang(b, str(fb))
    if la == lb:
        raise DataError(f"{path}: both files are {la!r} ({fa.name}, {fb.name}); a parallel corpus must cross languages")
    n_a = n_b = 0
    for line_a, line_b in zip_longest(iter_lines(fa), iter_lines(fb)):
        n_a, n_b = n_a + (line_a is not None), n_b + (line_b is not None)
        if line_a is None or line_b is None:
            continue  # counted; reported once both files are read
        i, x = line_a
        stats.read += 1
        try:
            s, t = _check_pair(x, line_b[1], f"{fa}:{i}")
            yield Pair(s, t, la, lb)
        except DataError as e:
            stats.reject(e, on_bad_row)
    if n_a != n_b:
        raise DataError(f"{fb}:{min(n_a, n_b) + 1}: {fa.name} has {n_a} lines but {fb.name} has {n_b}")


def iter_instructions(source: str | Path, on_bad_row: str = "error", stats: ReadStats | None = None) -> Iterator[Instruction]:
    """The rows of an instruction source in any supported format (see module docstring), in order; as
    :func:`iter_parallel` for bad rows and empty sources."""
    stats = stats if stats is not None else ReadStats()
    before = stats.read
    yield from _parsed(records(source), instruction_from_row, on_bad_row, stats)
    _nonempty(stats, before, source)


def _parsed(rows: Iterator[tuple[str, Any]], parse: Any, on_bad_row: str, stats: ReadStats) -> Iterator[Any]:
    """``parse(row, where)`` of each record, counting it in ``stats``; a bad one raised or skipped (``on_bad_row``)."""
    for where, row in rows:
        stats.read += 1
        try:
            if isinstance(row, DataError):
                raise row
            yield parse(row, where)
        except DataError as e:
            stats.reject(e, on_bad_row)


def read_parallel(path: str | Path, on_bad_row: str = "error", stats: ReadStats | None = None) -> list[Pair]:
    """All pairs of a parallel source (:func:`iter_parallel`)."""
    return list(iter_parallel(path, on_bad_row, stats))


def read_instructions(path: str | Path, on_bad_row: str = "error", stats: ReadStats | None = None) -> list[Instruction]:
    """All rows of an instruction source (:func:`iter_instructions`)."""
    return list(iter_instructions(path, on_bad_row, stats))


def _nonempty(stats: ReadStats, before: int, source: str | Path) -> None:
    """A DataError when the source held no rows at all (only blank lines)."""
    if stats.read == before:
        raise DataError(f"{source}: no rows (only blank lines); give a file with rows")
