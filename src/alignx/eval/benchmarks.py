"""Multilingual benchmarks through lm-evaluation-harness, on local data files.

The task definitions are data for lm-eval: ``alignx/eval/tasks/<benchmark>/`` holds a
``_template_yaml`` per benchmark, one small ``alignx_<benchmark>_<lang>.yaml`` per language
(``include:`` the template) and a group ``alignx_<benchmark>``. Benchmarks: xcopa, xnli,
xstorycloze, xwinograd, pawsx, belebele, mgsm; plus ``alignx_mc`` for alignx's own
``mc_heldout.jsonl`` (``{"lang","question","choices","label"}``).

lm-eval YAMLs hold static paths and do not expand variables, so the shipped files name their data
under a ``${ALIGNX_DATA_DIR}`` placeholder and :func:`render_tasks` writes a copy with the user's
directory filled in to a temporary ``include_path``; languages whose files are missing are left out
there (optional splits such as few-shot pools are dropped instead). For plain ``lm_eval`` use,
``envsubst`` on the YAMLs does the same substitution.

Any other task name (``hellaswag``, ``xcopa_sw`` ...) passes through to lm-eval's stock tasks,
which need their data sets from the hub.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignx import languages
from alignx.config import ConfigError
from alignx.data.readers import DataError, choice_row, iter_lines, json_object

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).parent / "tasks"
PLACEHOLDER = "${ALIGNX_DATA_DIR}"
PREFIX = "alignx_"
MC_FILE_NAME = "mc_heldout.jsonl"
_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
# Fields every row of a benchmark's files must have: the ones its prompt (tasks/<b>/_template_yaml, the
# per-language YAMLs and tasks/utils.py) reads. Checked before any model is loaded.
BENCHMARK_FIELDS: dict[str, tuple[str, ...]] = {
    "belebele": ("flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4", "correct_answer_num"),
    "mgsm": ("question", "answer_number"),
    "mmlu": ("question", "choices", "label"),
    "pawsx": ("sentence1", "sentence2", "label"),
    "xcopa": ("premise", "choice1", "choice2", "question", "label"),
    "xnli": ("premise", "hypothesis", "label"),
    "xstorycloze": ("input_sentence_1", "input_sentence_2", "input_sentence_3", "input_sentence_4", "sentence_quiz1", "sentence_quiz2", "answer_right_ending"),
    "xwinograd": ("sentence", "option1", "option2", "answer"),
}


# --------------------------------------------------------------------------------------------
# YAML round trip that keeps lm-eval's `!function` tags
# --------------------------------------------------------------------------------------------


class _FunctionRef(str):
    """A `!function module.name` value, kept as text so the YAML can be written back."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor("!function", lambda loader, node: _FunctionRef(loader.construct_scalar(node)))
