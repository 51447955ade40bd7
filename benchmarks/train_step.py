"""Benchmark one AlignX stage-1 training step (forward + backward + AdamW) against a plain HF step.

Reference command (H100):
    python benchmarks/train_step.py --preset qwen2.5-0.5b --batch 8 --seq 2048 --steps 20 --warmup 5 \
        --compile --grad-ckpt --out benchmarks/results/h100_qwen2.5-0.5b.json
CPU-sized:
    python benchmarks/train_step.py --preset tiny --steps 10 --warmup 2 --out benchmarks/results/cpu_tiny.json

Variants (each in its own subprocess, so peak memory is not polluted by the previous one):
  a     plain transformers forward + backward with its built-in loss (``labels=``, full logits)
  b     AlignXModel, lambda_ctr = lambda_lam = 0 (fused chunked NTP only)
  c     AlignXModel with L_CTR + L_LAM at the reference weights (0.3 / 0.4), hook capture of hidden states
  c_hs  (c) capturing with ``output_hidden_states=True`` instead of hooks (measures the hook change)
  d     (c) under torch.compile                     (--compile)
  e     (c) with gradient checkpointing             (--grad-ckpt)

The model has Qwen2.5-0.5B's shape (built from a config written here, random weights, no download),
bf16 on GPU, fp32 on CPU, sdpa attention. Batches are synthetic stage-1 rows made with the real
``alignx.data.render.Collator``: token ids, x / y spans, language ids, rows of varied length.
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

try:
    import alignx  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alignx.config import LossConfig
from alignx.data.render import Collator, Example
from alignx.model import load as mload
from alignx.model.alignx_model import AlignXModel
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
    "d": "(c) + torch.compile",
    "e": "(c) + gradient checkpointing",
}

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


# ---------------------------------------------------------------------------------------------
# Model, batches
# ---------------------------------------------------------------------------------------------


def build_model(preset: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**PRESETS[preset]["model"], attn_implementation="sdpa", use_cache=False,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    return model.to(dtype)


def synthetic_batches(n: int, batch: int, seq: int, vocab: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Stage-1-shaped batches: ``<instruction> x <sep> y <eos>`` rows of 55-100 % of ``seq`` tokens.

    The first row of each batch is full length so every batch pads to exactly ``seq`` (a fixed shape,
    which also keeps torch.compile from recompiling); the others are right-padded.
    """
    rng = random.Random(seed)
    collate = Collator(pad_token_id=0, pad_to_multiple_of=8)
    out = []
    for _ in range(n):
        rows = []
        for r in range(batch):
            length = seq if r == 0 else rng.randint(int(0.55 * seq), seq)
            instr = rng.randint(8, 16)
            sep = 4
            x_len = (length - instr - sep - 1) // 2
            x_span = (instr, instr + x_len)
            y_span = (x_span[1] + sep, length - 1)  # final EOS excluded
            ids = [rng.randrange(3, vocab) for _ in range(length - 1)] + [2]
            src, tgt = rng.sample(range(10), 2)
            rows.append(Example(ids, list(ids), x_span, y_span, src, tgt))
        out.append(collate(rows))
    return out


