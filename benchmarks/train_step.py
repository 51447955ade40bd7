"""Benchmark one AlignX stage-1 training step (forward + backward + AdamW) against a plain HF step.

Reference command (H100):
    python benchmarks/train_step.py --preset qwen2.5-0.5b --batch 8 --seq 2048 --steps 20 --warmup 5 \
        --compile --grad-ckpt --out benchmarks/results/h100_qwen2.5-0.5b.json
CPU-sized:
    python benchmarks/train_step.py --preset tiny --steps 10 --warmup 2 --out benchmarks/results/cpu_tiny.json
CPU, a real model's architecture and weights (variants timed interleaved in one process, memory per subprocess):
    python benchmarks/train_step.py --model packaged:gemma3-270m --variants a,b,c --steps 5 --warmup 2 \
        --interleave --threads 2 --out benchmarks/results/cpu_gemma3_270m_step.json

Variants:
  a     plain transformers forward + backward with its built-in loss (``labels=``, full logits)
  b     AlignXModel, lambda_ctr = lambda_lam = 0 (fused chunked NTP only)
  c     AlignXModel with L_CTR + L_LAM at the reference weights (0.3 / 0.4), hook capture of hidden states
  c_hs  (c) capturing with ``output_hidden_states=True`` instead of hooks (measures the hook change)
  c_sep (c) with ``loss.ctr_inputs=separate`` (one extra forward + backward of the 2B sentences; not the reference)
  d     (c) under torch.compile                     (--compile; not with --interleave)
  e     (c) with gradient checkpointing             (--grad-ckpt; not with --interleave)

Model: ``--preset`` builds a Qwen2 of a shape written here (random weights, no download); ``--model`` takes any
causal LM alignx loads (``packaged:<key>``, a local HF directory, a hub id), its config read from the resolved
directory, with its own weights (``--weights pretrained``) or random ones of that config (``--weights random``).
bf16 on GPU, fp32 on CPU, sdpa attention. Batches are synthetic stage-1 rows made with the real
``alignx.data.render.Collator``: token ids, x / y spans, language ids, rows of varied length.

Timing and memory:
  default       each variant in its own subprocess, run one after the other: timed steps and peak memory of
                that process (peak memory is clean, but the variants' timings see different moments of the
                machine's load).
  --interleave  peak memory still from one short subprocess per variant (2 steps: the second one holds weights,
                gradients, AdamW states and activations at once), then all variants timed in ONE process on one
                shared model and optimiser: round r runs one step of every variant, the order rotated by r, so
                drift and background load fall on all variants alike; the same batch for every variant of a round.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    import alignx  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alignx.config import ConfigError, LossConfig, ModelConfig
from alignx.data.render import Collator, Example
from alignx.model import load as mload
from alignx.model.alignx_model import AlignXModel
from alignx.model.offline import PackagedModelError
from alignx.train.trainer import combine_losses
from alignx.utils import environment, write_json

PRESETS: dict[str, dict[str, Any]] = {
    # Qwen2.5-0.5B's published shape (config.json of Qwen/Qwen2.5-0.5B), weights random.
    "qwen2.5-0.5b": {
        "model": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                  "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True,
                  "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6},
        "batch": 8, "seq": 2048,
    },
    "tiny": {
        "model": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "intermediate_size": 1024, "vocab_size": 32000, "tie_word_embeddings": True,
                  "max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-6},
        "batch": 4, "seq": 256,
    },
    # Test-sized (tests/test_benchmark_cpu.py checks the reported losses against the spec's computation).
    "micro": {
        "model": {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "intermediate_size": 128, "vocab_size": 1024, "tie_word_embeddings": True,
                  "max_position_embeddings": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-6},
        "batch": 4, "seq": 64,
    },
}

VARIANTS = {
    "a": "plain HF forward+backward, built-in loss (labels=)",
    "b": "AlignXModel NTP only (lambda_ctr=lambda_lam=0), fused chunked loss",
    "c": "AlignXModel NTP + L_CTR + L_LAM (0.3 / 0.4), hook capture",
    "c_hs": "(c) with output_hidden_states=True capture instead of hooks",
    "c_sep": "(c) with loss.ctr_inputs=separate: x and y re-encoded alone for L_CTR (not the reference)",
    "c_sep_rc": "(c_sep) with loss.ntp_backend=recompute: each NTP chunk's logits recomputed in backward (the fused "
                "loss before the gradient-in-forward path)",
    "d": "(c) + torch.compile",
    "d_sep": "(c_sep) + torch.compile",
    "e": "(c) + gradient checkpointing",
}
# Any variant may end in @bf16: its forward and loss run under torch.autocast(bfloat16) over the fp32 weights, as the
# HF Trainer runs them with model.autocast=bf16 (backward and the optimiser step outside autocast).
PRECISIONS = ("fp32", "bf16")
# Variants that differ only in the wrapper around the LM (or the autocast), so --interleave can time them on one
# shared model (e switches gradient checkpointing on for every wrapper; d and d_sep compile a wrapper, not the LM,
# and are interleavable since issue 22).
INTERLEAVABLE = ("a", "b", "c", "c_hs", "c_sep", "c_sep_rc", "d", "d_sep")


def split_variant(variant: str) -> tuple[str, str]:
    """("c_sep", "bf16") from "c_sep@bf16"; the precision is fp32 without a suffix."""
    base, _, precision = variant.partition("@")
    return base, precision or "fp32"


def describe(variant: str) -> str:
    base, precision = split_variant(variant)
    return VARIANTS[base] + ("; forward + loss under bf16 autocast" if precision == "bf16" else "")
MIN_TIMED_STEPS = 5  # issue 11: at least 5 timed steps per variant for a median and an IQR

# Dense bf16 peak FLOP/s (no sparsity) by device-name substring; override with --peak-flops.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}

MFU_FORMULA = (
    "MFU = flops_per_token * tokens_per_s / peak_flops; flops_per_token = 6 * N + 12 * n_layers * hidden * seq "
    "(PaLM appendix B: 6N for the matmuls of forward+backward, 12*L*H*T for attention scores and values, "
    "T = padded sequence length, not halved for the causal mask); N = non-embedding parameters + the output "
    "head V*H (the head is a real matmul even when tied; only the input embedding lookup is free); "
    "tokens = non-padding tokens. mfu_excl_head drops V*H from N. Recomputation (fused-loss chunks, "
    "gradient checkpointing) is not counted: it is model FLOPs utilisation, not hardware FLOPs."
)

# Config fields recorded for a --model run (whatever of them the architecture has).
SHAPE_KEYS = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size", "tie_word_embeddings",
              "sliding_window", "max_position_embeddings", "final_logit_softcapping")


# ---------------------------------------------------------------------------------------------
# Model, batches
# ---------------------------------------------------------------------------------------------


def build_model(preset: str, device: torch.device, dtype: torch.dtype, attn: str = "sdpa") -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**PRESETS[preset]["model"], attn_implementation=attn, use_cache=False,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    return model.to(dtype)


def model_config(name: str, weights: str = "pretrained") -> Any:
    """The HF config of ``--model`` (``packaged:<key>``: of the converted directory in alignx's cache), or a
    one-line ConfigError. With random weights a local directory needs only its config.json (e.g. a config
    copied alone to a GPU machine, without the weights)."""
    try:
        return mload.check_model_path(ModelConfig(name_or_path=name), need_weights=weights == "pretrained")
    except PackagedModelError as e:
        raise ConfigError(f"--model {name}: {e}") from None


def shape_summary(config: Any) -> dict[str, Any]:
    return {k: getattr(config, k) for k in SHAPE_KEYS if getattr(config, k, None) is not None}


def build_lm(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The LM every variant steps: a preset shape, or ``--model`` with its weights or random ones of its config."""
    if not args.model:
        return build_model(args.preset, device, dtype, args.attn)
    torch.manual_seed(args.seed)
    if args.weights == "pretrained":
        lm = mload.load_model(ModelConfig(name_or_path=args.model, dtype=str(dtype).removeprefix("torch."),
                                          attn_implementation=args.attn))
    else:
        from transformers import AutoModelForCausalLM

        lm = AutoModelForCausalLM.from_config(model_config(args.model, args.weights), dtype=dtype, attn_implementation=args.attn)
    lm.config.use_cache = False
    if args.freeze_embeddings:
        mload.freeze_embeddings(lm)  # model.freeze_embeddings=true, as the cpu_gemma3 experiments train
    return lm.to(device)


def special_ids(lm: nn.Module) -> tuple[int, int]:
    """(pad, eos) ids for the synthetic rows: the model's own when its config has them."""
    cfg = lm.config
    pad = cfg.pad_token_id if isinstance(getattr(cfg, "pad_token_id", None), int) else 0
    eos = cfg.eos_token_id if isinstance(getattr(cfg, "eos_token_id", None), int) else 2
    return pad, eos


def synthetic_batches(n: int, batch: int, seq: int, vocab: int, seed: int, pad_id: int = 0,
                      eos_id: int = 2) -> list[dict[str, torch.Tensor]]:
    """Stage-1-shaped batches: ``<instruction> x <sep> y <eos>`` rows of 55-100 % of ``seq`` tokens.

    The first row of each batch is full length so every batch pads to exactly ``seq`` (a fixed shape,
    which also keeps torch.compile from recompiling); the others are right-padded.
    """
    rng = random.Random(seed)
    collate = Collator(pad_token_id=pad_id, pad_to_multiple_of=8)
    out = []
    for _ in range(n):
        rows = []
        for r in range(batch):
            length = seq if r == 0 else rng.randint(int(0.55 * seq), seq)
            instr = rng.randint(8, 16) if seq >= 64 else rng.randint(2, 4)  # short rows keep room for x and y
            sep = 4
            x_len = (length - instr - sep - 1) // 2
            x_span = (instr, instr + x_len)
            y_span = (x_span[1] + sep, length - 1)  # final EOS excluded
            ids = [rng.randrange(3, vocab) for _ in range(length - 1)] + [eos_id]
            src, tgt = rng.sample(range(10), 2)
            rows.append(Example(ids, list(ids), x_span, y_span, src, tgt))
        out.append(collate(rows))
    return out


def make_batches(n: int, lm: nn.Module, args: argparse.Namespace, device: torch.device) -> list[dict[str, torch.Tensor]]:
    pad, eos = special_ids(lm)
    batches = synthetic_batches(n, args.batch, args.seq, lm.config.vocab_size, seed=args.seed, pad_id=pad, eos_id=eos)
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


def flops_per_token(model: nn.Module, seq: int) -> dict[str, float]:
    cfg = model.config
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    non_embedding = total - embed.numel() - (0 if head is embed else head.numel())
    head_params = head.numel()
    attention = 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    return {
        "params_total": total,
        "params_non_embedding": non_embedding,
        "params_output_head": head_params,
        "flops_per_token": 6 * (non_embedding + head_params) + attention,
        "flops_per_token_excl_head": 6 * non_embedding + attention,
    }


# ---------------------------------------------------------------------------------------------
# One step of a variant
# ---------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def wrap(variant: str, lm: nn.Module, args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, LossConfig | None]:
    """The module ``variant`` steps and its loss weights: ``lm`` itself for (a), else an AlignXModel around it
    (compiled for d, d_sep)."""
    variant, _ = split_variant(variant)
    if variant == "a":
        return lm, None
    ntp_only = variant == "b"
    separate = variant in ("c_sep", "c_sep_rc", "d_sep")
    loss_cfg = LossConfig(lambda_ctr=0.0 if ntp_only else 0.3, lambda_lam=0.0 if ntp_only else 0.4,
                          ntp_chunk_size=args.chunk_size, ntp_chunk_mib=args.chunk_mib,
                          ctr_inputs="separate" if separate else "in_context",
                          ntp_backend="recompute" if variant == "c_sep_rc" else "auto")
    if variant == "e":
        mload.enable_gradient_checkpointing(lm)
    model = AlignXModel(lm, loss_cfg, with_alignment=True,
                        capture="hidden_states" if variant == "c_hs" else "hooks").to(device)
    model.train()
    if variant in ("d", "d_sep"):
        model = torch.compile(model)  # an OptimizedModule over the same parameters
    return model, loss_cfg


def train_step(model: Any, loss_cfg: LossConfig | None, optim: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               terms: list[dict[str, float]], precision: str = "fp32") -> float:
    """Forward, backward, AdamW step, zero_grad; returns the loss. AlignX steps append their loss terms to ``terms``.
    ``precision`` bf16: forward and loss under bf16 autocast, as the HF Trainer (accelerate) runs them."""
    device_type = next(iter(batch.values())).device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        if loss_cfg is None:  # (a): the model's own loss over full logits
            # Only the loss is kept, as the HF Trainer keeps it: holding the output would keep the B x T x V logits
            # alive through backward and inflate (a)'s peak memory.
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                         use_cache=False).loss
        else:
            out = model(**batch)
            loss = combine_losses(out, loss_cfg.lambda_ctr, loss_cfg.lambda_lam, None, 1, 1)
            terms.append({"ntp": float(out["ntp_sum"].detach() / out["ntp_count"]), "ctr": float(out["ctr"].detach()),
                          "lam": float(out["lam"].detach())})
    loss.backward()
    optim.step()
    optim.zero_grad(set_to_none=True)
    return float(loss.detach())


