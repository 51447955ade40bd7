"""In-context translation evaluation: k-shot prompts, greedy batched generation, corpus metrics.

Data: JSONL files of ``{"src", "tgt", "src_lang", "tgt_lang"}`` rows (a pair can be evaluated in
either direction), or a FLORES-style directory of ``<flores_code>.<split>`` line files
(``eng_Latn.devtest``; also ``devtest/eng_Latn.devtest`` and FLORES-101's ``eng.devtest``).

Metrics are corpus-level sacrebleu (one implementation for every number):
- spBLEU = ``BLEU(tokenize="flores101")``. sacrebleu 2.6 needs the ``sentencepiece`` package AND a
  SentencePiece model it downloads on first use to ``$SACREBLEU/models/sacrebleu_tokenizer_spm.model``
  (default ``~/.sacrebleu``); offline it cannot fetch it. With ``bleu_tokenize="auto"`` we use
  flores101 when both are present, else fall back per target language to an offline tokenizer:
  ``zh`` for Chinese, ``char`` for scripts written without spaces (ja th km lo my), ``13a`` otherwise.
  The tokenizer used is stored with every score: fallback BLEU is NOT comparable to published spBLEU.
- chrF++ = ``CHRF(word_order=2)`` (tokenizer-free).
- COMET only with the ``comet`` package and a local checkpoint path (loaded once per run); otherwise ``None``.
Each BLEU and chrF++ score is stored with sacrebleu's metric signature (``bleu_signature``, ``chrf_signature``).
- Off-target rate: share of outputs whose identified language is not the target (:mod:`.langid`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
import os
import random
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from alignx import languages
from alignx.config import ConfigError
from alignx.data.readers import DataError, read_lines
from alignx.eval.langid import LanguageIdentifier
from alignx.utils import atomic_write_text

log = logging.getLogger(__name__)

BLEU_TOKENIZERS = ("auto", "flores101", "flores200", "13a", "intl", "char", "zh", "none")
_NO_SPACE_SCRIPTS = {"Jpan", "Thai", "Khmr", "Laoo", "Mymr"}
N_SAMPLES = 5  # rows of {src, ref, hyp} stored in eval.json per direction
LENGTH_CAP_SLACK = 10  # new tokens a sentence gets beyond length_cap x its source tokens
MIN_SHARED_PREFIX = 8  # tokens; a shorter shared prefix is not worth a cache copy per batch


@dataclass(frozen=True)
class Pair:
    src: str
    tgt: str
    src_lang: str
    tgt_lang: str

    def reversed(self) -> Pair:
        return Pair(self.tgt, self.src, self.tgt_lang, self.src_lang)


# --------------------------------------------------------------------------------------------
# Reading data
# --------------------------------------------------------------------------------------------


def parse_direction(text: str) -> tuple[str, str]:
    """``"en-de"`` / ``"eng_Latn-deu_Latn"`` / ``"en-zh-Hant"`` -> canonical ``("en", "de")``.

    Codes may contain '-' themselves, so every split point is tried. Where several read as two
    languages (``en-pt-br``: en + pt-BR, or en-PT + br) the one whose codes have the most speakers
    wins (the smaller side counts), so a region goes to the language written there.
    """
    parts = text.split("-")
    readings: list[tuple[int, tuple[str, str]]] = []
    for i in range(1, len(parts)):
        src, tgt = "-".join(parts[:i]), "-".join(parts[i:])
        try:
            pair = languages.normalize(src), languages.normalize(tgt)
        except languages.UnknownLanguageError:
            continue
        readings.append((min(languages.speakers(src), languages.speakers(tgt)), pair))
    if not readings:
        raise ValueError(f"bad translation direction {text!r}: expected '<src>-<tgt>' with language codes, e.g. 'en-de'")
    return max(readings, key=lambda r: r[0])[1]  # max keeps the first of equals: the shortest source


def read_parallel_jsonl(path: str | Path) -> list[Pair]:
    """Parallel rows via :func:`alignx.data.readers.read_parallel` (any source it reads); errors name file:line."""
    from alignx.data.readers import read_parallel

    return [Pair(p.src, p.tgt, p.src_lang, p.tgt_lang) for p in read_parallel(path)]


def _flores_file(root: Path, lang: str, split: str) -> Path:
    info = languages.get(lang)
    candidates = [d / f"{code}.{split}" for d in (root, root / split) for code in (info.flores, info.iso3)]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"flores_dir {root}: no FLORES file for {lang} split {split} (looked for {candidates[0].name}, {candidates[1].name}, also under {split}/)")


def read_flores_dir(root: str | Path, src_lang: str, tgt_lang: str, split: str = "devtest") -> list[Pair]:
    """Line-aligned FLORES files -> pairs for one direction."""
    root = Path(root)
    src_path, tgt_path = _flores_file(root, src_lang, split), _flores_file(root, tgt_lang, split)
    src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)  # split at \n only, like the FLORES tools
    if len(src_lines) != len(tgt_lines):
        raise DataError(f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}: not line-aligned")
    src_lang, tgt_lang = languages.normalize(src_lang), languages.normalize(tgt_lang)
    return [Pair(s.strip(), t.strip(), src_lang, tgt_lang) for s, t in zip(src_lines, tgt_lines, strict=True)]


def group_by_direction(pairs: Iterable[Pair], directions: Sequence[str] = ()) -> dict[tuple[str, str], list[Pair]]:
    """Pairs per direction. With ``directions`` given, pairs stored the other way round are reversed."""
    pairs = list(pairs)
    wanted = [parse_direction(d) for d in directions] or sorted({(p.src_lang, p.tgt_lang) for p in pairs})
    out: dict[tuple[str, str], list[Pair]] = {}
    for src, tgt in wanted:
        rows = [p for p in pairs if (p.src_lang, p.tgt_lang) == (src, tgt)]
        rows += [p.reversed() for p in pairs if (p.src_lang, p.tgt_lang) == (tgt, src)]
        out[(src, tgt)] = rows
    return out


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


def select_shots(pool: Sequence[Pair], k: int, seed: int, index: int, test: Pair) -> list[Pair]:
    """k demonstrations for test item ``index``: fixed seed, never the test pair itself.

    Sampling is seeded per item (``seed``, ``index``) so results do not depend on batch order;
    any pool row sharing the test source or reference is excluded (no leakage when the pool
    overlaps the test set).
    """
    if k <= 0:
        return []
    eligible = [p for p in pool if p.src != test.src and p.tgt != test.tgt and p.src != test.tgt]
    if len(eligible) < k:
        raise ConfigError(
            f"shots={k}: {k}-shot prompts need {k} dev pairs for {test.src_lang}-{test.tgt_lang}, only {len(eligible)} available; "
            "lower shots or give translation_dev_files"
        )
    rng = random.Random(seed * 1_000_003 + index)
    return rng.sample(eligible, k)


def select_fixed_shots(pool: Sequence[Pair], k: int, seed: int, test: Sequence[Pair]) -> list[Pair]:
    """k demonstrations shared by every test item of a direction: seeded, none of them sharing a sentence with any
    test pair. Every prompt then starts with the same tokens, which :func:`generate` encodes once."""
    if k <= 0:
        return []
    taken = {p.src for p in test} | {p.tgt for p in test}
    eligible = [p for p in pool if p.src not in taken and p.tgt not in taken]
    if len(eligible) < k:
        raise ConfigError(f"shots={k}: fixed demonstrations need {k} dev pairs sharing no sentence with the test set, "
                          f"only {len(eligible)} available; lower shots or give translation_dev_files")
    return random.Random(seed).sample(eligible, k)


def build_prompt(src: str, shots: Sequence[Pair], src_lang: str, tgt_lang: str) -> str:
    """Plain completion prompt; the model continues after ``<Target name>:`` and we stop at newline.

        Translate the following sentences from English to German.

        English: <shot src>
        German: <shot tgt>

        English: <src>
        German:
    """
    src_name, tgt_name = languages.name(src_lang), languages.name(tgt_lang)
    blocks = [f"Translate the following sentences from {src_name} to {tgt_name}."]
    blocks += [f"{src_name}: {s.src}\n{tgt_name}: {s.tgt}" for s in shots]
    blocks.append(f"{src_name}: {src}\n{tgt_name}:")
    return "\n\n".join(blocks)


def apply_chat(tokenizer: Any, prompt: str) -> str:
    """Wrap a prompt as one user turn with the tokenizer's chat template (generation prompt added)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("use_chat_template=true but the tokenizer has no chat template; set use_chat_template=false")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


