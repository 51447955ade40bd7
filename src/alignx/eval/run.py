"""``alignx eval``: benchmarks (lm-eval on local files) + in-context translation -> ``<output_dir>/eval.json``.

eval.json schema (read by ``alignx report``)::

    {"kind": "eval", "run_name", "model", "config": {...}, "env": {...},
     "benchmarks": {benchmark: {lang: {"acc", "acc_stderr", "n", ["acc_norm", "acc_norm_stderr"]}}},
     "translation": {"<src>-<tgt>": {"spbleu", "chrf++", "bleu_signature", "chrf_signature", "off_target", "n",
                                     "comet", "tokenizer", "shots", "langid", "samples": [{src, ref, hyp} x 5],
                                     "items": {"chrf_stats": [[24 ints] per sentence], "off_target": [0/1 ...]}}},
     "transfer": {"source_lang", "acc": {lang: {"acc", "n", "chance", "items": {"correct": [0/1 ...], "cluster": [...]}}},
                  "gap": {lang: source acc - acc}},
     "perplexity": {lang: {"ppl", "n", "tokens", "items": {"nll": [...], "tokens": [...]}}}}

``bleu_signature`` / ``chrf_signature`` are sacrebleu's metric signatures (``nrefs:1|case:mixed|eff:no|tok:13a|
smooth:exp|version:2.6.0``); ``langid`` is the off-target check used (py3langid, script, or none where the target's
script is unknown). When benchmarks ran, lm-eval's own results object (every metric, task configs, versions) is
saved beside eval.json as ``lm_eval_results.json``.

Every input (model path, task names, benchmark files, translation and perplexity files, shot counts, BLEU
tokenizer, COMET opt-in) is checked before the model is loaded. ``eval.json``, ``lm_eval_results.json`` and the
translation files are written together at the end, atomically, eval.json last; when a part fails after others finished, the finished parts go to
``eval.partial.json`` and an older ``eval.json`` is left as it was (its own config says what it measured).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignx import languages
from alignx.config import ConfigError, ModelConfig, opt, section, to_dict
from alignx.eval.perplexity import run_perplexity, sentences_by_language
from alignx.eval.transfer import read_transfer_files, run_transfer
from alignx.eval.translation import (
    BLEU_TOKENIZERS,
    Pair,
    check_translation_sets,
    load_translation_sets,
    parse_direction,
    run_translation,
    write_translations,
)
from alignx.model import load as mload
from alignx.utils import environment, output_lock, write_json

log = logging.getLogger(__name__)
LM_EVAL_RESULTS = "lm_eval_results.json"  # lm-eval's raw results, beside eval.json


@dataclass
class EvalConfig:
    model: ModelConfig = section(ModelConfig, "model to evaluate")
    tasks: list[str] = opt([], "benchmarks: alignx_<b> groups (b = xcopa xnli xstorycloze xwinograd pawsx belebele mgsm mmlu), alignx_<b>_<lang>, alignx_mc, or stock lm-eval task names (need the hub)")
    benchmark_data_dir: str | None = opt(None, "root of local benchmark files: <dir>/xcopa/<lang>/test.<lang>.jsonl, <dir>/belebele/<flores>.jsonl, ... (see alignx/eval/tasks/*/_template_yaml)")
    mc_file: str | None = opt(None, "generic multiple-choice JSONL {lang,question,choices,label} for alignx_mc (default <benchmark_data_dir>/mc_heldout.jsonl)")
    num_fewshot: int | None = opt(None, "benchmark few-shot examples (None: each task's default, 0)")
    benchmark_max_gen_toks: int | None = opt(None, "cap on generated tokens for generation benchmarks (MGSM); None: lm-eval's 256")
    translation_files: list[str] = opt([], "parallel JSONL {src,tgt,src_lang,tgt_lang} test files")
    translation_dev_files: list[str] = opt([], "parallel JSONL pools for k-shot demonstrations (default: the test file, test pair excluded)")
    flores_dir: str | None = opt(None, "FLORES-style directory of <flores_code>.<split> line files (dev/ and devtest/ subdirs allowed)")
    flores_split: str = opt("devtest", "FLORES split evaluated; demonstrations come from 'dev'")
    directions: list[str] = opt([], "translation directions, e.g. en-de,de-en (default: every direction in the JSONL files)")
    shots: int = opt(8, "in-context translation examples per prompt (paper: 8)")
    fixed_shots: bool = opt(
        False, "the same demonstrations for every sentence of a direction (seeded, none sharing a sentence with the test "
        "set) instead of a draw per sentence: the prompts' shared start is encoded once and its cache reused",
    )
    use_chat_template: bool = opt(False, "wrap translation prompts in the tokenizer's chat template (instruct models)")
    bleu_tokenize: str = opt("auto", "sacrebleu tokenizer: auto (flores101 when its SentencePiece model is available offline, else 13a/zh/char per target) | flores101 | flores200 | 13a | intl | char | zh | none")
    comet_model: str | None = opt(None, "local COMET checkpoint (.ckpt) for unbabel-comet; None: COMET is null")
    trust_comet_checkpoint: bool = opt(
        False, "load comet_model: a COMET checkpoint is a pickle, and loading one runs code from the file; set true only for a checkpoint you trust"
    )
    langid: str = opt("auto", "off-target language id: auto (py3langid if installed, else script) | py3langid | script")
    transfer_files: list[str] = opt([], "zero-shot transfer JSONL {lang, instruction, input, choices, label[, cluster]}: a task stage 2 taught in one language, asked in each (alignx.eval.transfer)")
    transfer_limit: int | None = opt(None, "at most this many transfer rows per language (the first ones; None: all). `limit` does not apply to transfer")
    transfer_source_lang: str = opt("en", "the language stage 2 taught the transfer task in: the transfer gap is its accuracy minus each other language's")
    transfer_chat_template: bool = opt(True, "render transfer rows as stage 2 renders instruction rows (data.use_chat_template): the tokenizer's chat template when it has one, else the Alpaca-LoRA prompt")
    perplexity_files: list[str] = opt([], "parallel files whose sentences are scored for perplexity (e.g. out-of-domain English: the regression check)")
    perplexity_langs: list[str] = opt(["en"], "languages of perplexity_files to score")
    perplexity_max_sentences: int = opt(250, "at most this many distinct sentences per perplexity language")
    limit: int | None = opt(None, "at most this many examples per benchmark language / translation direction")
    batch_size: int = opt(8, "batch size for scoring and generation")
    max_new_tokens: int = opt(256, "translation: generation budget per sentence")
    length_cap: float = opt(
        2.0, "translation: a sentence also stops after ceil(length_cap x its source tokens) + 10 new tokens (a translation "
        "rarely runs longer; a row that never writes its newline no longer holds its batch to max_new_tokens); 0: off",
    )
    seed: int = opt(0, "seed for demonstration sampling and lm-eval")
    output_dir: str = opt("runs/eval", "eval.json and translations.<src>-<tgt>.jsonl go here")
    run_name: str = opt("", "label in eval.json and reports (default: the model's directory name)")

    def __post_init__(self) -> None:
        if self.shots < 0:
            raise ConfigError(f"shots must be >= 0, got {self.shots}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ConfigError(f"num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"limit must be positive, got {self.limit}")
        if self.transfer_limit is not None and self.transfer_limit <= 0:
            raise ConfigError(f"transfer_limit must be positive, got {self.transfer_limit}")
        if self.batch_size <= 0 or self.max_new_tokens <= 0:
            raise ConfigError("batch_size and max_new_tokens must be positive")
        if self.length_cap < 0:
            raise ConfigError(f"length_cap must be >= 0 (0: off), got {self.length_cap}")
        if self.bleu_tokenize not in BLEU_TOKENIZERS:
            raise ConfigError(f"bleu_tokenize must be one of {', '.join(BLEU_TOKENIZERS)}, got {self.bleu_tokenize!r}")
        if self.langid not in ("auto", "py3langid", "script"):
            raise ConfigError(f"langid must be auto|py3langid|script, got {self.langid!r}")
        for d in self.directions:
            try:
                parse_direction(d)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if self.flores_dir and not self.directions:
            raise ConfigError("flores_dir needs directions (e.g. directions=en-de,de-en)")
        if self.perplexity_max_sentences <= 0:
            raise ConfigError(f"perplexity_max_sentences must be positive, got {self.perplexity_max_sentences}")
        try:
            self.perplexity_langs = [languages.normalize(c) for c in self.perplexity_langs]
        except ValueError as e:
            raise ConfigError(f"perplexity_langs: {e}") from None
        if self.comet_model and not self.trust_comet_checkpoint:
            raise ConfigError(f"comet_model={self.comet_model}: a COMET checkpoint is a pickle, and loading it runs code from the file; "
                              "set trust_comet_checkpoint=true if you trust it")
        try:
            self.transfer_source_lang = languages.normalize(self.transfer_source_lang)
        except ValueError as e:
            raise ConfigError(f"transfer_source_lang: {e}") from None
        for path in [*self.translation_files, *self.translation_dev_files, *self.perplexity_files, *self.transfer_files, *filter(None, [self.flores_dir, self.mc_file, self.benchmark_data_dir, self.comet_model])]:
            if not Path(path).exists():
                raise ConfigError(f"{path}: not found")

    @property
    def has_translation(self) -> bool:
        return bool(self.translation_files or self.flores_dir)


@dataclass
class EvalInputs:
    """Everything :func:`evaluate` reads, read and checked before any model work."""

    translation_sets: dict[tuple[str, str], tuple[list[Pair], list[Pair]]] = field(default_factory=dict)
    transfer_sets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def prepare_inputs(cfg: EvalConfig, tokenizer: Any) -> EvalInputs:
    """Read and check every input of ``cfg``; raises a one-line ConfigError / DataError for the first bad one."""
    from alignx.eval.benchmarks import check_benchmarks

    if not cfg.tasks and not cfg.has_translation and not cfg.perplexity_files and not cfg.transfer_files:
        raise ConfigError("nothing to evaluate: give tasks=..., translation_files=... / flores_dir=..., transfer_files=... and/or perplexity_files=...")
    if cfg.comet_model and importlib.util.find_spec("comet") is None:
        raise ConfigError("comet_model is set but the package unbabel-comet is not installed: pip install unbabel-comet, or drop comet_model")
    check_benchmarks(cfg.tasks, cfg.benchmark_data_dir, cfg.mc_file)
    inputs = EvalInputs()
    if cfg.has_translation:
        if cfg.use_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ConfigError("use_chat_template=true but the tokenizer has no chat template; set use_chat_template=false")
        inputs.translation_sets = load_translation_sets(
            cfg.translation_files, cfg.translation_dev_files, cfg.flores_dir, cfg.directions, cfg.flores_split, limit=cfg.limit
        )
        check_translation_sets(inputs.translation_sets, cfg.shots, cfg.bleu_tokenize)
    if cfg.transfer_files:
        inputs.transfer_sets = read_transfer_files(cfg.transfer_files)
    if cfg.perplexity_files:
        found = sentences_by_language(cfg.perplexity_files, cfg.perplexity_langs, cfg.perplexity_max_sentences)
        if not any(found.values()):
            raise ConfigError(f"perplexity_files have no sentences in {', '.join(cfg.perplexity_langs)}; check perplexity_langs")
    return inputs


def evaluate(model: Any, tokenizer: Any, cfg: EvalConfig, inputs: EvalInputs | None = None,
             rows: dict[str, list[dict[str, str]]] | None = None, done: dict[str, Any] | None = None,
             lm_eval_raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run benchmarks and translation on an in-memory model; returns the eval.json object (unwritten).

    ``inputs``: from :func:`prepare_inputs` (read here when not given, still before any model work).
    ``rows``: when given, translation rows are collected there instead of written to ``cfg.output_dir``.
    ``done``: filled with each finished part (benchmarks, translation, perplexity) as it finishes.
    ``lm_eval_raw``: filled with lm-eval's raw results (plain JSON) when benchmarks ran."""
    from alignx.eval.benchmarks import run_benchmarks

    inputs = inputs or prepare_inputs(cfg, tokenizer)
    done = {} if done is None else done
    model.eval()
    forward = mload.inference_precision(model, cfg.model)
    autocast = {"benchmarks": forward, "translation": mload.inference_precision(model, cfg.model, generation=True),
                "transfer": forward, "perplexity": forward}
    with mload.inference_autocast(model, cfg.model):  # bf16 where the device computes it natively
        t0 = time.time()
        if cfg.tasks:
            done["benchmarks"] = run_benchmarks(
                model, tokenizer, cfg.tasks, cfg.benchmark_data_dir, limit=cfg.limit, batch_size=cfg.batch_size,
                num_fewshot=cfg.num_fewshot, mc_file=cfg.mc_file, seed=cfg.seed, max_gen_toks=cfg.benchmark_max_gen_toks,
                raw_out=lm_eval_raw,
            )  # fmt: skip
        t1 = time.time()
        if cfg.has_translation:
            with mload.inference_autocast(model, cfg.model, generation=True):  # decoding: fp32 on a CPU (faster there)
                done["translation"] = run_translation(
                    model, tokenizer, inputs.translation_sets, shots=cfg.shots, seed=cfg.seed, batch_size=cfg.batch_size,
                    max_new_tokens=cfg.max_new_tokens, use_chat_template=cfg.use_chat_template, bleu_tokenize=cfg.bleu_tokenize,
                    comet_model=cfg.comet_model, langid=cfg.langid, outputs_dir=cfg.output_dir, rows_out=rows,
                    length_cap=cfg.length_cap, fixed_shots=cfg.fixed_shots,
                )  # fmt: skip
        t2 = time.time()
        if inputs.transfer_sets:
            done["transfer"] = run_transfer(model, tokenizer, inputs.transfer_sets, use_chat_template=cfg.transfer_chat_template,
                                            source_lang=cfg.transfer_source_lang, batch_size=cfg.batch_size, limit=cfg.transfer_limit)
        t3 = time.time()
        if cfg.perplexity_files:
            done["perplexity"] = run_perplexity(
                model, tokenizer, cfg.perplexity_files, cfg.perplexity_langs, cfg.perplexity_max_sentences, cfg.batch_size
            )
    name = cfg.model.name_or_path
    return {
        "kind": "eval",
        "run_name": cfg.run_name or (Path(name.rstrip("/")).name if name else "model"),
        "model": name,
        "config": to_dict(cfg),
        "env": environment(),
        "autocast": autocast,
        "seconds": {"benchmarks": round(t1 - t0, 1), "translation": round(t2 - t1, 1), "transfer": round(t3 - t2, 1),
                    "perplexity": round(time.time() - t3, 1)},
        "benchmarks": done.get("benchmarks", {}),
        "translation": done.get("translation", {}),
        "transfer": done.get("transfer", {}),
        "perplexity": done.get("perplexity", {}),
    }