def _stats(values: list[float]) -> dict[str, float]:
    """Median and interquartile range (the noise-robust pair) plus mean / min / max / stdev."""
    if len(values) > 1:
        q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = med = q3 = values[0]
    return {"median": med, "q1": q1, "q3": q3, "iqr": q3 - q1, "mean": statistics.fmean(values), "min": min(values),
            "max": max(values), "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def timing_summary(times: list[float], cpu_times: list[float], tokens: list[int], args: argparse.Namespace,
                   flops: dict[str, float], first_step_s: float | None) -> dict[str, Any]:
    tokens_per_s = sum(tokens) / sum(times)
    peak_flops = args.peak_flops
    return {
        "step_time_s": _stats(times),
        # CPU seconds of this process per step: wall time far above cpu / threads means the step waited (other
        # processes, memory reclaim), i.e. the machine was not idle.
        "cpu_time_s": _stats(cpu_times),
        "first_step_s": first_step_s,
        "tokens_per_step": statistics.fmean(tokens),
        "padded_tokens_per_step": args.batch * args.seq,
        "tokens_per_s": tokens_per_s,  # all tokens / all step time: one slow step lowers it
        "tokens_per_s_median": statistics.median(n / t for n, t in zip(tokens, times, strict=True)),
        "mfu": flops["flops_per_token"] * tokens_per_s / peak_flops if peak_flops else None,
        "mfu_excl_head": flops["flops_per_token_excl_head"] * tokens_per_s / peak_flops if peak_flops else None,
    }


