"""Training rows as an Arrow-backed :class:`datasets.Dataset`: read, rendered by batched ``Dataset.map``, cached on disk.

:func:`build` reads each source (:mod:`alignx.data.readers`: files in any supported format or hub datasets) into
an Arrow file of plain rows, samples ``data.max_pairs`` of each, renders them with a batched ``Dataset.map`` (one fast-
tokenizer call per batch of rows, ``data.num_proc`` processes) and saves the rendered rows under
``<cache>/<key>/``. The key digests everything the rows depend on (the sources' bytes or hub fingerprints, the
rendering settings, the tokenizer and its chat template, and alignx's reading and rendering code), so a second run with the same inputs
only memory-maps the saved rows. The rows, and their order, are those of the row-by-row renderers of
:mod:`alignx.data.render` (tested equal): translation pairs of every file, then their reversed copies
(``data.both_directions``), then the instruction rows of every file.

Columns: ``input_ids``, ``labels`` (int32 lists), ``x_span``, ``y_span`` ([start, end) or null), ``src_lang``,
``tgt_lang`` (int64, -1 for instruction rows), ``length`` (the Trainer's length-grouped sampler reads it) and
``n_labels`` (tokens that carry the next-token loss).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignx.config import DataConfig
from alignx.data.readers import (
    DataError,
    Instruction,
    Pair,
    ReadStats,
    iter_instructions,
    iter_parallel,
    source_identity,
)
from alignx.data.render import (
    DIGEST_COLUMNS,
    Example,
    RowDigest,
    _render_instruction_rows,
    _render_translation_rows,
    as_example,
)
from alignx.objectives.ntp import IGNORE_INDEX
from alignx.utils import read_json, write_json

log = logging.getLogger("alignx.data")

FORMAT = 1  # what a cached dataset holds; bump when the rendering changes
META = "alignx_data.json"
_READ_BATCH = 4096
_MAP_BATCH = 1000
_PARALLEL_AUTO_ROWS = 20_000  # data.num_proc unset: one process below this many rows, else one per core (at most 8)


@dataclass
class TrainData:
    dataset: Any  # datasets.Dataset with the columns of the module docstring
    counts: dict[str, Any]  # rows read / skipped / rendered / dropped, tokens, target tokens
    digest: str  # of the rendered rows in order (alignx.data.render.RowDigest)
    cache: str  # the directory the rows are memory-mapped from
    cache_hit: bool


def cache_root(d: DataConfig) -> Path:
    """``data.cache_dir``, else ``$ALIGNX_DATA_CACHE``, else ``$ALIGNX_CACHE/data`` (``~/.cache/alignx/data``)."""
    if d.cache_dir:
        return Path(d.cache_dir).expanduser()
    if os.environ.get("ALIGNX_DATA_CACHE"):
        return Path(os.environ["ALIGNX_DATA_CACHE"]).expanduser()
    return Path(os.environ.get("ALIGNX_CACHE") or Path.home() / ".cache" / "alignx") / "data"


def tokenizer_identity(tokenizer: Any) -> str:
    """Digest of what tokenising depends on: the fast tokenizer's full definition, its special tokens and chat template."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(tokenizer).__name__.encode())
    h.update(tokenizer.backend_tokenizer.to_str().encode() if getattr(tokenizer, "is_fast", False) else repr(tokenizer).encode())
    h.update(repr((tokenizer.eos_token_id, tokenizer.bos_token_id, getattr(tokenizer, "chat_template", None))).encode())
    return h.hexdigest()


def code_identity() -> str:
    """Digest of alignx's code that reads and renders rows: a change to it is a new cache key (no FORMAT bump to forget)."""
    from alignx import languages
    from alignx.data import readers, render

    h = hashlib.blake2b(digest_size=16)
    for module in (readers, render, languages, sys.modules[__name__]):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def cache_key(d: DataConfig, stage: int, loss_on_prompt: bool, tokenizer: Any) -> str:
    use_pairs = stage == 1 or d.translation_in_sft
    settings = {
        "format": FORMAT,
        "code": code_identity(),
        "stage": stage,
        "parallel": [source_identity(s) for s in d.parallel] if use_pairs else [],
        "instructions": [source_identity(s) for s in d.instructions] if stage == 2 else [],
        "loss_on_prompt": loss_on_prompt,
        "tokenizer": tokenizer_identity(tokenizer),
        **{k: getattr(d, k) for k in ("template", "translation_instruction", "both_directions", "max_length", "truncate_pairs",
                                      "max_pairs", "on_bad_row", "use_chat_template", "assistant_turns", "seed")},
    }
    return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=16).hexdigest()