def flops_per_token(model: torch.nn.Module, seq: int) -> dict[str, float]:
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
# One variant (runs in a worker process)
# ---------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)
    rss_before = _rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    lm = build_model(args.preset, device, dtype)
    lm.train()
    flops = flops_per_token(lm, args.seq)
    vocab = lm.config.vocab_size

    model: torch.nn.Module = lm
    loss_cfg = None
    if variant != "a":
        ntp_only = variant == "b"
        loss_cfg = LossConfig(lambda_ctr=0.0 if ntp_only else 0.3, lambda_lam=0.0 if ntp_only else 0.4,
                              ntp_chunk_size=args.chunk_size)
        if variant == "e":
            mload.enable_gradient_checkpointing(lm)
        model = AlignXModel(lm, loss_cfg, with_alignment=True,
                            capture="hidden_states" if variant == "c_hs" else "hooks").to(device)
        model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=device.type == "cuda")
    step_model = torch.compile(model) if variant == "d" else model

    batches = synthetic_batches(min(4, args.warmup + args.steps), args.batch, args.seq, vocab, seed=args.seed)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]

    terms: list[dict[str, float]] = []  # per-term losses of each AlignX step (checked against the spec in tests)

    def step(batch: dict[str, torch.Tensor]) -> float:
        if variant == "a":
            out = step_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"], use_cache=False)
            loss = out.loss
        else:
            out = step_model(**batch)
            loss = combine_losses(out, loss_cfg.lambda_ctr, loss_cfg.lambda_lam, None, 1, 1)
            terms.append({"ntp": float(out["ntp_sum"].detach() / out["ntp_count"]), "ctr": float(out["ctr"].detach()),
                          "lam": float(out["lam"].detach())})
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        return float(loss.detach())

    from tqdm import tqdm

    first_step_s = None
    losses = []
    for i in tqdm(range(args.warmup), desc=f"{variant} warmup", file=sys.stderr, disable=args.quiet):
        _sync(device)
        t0 = time.perf_counter()
        losses.append(step(batches[i % len(batches)]))
        _sync(device)
        if i == 0:
            first_step_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()  # the timed steps' peak (includes weights, grads, Adam states)
    times, tokens = [], []
    for i in tqdm(range(args.steps), desc=f"{variant} timed", file=sys.stderr, disable=args.quiet):
        batch = batches[(args.warmup + i) % len(batches)]
        _sync(device)
        t0 = time.perf_counter()
        losses.append(step(batch))
        _sync(device)
        times.append(time.perf_counter() - t0)
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

    tokens_per_s = sum(tokens) / sum(times)
    peak_flops = args.peak_flops
    return {
        "variant": variant,
        "description": VARIANTS[variant],
        "step_time_s": {"mean": statistics.fmean(times), "median": statistics.median(times), "min": min(times),
                        "stdev": statistics.stdev(times) if len(times) > 1 else 0.0},
        "first_step_s": first_step_s,
        "tokens_per_step": statistics.fmean(tokens),
        "padded_tokens_per_step": args.batch * args.seq,
        "tokens_per_s": tokens_per_s,
        "mfu": flops["flops_per_token"] * tokens_per_s / peak_flops if peak_flops else None,
        "mfu_excl_head": flops["flops_per_token_excl_head"] * tokens_per_s / peak_flops if peak_flops else None,
        "memory": memory,
        "loss_first": losses[0],
        "terms_first": terms[0] if terms else None,
        "loss_last": losses[-1],
        "losses_finite": all(math.isfinite(v) for v in losses),
        "flops": flops,
    }


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def med(v: str) -> float | None:
        return results[v]["step_time_s"]["median"] if v in results else None

    def peak(v: str) -> float | None:
        return results[v]["memory"]["peak_bytes"] if v in results else None

    overhead = _ratio(med("c"), med("b"))
    ratios = {
        "alignment_overhead_c_over_b": overhead - 1 if overhead is not None else None,
        "step_time_c_over_a": _ratio(med("c"), med("a")),
        "memory_c_over_a": _ratio(peak("c"), peak("a")),
        "memory_b_over_a": _ratio(peak("b"), peak("a")),
        "memory_hooks_minus_hidden_states_bytes": (peak("c") - peak("c_hs"))
        if "c" in results and "c_hs" in results else None,
        "step_time_d_over_c": _ratio(med("d"), med("c")),
        "step_time_e_over_c": _ratio(med("e"), med("c")),
        "memory_e_over_a": _ratio(peak("e"), peak("a")),
    }
    best_mfu = max((r["mfu"] for r in results.values() if r["mfu"] is not None), default=None)
    mem = ratios["memory_c_over_a"]
    targets = {
        "mfu_ge_0.45": {"value": best_mfu, "met": best_mfu >= 0.45 if best_mfu is not None else None},
        "alignment_overhead_le_0.05": {"value": ratios["alignment_overhead_c_over_b"],
                                       "met": ratios["alignment_overhead_c_over_b"] <= 0.05
                                       if ratios["alignment_overhead_c_over_b"] is not None else None},
        "memory_c_over_a_le_0.6": {"value": mem, "met": mem <= 0.6 if mem is not None else None},
    }
    return {"ratios": ratios, "targets": targets}


def table(results: dict[str, dict[str, Any]]) -> str:
    head = f"{'variant':<6} {'step s (med)':>12} {'tokens/s':>11} {'MFU':>6} {'peak GiB':>9}  description"
    lines = [head, "-" * len(head)]
    for v, r in results.items():
        mfu = f"{r['mfu']:.3f}" if r["mfu"] is not None else "n/a"
        lines.append(f"{v:<6} {r['step_time_s']['median']:>12.4f} {r['tokens_per_s']:>11.1f} {mfu:>6} "
                     f"{r['memory']['peak_bytes'] / 2**30:>9.3f}  {r['description']}")
    return "\n".join(lines)