# ---------------------------------------------------------------------------------------------
# One variant in its own process: timing (default mode) and peak memory (both modes)
# ---------------------------------------------------------------------------------------------


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)
    rss_before = _rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    lm = build_lm(args, device, dtype)
    lm.train()
    flops = flops_per_token(lm, args.seq)

    model, loss_cfg = wrap(variant, lm, args, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=device.type == "cuda")
    step_model = model  # d and d_sep: compiled by wrap
    precision = split_variant(variant)[1]
    batches = make_batches(min(4, args.warmup + args.steps), lm, args, device)
    terms: list[dict[str, float]] = []  # per-term losses of each AlignX step (checked against the spec in tests)

    from tqdm import tqdm

    first_step_s = None
    losses = []
    for i in tqdm(range(args.warmup), desc=f"{variant} warmup", file=sys.stderr, disable=args.quiet):
        _sync(device)
        t0 = time.perf_counter()
        losses.append(train_step(step_model, loss_cfg, optim, batches[i % len(batches)], terms, precision))
        _sync(device)
        if i == 0:
            first_step_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()  # the timed steps' peak (includes weights, grads, Adam states)
    times, cpu_times, tokens = [], [], []
    for i in tqdm(range(args.steps), desc=f"{variant} timed", file=sys.stderr, disable=args.quiet):
        batch = batches[(args.warmup + i) % len(batches)]
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(train_step(step_model, loss_cfg, optim, batch, terms, precision))
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        tokens.append(int(batch["attention_mask"].sum()))

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
        memory = {"peak_bytes": peak, "kind": "torch.cuda.max_memory_allocated over the timed steps",
                  "resident_after_step_bytes": torch.cuda.memory_allocated()}
    else:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        memory = {"peak_bytes": peak_rss - rss_before,
                  "kind": "process peak RSS (ru_maxrss) minus RSS before the model was built",
                  "resident_after_step_bytes": _rss() - rss_before}

    return {
        "variant": variant,
        "description": describe(variant),
        **timing_summary(times, cpu_times, tokens, args, flops, first_step_s),
        "threads": torch.get_num_threads(),
        "memory": memory,
        "loss_first": losses[0],
        "terms_first": terms[0] if terms else None,
        "loss_last": losses[-1],
        "losses_finite": all(math.isfinite(v) for v in losses),
        "flops": flops,
    }