def build(d: DataConfig, stage: int, tokenizer: Any, loss_on_prompt: bool) -> TrainData:
    """The rendered training rows of a stage (see module docstring), from the cache when it has them.

    The cache directory holds the Arrow files ``Dataset.map`` wrote (every row, dropped ones empty with their reason
    in ``drop``), ``keep.npy`` (the rows kept, when some were dropped) and ``alignx_data.json`` (files, counts, digest).
    It is built under a temporary name and renamed into place whole.
    """
    root = cache_root(d)
    key = cache_key(d, stage, loss_on_prompt, tokenizer)
    dest = root / key
    if dest.exists():  # an entry is renamed into place whole: it is checked before it is used
        damage = entry_damage(dest)
        if damage is None:
            meta = read_json(dest / META)
            rows = _load(dest, meta)
            log.info("stage %d data: %s (cached in %s)", stage, meta["summary"], dest)
            return TrainData(rows, meta["counts"], meta["digest"], str(dest), True)
        log.warning("stage %d data: the cache entry %s is damaged (%s); rendering it again", stage, dest, damage)
        _discard(dest)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{key}-"))  # ours alone, also with other machines on a shared disk
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the entry from other users of a shared cache
    try:
        every, counts, summary = _build(d, stage, tokenizer, loss_on_prompt, staging)
        files = [Path(f["filename"]).name for f in every.cache_files]
        keep, digest = _keep_and_digest(staging, files)
        for f in staging.iterdir():  # the read rows; the rendered ones are self-contained
            if f.name not in files:
                shutil.rmtree(f) if f.is_dir() else f.unlink()
        if keep is not None:
            import numpy as np

            np.save(staging / "keep.npy", keep)
        meta = {"format": FORMAT, "files": files, "counts": counts, "digest": digest, "summary": summary,
                "checks": {f.name: file_check(f) for f in sorted(staging.iterdir())}}
        write_json(staging / META, meta)
        try:
            staging.rename(dest)
        except OSError:
            if not (dest / META).is_file():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another process saved the same rows first: use those
            meta = read_json(dest / META)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in dest.iterdir())
    log.info("stage %d data: %s (cached in %s, %.1f MB; delete it freely)", stage, summary, dest, size / 1e6)
    return TrainData(_load(dest, meta), meta["counts"], meta["digest"], str(dest), False)


CHECK_BLOCKS, CHECK_BLOCK_BYTES = 64, 4096


