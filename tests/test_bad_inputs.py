"""Bad inputs, one row each: the exit status, the one line alignx prints, and that nothing was written.

Rows cover data files, settings (including those torch / transformers / peft would reject only mid-run), model
paths, output directories owned by another run, evaluation inputs and the other commands. Every row runs the
real CLI in-process (``alignx.cli.main``) on a tiny model; the snapshot of every file under the test's directories
(sizes and modification times) must be the same after the command as before it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from alignx import cli
from alignx.config import TrainConfig, load_config
from alignx.train import stage
from conftest import message, save_tiny_model, write_pairs

FIX = Path(__file__).parent / "fixtures"
ROW = {"src": "Hello", "tgt": "Hallo", "src_lang": "en", "tgt_lang": "de"}
TRAIN = ["train", "model.name_or_path={model}", "data.parallel=[{pairs}]", "output_dir={out}", "optim.max_steps=2",
         "optim.batch_size=4", "report_to=none", "save_steps=1", "logging_steps=1"]
EVAL = ["eval", "model.name_or_path={model}", "output_dir={out}", "limit=2", "max_new_tokens=4"]
TRANSLATE = [*EVAL, f"translation_files=[{FIX}/translation/test.jsonl]", f"translation_dev_files=[{FIX}/translation/dev.jsonl]", "shots=1"]


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread) -> dict[str, Path]:
    """A tiny model, good and bad data files, bad model directories, and two training runs to collide with."""
    root = tmp_path_factory.mktemp("bad_inputs")
    model = save_tiny_model(root / "model")
    pairs = write_pairs(root / "pairs.jsonl")
    d = root / "data"
    _write(d / "bad_utf8.jsonl", _jsonl(ROW).encode() + b'{"src": "caf\xe9", "tgt": "x", "src_lang": "en", "tgt_lang": "de"}\n')
    (d / "a_directory.jsonl").mkdir(parents=True)
    _write(d / "empty.jsonl", "")
    _write(d / "blank.jsonl", "\n  \n\n")
    _write(d / "bad_json.jsonl", _jsonl(ROW) + '{"src": "a", "tgt": \n')
    _write(d / "not_object.jsonl", "[1, 2]\n")
    _write(d / "missing.jsonl", _jsonl(ROW, {"src": "a", "tgt": "b"}))
    _write(d / "same_lang.jsonl", _jsonl(ROW, {**ROW, "tgt": "Hello!", "tgt_lang": "en"}))
    _write(d / "klingon.jsonl", _jsonl({**ROW, "tgt_lang": "klingon"}))
    _write(d / "empty_text.jsonl", _jsonl({**ROW, "tgt": "   "}))
    _write(d / "cols.tsv", "Hello\tHallo\ten\n")
    _write(d / "pairs.xlsx", "Hello,Hallo,en,de\n")
    _write(d / "moses.de-en.en", "one\ntwo\nthree\n")
    _write(d / "moses.de-en.de", "eins\nzwei\n")
    _write(d / "utf.de-en.en", "one\ntwo\n")
    _write(d / "utf.de-en.de", b"eins\nzw\xc3ei\n")
    _write(d / "chat.jsonl", _jsonl({"messages": [{"role": "user", "content": "Hi"}]}))
    _write(d / "neither.jsonl", _jsonl({"question": "Hi", "answer": "Hello"}))
    _write(d / "mc_bad.jsonl", _jsonl({"lang": "de", "question": "Q?", "choices": ["a", "b"], "label": 5}))
    _write(d / "bench" / "xnli" / "de" / "validation.jsonl", _jsonl({"premise": "A man.", "label": 0}))
    _write(d / "pipeline.yaml", "stage1:\n  loss: [unclosed\n")
    _write(d / "dup.yaml", "optim:\n  lr: 1.0e-4\n  batch_size: 4\n  lr: 3.0e-4\n")  # PyYAML alone keeps the last
    (d / "empty_runs").mkdir()
    _write(d / "typos.yaml", "lerning_rate: 1.0e-4\nlogging_stpes: 5\n")
    # model directories that are not models
    (root / "no_config").mkdir()
    _write(root / "no_config" / "README.md", "not a model")
    _write(root / "no_weights" / "config.json", (model / "config.json").read_text())
    _write(root / "corrupt" / "config.json", (model / "config.json").read_text())
    _write(root / "corrupt" / "model.safetensors", (model / "model.safetensors").read_bytes()[:100])
    from transformers import T5Config, T5Model

    T5Model(T5Config(vocab_size=50, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2)).save_pretrained(root / "t5")
    # a finished run (lr 5e-3) and a run whose data file changed after its checkpoints were written
    runs = root / "runs"
    fmt = {"model": model, "pairs": pairs, "out": runs / "done"}
    stage.main(load_config(TrainConfig, [], [a.format(**fmt) for a in TRAIN[1:]] + ["optim.lr=5e-3"]))
    drift = write_pairs(root / "drift.jsonl")
    fmt = {"model": model, "pairs": drift, "out": runs / "drift"}
    stage.main(load_config(TrainConfig, [], [a.format(**fmt) for a in TRAIN[1:]] + ["optim.max_steps=4"]))
    shutil.rmtree(runs / "drift" / "final")
    (runs / "drift" / "train_summary.json").unlink()
    write_pairs(drift, __import__("conftest").SENTENCES[:6])
    _write(runs / "old_eval" / "eval.json", '{"kind": "eval", "note": "an older evaluation"}\n')
    return {"root": root, "model": model, "pairs": pairs, "d": d, "runs": runs}


def _flores200() -> bool:
    from alignx.eval.translation import flores_tokenizer_available

    return flores_tokenizer_available("flores200")


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast is refused only without a GPU")


def _absent(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(importlib.util.find_spec(module) is not None, reason=f"{module} is installed")


# (id, argv, exit status, regex the one line must match). argv items are str.format templates over the fixture's
# paths ({model}, {pairs}, {d}, {root}, {runs}) and {out}, a fresh directory of the row; {{ }} is a literal brace.
CASES = [
    # ---- data files -----------------------------------------------------------------------------------------
    ("utf8", [*TRAIN, "data.parallel=[{d}/bad_utf8.jsonl]"], 2, r"bad_utf8\.jsonl:2: invalid UTF-8 \(byte 0xe9 at column 13\); convert the file to UTF-8"),
    ("directory", [*TRAIN, "data.parallel=[{d}/a_directory.jsonl]"], 2, r"data\.parallel: .*a_directory\.jsonl: is a directory; give a data file"),
    ("empty-file", [*TRAIN, "data.parallel=[{d}/empty.jsonl]"], 2, r"empty\.jsonl: empty file; give a file with rows"),
    ("blank-file", [*TRAIN, "data.parallel=[{d}/blank.jsonl]"], 2, r"blank\.jsonl: no rows \(only blank lines\)"),
    ("missing-file", [*TRAIN, "data.parallel=[{d}/nope.jsonl]"], 2, r"nope\.jsonl: no such file"),
    ("bad-json", [*TRAIN, "data.parallel=[{d}/bad_json.jsonl]"], 2, r"bad_json\.jsonl:2: invalid JSON"),
    ("not-object", [*TRAIN, "data.parallel=[{d}/not_object.jsonl]"], 2, r"not_object\.jsonl:1: expected a JSON object"),
    ("missing-fields", [*TRAIN, "data.parallel=[{d}/missing.jsonl]"], 2, r"missing\.jsonl:2: missing field\(s\) src_lang, tgt_lang"),
    ("same-language-pair", [*TRAIN, "data.parallel=[{d}/same_lang.jsonl]"], 2, r"same_lang\.jsonl:2: source and target are both 'en'"),
    ("language-code", [*TRAIN, "data.parallel=[{d}/klingon.jsonl]"], 2, r"klingon\.jsonl:1: unknown language code 'klingon'"),
    ("empty-text", [*TRAIN, "data.parallel=[{d}/empty_text.jsonl]"], 2, r"empty_text\.jsonl:1: empty source or target text"),
    ("tsv-columns", [*TRAIN, "data.parallel=[{d}/cols.tsv]"], 2, r"cols\.tsv:1: expected 4 tab-separated columns"),
    ("format", [*TRAIN, "data.parallel=[{d}/pairs.xlsx]"], 2, r"pairs\.xlsx: unknown data format '\.xlsx'; use \.jsonl"),
    ("moses-lines", [*TRAIN, "data.parallel=[{d}/moses.de-en]"], 2, r"moses\.de-en\.en:3: moses\.de-en\.de has 2 lines but moses\.de-en\.en has 3"),
    ("moses-utf8", [*TRAIN, "data.parallel=[{d}/utf.de-en]"], 2, r"utf\.de-en\.de:2: invalid UTF-8"),
    ("chat-last-turn", [*TRAIN, "stage=2", "data.parallel=[]", "data.instructions=[{d}/chat.jsonl]"], 2, r"chat\.jsonl:1: the last message must be the assistant's answer"),
    ("instruction-fields", [*TRAIN, "stage=2", "data.instructions=[{d}/neither.jsonl]"], 2, r"neither\.jsonl:1: expected instruction rows as .messages., ShareGPT .conversations."),
    ("no-data", [*TRAIN, "data.parallel=[]"], 2, r"stage 1 has no training rows: give data\.parallel"),
    ("all-rows-too-long", [*TRAIN, "data.max_length=4"], 2, r"stage 1 has no training rows.*24 too long.*check data\.max_length"),
    # ---- settings ------------------------------------------------------------------------------------------
    ("unknown-setting", [*TRAIN, "optim.learning_rate=1e-4"], 2, r"unknown setting optim\.learning_rate"),
    ("duplicate-yaml-key", [*TRAIN, "--config", "{d}/dup.yaml"], 2, r"dup\.yaml:4: duplicate key 'lr' \(first at line 2\); keep one"),
    ("typos-all-at-once", [*TRAIN, "--config", "{d}/typos.yaml"], 2,
     r"typos\.yaml: unknown settings lerning_rate \(did you mean learning_rate[,?].*\); logging_stpes \(did you mean logging_steps[,?]"),
    ("wrong-type", [*TRAIN, "optim.batch_size=eight"], 2, r"optim\.batch_size: expected int, got 'eight'"),
    ("bad-yaml", [*TRAIN, "--config", "{d}/pipeline.yaml"], 2, r"pipeline\.yaml:\d+: invalid YAML"),
    ("zero-epochs", [*TRAIN, "optim.max_steps=-1", "optim.epochs=-1"], 2, r"optim\.epochs must be > 0 \(or set optim\.max_steps > 0\)"),
    ("zero-steps", [*TRAIN, "optim.max_steps=0"], 2, r"optim\.max_steps must be > 0, or -1"),
    ("negative-lr", [*TRAIN, "optim.lr=-1e-4"], 2, r"optim\.lr must be >= 0"),
    ("save-steps", [*TRAIN, "save_steps=0"], 2, r"save_steps and save_total_limit must be >= 1"),
    ("lora-dropout", [*TRAIN, "lora.dropout=1.5"], 2, r"lora\.dropout must be in \[0, 1\)"),
    ("bad-row-policy", [*TRAIN, "data.on_bad_row=ignore"], 2, r"data\.on_bad_row must be 'error' or 'skip', got 'ignore'"),
    ("align-layer", [*TRAIN, "loss.align_layer=9"], 2, r"loss\.align_layer=9 is outside 1\.\.4"),
    ("template-field", [*TRAIN, "data.template={{language}} {{src}}"], 2, r"data\.template: unknown field or stray brace \(KeyError\('language'\)\)"),
    ("template-attribute", [*TRAIN, "data.template={{src_name.upper.x}} {{src}}"], 2, r"data\.template: unknown field or stray brace \(AttributeError"),
    ("instruction-field", [*TRAIN, "data.translation_instruction=Translate {{src}}"], 2, r"data\.translation_instruction: unknown field"),
    ("optimizer-name", [*TRAIN, "optim.optimizer=adamw_nope"], 2, r"optim\.optimizer=adamw_nope: not a name transformers knows; choose from"),
    ("hf-name-refused", [*TRAIN, "remove_unused_columns=true"], 2, r"override: remove_unused_columns: alignx sets this itself"),
    ("hf-name-twice", [*TRAIN, "learning_rate=1e-4", "optim.lr=1e-3"], 2, r"optim\.lr='1e-3' and learning_rate='1e-4' both set optim\.lr; keep one"),
    ("hf-value", [*TRAIN, "save_strategy=hourly"], 2, r"override: save_strategy: expected one of no\|steps\|epoch\|best, got 'hourly'"),
    ("eval-strategy", [*TRAIN, "eval_strategy=steps"], 2, r"eval_strategy=steps: alignx train takes no evaluation set"),
    ("chat-template-file", [*TRAIN, "data.chat_template={root}/none.jinja"], 2, r"data\.chat_template=.*none\.jinja: no such file"),
    ("assistant-turns", [*TRAIN, "data.assistant_turns=first"], 2, r"data\.assistant_turns must be last\|all, got 'first'"),
    ("modules-to-save", [*TRAIN, "lora.enabled=true", "lora.modules_to_save=[head]"], 2, r"lora\.modules_to_save: no module named 'head'"),
    pytest.param([*TRAIN, "optim.optimizer=adamw_bnb_8bit"], 2, r"optim\.optimizer=adamw_bnb_8bit: ImportError: .*bitsandbytes",
                 marks=_absent("bitsandbytes"), id="optimizer-package"),
    ("scheduler-arguments", [*TRAIN, "optim.scheduler=cosine_with_min_lr"], 2, r"optim\.scheduler=cosine_with_min_lr: ValueError: One of min_lr"),
    pytest.param([*TRAIN, "report_to=wandb"], 2, r"report_to=wandb: RuntimeError: WandbCallback requires wandb.*or set report_to=none",
                 marks=_absent("wandb"), id="tracker"),
    ("attention", [*TRAIN, "model.attn_implementation=fast"], 2, r"model\.attn_implementation=fast: ValueError: Specified `attn_implementation=\"fast\"` is not supported"),
    ("lora-targets", [*TRAIN, "lora.enabled=true", "lora.target_modules=attn_q"], 2, r"lora\.target_modules: no module named 'attn_q' in LlamaForCausalLM"),
    ("lora-one-typo", [*TRAIN, "lora.enabled=true", "lora.target_modules=[q_proj,foo_proj]"], 2,
     r"lora\.target_modules: no module named 'foo_proj' in LlamaForCausalLM \(did you mean o_proj"),
    ("max-length", [*TRAIN, "data.max_length=4096"], 2, r"data\.max_length=4096 exceeds the model's 2048 positions"),
    pytest.param([*TRAIN, "model.autocast=fp16", "model.dtype=float32"], 2, r"model\.autocast=fp16 needs a CUDA GPU", marks=no_cuda, id="fp16-on-cpu"),
    ("resume-and-overwrite", [*TRAIN, "resume=latest", "overwrite_output_dir=true"], 2, r"resume and overwrite_output_dir=true exclude each other"),
    ("resume-path", [*TRAIN, "resume={root}/nowhere/checkpoint-2"], 2, r"resume=.*checkpoint-2: no such checkpoint directory"),
    ("resume-incomplete", [*TRAIN, "resume={d}"], 2, r"resume=.*data: not a complete checkpoint \(no trainer_state\.json\)"),
    # ---- model paths ---------------------------------------------------------------------------------------
    ("model-missing", [*TRAIN, "model.name_or_path={root}/nowhere"], 2, r"model\.name_or_path=.*nowhere: no such directory"),
    ("model-is-file", [*TRAIN, "model.name_or_path={pairs}"], 2, r"model\.name_or_path=.*pairs\.jsonl: a file, not a model directory"),
    ("model-no-config", [*TRAIN, "model.name_or_path={root}/no_config"], 2, r"no_config: no config\.json, so not a Hugging Face model directory"),
    ("model-no-weights", [*TRAIN, "model.name_or_path={root}/no_weights"], 2, r"no_weights: no weights \(model\.safetensors"),
    ("model-corrupt", [*TRAIN, "model.name_or_path={root}/corrupt"], 2, r"corrupt/model\.safetensors: not a readable safetensors file"),
    ("model-not-causal", [*TRAIN, "model.name_or_path={root}/t5"], 2, r"t5: a 't5' model, which transformers cannot load as a causal LM"),
    ("model-empty", [*TRAIN, "model.name_or_path="], 2, r"model\.name_or_path is empty"),
    ("model-hub-offline", [*TRAIN, "model.name_or_path=nobody/no-such-model"], 2, r"model\.name_or_path=nobody/no-such-model: cannot read the model config \(not a local directory"),
    # ---- output directories --------------------------------------------------------------------------------
    ("finished-run", [*TRAIN, "output_dir={runs}/done", "optim.lr=5e-3"], 2, r"runs/done already holds a finished run of these settings \(final/\): set overwrite_output_dir=true"),
    ("another-run", [*TRAIN, "output_dir={runs}/done"], 2, r"runs/done holds the outputs of another run \(.*\), written with other settings \(optim\.lr: 0\.005 -> 2e-06\)"),
    ("resume-other-settings", [*TRAIN, "output_dir={runs}/done", "resume=latest", "optim.lr=1e-3"], 2, r"resume=latest: output_dir .*done holds a run written with other settings \(optim\.lr: 0\.005 -> 0\.001\)"),
    ("resume-changed-data", [*TRAIN, "output_dir={runs}/drift", "data.parallel=[{root}/drift.jsonl]", "optim.max_steps=4", "resume=latest"], 2,
     r"resume=latest: .*checkpoint-4 was written from other training data \(the rendered rows differ\): start over with overwrite_output_dir=true"),
    ("output-dir-is-file", [*TRAIN, "output_dir={pairs}"], 2, r"output_dir .*pairs\.jsonl is a file, not a directory"),
    ("eval-output-dir-is-file", [*TRANSLATE, "output_dir={pairs}"], 2, r"output_dir .*pairs\.jsonl is a file, not a directory"),
    # ---- evaluation inputs ---------------------------------------------------------------------------------
    ("eval-nothing", EVAL, 2, r"nothing to evaluate"),
    ("eval-task", [*EVAL, "tasks=[alignx_xnlii]", f"benchmark_data_dir={FIX}/benchmarks"], 2, r"tasks: unknown alignx task 'alignx_xnlii'"),
    ("eval-stock-task", [*EVAL, "tasks=[no_such_task]"], 2, r"tasks: unknown task\(s\) no_such_task"),
    ("eval-task-no-data", [*EVAL, "tasks=[alignx_xcopa]", f"benchmark_data_dir={FIX}/benchmarks"], 2, r"tasks: alignx_xcopa: no language has data"),
    ("eval-benchmark-fields", [*EVAL, "tasks=[alignx_xnli_de]", "benchmark_data_dir={d}/bench"], 2, r"xnli/de/validation\.jsonl:1: missing field\(s\) hypothesis"),
    ("eval-mc-file", [*EVAL, "tasks=[alignx_mc]", "mc_file={d}/mc_bad.jsonl"], 2, r"mc_bad\.jsonl:1: 'label' must be an index into choices"),
    ("eval-shots", [*TRANSLATE, "shots=50"], 2, r"shots=50: 50-shot prompts need 50 dev pairs for en-de, only \d+ available"),
    ("eval-translation-utf8", [*EVAL, "translation_files=[{d}/bad_utf8.jsonl]", "shots=0"], 2, r"bad_utf8\.jsonl:2: invalid UTF-8"),
    ("eval-direction", [*TRANSLATE, "directions=[en-xx]"], 2, r"bad translation direction 'en-xx'"),
    ("eval-direction-absent", [*TRANSLATE, "directions=[en-fr]"], 2, r"directions: no pairs for en-fr"),
    ("eval-flores-directions", [*EVAL, f"flores_dir={FIX}/translation/flores"], 2, r"flores_dir needs directions"),
    pytest.param([*TRANSLATE, "bleu_tokenize=flores200"], 2, r"BLEU tokenizer flores200 needs `pip install sentencepiece`",
                 marks=pytest.mark.skipif(_flores200(), reason="flores200 is available offline here"), id="eval-bleu-tokenizer"),
    ("eval-chat-template", [*TRANSLATE, "use_chat_template=true"], 2, r"use_chat_template=true but the tokenizer has no chat template"),
    ("eval-comet-opt-in", [*TRANSLATE, "comet_model={pairs}"], 2, r"comet_model=.*a COMET checkpoint is a pickle.*trust_comet_checkpoint=true"),
    ("eval-perplexity-langs", [*EVAL, "perplexity_files=[{pairs}]", "perplexity_langs=[ja]"], 2, r"perplexity_files have no sentences in ja"),
    ("eval-model", [*TRANSLATE, "model.name_or_path={root}/no_config"], 2, r"no_config: no config\.json"),
    ("eval-keeps-older-result", [*TRANSLATE, "output_dir={runs}/old_eval", "shots=50"], 2, r"shots=50: 50-shot prompts"),
    # ---- other commands ------------------------------------------------------------------------------------
    ("analyze-data", ["analyze", "model.name_or_path={model}", "parallel=[{d}/missing.jsonl]", "output_dir={out}"], 2, r"missing\.jsonl:2: missing field\(s\)"),
    ("analyze-model", ["analyze", "model.name_or_path={root}/no_weights", "parallel=[{pairs}]", "output_dir={out}", "min_sentences=2"], 2,
     r"model\.name_or_path=.*no_weights: cannot load the model"),
    ("pipeline-yaml", ["pipeline", "--config", "{d}/pipeline.yaml"], 2, r"pipeline\.yaml:\d+: invalid YAML"),
    ("pipeline-stage-data", ["pipeline", "stage1.model.name_or_path={model}", "stage1.data.parallel=[{d}/bad_json.jsonl]", "output_dir={out}",
                             "stage1.report_to=none"], 2, r"bad_json\.jsonl:2: invalid JSON"),
    ("experiment-arm", ["experiment", "arms=[{d}/no_arm.yaml]", "output_dir={out}"], 2, r"no_arm\.yaml: file not found"),
    ("compare-missing-runs", ["compare", "runs_dir={root}/no_runs_here", "pairs=[a:b]"], 2, r"runs_dir=.*no_runs_here: no such directory"),
    ("compare-empty-runs", ["compare", "runs_dir={d}/empty_runs", "pairs=[a:b]"], 2, r"runs_dir=.*empty_runs: holds no arm directories"),
    ("export-adapter", ["export", "adapter_dir={root}/no_config", "output_dir={out}"], 2, r"adapter_dir: .*no_config has no adapter_config\.json"),
]


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("argv", "status", "pattern"), [c if hasattr(c, "marks") else pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(world, tmp_path, capsys, monkeypatch, argv, status, pattern):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id must fail fast, not wait for the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "out"
    argv = [a.format(out=out, **world) for a in argv]
    before = _snapshot(world["root"], tmp_path)
    assert cli.main(argv) == status
    line = message(capsys.readouterr().err, argv[0])
    assert re.search(pattern, line), line
    assert _snapshot(world["root"], tmp_path) == before
    assert not out.exists()


def test_there_are_at_least_forty_rows():
    assert len(CASES) >= 40


def test_debug_switch_shows_the_traceback(world, monkeypatch):
    monkeypatch.setenv("ALIGNX_DEBUG", "1")
    with pytest.raises(ValueError, match="empty file"):
        cli.main([a.format(out=world["root"] / "x", **world) for a in [*TRAIN, "data.parallel=[{d}/empty.jsonl]"]])


def test_a_moses_prefix_with_a_fifo_is_refused_not_read(world, tmp_path):
    """A Moses/OPUS prefix whose second file is a FIFO, and a FIFO given as the YAML config: refused in one line
    (exit 2) before anything opens them. Both used to hang for ever (the cache key hashed the FIFO; the config was
    read), hence the subprocesses and their timeouts."""
    import os
    import subprocess
    import sys

    prefix = tmp_path / "corpus.de-en"
    Path(f"{prefix}.de").write_text("Hallo Welt\n", encoding="utf-8")
    os.mkfifo(f"{prefix}.en")
    argv = [sys.executable, "-m", "alignx.cli", "train", f"model.name_or_path={world['model']}", f"data.parallel=[{prefix}]",
            f"output_dir={tmp_path / 'out'}", "optim.max_steps=1", "report_to=none"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search(r"corpus\.de-en\.en: not a regular file", proc.stderr)
    assert not (tmp_path / "out").exists()
    os.mkfifo(tmp_path / "cfg.yaml")  # a config "file" that is a FIFO: refused, not read
    proc = subprocess.run([sys.executable, "-m", "alignx.cli", "train", "--config", str(tmp_path / "cfg.yaml")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "cfg.yaml: not a regular file; give a YAML config file" in proc.stderr


def test_a_model_with_its_own_code_names_trust_remote_code(world, tmp_path, capsys):
    """A model directory whose config maps to its own Python modules: one line naming model.trust_remote_code."""
    d = tmp_path / "custom"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "mycustom", "architectures": ["MyCustomForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_my.MyConfig", "AutoModelForCausalLM": "modeling_my.MyModel"}}))
    (d / "configuration_my.py").write_text("from transformers import PretrainedConfig\n\n\nclass MyConfig(PretrainedConfig):\n"
                                           "    model_type = 'mycustom'\n")
    status = cli.main(["analyze", f"model.name_or_path={d}", f"parallel=[{world['pairs']}]", "min_sentences=2", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "set model.trust_remote_code=true" in err