# ---------------------------------------------------------------------------------------------
# All variants timed interleaved in one process (--interleave)
# ---------------------------------------------------------------------------------------------


def run_interleaved(variants: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Time ``variants`` round-robin on one LM and one AdamW: round r steps every variant once, in an order rotated
    by r, on the same batch; ``args.warmup`` rounds first, untimed. The variants share weights (each step trains
    them) but not losses: each step is that variant's forward, backward and optimiser step. The L_LAM head only gets
    gradients in (c)-like steps; AdamW skips parameters without a gradient."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = build_lm(args, device, dtype)
    lm.train()
    flops = flops_per_token(lm, args.seq)
    wrapped = {v: wrap(v, lm, args, device) for v in variants}
    params, seen = [], set()
    for model, _ in wrapped.values():
        for p in model.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    optim = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=device.type == "cuda")
    rounds = args.warmup + args.steps
    batches = make_batches(min(4, rounds), lm, args, device)

    records: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    first_step: dict[str, float] = {}
    terms: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        batch = batches[r % len(batches)]
        tokens = int(batch["attention_mask"].sum())
        for position, v in enumerate(order):
            model, loss_cfg = wrapped[v]
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            loss = train_step(model, loss_cfg, optim, batch, terms[v], split_variant(v)[1])
            _sync(device)
            seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            if r == 0:
                first_step[v] = seconds
            if r >= args.warmup:
                records[v].append({"round": r - args.warmup, "position": position, "seconds": seconds,
                                   "cpu_seconds": cpu_seconds, "tokens": tokens, "loss": loss})
        if not args.quiet:
            print(f"[train_step] round {r + 1}/{rounds}" + (" (warm-up)" if r < args.warmup else "") + ": "
                  + " ".join(order), file=sys.stderr, flush=True)

    out = {}
    for v, recs in records.items():
        out[v] = {**timing_summary([x["seconds"] for x in recs], [x["cpu_seconds"] for x in recs],
                                   [x["tokens"] for x in recs], args, flops, first_step.get(v)),
                  "losses_finite": all(math.isfinite(x["loss"]) for x in recs),
                  "steps": recs}
    return {"threads": torch.get_num_threads(), "flops": flops, "variants": out}


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _met(value: float | None, limit: float) -> dict[str, Any]:
    return {"value": value, "limit": limit, "met": value <= limit if value is not None else None}