def main(cfg: EvalConfig) -> dict[str, Any]:
    """Check every input, load ``cfg.model``, evaluate, write ``<output_dir>/eval.json``; returns its content."""
    mload.check_model_settings(mload.check_model_path(cfg.model), cfg.model)
    tokenizer = mload.load_tokenizer(cfg.model)
    inputs = prepare_inputs(cfg, tokenizer)
    out = Path(cfg.output_dir)
    with output_lock(out, "eval"):
        model = mload.load_model(cfg.model)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if torch.cuda.is_available():
            model.to("cuda")
        rows: dict[str, list[dict[str, str]]] = {}
        done: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        try:
            result = evaluate(model, tokenizer, cfg, inputs, rows=rows, done=done, lm_eval_raw=raw)
        except Exception as e:
            if done:  # keep what finished; eval.json (if any) stays the older, complete one
                partial = {"kind": "eval.partial", "error": f"{type(e).__name__}: {e}", "model": cfg.model.name_or_path,
                           "config": to_dict(cfg), "env": environment(), **done}
                log.error("evaluation failed after %s finished; kept them in %s", ", ".join(done), write_json(out / "eval.partial.json", partial))
            raise
        for direction, direction_rows in rows.items():
            write_translations(out, direction, direction_rows)
        if raw:
            write_json(out / LM_EVAL_RESULTS, raw)
        else:  # an older run's file would sit beside an eval.json that did not produce it
            (out / LM_EVAL_RESULTS).unlink(missing_ok=True)
        path = write_json(out / "eval.json", result)
        (out / "eval.partial.json").unlink(missing_ok=True)
    log.info("wrote %s", path)
    return result
