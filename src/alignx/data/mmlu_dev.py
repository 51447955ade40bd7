"""Translated MMLU dev questions, read offline from lm-eval's wheel, as alignx benchmark data.

``python -m alignx.data.mmlu_dev out_dir=DIR`` writes ``DIR/mmlu/<lang>.jsonl`` (the data files of the
``alignx_mmlu`` lm-eval tasks; pass ``DIR`` as ``benchmark_data_dir``) and ``DIR/mmlu/PROVENANCE.md``.

Source: lm-eval ships, in ``tasks/llama3/instruct/mmlu_<lang>/mmlu_<lang>_<subject>.yaml``, the 5 MMLU
dev questions of each of the 57 subjects as ``fewshot_config.samples`` (``input_question``,
``input_choice_list`` {A, B, C, D}, ``input_correct_responses`` [letter]), translated by Meta for the
Llama 3.1 evaluations. They are parallel across languages (same questions, same order), so a row's
``id`` (``<subject>/<index>``) names the same question in every language. English is included as
``en`` only when ``tasks/llama3/instruct/mmlu/`` holds such samples too (lm-eval 0.4.13's does not).

Rows: ``{"id", "subject", "question", "choices": [4 strings], "label": 0..3}``, subjects sorted,
questions in the YAML's order; surrounding whitespace of the texts is stripped.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alignx import languages
from alignx.config import ConfigError, load_config, opt
from alignx.data.readers import DataError
from alignx.data.sources import MissingSourceError
from alignx.utils import atomic_write_text

LETTERS = ("A", "B", "C", "D")
SOURCE_SUBDIR = Path("llama3") / "instruct"  # under lm_eval/tasks
_LANG_DIR = re.compile(r"mmlu_([a-z]{2})")  # mmlu_de ...; not mmlu_cot / mmlu_pro


@dataclass
class MmluDevConfig:
    out_dir: str = opt("data/benchmarks", "benchmark data directory (benchmark_data_dir); files go to <out_dir>/mmlu/")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc] - libyaml's when built with it
    """Safe loader that reads lm-eval's ``!function module.name`` tags as plain text."""


_Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        raise DataError(f"{path}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a YAML mapping")
    return data


def lm_eval_tasks_dir() -> Path:
    """``<site-packages>/lm_eval/tasks`` of the installed lm-eval (found without importing it)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise MissingSourceError("lm-eval is not installed (pip install lm-eval==0.4.13): it ships the translated MMLU dev questions")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


def lm_eval_version() -> str:
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _subject_files(lang_dir: Path, prefix: str) -> dict[str, Path]:
    """subject -> YAML for the files ``<prefix><subject>.yaml`` of a language directory."""
    return {p.name[len(prefix) : -len(".yaml")]: p for p in sorted(lang_dir.glob(f"{prefix}*.yaml"))}


def _samples(path: Path) -> list[Any] | None:
    samples = (_load(path).get("fewshot_config") or {}).get("samples")
    return samples if isinstance(samples, list) and samples else None


def source_files(tasks_dir: Path | None = None) -> dict[str, dict[str, Path]]:
    """``{lang: {subject: yaml}}`` for every language whose directory holds MMLU dev samples; English
    (``mmlu/``) only when its subject YAMLs carry samples too."""
    root = (tasks_dir or lm_eval_tasks_dir()) / SOURCE_SUBDIR
    found: dict[str, dict[str, Path]] = {}
    candidates: list[tuple[str, Path, str]] = [("en", root / "mmlu", "mmlu_")]
    for d in sorted(root.glob("mmlu_*")):
        m = _LANG_DIR.fullmatch(d.name)
        if m and d.is_dir():
            candidates.append((m[1], d, f"{d.name}_"))
    for code, lang_dir, prefix in candidates:
        files = _subject_files(lang_dir, prefix) if lang_dir.is_dir() else {}
        if not files or _samples(next(iter(files.values()))) is None:
            continue  # no translated samples here (lm-eval's English MMLU tasks read the hub instead)
        try:
            lang = languages.normalize(code)
        except languages.UnknownLanguageError:
            continue
        found[lang] = files
    if not found:
        raise MissingSourceError(f"no MMLU dev samples under {root} (lm-eval {lm_eval_version()}; expected mmlu_<lang>/mmlu_<lang>_<subject>.yaml)")
    return found


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {what} must be a non-empty string, got {value!r}")
    return value.strip()


def read_subject(path: Path, subject: str) -> list[dict[str, Any]]:
    """The rows of one subject YAML; a malformed sample is a DataError naming the YAML and the sample."""
    samples = _samples(path)
    if samples is None:
        raise DataError(f"{path}: no fewshot_config.samples")
    rows = []
    for i, sample in enumerate(samples):
        where = f"{path}: sample {i}"
        if not isinstance(sample, dict):
            raise DataError(f"{where}: expected a mapping, got {type(sample).__name__}")
        choices = sample.get("input_choice_list")
        if not isinstance(choices, dict) or sorted(map(str, choices)) != list(LETTERS):
            keys = sorted(map(str, choices)) if isinstance(choices, dict) else choices
            raise DataError(f"{where}: input_choice_list must have exactly the 4 choices A, B, C, D, got {keys!r}")
        answer = sample.get("input_correct_responses")
        if not isinstance(answer, list) or len(answer) != 1 or answer[0] not in LETTERS:
            raise DataError(f"{where}: input_correct_responses must be one letter of A, B, C, D, got {answer!r}")
        rows.append({
            "id": f"{subject}/{i}",
            "subject": subject,
            "question": _text(sample.get("input_question"), where, "input_question"),
            "choices": [_text(choices[letter], where, f"choice {letter}") for letter in LETTERS],
            "label": LETTERS.index(answer[0]),
        })  # fmt: skip
    return rows


def read_all(tasks_dir: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """``{lang: rows}`` for every language found, checked to be parallel (the same ids in every language)."""
    out = {lang: [row for subject, path in sorted(files.items()) for row in read_subject(path, subject)] for lang, files in source_files(tasks_dir).items()}
    ref_lang, ref_rows = next(iter(out.items()))
    ref_ids = [r["id"] for r in ref_rows]
    for lang, rows in out.items():
        ids = [r["id"] for r in rows]
        if ids != ref_ids:
            diff = sorted(set(ids) ^ set(ref_ids))[:3] or ["same ids, other order"]
            raise DataError(f"MMLU dev samples of {lang} are not parallel to {ref_lang}: {len(ids)} vs {len(ref_ids)} questions, e.g. {', '.join(diff)}")
    return out


def _provenance(by_lang: dict[str, list[dict[str, Any]]], source: Path, out_dir: Path) -> str:
    n = len(next(iter(by_lang.values())))
    subjects = sorted({r["subject"] for r in next(iter(by_lang.values()))})
    per_subject = sorted({sum(r["subject"] == s for r in next(iter(by_lang.values()))) for s in subjects})
    version = lm_eval_version()
    langs = ", ".join(by_lang)
    english = "included as `en`" if "en" in by_lang else f"not included: lm-eval {version} has no English samples in `mmlu/`"
    return f"""# mmlu: translated MMLU dev questions