class _StopOnNewline:
    """Stopping criterion: a row is done once its new text contains a newline (EOS is handled by generate), or once
    it has as many new tokens as its own cap (``caps``, one per row).

    A row once done stays done (generate keeps finished rows finished), so only the others are decoded again.
    """

    def __init__(self, tokenizer: Any, prompt_len: int, caps: Sequence[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.caps = caps
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.caps is not None:
            new = input_ids.shape[1] - self.prompt_len
            self.done |= torch.tensor([new >= c for c in self.caps], device=input_ids.device)
        todo = (~self.done).nonzero().flatten()
        if len(todo):
            texts = self.tokenizer.batch_decode(input_ids[todo, self.prompt_len :], skip_special_tokens=True)
            # a leading newline right after "German:" is not an answer yet: need text before it
            self.done[todo] = torch.tensor(["\n" in t.lstrip() for t in texts], device=input_ids.device)
        return self.done.clone()


def _common_prefix(encoded: list[dict[str, list[int]]]) -> int:
    """Length of the longest token prefix all prompts share, leaving every prompt at least one token of its own."""
    first = encoded[0]["input_ids"]
    n = min(len(e["input_ids"]) for e in encoded) - 1
    for e in encoded[1:]:
        ids = e["input_ids"]
        k = 0
        while k < n and ids[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int = 8, max_new_tokens: int = 256, desc: str = "translate",
             caps: Sequence[int] | None = None, share_prefix: bool = True) -> list[str]:
    """Greedy continuations, cut at the first newline, in the order of ``prompts``.

    ``caps``: per prompt, at most this many new tokens (and at most ``max_new_tokens``): a row stops at its own cap
    and its text is cut there, so a row's output does not depend on the rows it shares a batch with, and a batch
    decodes only as long as its longest-capped unfinished row.

    ``share_prefix``: the token prefix all prompts share (at least ``MIN_SHARED_PREFIX`` tokens; with fixed
    demonstrations, the instruction and every shot) is encoded once and its KV cache reused by every batch.

    Prompts are tokenized once, sorted by token count (longest first: similar lengths share a batch, so
    little padding, and an OOM shows up at once) and generated ``batch_size`` at a time with left padding
    (new tokens follow each prompt directly; the attention mask hides the padding).
    """
    from transformers import StoppingCriteriaList

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # stop on the tokenizer's EOS and on every EOS the model's generation config knows (chat models
    # end turns with their own token, e.g. <end_of_turn>)
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos_ids = sorted({tokenizer.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])} - {None})
    bos = tokenizer.bos_token
    device = next(model.parameters()).device
    # chat templates already start with BOS: do not add a second one
    encoded: list[dict[str, list[int]]] = [{} for _ in prompts]
    for add_special in (True, False):
        idx = [i for i, p in enumerate(prompts) if (not (bos and p.startswith(bos))) == add_special]
        if idx:
            enc = tokenizer([prompts[i] for i in idx], add_special_tokens=add_special)
            for r, i in enumerate(idx):
                encoded[i] = {key: values[r] for key, values in enc.items()}
    # The token prefix every prompt shares (with fixed demonstrations: the instruction and all the shots) is encoded
    # once; each batch continues from a copy of its cache and encodes only the rows' own ends. Exact by construction
    # (the common prefix of the token ids, not of the texts); the rows' positions are those of the full prompts.
    shared = _common_prefix(encoded) if share_prefix and len(prompts) > 1 else 0
    prefix_cache = None
    if shared >= MIN_SHARED_PREFIX:
        prefix_ids = torch.tensor([encoded[0]["input_ids"][:shared]], device=device)
        prefixed = model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1)
        prefix_cache = getattr(prefixed, "cache", None) or prefixed.past_key_values
    else:
        shared = 0
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]["input_ids"]))
    out: list[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        idx = order[start : start + batch_size]
        ends = [{k: v[shared:] for k, v in encoded[i].items()} for i in idx]
        batch = tokenizer.pad(ends, padding=True, padding_side="left", return_tensors="pt").to(device)
        kwargs: dict[str, Any] = {}
        if prefix_cache is not None:
            n = len(idx)
            ones = torch.ones(n, shared, dtype=batch["attention_mask"].dtype, device=device)
            batch = {"input_ids": torch.cat([prefix_ids.expand(n, -1), batch["input_ids"]], dim=1),
                     "attention_mask": torch.cat([ones, batch["attention_mask"]], dim=1)}
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(n)
            kwargs["past_key_values"] = cache
        prompt_len = batch["input_ids"].shape[1]
        row_caps = [min(max_new_tokens, caps[i]) if caps is not None else max_new_tokens for i in idx]
        with warnings.catch_warnings():  # later 5.x releases rename past_key_values to cache; <6 (our pin) takes both
            warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)
            gen = model.generate(
                **batch,
                **kwargs,
                do_sample=False,
                max_new_tokens=max(row_caps),
                pad_token_id=pad_id,
                eos_token_id=eos_ids or None,
                stopping_criteria=StoppingCriteriaList([_StopOnNewline(tokenizer, prompt_len, row_caps)]),
            )
        texts = tokenizer.batch_decode([g[prompt_len: prompt_len + c] for g, c in zip(gen, row_caps, strict=True)], skip_special_tokens=True)
        for i, text in zip(idx, texts, strict=True):
            out[i] = text.strip().split("\n", 1)[0].strip()
    return out


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def spm_model_path() -> Path:
    """Where sacrebleu looks for the flores101 SentencePiece model (it downloads it there when online)."""
    from sacrebleu.utils import SACREBLEU_DIR

    return Path(SACREBLEU_DIR) / "models" / "sacrebleu_tokenizer_spm.model"