def _worker_argv(args: argparse.Namespace, variant: str, out: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--worker-out", out,
            "--preset", args.preset, "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--chunk-size", str(args.chunk_size), "--device", args.device,
            "--seed", str(args.seed), "--threads", str(args.threads)]
    if args.peak_flops:
        argv += ["--peak-flops", str(args.peak_flops)]
    if args.quiet:
        argv.append("--quiet")
    return argv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model shape (and default batch/seq)")
    p.add_argument("--batch", type=int, default=None, help="rows per step (default: the preset's)")
    p.add_argument("--seq", type=int, default=None, help="padded sequence length (default: the preset's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, allocator, autotune)")
    p.add_argument("--variants", default="a,b,c,c_hs", help=f"comma list of {','.join(VARIANTS)}")
    p.add_argument("--compile", action="store_true", help="add variant d: (c) under torch.compile")
    p.add_argument("--grad-ckpt", action="store_true", help="add variant e: (c) with gradient checkpointing")
    p.add_argument("--chunk-size", type=int, default=LossConfig().ntp_chunk_size, help="loss.ntp_chunk_size for b-e")
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
    preset = PRESETS[args.preset]
    args.batch = args.batch or preset["batch"]
    args.seq = args.seq or preset["seq"]
    if args.batch < 2:
        p.error("--batch must be >= 2 (L_CTR needs in-batch negatives)")
    if args.seq < 64:
        p.error("--seq must be >= 64 to hold instruction, x, separator and y spans")
    if args.peak_flops is None and args.device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        args.peak_flops = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        write_json(args.worker_out, run_variant(args.worker, args))
        return {}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    variants += [v for v, on in (("d", args.compile), ("e", args.grad_ckpt)) if on and v not in variants]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")

    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    load_before = os.getloadavg()  # CPU timings are only meaningful on an otherwise idle machine
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            out = os.path.join(tmp, f"{v}.json")
            print(f"[train_step] variant {v}: {VARIANTS[v]}", file=sys.stderr, flush=True)
            env = dict(os.environ)
            if not args.device.startswith("cuda"):
                # Large blocks via mmap are returned to the OS when freed, so peak RSS tracks live tensors
                # instead of glibc's retained heap (which made CPU peaks noisy).
                env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
            proc = subprocess.run(_worker_argv(args, v, out), stderr=None if not args.quiet else subprocess.PIPE,
                                  text=True, check=False, env=env)
            if proc.returncode != 0 or not os.path.exists(out):
                # One failing variant (e.g. compile without a C compiler) must not lose the others.
                failures[v] = f"worker exited with {proc.returncode}" + (f": {proc.stderr[-2000:]}" if proc.stderr else "")
                continue
            with open(out, encoding="utf-8") as fh:
                results[v] = json.load(fh)

    flops = next(iter(results.values()))["flops"] if results else None
    report = {
        "benchmark": "alignx stage-1 train step",
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else None,
        "config": {"preset": args.preset, "model": PRESETS[args.preset]["model"], "batch": args.batch,
                   "seq": args.seq, "steps": args.steps, "warmup": args.warmup, "chunk_size": args.chunk_size,
                   "device": args.device, "dtype": "bfloat16" if args.device.startswith("cuda") else "float32",
                   "attn_implementation": "sdpa", "optimizer": "AdamW (fused on CUDA), lr 1e-5, no weight decay",
                   "seed": args.seed, "threads": args.threads or torch.get_num_threads(),
                   "loss_c": {"lambda_ctr": 0.3, "lambda_lam": 0.4, "tau": LossConfig().tau,
                              "align_layer": "middle (num_layers // 2)"}},
        "mfu": {"formula": MFU_FORMULA, "peak_flops": args.peak_flops, **(flops or {})},
        "environment": {**environment(), "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()},
                        "cpu_count": os.cpu_count()},
        "variants": results,
        "failed": failures,
        **summarise(results),
    }
    print(table(results))
    for name, t in report["targets"].items():
        value = "unmeasured" if t["value"] is None else f"{t['value']:.3f}"
        print(f"target {name}: {value} (met: {t['met']})")
    if failures:
        print(f"failed variants: {failures}", file=sys.stderr)
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