def paired_overhead(results: dict[str, dict[str, Any]], num: str, den: str) -> dict[str, float] | None:
    """Median and IQR over rounds of step(num) / step(den) - 1, the two steps of a round taken on the same batch
    moments apart (interleaved timing only)."""
    if not all(v in results and "steps" in results[v] for v in (num, den)):
        return None
    by_round = {x["round"]: x["seconds"] for x in results[den]["steps"]}
    ratios = [x["seconds"] / by_round[x["round"]] - 1 for x in results[num]["steps"] if x["round"] in by_round]
    if not ratios:
        return None
    s = _stats(ratios)
    return {k: s[k] for k in ("median", "q1", "q3", "iqr", "n")}


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def med(v: str) -> float | None:
        return results[v]["step_time_s"]["median"] if v in results else None

    def peak(v: str) -> float | None:
        return results[v]["memory"]["peak_bytes"] if v in results else None

    overhead = _ratio(med("c"), med("b"))
    ratios = {
        "alignment_overhead_c_over_b": overhead - 1 if overhead is not None else None,
        "alignment_overhead_c_over_b_paired": paired_overhead(results, "c", "b"),
        "step_time_c_over_a": _ratio(med("c"), med("a")),
        "step_time_b_over_a": _ratio(med("b"), med("a")),
        "memory_c_over_a": _ratio(peak("c"), peak("a")),
        "memory_b_over_a": _ratio(peak("b"), peak("a")),
        "memory_hooks_minus_hidden_states_bytes": (peak("c") - peak("c_hs"))
        if "c" in results and "c_hs" in results else None,
        "step_time_c_sep_over_c": _ratio(med("c_sep"), med("c")),
        "step_time_d_over_c": _ratio(med("d"), med("c")),
        "step_time_e_over_c": _ratio(med("e"), med("c")),
        "memory_e_over_a": _ratio(peak("e"), peak("a")),
        # issue 22: each variant's speed-up over the fp32 recomputing path (c_sep_rc: alignx before the issue), paired
        # by round: median over rounds of step(c_sep_rc) / step(v) (1 + overhead, inverted), with its IQR
        "speedup_over_c_sep_rc_paired": {  # 1 / (1 + x) reverses the order: the overhead's q3 is the speed-up's q1
            v: {"median": 1 / (1 + o["median"]), "q1": 1 / (1 + o["q3"]), "q3": 1 / (1 + o["q1"]), "n": o["n"]}
            for v in results if v != "c_sep_rc" and (o := paired_overhead(results, v, "c_sep_rc")) is not None
        },
    }
    best_mfu = max((r["mfu"] for r in results.values() if r["mfu"] is not None), default=None)
    mem = ratios["memory_c_over_a"]
    targets = {
        "mfu_ge_0.45": {"value": best_mfu, "met": best_mfu >= 0.45 if best_mfu is not None else None},
        "alignment_overhead_le_0.05": _met(ratios["alignment_overhead_c_over_b"], 0.05),
        "memory_c_over_a_le_0.6": _met(mem, 0.6),  # the H100 benchmark's target
        "memory_c_over_a_le_0.5": _met(mem, 0.5),  # issue 11's target for the real shapes
    }
    speedups = ratios["speedup_over_c_sep_rc_paired"]
    if speedups:
        best = max(speedups, key=lambda v: speedups[v]["median"])
        targets["stage1_step_speedup_ge_2"] = {"value": speedups[best]["median"], "variant": best,
                                               "met": speedups[best]["median"] >= 2.0}
    return {"ratios": ratios, "targets": targets}