_Dumper.add_representer(_FunctionRef, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def _load(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    return data


def _dump(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000), encoding="utf-8")


def _substitute(value: Any, data_dir: str) -> Any:
    if isinstance(value, _FunctionRef):
        return value
    if isinstance(value, str):
        return value.replace(PLACEHOLDER, data_dir)
    if isinstance(value, dict):
        return {k: _substitute(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, data_dir) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Shipped tasks and rendering
# --------------------------------------------------------------------------------------------


@dataclass
class RenderedTasks:
    """What :func:`render_tasks` wrote: an include_path and which alignx tasks can run."""

    include_path: Path
    available: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # task -> why it cannot run
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> all its shipped tasks
    langs: dict[str, str] = field(default_factory=dict)  # task -> alignx language code


def shipped_groups() -> dict[str, list[str]]:
    """``{"alignx_xcopa": ["alignx_xcopa_et", ...], ...}`` from the shipped group YAMLs."""
    groups = {}
    for path in sorted(TASKS_DIR.glob("*/_alignx_*.yaml")):
        data = _load(path)
        groups[data["group"]] = list(data["task"])
    return groups


def _lang_of(task: str) -> str:
    return task.rsplit("_", 1)[1]


def _check_splits(task: str, cfg: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Drop data files that do not exist; returns (updates to the task YAML, reason it cannot run)."""
    files: dict[str, str] = cfg.get("dataset_kwargs", {}).get("data_files", {})
    present = {split: path for split, path in files.items() if Path(path).is_file()}
    if len(present) == len(files):
        return {}, None
    updates: dict[str, Any] = {"dataset_kwargs": {**cfg["dataset_kwargs"], "data_files": present}}
    return updates, ", ".join(sorted(p for s, p in files.items() if s not in present))


def render_tasks(data_dir: str | Path | None, out_dir: str | Path, mc_file: str | Path | None = None) -> RenderedTasks:
    """Write the shipped task YAMLs with ``data_dir`` filled in, keeping only runnable languages.

    A language is runnable when the file of its evaluation split (test, else validation) exists;
    missing optional splits (few-shot pools) are removed from that task. ``mc_file`` (default
    ``<data_dir>/mc_heldout.jsonl`` when present) becomes ``alignx_mc_<lang>`` tasks + group ``alignx_mc``.
    """
    out = Path(out_dir)
    rendered = RenderedTasks(include_path=out)
    root = str(Path(data_dir).expanduser().resolve()) if data_dir else None
    for bench_dir in sorted(p for p in TASKS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")):
        if bench_dir.name == "mc":
            continue
        (out / bench_dir.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(bench_dir / "_template_yaml", out / bench_dir.name / "_template_yaml")
        template = _load(bench_dir / "_template_yaml")
        for path in sorted(bench_dir.glob("alignx_*.yaml")):
            cfg = _load(path)
            task = cfg["task"]
            rendered.langs[task] = _lang_of(task)
            if root is None:
                rendered.missing[task] = "no benchmark data directory given"
                continue
            cfg = _substitute(cfg, root)
            updates, absent = _check_splits(task, cfg)
            if absent:
                merged = {**template, **cfg}
                kept = updates["dataset_kwargs"]["data_files"]
                eval_split = merged.get("test_split") or merged.get("validation_split")
                if eval_split not in kept:
                    rendered.missing[task] = f"data file not found: {absent}"
                    continue
                cfg.update(updates)
                for key in _SPLIT_KEYS:  # point lm-eval away from splits we have no file for
                    if merged.get(key) and merged[key] not in kept:
                        cfg[key] = None
            _dump(out / bench_dir.name / path.name, cfg)
            rendered.available.append(task)
        for path in bench_dir.glob("_alignx_*.yaml"):
            group = _load(path)
            rendered.groups[group["group"]] = list(group["task"])
            runnable = [t for t in group["task"] if t in rendered.available]
            if runnable:
                _dump(out / bench_dir.name / path.name, {**group, "task": runnable})
    if mc_file is None and root is not None and (Path(root) / MC_FILE_NAME).is_file():
        mc_file = Path(root) / MC_FILE_NAME
    rendered.groups["alignx_mc"] = []
    if mc_file is not None:
        _render_mc(Path(mc_file), out / "mc", rendered)
    return rendered


def _json_rows(path: Path) -> Any:
    """(file:line, object) for every non-blank line of a JSONL file; DataError naming file:line otherwise."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        yield where, json_object(line, where)


def read_mc_file(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Rows of a generic multiple-choice JSONL per language; errors name file:line."""
    by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for where, row in _json_rows(Path(path)):
        lang, choices, label = choice_row(row, where, ("question",))
        by_lang[lang].append({"question": row["question"], "choices": choices, "label": label})
    if not by_lang:
        raise DataError(f"{path}: no rows")
    return dict(by_lang)


def check_task_files(task_yaml: Path, fields: Sequence[str]) -> None:
    """Every row of every data file a rendered task YAML names is a JSON object with ``fields``."""
    files = _load(task_yaml).get("dataset_kwargs", {}).get("data_files", {})
    for path in files.values():
        n = 0
        for where, row in _json_rows(Path(path)):
            missing = [f for f in fields if f not in row]
            if missing:
                raise DataError(f"{where}: missing field(s) {', '.join(missing)} (rows of {task_yaml.parent.name} need {', '.join(fields)})")
            n += 1
        if not n:
            raise DataError(f"{path}: no rows")


def _render_mc(mc_file: Path, out: Path, rendered: RenderedTasks) -> None:
    if not mc_file.is_file():
        raise FileNotFoundError(f"multiple-choice file not found: {mc_file}")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(TASKS_DIR / "mc" / "_template_yaml", out / "_template_yaml")
    tasks = []
    for lang, rows in sorted(read_mc_file(mc_file).items()):
        data = out / "data" / f"{lang}.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        task = f"alignx_mc_{lang}"
        _dump(out / f"{task}.yaml", {"include": "_template_yaml", "task": task, "dataset_kwargs": {"data_files": {"test": str(data)}}})
        rendered.available.append(task)
        rendered.langs[task] = lang
        tasks.append(task)
    rendered.groups["alignx_mc"] = tasks
    _dump(out / "_alignx_mc.yaml", {"group": "alignx_mc", "task": tasks, "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}]})


# --------------------------------------------------------------------------------------------
# Task names and results
# --------------------------------------------------------------------------------------------


def resolve_tasks(names: Sequence[str], rendered: RenderedTasks) -> tuple[list[str], list[str]]:
    """(runnable alignx leaf tasks, stock lm-eval task names) for the requested names.

    Groups expand to their runnable languages (others are skipped with a warning); a requested
    language task whose data is missing is an error naming the file.
    """
    local: list[str] = []
    stock: list[str] = []
    for name in names:
        if name in rendered.groups:
            runnable = [t for t in rendered.groups[name] if t in rendered.available]
            if not runnable:
                why = "no mc file given" if name == "alignx_mc" else next(iter(rendered.missing[t] for t in rendered.groups[name]), "")
                raise ConfigError(f"tasks: {name}: no language has data ({why}); check benchmark_data_dir / mc_file")
            skipped = [t for t in rendered.groups[name] if t not in rendered.available]
            if skipped:
                shown = ", ".join(_lang_of(t) for t in skipped[:12]) + (", ..." if len(skipped) > 12 else "")
                log.warning("%s: %d language(s) without data skipped (%s)", name, len(skipped), shown)
            local += runnable
        elif name in rendered.available:
            local.append(name)
        elif name in rendered.missing:
            raise ConfigError(f"tasks: {name}: {rendered.missing[name]}; check benchmark_data_dir")
        elif name.startswith(PREFIX):
            known = ", ".join(sorted(rendered.groups))
            raise ConfigError(f"tasks: unknown alignx task {name!r}: groups are {known} (or <group>_<lang>)")
        else:
            stock.append(name)
    return list(dict.fromkeys(local)), list(dict.fromkeys(stock))


def check_benchmarks(tasks: Sequence[str], data_dir: str | Path | None, mc_file: str | Path | None = None) -> None:
    """Everything :func:`run_benchmarks` would find wrong only after loading the model: task names,
    missing data, rows without the fields a prompt reads, and stock task names lm-eval does not know."""
    if not tasks:
        return
    with tempfile.TemporaryDirectory(prefix="alignx_tasks_") as tmp:
        rendered = render_tasks(data_dir, tmp, mc_file)  # parses mc_file (file:line errors)
        local, stock = resolve_tasks(tasks, rendered)
        for task in local:
            bench = task.removeprefix(PREFIX).rsplit("_", 1)[0]
            if bench in BENCHMARK_FIELDS:
                check_task_files(Path(tmp) / bench / f"{task}.yaml", BENCHMARK_FIELDS[bench])
    if stock:
        from lm_eval.tasks import TaskManager

        known = set(TaskManager().all_tasks)  # indexes lm-eval's own task YAMLs (seconds): only for stock names
        unknown = [t for t in stock if t not in known]
        if unknown:
            raise ConfigError(f"tasks: unknown task(s) {', '.join(unknown)}: neither alignx_<benchmark>[_<lang>] nor an lm-eval task name")


# Suffixes of stock task names that name a language. Any three letters could be an ISO 639-3 code
# (law, cot, run) and many two-letter codes are abbreviations there too (haerae_rw, csatqa_li), so
# ISO 639 codes and locales (_mmmlu_pt_br) count only for the languages alignx was built with, while a
# FLORES-200 code (belebele_deu_Latn, global_piqa_..._asm_beng) may name any language. A locale whose
# region is one of those languages names two languages instead (mlqa_en_de, lambada_mt_de); "no" is
# Bokmål, as in :mod:`alignx.languages`.
_BUILT_IN = frozenset(lang.code for lang in languages.all_languages())
_FLORES_SUFFIX = re.compile(r"[a-z]{3}_[a-z]{4}", re.IGNORECASE)
_ISO_SUFFIX = re.compile(r"(?i:[a-z]{2,3})|[a-z]{2}_(?P<region>[a-z]{2})")  # MS_MV is no locale


def _task_lang(suffix: str) -> str | None:
    try:
        code = languages.normalize(suffix)
    except languages.UnknownLanguageError:
        return None
    if _FLORES_SUFFIX.fullmatch(suffix):
        return code
    iso = _ISO_SUFFIX.fullmatch(suffix)
    if iso is None or code not in _BUILT_IN or iso["region"] in _BUILT_IN:
        return None
    if len(suffix) == 2 and suffix.lower() not in (code, "no"):  # deprecated codes (in, iw) are words here
        return None
    return code


def split_task_name(task: str, rendered: RenderedTasks | None = None) -> tuple[str, str]:
    """``alignx_xcopa_sw`` -> ``("xcopa", "sw")``; stock ``belebele_deu_Latn`` -> ``("belebele", "de")``."""
    if rendered is not None and task in rendered.langs:
        return task.removeprefix(PREFIX).rsplit("_", 1)[0], rendered.langs[task]
    parts = task.split("_")
    for n in (2, 1):  # FLORES codes contain one underscore
        if len(parts) > n:
            lang = _task_lang("_".join(parts[-n:]))
            if lang is not None:
                return "_".join(parts[:-n]), lang
    return task, "all"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def summarize_results(results: dict[str, Any], rendered: RenderedTasks | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """lm-eval's output -> ``{benchmark: {lang: {"acc", "acc_stderr", "n", ["acc_norm", ...]}}}``.

    Generation tasks (MGSM) report exact match of the regex-extracted number as ``acc``.
    """
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    n_samples = results.get("n-samples", {})
    groups = set(results.get("groups", {}))
    for task, metrics in results["results"].items():
        if task in groups or task not in n_samples:
            continue
        values: dict[str, dict[str, Any]] = defaultdict(dict)  # filter -> metric -> value
        for key, value in metrics.items():
            if "," in key:
                metric, filt = key.split(",", 1)
                values[filt][metric] = value
        filt = "none" if "none" in values else "flexible-extract" if "flexible-extract" in values else next(iter(values), None)
        if filt is None:
            continue
        vals = values[filt]
        entry: dict[str, Any] = {}
        for src, dst in (("acc", "acc"), ("acc_norm", "acc_norm"), ("exact_match", "acc")):
            if src in vals and dst not in entry:
                entry[dst] = _number(vals[src])
                entry[f"{dst}_stderr"] = _number(vals.get(f"{src}_stderr"))
                if src == "exact_match":
                    entry["metric"] = f"exact_match,{filt}"
        if "acc" not in entry:  # other metrics: keep them under their own names
            entry.update({k: _number(v) for k, v in vals.items()})
        entry["n"] = int(n_samples[task]["effective"])
        bench, lang = split_task_name(task, rendered)
        out[bench][lang] = entry
    return dict(out)


def lm_eval_json(value: Any) -> Any:
    """lm-eval's results object as plain JSON, converted explicitly rather than by ``default=str``: numpy and
    torch numbers become numbers, NaN and infinities null (not JSON), sets and tuples lists, keys strings, and
    anything else (dtypes, task functions, tokenizer objects in the task configs) its ``str``."""
    import numpy as np
    import torch

    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): lm_eval_json(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return [lm_eval_json(v) for v in sorted(value, key=str)]
    if isinstance(value, list | tuple):
        return [lm_eval_json(v) for v in value]
    if isinstance(value, np.generic | np.ndarray | torch.Tensor):
        return lm_eval_json(value.tolist())
    return str(value)


def run_benchmarks(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    data_dir: str | Path | None,
    limit: int | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    mc_file: str | Path | None = None,
    seed: int = 0,
    max_gen_toks: int | None = None,
    raw_out: dict[str, Any] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate an in-memory HF model on alignx's local tasks and/or stock lm-eval tasks.

    Returns ``{benchmark: {lang: {"acc", "acc_stderr", "n", "items": {"acc": [per question, in document order]}}}}``
    (``acc_norm`` too when the task has it).
    ``num_fewshot=None`` keeps each task's default (0 for these). ``max_gen_toks`` caps generation
    tasks (MGSM; lm-eval's default is 256). ``raw_out`` is filled with lm-eval's own results object
    (every metric, task configs, versions), as plain JSON (:func:`lm_eval_json`).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    from alignx.eval.scoring import continuation_lm_class

    if not tasks:
        return {}
    with tempfile.TemporaryDirectory(prefix="alignx_tasks_") as tmp:
        rendered = render_tasks(data_dir, tmp, mc_file)
        local, stock = resolve_tasks(tasks, rendered)
        # indexing lm-eval's ~10k stock YAMLs costs seconds: only when a stock task is asked for
        manager = TaskManager(include_path=str(rendered.include_path), include_defaults=bool(stock))
        # lm-eval's HFLM, scoring log-likelihoods with the LM head at the scored positions only (alignx.eval.scoring)
        lm = continuation_lm_class()(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=local + stock,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=True,  # per-question outcomes: the hierarchical bootstrap of alignx compare resamples them
            bootstrap_iters=1000,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None,
        )
    if results is None:  # non-zero ranks under distributed evaluation
        return {}
    samples = results.pop("samples", {}) or {}
    if raw_out is not None:
        raw_out.update(lm_eval_json(results))
    summary = summarize_results(results, rendered)
    for task, rows in samples.items():
        bench, lang = split_task_name(task, rendered)
        entry = summary.get(bench, {}).get(lang)
        metric = "acc" if rows and "acc" in rows[0] else "exact_match" if rows and "exact_match" in rows[0] else None
        if entry is not None and metric is not None:
            entry["items"] = {"acc": [float(r[metric]) for r in sorted(rows, key=lambda r: r["doc_id"])]}
    return summary