- Source: lm-eval {version}, `{source}`
  (`mmlu_<lang>/mmlu_<lang>_<subject>.yaml`, `fewshot_config.samples`: `input_question`, `input_choice_list`,
  `input_correct_responses`). These are Meta's translations of the MMLU dev split (the 5-shot exemplars), taken
  from the Llama 3.1 evaluation details (`meta-llama/Llama-3.1-8B-Instruct-evals`) and embedded by lm-eval in its
  `llama3/instruct` task YAMLs.
- Licence: unclear. MMLU itself (Hendrycks et al.) is MIT; the terms of Meta's translated eval details were not
  verified. Do not redistribute these files without checking.
- Languages: {langs} (English {english}).
- {n} questions per language = {len(subjects)} subjects x {"/".join(map(str, per_subject))} dev questions, parallel across languages:
  the same questions in the same order, so the `id` `<subject>/<index>` names the same question in every language.
- Rows: `{{"id", "subject", "question", "choices": [4 strings], "label": 0..3}}` (label = index of the correct letter
  A-D); subjects sorted, questions in the YAML's order; surrounding whitespace stripped.
- Caveats: only {n} questions per language (95% CI about +-6 points at 50% accuracy); these are the standard MMLU
  few-shot exemplars, so models tuned on or prompted with MMLU 5-shot may have seen them. Chance level: 25%.
- Written by: `python -m alignx.data.mmlu_dev out_dir={out_dir}`; evaluate with `tasks=alignx_mmlu` and
  `benchmark_data_dir={out_dir}`.
"""


def main(out_dir: str | Path | MmluDevConfig) -> dict[str, Any]:
    """Write ``<out_dir>/mmlu/<lang>.jsonl`` for every language found plus ``PROVENANCE.md``; returns a summary."""
    out_root = Path(out_dir.out_dir if isinstance(out_dir, MmluDevConfig) else out_dir)
    tasks_dir = lm_eval_tasks_dir()
    by_lang = read_all(tasks_dir)
    dest = out_root / "mmlu"
    dest.mkdir(parents=True, exist_ok=True)
    for lang, rows in by_lang.items():
        atomic_write_text(dest / f"{lang}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    source = tasks_dir / SOURCE_SUBDIR
    atomic_write_text(dest / "PROVENANCE.md", _provenance(by_lang, source, out_root))
    return {
        "out_dir": str(dest),
        "source": str(source),
        "lm_eval_version": lm_eval_version(),
        "languages": list(by_lang),
        "counts": {lang: len(rows) for lang, rows in by_lang.items()},
        "subjects": len({r["subject"] for r in next(iter(by_lang.values()))}),
    }


if __name__ == "__main__":
    try:
        result = main(load_config(MmluDevConfig, [], sys.argv[1:]))
    except (ConfigError, DataError, MissingSourceError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps(result, ensure_ascii=False), file=sys.stderr)
