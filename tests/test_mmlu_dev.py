"""Translated MMLU dev questions from lm-eval's wheel (alignx.data.mmlu_dev) and the alignx_mmlu tasks that read them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from alignx.data import mmlu_dev
from alignx.data.readers import DataError
from alignx.eval import benchmarks
from alignx.eval.benchmarks import PLACEHOLDER, TASKS_DIR
from conftest import tiny_lm

LANGS = ["de", "es", "fr", "hi", "it", "pt", "th"]


def _wheel_yaml(rel: str) -> dict:
    """A YAML of lm-eval's tasks, read here independently of the importer (``!function`` tags kept as text)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    root = Path(next(iter(importlib.util.find_spec("lm_eval").submodule_search_locations))) / "tasks"
    return yaml.load((root / rel).read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 - SafeLoader subclass


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    summary = mmlu_dev.main(out)
    assert summary["counts"] == {lang: 285 for lang in summary["languages"]} and summary["subjects"] == 57
    return out


def _rows(data_dir: Path, lang: str) -> list[dict]:
    return [json.loads(line) for line in (data_dir / "mmlu" / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_every_language_has_the_same_285_questions(data_dir):
    by_lang = {p.stem: _rows(data_dir, p.stem) for p in sorted((data_dir / "mmlu").glob("*.jsonl"))}
    assert set(LANGS) <= set(by_lang)
    ids = [r["id"] for r in by_lang["de"]]
    assert len(ids) == len(set(ids)) == 285
    subjects = [r["subject"] for r in by_lang["de"]]
    assert subjects == sorted(subjects) and len(set(subjects)) == 57
    for lang, rows in by_lang.items():
        assert [r["id"] for r in rows] == ids, lang
        assert [r["label"] for r in rows] == [r["label"] for r in by_lang["de"]], lang  # translations keep the answer letter
        for r in rows:
            assert set(r) == {"id", "subject", "question", "choices", "label"} and r["id"] == f"{r['subject']}/{r['id'].split('/')[1]}"
            assert r["label"] in (0, 1, 2, 3) and len(r["choices"]) == 4 and all(isinstance(c, str) and c for c in r["choices"])
            assert r["question"] and r["question"] == r["question"].strip()
    # English only where lm-eval ships English samples (0.4.13: none in llama3/instruct/mmlu/)
    has_en = bool(_wheel_yaml("llama3/instruct/mmlu/mmlu_anatomy.yaml").get("fewshot_config", {}).get("samples"))
    assert ("en" in by_lang) == has_en
    provenance = (data_dir / "mmlu" / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "285 questions per language = 57 subjects x 5 dev questions" in provenance and "Licence: unclear" in provenance
    assert f"lm-eval {mmlu_dev.lm_eval_version()}" in provenance


def test_known_question_matches_the_wheel(data_dir):
    row = next(r for r in _rows(data_dir, "de") if r["id"] == "anatomy/0")
    assert row["question"] == "Was ist der embryologische Ursprung des Zungenbeins?" and row["label"] == 3
    sample = _wheel_yaml("llama3/instruct/mmlu_de/mmlu_de_anatomy.yaml")["fewshot_config"]["samples"][0]
    assert sample["input_correct_responses"] == ["D"]
    assert row["choices"] == [sample["input_choice_list"][k] for k in "ABCD"] and row["question"] == sample["input_question"]
    assert [r["id"] for r in _rows(data_dir, "fr")].index("anatomy/0") == [r["id"] for r in _rows(data_dir, "de")].index("anatomy/0")


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ({"input_question": "Q?", "input_choice_list": {"A": "a", "B": "b", "C": "c"}, "input_correct_responses": ["A"]}, "exactly the 4 choices"),
        ({"input_question": "Q?", "input_choice_list": {"A": "a", "B": "b", "C": "c", "D": "d"}, "input_correct_responses": ["E"]}, "one letter of A, B, C, D"),
        ({"input_question": "Q?", "input_choice_list": {"A": "a", "B": "b", "C": "c", "D": 4}, "input_correct_responses": ["A"]}, "choice D must be a non-empty string"),
    ],
)
def test_malformed_sample_names_the_yaml(tmp_path, sample, expected):
    lang_dir = tmp_path / "llama3" / "instruct" / "mmlu_de"
    lang_dir.mkdir(parents=True)
    path = lang_dir / "mmlu_de_anatomy.yaml"
    path.write_text(yaml.safe_dump({"fewshot_config": {"samples": [sample]}, "process_docs": "x"}), encoding="utf-8")
    with pytest.raises(DataError, match=expected) as err:
        mmlu_dev.read_all(tmp_path)
    assert str(err.value).startswith(f"{path}: sample 0:") and "\n" not in str(err.value)


def test_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "alignx.data.mmlu_dev", f"out_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all((tmp_path / "mmlu" / f"{lang}.jsonl").is_file() for lang in LANGS) and (tmp_path / "mmlu" / "PROVENANCE.md").is_file()


def test_shipped_tasks_and_rendering(data_dir, tmp_path):
    group = yaml.safe_load((TASKS_DIR / "mmlu" / "_alignx_mmlu.yaml").read_text(encoding="utf-8"))
    assert group["group"] == "alignx_mmlu" and set(LANGS) <= {t.rsplit("_", 1)[1] for t in group["task"]}
    for task in group["task"]:
        cfg = yaml.load((TASKS_DIR / "mmlu" / f"{task}.yaml").read_text(encoding="utf-8"), Loader=benchmarks._Loader)  # noqa: S506
        assert cfg["include"] == "_template_yaml" and cfg["dataset_kwargs"]["data_files"] == {"test": f"{PLACEHOLDER}/mmlu/{task.rsplit('_', 1)[1]}.jsonl"}
    rendered = benchmarks.render_tasks(data_dir, tmp_path)
    assert {f"alignx_mmlu_{lang}" for lang in LANGS} <= set(rendered.available)
    assert benchmarks.resolve_tasks(["alignx_mmlu"], rendered)[0] == group["task"]
    benchmarks.check_benchmarks(["alignx_mmlu"], data_dir)  # rows have the fields the prompt reads

    # what lm-eval scores: "Answer:" then " A" .. " D" (the target delimiter " " + the bare letter)
    from lm_eval.tasks import TaskManager

    task = TaskManager(include_path=str(tmp_path), include_defaults=False).load(["alignx_mmlu_de"])["tasks"]["alignx_mmlu_de"]
    doc = next(d for d in task.test_docs() if d["id"] == "anatomy/0")
    ctx = task.doc_to_text(doc)
    assert ctx == (
        "Question: Was ist der embryologische Ursprung des Zungenbeins?\nA. Der erste Schlundbogen\n"
        "B. Der erste und der zweite Schlundbogen\nC. Der zweite Schlundbogen\nD. Der zweite und dritte Schlundbogen\nAnswer:"
    )
    requests = task.construct_requests(doc, ctx, metadata=("alignx_mmlu_de", 0, 1))
    assert [r.arguments for r in requests] == [(ctx, f" {letter}") for letter in "ABCD"] and task.doc_to_target(doc) == 3


def _continuation_logprob(model, tok, ctx: str, cont: str) -> float:
    ctx_ids = tok(ctx)["input_ids"]
    whole = tok(ctx + cont)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].log_softmax(-1)
    return sum(logits[i - 1, whole[i]].item() for i in range(len(ctx_ids), len(whole)))


def test_alignx_mmlu_runs_through_lm_eval(data_dir):
    docs = _rows(data_dir, "de")[:4]
    texts = [f"Question: {d['question']}\n" + "\n".join(f"{k}. {c}" for k, c in zip("ABCD", d["choices"], strict=True)) + "\nAnswer: A B C D" for d in docs]
    model, tok = tiny_lm(texts * 3)
    raw: dict = {}
    result = benchmarks.run_benchmarks(model, tok, ["alignx_mmlu_de"], data_dir, limit=4, batch_size=4, raw_out=raw)
    entry = result["mmlu"]["de"]
    assert entry["n"] == 4 and 0.0 <= entry["acc"] <= 1.0 and entry["acc_stderr"] is not None
    assert raw["results"]["alignx_mmlu_de"]["acc,none"] == entry["acc"]
    # the same 4 docs scored here by hand: lm-eval must agree
    correct = 0
    for d in docs:
        ctx = f"Question: {d['question']}\n" + "\n".join(f"{k}. {c}" for k, c in zip("ABCD", d["choices"], strict=True)) + "\nAnswer:"
        scores = [_continuation_logprob(model, tok, ctx, f" {k}") for k in "ABCD"]
        correct += int(max(range(4), key=scores.__getitem__) == d["label"])
    assert entry["acc"] == pytest.approx(correct / 4)