def file_check(path: Path) -> dict[str, Any]:
    """What a cache entry's file must still be: its size and a digest of 64 evenly spaced 4 KiB blocks (first and last
    included). A fixed 256 KiB read per file whatever its size, so a cache hit stays cheap; a truncated file, or bytes
    overwritten in place across the rows, no longer matches."""
    size = path.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        for i in range(CHECK_BLOCKS):
            fh.seek(max(0, size - CHECK_BLOCK_BYTES) * i // (CHECK_BLOCKS - 1))
            h.update(fh.read(CHECK_BLOCK_BYTES))
    return {"size": size, "sampled_blake2b": h.hexdigest()}


def entry_damage(directory: Path) -> str | None:
    """Why the cache entry ``directory`` cannot be trusted (a missing or unreadable record, a missing file, a file whose
    size or sampled digest changed since it was written, Arrow files that do not open), or None when it checks out.
    Entries written before the checks existed are checked by opening their files only."""
    try:
        meta = read_json(directory / META)
        files = list(meta["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {META}"
    checks = meta.get("checks") or {}
    for name in [*files, *(n for n in checks if n not in files)]:
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        want = checks.get(name)
        if want is not None and file_check(path) != want:
            return f"{name} changed since it was written (size {path.stat().st_size}, was {want['size']})"
    try:
        import pyarrow as pa

        for name in files:  # Arrow's own framing: a truncated stream fails here, not mid-training
            with pa.memory_map(str(directory / name)) as fh, pa.ipc.open_stream(fh) as reader:
                reader.schema  # noqa: B018 - reading the header is the check
    except Exception as e:  # noqa: BLE001 - any failure to open means the entry is damaged
        return f"its Arrow files do not open ({type(e).__name__})"
    return None


def _discard(directory: Path) -> None:
    """Move a damaged entry out of the way (renamed first, so no other run maps it meanwhile) and delete it; a
    DataError naming it when that is impossible."""
    aside = directory.with_name(f".tmp-damaged-{directory.name}-{os.getpid()}")
    try:
        directory.rename(aside)
        shutil.rmtree(aside)
    except OSError as e:
        if directory.exists():
            raise DataError(f"{directory}: damaged cache entry that cannot be removed ({e.strerror}); delete it "
                            f"(rm -r {directory}) and rerun") from None


def _load(directory: Path, meta: dict[str, Any]) -> Any:
    """The kept rows of a cache directory, memory-mapped."""
    import datasets

    ds = datasets.concatenate_datasets([datasets.Dataset.from_file(str(directory / f)) for f in meta["files"]])
    if (directory / "keep.npy").is_file():
        import numpy as np

        ds = ds.select(np.load(directory / "keep.npy"))
    return ds.remove_columns("drop")


def _keep_and_digest(directory: Path, files: list[str]) -> tuple[Any, str]:
    """(indices of the kept rows, or None when every row was kept; :class:`RowDigest` of the kept rows), read batch by
    batch from the Arrow files with plain reads (not memory-mapped, so the pages do not stay in this process)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    digest, keep, at = RowDigest(), [], 0
    for name in files:
        with pa.OSFile(str(directory / name)) as fh, pa.ipc.open_stream(fh) as reader:
            for batch in reader:
                mask = pc.equal(batch.column("drop"), "")
                kept = batch.filter(mask)
                keep.append(np.flatnonzero(mask.to_numpy(zero_copy_only=False)) + at)
                at += batch.num_rows
                for col in DIGEST_COLUMNS:
                    arr = kept.column(col)
                    if pa.types.is_list(arr.type):
                        lengths = pc.fill_null(pc.list_value_length(arr), -1).to_numpy(zero_copy_only=False)
                        digest.update(col, lengths, pc.list_flatten(arr).to_numpy(zero_copy_only=False))
                    else:
                        digest.update(col, None, arr.to_numpy(zero_copy_only=False))
    kept_rows = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return (None if len(kept_rows) == at else kept_rows), digest.hexdigest()


def _build(d: DataConfig, stage: int, tokenizer: Any, loss_on_prompt: bool, work: Path) -> tuple[Any, dict[str, Any], str]:
    """Read and render every source into ``work``: (the rendered rows, dropped ones included; counts; a summary)."""
    import datasets
    import pyarrow.compute as pc

    from alignx.config import ConfigError

    rstats = ReadStats()
    parts = []
    render = {"tokenizer": _share(tokenizer), "max_length": d.max_length, "loss_on_prompt": loss_on_prompt}
    if stage == 1 or d.translation_in_sft:
        pairs = [_sample(_arrow(work / f"parallel-{i}.arrow", _pair_rows(s, d.on_bad_row, rstats), _PAIR_SCHEMA), d.max_pairs, d.seed)
                 for i, s in enumerate(d.parallel)]
        pairs = [p for p in pairs if len(p)]
        if pairs:
            pairs_ds = datasets.concatenate_datasets(pairs)
            kw = {**render, "template": d.template, "instruction": d.translation_instruction, "truncate": d.truncate_pairs}
            for reverse in (False, True) if d.both_directions else (False,):
                parts.append(_map(pairs_ds, _render_pairs, {**kw, "reverse": reverse}, d, work / f"rows-pairs-{int(reverse)}.arrow",
                                  f"rendering stage {stage} translation rows{' (reversed)' if reverse else ''}"))
    if stage == 2:
        kw = {**render, "use_chat_template": d.use_chat_template, "all_turns": d.assistant_turns == "all"}
        for i, s in enumerate(d.instructions):
            rows = _sample(_arrow(work / f"instructions-{i}.arrow", _instruction_rows(s, d.on_bad_row, rstats), _INSTRUCTION_SCHEMA),
                           d.max_pairs, d.seed)
            if len(rows):
                parts.append(_map(rows, _render_chats, kw, d, work / f"rows-chats-{i}.arrow", "rendering instruction rows"))
    need = "data.parallel" if stage == 1 else "data.instructions or data.parallel"
    if not parts:
        raise ConfigError(f"stage {stage} has no training rows: give {need} (read {rstats.summary()}); check data.on_bad_row")
    every = datasets.concatenate_datasets(parts)
    drop = every.data.column("drop")
    drops = Counter({r["values"]: r["counts"] for r in pc.value_counts(drop).to_pylist() if r["values"]})
    kept = len(every) - sum(drops.values())
    summary = f"read {rstats.summary()}; rendered {kept} rows" + (
        f" ({', '.join(f'{n} {why}' for why, n in drops.items())} dropped)" if drops else "")
    if not kept:
        raise ConfigError(f"stage {stage} has no training rows: give {need} ({summary}); check data.max_length and data.on_bad_row")
    counts = {
        "rows_read": rstats.read,
        "rows_skipped": dict(rstats.skipped),
        "rows_flagged": dict(rstats.flagged),  # kept, but identical texts or text outside its language's script
        "examples": kept,
        "dropped": dict(drops),
        "tokens": int(pc.sum(every.data.column("length")).as_py()),  # a dropped row has none
        "target_tokens": int(pc.sum(every.data.column("n_labels")).as_py()),
    }
    return every, counts, summary


# ---- reading ---------------------------------------------------------------------------------------------------


def _schemas() -> tuple[Any, Any]:
    import pyarrow as pa

    pair = pa.schema([(k, pa.string()) for k in ("src", "tgt", "src_lang", "tgt_lang")])
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    chat = pa.schema([("messages", pa.list_(message)), ("lang", pa.string()), ("alpaca", pa.list_(pa.string()))])
    return pair, chat


_PAIR_SCHEMA, _INSTRUCTION_SCHEMA = _schemas()


def _pair_rows(source: str, on_bad_row: str, stats: ReadStats) -> Iterator[dict[str, Any]]:
    for p in iter_parallel(source, on_bad_row, stats):
        yield {"src": p.src, "tgt": p.tgt, "src_lang": p.src_lang, "tgt_lang": p.tgt_lang}


def _instruction_rows(source: str, on_bad_row: str, stats: ReadStats) -> Iterator[dict[str, Any]]:
    for r in iter_instructions(source, on_bad_row, stats):
        yield {"messages": r.messages, "lang": r.lang, "alpaca": list(r.alpaca) if r.alpaca is not None else None}


def _arrow(path: Path, rows: Iterator[dict[str, Any]], schema: Any) -> Any:
    """Write ``rows`` to an Arrow stream file in batches (never all in memory) and memory-map it as a Dataset."""
    import datasets
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == _READ_BATCH:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    return datasets.Dataset.from_file(str(path))


def _sample(ds: Any, n: int | None, seed: int) -> Any:
    """At most ``n`` rows, the same ones :func:`alignx.data.render.subsample` picks from the list of rows."""
    if n is None or n >= len(ds):
        return ds
    return ds.select(random.Random(seed).sample(range(len(ds)), n))


# ---- rendering -------------------------------------------------------------------------------------------------


def _features() -> Any:
    from datasets import Features, List, Value

    return Features({
        "input_ids": List(Value("int32")), "labels": List(Value("int32")), "x_span": List(Value("int32")),
        "y_span": List(Value("int32")), "src_lang": Value("int64"), "tgt_lang": Value("int64"), "length": Value("int32"),
        "n_labels": Value("int32"), "drop": Value("string"),
    })


# Tokenizers the map's worker processes reach by fork (they inherit this module's memory), by key: pickling a
# tokenizer into every worker takes seconds for a large vocabulary (Gemma-3's 262k: ~6 s, ~28 MB per worker).
_TOKENIZERS: dict[str, Any] = {}


def _share(tokenizer: Any) -> Any:
    """What fn_kwargs carries for ``tokenizer``: its key in :data:`_TOKENIZERS` where workers are forked, else itself."""
    import multiprocess

    if (multiprocess.get_start_method(allow_none=True) or multiprocess.get_all_start_methods()[0]) != "fork":
        return tokenizer
    key = f"tokenizer-{id(tokenizer)}"
    _TOKENIZERS[key] = tokenizer
    return key


def _shared(tokenizer: Any) -> Any:
    return _TOKENIZERS[tokenizer] if isinstance(tokenizer, str) else tokenizer


def _num_proc(d: DataConfig, rows: int) -> int | None:
    if d.num_proc is not None:
        return d.num_proc if d.num_proc > 1 else None
    if rows < _PARALLEL_AUTO_ROWS:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)  # CPU limits count
    return min(cores, 8) if cores > 1 else None


def _map(ds: Any, fn: Any, kwargs: dict[str, Any], d: DataConfig, cache_file: Path, desc: str) -> Any:
    # The fingerprint is given (the work file's name is unique under the cache key): datasets would otherwise hash the
    # tokenizer in fn_kwargs, which takes seconds for a large vocabulary.
    return ds.map(fn, batched=True, batch_size=_MAP_BATCH, fn_kwargs=kwargs, remove_columns=ds.column_names,
                  features=_features(), num_proc=_num_proc(d, len(ds)), cache_file_name=str(cache_file),
                  new_fingerprint=hashlib.blake2b(str(cache_file).encode(), digest_size=8).hexdigest(), desc=desc)


def _columns(rows: list[Example | str]) -> dict[str, list[Any]]:
    """Batch columns of rendered rows; a dropped row (its reason as a string) is kept, empty, with ``drop`` set."""
    out: dict[str, list[Any]] = {k: [] for k in ("input_ids", "labels", "x_span", "y_span", "src_lang", "tgt_lang", "length", "n_labels", "drop")}
    for r in rows:
        if isinstance(r, str):
            r, drop = Example([], []), r
        else:
            drop = ""
        out["input_ids"].append(r.input_ids)
        out["labels"].append(r.labels)
        out["x_span"].append(list(r.x_span) if r.x_span is not None else None)
        out["y_span"].append(list(r.y_span) if r.y_span is not None else None)
        out["src_lang"].append(r.src_lang)
        out["tgt_lang"].append(r.tgt_lang)
        out["length"].append(len(r.input_ids))
        out["n_labels"].append(len(r.labels) - r.labels.count(IGNORE_INDEX))
        out["drop"].append(drop)
    return out


def _render_pairs(batch: dict[str, list[Any]], *, reverse: bool, tokenizer: Any, template: str, instruction: str,
                  max_length: int, loss_on_prompt: bool, truncate: bool) -> dict[str, list[Any]]:
    tokenizer = _shared(tokenizer)
    cols = ("tgt", "src", "tgt_lang", "src_lang") if reverse else ("src", "tgt", "src_lang", "tgt_lang")
    pairs = [Pair(*row) for row in zip(*(batch[c] for c in cols), strict=True)]
    return _columns(_render_translation_rows(pairs, tokenizer, template, max_length, loss_on_prompt, instruction=instruction,
                                             truncate=truncate))


def _render_chats(batch: dict[str, list[Any]], *, tokenizer: Any, max_length: int, loss_on_prompt: bool,
                  use_chat_template: bool, all_turns: bool) -> dict[str, list[Any]]:
    tokenizer = _shared(tokenizer)
    rows = [Instruction(m, lang, tuple(a) if a is not None else None)
            for m, lang, a in zip(batch["messages"], batch["lang"], batch["alpaca"], strict=True)]
    return _columns(_render_instruction_rows(rows, tokenizer, max_length, use_chat_template, loss_on_prompt=loss_on_prompt,
                                             all_turns=all_turns))


def examples(ds: Any) -> list[Example]:
    """The rows of a rendered dataset as :class:`Example` objects (for tests and tools; training reads the dataset)."""
    return [as_example(row) for row in ds]