def flores_tokenizer_available(name: str = "flores101") -> bool:
    from sacrebleu.utils import SACREBLEU_DIR

    files = {"flores101": "sacrebleu_tokenizer_spm.model", "flores200": "flores200sacrebleuspm"}
    return importlib.util.find_spec("sentencepiece") is not None and (Path(SACREBLEU_DIR) / "models" / files[name]).is_file()


def resolve_bleu_tokenizer(requested: str, tgt_lang: str) -> str:
    """The sacrebleu tokenizer to use: flores101 when it can run offline, else a per-target fallback."""
    if requested not in BLEU_TOKENIZERS:
        raise ValueError(f"bleu_tokenize must be one of {', '.join(BLEU_TOKENIZERS)}, got {requested!r}")
    if requested in ("flores101", "flores200"):
        if not flores_tokenizer_available(requested):
            raise ConfigError(
                f"BLEU tokenizer {requested} needs `pip install sentencepiece` and its SentencePiece model in "
                f"{spm_model_path().parent} (sacrebleu downloads it when online); or use bleu_tokenize=auto"
            )
        return requested
    if requested != "auto":
        return requested
    if flores_tokenizer_available("flores101"):
        return "flores101"
    info = languages.get(tgt_lang)
    if info.script in ("Hans", "Hant"):
        return "zh"
    return "char" if info.script in _NO_SPACE_SCRIPTS else "13a"