def table(results: dict[str, dict[str, Any]]) -> str:
    head = (f"{'variant':<6} {'step s (med)':>12} {'IQR':>8} {'cpu s (med)':>11} {'tokens/s':>11} {'MFU':>6} "
            f"{'peak GiB':>9}  description")
    lines = [head, "-" * len(head)]
    for v, r in results.items():
        mfu = f"{r['mfu']:.3f}" if r["mfu"] is not None else "n/a"
        lines.append(f"{v:<6} {r['step_time_s']['median']:>12.4f} {r['step_time_s']['iqr']:>8.4f} "
                     f"{r['cpu_time_s']['median']:>11.4f} {r['tokens_per_s']:>11.1f} {mfu:>6} "
                     f"{r['memory']['peak_bytes'] / 2**30:>9.3f}  {r['description']}")
    return "\n".join(lines)


def _worker_argv(args: argparse.Namespace, variant: str, out: str, steps: int, warmup: int) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--worker-out", out,
            "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(steps), "--warmup", str(warmup),
            "--chunk-size", str(args.chunk_size), "--chunk-mib", str(args.chunk_mib), "--device", args.device, "--seed", str(args.seed),
            "--threads", str(args.threads), "--attn", args.attn]
    argv += ["--model", args.model, "--weights", args.weights] if args.model else ["--preset", args.preset]
    if args.peak_flops:
        argv += ["--peak-flops", str(args.peak_flops)]
    if args.quiet:
        argv.append("--quiet")
    if args.freeze_embeddings:
        argv.append("--freeze-embeddings")
    return argv


def run_workers(variants: list[str], args: argparse.Namespace, steps: int, warmup: int, tmp: str,
                failures: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each variant in a fresh subprocess (clean peak-memory counters, no caches shared), one after the other."""
    results = {}
    for v in variants:
        out = os.path.join(tmp, f"{v}.json")
        print(f"[train_step] variant {v} (own process, {warmup} + {steps} steps): {describe(v)}", file=sys.stderr,
              flush=True)
        env = dict(os.environ)
        if not args.device.startswith("cuda"):
            # Large blocks via mmap are returned to the OS when freed, so peak RSS tracks live tensors
            # instead of glibc's retained heap (which made CPU peaks noisy).
            env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
        proc = subprocess.run(_worker_argv(args, v, out, steps, warmup),
                              stderr=None if not args.quiet else subprocess.PIPE, text=True, check=False, env=env)
        if proc.returncode != 0 or not os.path.exists(out):
            # One failing variant (e.g. compile without a C compiler, out of memory) must not lose the others.
            failures[v] = f"worker exited with {proc.returncode}" + (f": {proc.stderr[-2000:]}" if proc.stderr else "")
            continue
        with open(out, encoding="utf-8") as fh:
            results[v] = json.load(fh)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model shape (and default batch/seq), random weights; default tiny unless --model")
    p.add_argument("--model", default=None,
                   help="a real causal LM instead of a preset: packaged:<key>, a local HF directory or a hub id "
                        "(its config from the resolved directory; batch 8 x 256 by default)")
    p.add_argument("--weights", choices=("pretrained", "random"), default="pretrained",
                   help="with --model: its own weights (alignx's loader) or random weights of its config")
    p.add_argument("--attn", default="sdpa", help="attn_implementation of the model")
    p.add_argument("--batch", type=int, default=None, help="rows per step (default: the preset's; 8 with --model)")
    p.add_argument("--seq", type=int, default=None, help="padded sequence length (default: the preset's; 256 with --model)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (rounds with --interleave) first")
    p.add_argument("--variants", default="a,b,c,c_hs", help=f"comma list of {','.join(VARIANTS)}")
    p.add_argument("--interleave", action="store_true",
                   help="time the variants round-robin in one process (peak memory still per subprocess); "
                        f"variants {','.join(INTERLEAVABLE)} only")
    p.add_argument("--compile", action="store_true", help="add variant d: (c) under torch.compile")
    p.add_argument("--grad-ckpt", action="store_true", help="add variant e: (c) with gradient checkpointing")
    p.add_argument("--freeze-embeddings", action="store_true",
                   help="model.freeze_embeddings=true: no gradient for the input embeddings (and a head tied to them)")
    p.add_argument("--chunk-size", type=int, default=LossConfig().ntp_chunk_size, help="loss.ntp_chunk_size for b-e")
    p.add_argument("--chunk-mib", type=float, default=LossConfig().ntp_chunk_mib, help="loss.ntp_chunk_mib for b-e (0: no cap)")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="peak dense bf16 FLOP/s for MFU (default: 989e12 on H100/H200; none on CPU -> MFU null)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="result JSON path")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.preset and args.model:
        p.error("give --preset or --model, not both")
    if not args.model:
        args.preset = args.preset or "tiny"
        preset = PRESETS[args.preset]
        args.batch = args.batch or preset["batch"]
        args.seq = args.seq or preset["seq"]
    else:
        args.batch = args.batch or 8
        args.seq = args.seq or 256
    if args.batch < 2:
        p.error("--batch must be >= 2 (L_CTR needs in-batch negatives)")
    if args.seq < 32:
        p.error("--seq must be >= 32 to hold instruction, x, separator and y spans")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.variant_list += [v for v, on in (("d", args.compile), ("e", args.grad_ckpt)) if on and v not in args.variant_list]
    unknown = [v for v in args.variant_list if split_variant(v)[0] not in VARIANTS or split_variant(v)[1] not in PRECISIONS]
    if unknown:
        p.error(f"--variants: unknown {','.join(unknown)}; choose from {','.join(VARIANTS)}")
    if args.interleave and any(split_variant(v)[0] not in INTERLEAVABLE for v in args.variant_list):
        p.error(f"--interleave times {','.join(INTERLEAVABLE)} on one shared model; e (gradient checkpointing) "
                "changes that model: run it without --interleave")
    args.model_config = None
    if args.model and not args.worker:  # before any model is built (exit 2, one line)
        try:
            args.model_config = shape_summary(model_config(args.model, args.weights))
            args.model_dir = mload.resolve_path(args.model)[0]
        except ConfigError as e:
            p.error(str(e))
    if args.peak_flops is None and args.device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        args.peak_flops = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return args


def _merge(memory_run: dict[str, Any], timed: dict[str, Any]) -> dict[str, Any]:
    """One variant's entry with --interleave: timing from the shared process, memory and first losses from the
    variant's own process (a fresh model, as in the default mode)."""
    return {
        "variant": memory_run["variant"],
        "description": memory_run["description"],
        **{k: v for k, v in timed.items() if k != "losses_finite"},
        "memory": {**memory_run["memory"], "measured_in": "own subprocess: 1 warm-up + 1 step (the second step holds "
                                                          "weights, gradients, AdamW states and activations)"},
        "loss_first": memory_run["loss_first"],
        "terms_first": memory_run["terms_first"],
        "losses_finite": memory_run["losses_finite"] and timed["losses_finite"],
        "flops": memory_run["flops"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        write_json(args.worker_out, run_variant(args.worker, args))
        return {}
    variants = args.variant_list
    if args.steps < MIN_TIMED_STEPS:
        print(f"[train_step] note: {args.steps} timed step(s) per variant; median and IQR need >= {MIN_TIMED_STEPS} "
              "(a smoke run, not a measurement)", file=sys.stderr)

    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    load = {"before": os.getloadavg()}  # CPU timings are only meaningful on an otherwise idle machine
    threads = None
    with tempfile.TemporaryDirectory() as tmp:
        if not args.interleave:
            results = run_workers(variants, args, args.steps, args.warmup, tmp, failures)
        else:
            memory_runs = run_workers(variants, args, 1, 1, tmp, failures)
            load["before_timing"] = os.getloadavg()
            timed_variants = [v for v in variants if v in memory_runs]  # a variant that failed alone (OOM) is not timed
            if timed_variants:
                print(f"[train_step] timing {','.join(timed_variants)} interleaved in this process", file=sys.stderr,
                      flush=True)
                timed = run_interleaved(timed_variants, args)
                threads = timed["threads"]
                results = {v: _merge(memory_runs[v], timed["variants"][v]) for v in timed_variants}
    load["after"] = os.getloadavg()

    flops = next(iter(results.values()))["flops"] if results else None
    timed_steps = args.steps
    if args.model:
        model_info = {"name_or_path": args.model, "resolved_dir": args.model_dir, "weights": args.weights,
                      "config": args.model_config}
    else:
        model_info = {**PRESETS[args.preset]["model"], "weights": "random", "architecture": "Qwen2ForCausalLM"}
    report = {
        "benchmark": "alignx stage-1 train step",
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else None,
        "config": {"preset": args.preset, "model": model_info, "batch": args.batch,
                   "seq": args.seq, "steps": args.steps, "warmup": args.warmup, "chunk_size": args.chunk_size, "chunk_mib": args.chunk_mib,
                   "device": args.device, "dtype": "bfloat16" if args.device.startswith("cuda") else "float32",
                   "freeze_embeddings": args.freeze_embeddings,
                   "attn_implementation": args.attn, "optimizer": "AdamW (fused on CUDA), lr 1e-5, no weight decay",
                   "seed": args.seed, "threads": args.threads or torch.get_num_threads(),
                   "loss_c": {"lambda_ctr": 0.3, "lambda_lam": 0.4, "tau": LossConfig().tau,
                              "align_layer": "middle (num_layers // 2)"}},
        "timing": {
            "mode": "interleaved" if args.interleave else "per_process",
            "how": ("memory: one subprocess per variant (1 warm-up + 1 step); timing: all variants in one process on one "
                    "shared model and AdamW, round r steps every variant once in an order rotated by r, on the same "
                    "batch, after --warmup untimed rounds") if args.interleave else
                   "each variant in its own subprocess, one after the other: --warmup untimed then --steps timed steps",
            "timed_steps_per_variant": timed_steps,
            "at_least_5_timed_steps": timed_steps >= MIN_TIMED_STEPS,
            "torch_threads": threads if threads is not None else next(
                (r.get("threads") for r in results.values() if r.get("threads")), None),
        },
        "mfu": {"formula": MFU_FORMULA, "peak_flops": args.peak_flops, **(flops or {})},
        "environment": {**environment(), "load_average_1_5_15min": load, "cpu_count": os.cpu_count()},
        "variants": results,
        "failed": failures,
        **summarise(results),
    }
    print(table(results))
    paired = report["ratios"]["alignment_overhead_c_over_b_paired"]
    if paired:
        print(f"alignment overhead c/b - 1, paired by round: median {paired['median']:.3f} "
              f"(IQR {paired['q1']:.3f} .. {paired['q3']:.3f}, n {paired['n']})")
    for name, t in report["targets"].items():
        value = "unmeasured" if t["value"] is None else f"{t['value']:.3f}"
        print(f"target {name}: {value} (met: {t['met']})")
    print(f"load average before {load['before']} after {load['after']}; torch threads {report['timing']['torch_threads']}")
    if failures:
        print(f"failed variants: {failures}", file=sys.stderr)
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    if "--quiet" in sys.argv:  # transformers' own bars too ("Loading weights"); process-wide, so only as a script
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    main()