def corpus_scores(hyps: Sequence[str], refs: Sequence[str], tokenize: str) -> dict[str, Any]:
    """Corpus BLEU (with the given sacrebleu tokenizer) and chrF++ on 0-100 scales, each with sacrebleu's
    metric signature (``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``), which says how the
    number was computed and so whether two numbers can be compared."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    bleu_metric, chrf_metric = BLEU(tokenize=tokenize), CHRF(word_order=2)
    bleu = bleu_metric.corpus_score(list(hyps), [list(refs)])
    chrf = chrf_metric.corpus_score(list(hyps), [list(refs)])
    return {
        "spbleu": round(bleu.score, 4),
        "chrf++": round(chrf.score, 4),
        "bleu_signature": str(bleu_metric.get_signature()),
        "chrf_signature": str(chrf_metric.get_signature()),
    }


def chrf_sentence_stats(hyps: Sequence[str], refs: Sequence[str]) -> list[list[int]]:
    """Per-sentence chrF++ sufficient statistics [N, 24] (sacrebleu's own): summing rows and scoring the
    sum with :func:`chrf_from_stats` gives the corpus chrF++, so a paired bootstrap can resample sentences."""
    from sacrebleu.metrics import CHRF

    return [[int(v) for v in row] for row in CHRF(word_order=2)._extract_corpus_statistics(list(hyps), [list(refs)])]


def chrf_from_stats(summed: Sequence[float]) -> float:
    """Corpus chrF++ (0-100) from summed :func:`chrf_sentence_stats` rows."""
    from sacrebleu.metrics import CHRF

    return float(CHRF(word_order=2)._compute_score_from_stats([int(v) for v in summed]).score)


def _comet_unavailable(model_path: str | None) -> str | None:
    if not model_path:
        return "COMET skipped: no comet_model path configured"
    if importlib.util.find_spec("comet") is None:
        return "COMET skipped: package 'unbabel-comet' is not installed"
    if not os.path.exists(model_path):
        return f"COMET skipped: checkpoint {model_path} not found"
    return None


class CometScorer:
    """COMET for one evaluation run: the checkpoint (wmt22-comet-da is over 2 GB) is loaded at the first
    direction scored and reused for every other one, not loaded again per direction.

    A COMET checkpoint is a pickle (loading it runs code from the file): ``alignx eval`` passes a path
    only when the user opted in with ``trust_comet_checkpoint=true``."""

    def __init__(self, model_path: str | None, batch_size: int = 8) -> None:
        self.model_path, self.batch_size = model_path, batch_size
        self._model: Any = None
        self.skipped = _comet_unavailable(model_path)  # why there is no COMET score, or None

    def score(self, srcs: Sequence[str], hyps: Sequence[str], refs: Sequence[str]) -> tuple[float | None, str | None]:
        """(system COMET score, None) or (None, why it was skipped)."""
        if self.skipped:
            return None, self.skipped
        if self._model is None:
            from comet import load_from_checkpoint

            self._model = load_from_checkpoint(self.model_path)
        data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(srcs, hyps, refs, strict=True)]
        result = self._model.predict(data, batch_size=self.batch_size, gpus=1 if torch.cuda.is_available() else 0, progress_bar=False)
        return float(result.system_score), None


def comet_score(srcs: Sequence[str], hyps: Sequence[str], refs: Sequence[str], model_path: str | None, batch_size: int = 8) -> tuple[float | None, str | None]:
    """One-off :meth:`CometScorer.score` (loads the checkpoint for this call only)."""
    return CometScorer(model_path, batch_size).score(srcs, hyps, refs)


# --------------------------------------------------------------------------------------------
# One call for a set of directions
# --------------------------------------------------------------------------------------------


def evaluate_direction(
    model: Any,
    tokenizer: Any,
    test: Sequence[Pair],
    dev: Sequence[Pair],
    *,
    shots: int = 0,
    seed: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    use_chat_template: bool = False,
    bleu_tokenize: str = "auto",
    comet: CometScorer | None = None,
    identifier: LanguageIdentifier | None = None,
    length_cap: float = 0.0,
    fixed_shots: bool = False,
    share_prefix: bool = True,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Translate ``test`` and score it. Returns (eval.json entry, all {src, ref, hyp} rows).

    ``length_cap`` > 0: a sentence gets at most ``ceil(length_cap * its source tokens) + LENGTH_CAP_SLACK`` new tokens
    (and ``max_new_tokens``), so a batch stops decoding once every row has answered or run past its own cap.
    ``comet``: the run's scorer (None: no COMET); one scorer for all directions loads its checkpoint once."""
    if not test:
        raise ValueError("no test pairs for this direction")
    src_lang, tgt_lang = test[0].src_lang, test[0].tgt_lang
    identifier = identifier or LanguageIdentifier()
    prompts = []
    fixed = select_fixed_shots(dev, shots, seed, test) if fixed_shots else None
    for i, pair in enumerate(test):
        prompt = build_prompt(pair.src, fixed if fixed is not None else select_shots(dev, shots, seed, i, pair), src_lang, tgt_lang)
        prompts.append(apply_chat(tokenizer, prompt) if use_chat_template else prompt)
    caps = None
    if length_cap > 0:
        n_src = tokenizer([p.src for p in test], add_special_tokens=False)["input_ids"]
        caps = [min(max_new_tokens, math.ceil(length_cap * len(ids)) + LENGTH_CAP_SLACK) for ids in n_src]
    hyps = generate(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, desc=f"{src_lang}-{tgt_lang}", caps=caps,
                    share_prefix=share_prefix)
    refs = [p.tgt for p in test]
    tokenizer_name = resolve_bleu_tokenizer(bleu_tokenize, tgt_lang)
    comet_value, why = (comet or CometScorer(None)).score([p.src for p in test], hyps, refs)
    if why:
        log.info("%s-%s: %s", src_lang, tgt_lang, why)
    rows = [{"src": p.src, "ref": p.tgt, "hyp": h} for p, h in zip(test, hyps, strict=True)]
    off = identifier.off_target_flags(hyps, tgt_lang)
    entry = {
        **corpus_scores(hyps, refs, tokenizer_name),
        "off_target": round(sum(off) / len(off), 4),
        "n": len(test),
        "comet": comet_value,
        "tokenizer": tokenizer_name,
        "shots": shots,
        "length_cap": length_cap,
        "fixed_shots": fixed_shots,
        "langid": identifier.method_for(tgt_lang),
        "samples": rows[:N_SAMPLES],
        # Per-sentence data for paired bootstraps between runs (alignx.eval.stats), in test order.
        "items": {"chrf_stats": chrf_sentence_stats(hyps, refs), "off_target": [int(o) for o in off]},
    }
    if why:
        entry["comet_note"] = why
    return entry, rows


def load_translation_sets(
    files: Sequence[str] = (),
    dev_files: Sequence[str] = (),
    flores_dir: str | None = None,
    directions: Sequence[str] = (),
    flores_split: str = "devtest",
    flores_dev_split: str = "dev",
    limit: int | None = None,
) -> dict[tuple[str, str], tuple[list[Pair], list[Pair]]]:
    """(test pairs, dev pool) per direction from JSONL files and/or a FLORES directory.

    The dev pool for JSONL comes from ``dev_files``; without them the test file itself is the
    pool (shot selection then excludes the test pair). FLORES uses its ``dev`` split.
    """
    sets: dict[tuple[str, str], tuple[list[Pair], list[Pair]]] = {}
    if files:
        test = group_by_direction([p for f in files for p in read_parallel_jsonl(f)], directions)
        dev = group_by_direction([p for f in dev_files for p in read_parallel_jsonl(f)], [f"{s}-{t}" for s, t in test])
        for key, rows in test.items():
            if not rows:
                raise ConfigError(f"directions: no pairs for {key[0]}-{key[1]} in {', '.join(files)}")
            pool = dev.get(key) or []
            if not pool:
                log.warning("%s-%s: no dev file given, drawing shots from the test set (test pair excluded)", *key)
                pool = rows
            sets[key] = (rows[:limit] if limit else rows, pool)
    if flores_dir:
        if not directions:
            raise ConfigError("a FLORES directory needs explicit directions, e.g. directions=[en-de, de-en]")
        for d in directions:
            key = parse_direction(d)
            rows = read_flores_dir(flores_dir, *key, split=flores_split)
            try:
                pool = read_flores_dir(flores_dir, *key, split=flores_dev_split)
            except FileNotFoundError:
                log.warning("%s-%s: no FLORES %s split, drawing shots from %s (test pair excluded)", *key, flores_dev_split, flores_split)
                pool = rows
            sets[key] = (rows[:limit] if limit else rows, pool)
    return sets


def run_translation(
    model: Any,
    tokenizer: Any,
    sets: dict[tuple[str, str], tuple[list[Pair], list[Pair]]],
    *,
    shots: int = 0,
    seed: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    use_chat_template: bool = False,
    bleu_tokenize: str = "auto",
    comet_model: str | None = None,
    langid: str = "auto",
    outputs_dir: str | Path | None = None,
    rows_out: dict[str, list[dict[str, str]]] | None = None,
    length_cap: float = 0.0,
    fixed_shots: bool = False,
) -> dict[str, dict[str, Any]]:
    """Evaluate every direction; returns ``{"<src>-<tgt>": entry}``. The {src, ref, hyp} rows of each direction
    go to ``rows_out[<src>-<tgt>]`` when given, else to ``outputs_dir/translations.<src>-<tgt>.jsonl``."""
    identifier = LanguageIdentifier(langid)
    comet = CometScorer(comet_model, batch_size)  # one checkpoint load for the whole run
    results: dict[str, dict[str, Any]] = {}
    for (src, tgt), (test, dev) in sets.items():
        entry, rows = evaluate_direction(
            model, tokenizer, test, dev, shots=shots, seed=seed, batch_size=batch_size, max_new_tokens=max_new_tokens,
            use_chat_template=use_chat_template, bleu_tokenize=bleu_tokenize, comet=comet, identifier=identifier,
            length_cap=length_cap, fixed_shots=fixed_shots,
        )  # fmt: skip
        results[f"{src}-{tgt}"] = entry
        log.info("%s-%s: spBLEU(%s) %.2f chrF++ %.2f off-target %.2f (n=%d)", src, tgt, entry["tokenizer"], entry["spbleu"], entry["chrf++"], entry["off_target"], entry["n"])
        if rows_out is not None:
            rows_out[f"{src}-{tgt}"] = rows
        elif outputs_dir is not None:
            write_translations(Path(outputs_dir), f"{src}-{tgt}", rows)
    return results


def write_translations(out_dir: Path, direction: str, rows: Sequence[dict[str, str]]) -> Path:
    """``out_dir/translations.<direction>.jsonl``, written atomically."""
    return atomic_write_text(out_dir / f"translations.{direction}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def check_translation_sets(sets: dict[tuple[str, str], tuple[list[Pair], list[Pair]]], shots: int, bleu_tokenize: str) -> None:
    """What :func:`evaluate_direction` would find wrong only after generating: too few demonstrations for
    some test item, or a BLEU tokenizer that cannot run."""
    for (_, tgt), (test, dev) in sets.items():
        for i, pair in enumerate(test):
            select_shots(dev, shots, 0, i, pair)  # raises when fewer than `shots` eligible pairs exist
        resolve_bleu_tokenizer(bleu_tokenize, tgt)
