"""Benchmark stage-1 sequence packing (data.packing): non-padding tokens/s of training steps, packed vs unpacked.

Command (quiet machine; the CPU figures in benchmarks/README.md):
    PYTHONPATH=src python benchmarks/packing.py --steps 10 --warmup 2 --threads 2 \
        --out benchmarks/results/packing_cpu_gemma3.json
Smoke test (tiny random Gemma-3 on the real tokenizer and rows):
    PYTHONPATH=src python benchmarks/packing.py --model tiny:gemma3 --steps 1 --warmup 1 --max-pairs 200 --out /tmp/p.json

Rows: the shipped experiment's training pairs (experiments/cpu_gemma3/data/indomain/train.jsonl, both directions),
rendered by alignx's stage-1 renderer (``alignx.train.stage.build_dataset``) with the real tokenizer of
``packaged:gemma3-270m`` at the experiment's settings (default template, data.max_length 96, micro-batch 8), so the
length distribution is the one training meets. Micro-batches are drawn at random (seeded), as the Trainer's default
sampler draws them.

Variants (one model and optimiser; timed interleaved: round r runs one step of every variant, the order rotated by r,
so drift and background load fall on all of them alike):
  unpacked       Collator: optim.batch_size rows right-padded to the longest (data.packing=false)
  packed         PackingCollator: the same rows, first-fit decreasing into sequences of <= data.max_length tokens
                 (data.packing=true: the same losses as unpacked)
  packed_budget  as many rows of the stream as first fit into optim.batch_size sequences of data.max_length tokens:
                 the token slots the unpacked run must provision for its worst micro-batch (batch x max_length), i.e.
                 the same memory. More rows per micro-batch means more L_CTR negatives and L_LAM pairs, so this is
                 what the memory packing frees would buy, not what data.packing does.

A step is AlignXModel forward (hooks, fused NTP, L_CTR + L_LAM at 0.3 / 0.4) + backward + AdamW step + zero_grad,
the device synchronised around it. Tokens/s counts non-padding tokens. Memory: on CUDA the peak allocated in each
step (reset before it); on CPU the padded token slots (sequences x length) per step, as process RSS cannot be split
between interleaved variants.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

try:
    import alignx  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alignx.config import LossConfig, ModelConfig, TrainConfig, load_config, to_dict
from alignx.data.dataset import examples as rendered_examples
from alignx.data.packing import PackingCollator, pack_rows
from alignx.data.render import Collator, Example
from alignx.model import load as mload
from alignx.model.alignx_model import AlignXModel
from alignx.train.stage import build_dataset
from alignx.train.trainer import combine_losses
from alignx.utils import environment, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import _stats, _sync  # noqa: E402  (the step benchmark's timing statistics and device sync)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "experiments" / "cpu_gemma3" / "data" / "indomain" / "train.jsonl"
VARIANTS = ("unpacked", "packed", "packed_budget")


# ---------------------------------------------------------------------------------------------
# Rows, micro-batches
# ---------------------------------------------------------------------------------------------


def render_rows(args: argparse.Namespace, tokenizer: Any) -> tuple[list[Example], dict[str, Any], TrainConfig]:
    """The stage-1 rows ``alignx train`` would train on (its own renderer and settings)."""
    overrides = {"stage": 1, "model.name_or_path": args.tokenizer, "data.parallel": [str(args.data)],
                 "data.max_length": args.max_length, "data.max_pairs": args.max_pairs, "optim.batch_size": args.batch}
    cfg = load_config(TrainConfig, [], overrides)
    data = build_dataset(cfg, tokenizer)
    return rendered_examples(data.dataset), data.counts, cfg


def budget_batch(stream: list[Example], start: int, sequences: int, capacity: int) -> int:
    """How many rows from ``stream[start:]`` first fit into ``sequences`` sequences of ``capacity`` tokens (and still
    pack into that many with the collator's first-fit decreasing)."""
    room = [capacity] * sequences
    n = 0
    for e in stream[start:]:
        at = next((k for k, free in enumerate(room) if len(e.input_ids) <= free), None)
        if at is None:
            break
        room[at] -= len(e.input_ids)
        n += 1
    while n > 1 and len(pack_rows([len(e.input_ids) for e in stream[start : start + n]], capacity)) > sequences:
        n -= 1
    return max(n, 1)


def make_batches(rows: list[Example], args: argparse.Namespace, pad_id: int, count: int) -> dict[str, list[dict[str, Any]]]:
    """``count`` micro-batches per variant; unpacked and packed hold the same rows."""
    order = list(range(len(rows)))
    random.Random(args.seed).shuffle(order)
    shortest = min(len(e.input_ids) for e in rows)
    need = count * max(args.batch, args.batch * args.max_length // shortest)  # enough rows for every budget batch
    stream = [rows[i] for i in order] * (1 + need // len(rows))
    pad = Collator(pad_id)
    pack = PackingCollator(pad_id, args.max_length)
    out: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    at_budget = 0
    for i in range(count):
        same = stream[i * args.batch : (i + 1) * args.batch]
        n = budget_batch(stream, at_budget, args.batch, args.max_length)
        budget = stream[at_budget : at_budget + n]
        at_budget += n
        for name, examples, collate in (("unpacked", same, pad), ("packed", same, pack), ("packed_budget", budget, pack)):
            batch = collate(examples)
            out[name].append({"batch": batch, "rows": len(examples), "tokens": sum(len(e.input_ids) for e in examples),
                              "slots": int(batch["input_ids"].numel())})
    return out


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def build_lm(args: argparse.Namespace, tokenizer: Any, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    if args.model.startswith("tiny:"):  # smoke tests: a random model of the architecture, the real tokenizer's vocabulary
        import transformers

        arch = args.model.removeprefix("tiny:")
        ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id, "attn_implementation": args.attn}
        shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "num_key_value_heads": 1}
        if arch == "gemma3":
            lm = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**shape, head_dim=16, sliding_window=32, **ids))
        elif arch == "llama":
            lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape, **ids))
        else:
            raise SystemExit(f"--model tiny:<arch>: arch is gemma3 or llama, got {arch!r}")
        lm = lm.to(dtype)
    else:
        lm = mload.load_model(ModelConfig(name_or_path=args.model, dtype=str(dtype).removeprefix("torch."),
                                          attn_implementation=args.attn))
    if getattr(lm.config, "pad_token_id", None) is None:
        lm.config.pad_token_id = tokenizer.pad_token_id
    return lm.to(device)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def loss_check(model: AlignXModel, batches: dict[str, list[dict[str, Any]]], device: torch.device) -> dict[str, Any]:
    """The loss terms of the first micro-batch unpacked and packed (the same rows), before any step."""
    terms = {}
    for name in ("unpacked", "packed"):
        out = model(**_to(batches[name][0]["batch"], device))
        terms[name] = {"ntp_sum": float(out["ntp_sum"]), "ntp_count": int(out["ntp_count"]), "ctr": float(out["ctr"]),
                       "lam": float(out["lam"])}
    a, b = terms["unpacked"], terms["packed"]
    rel = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in ("ntp_sum", "ctr", "lam"))
    return {**terms, "max_relative_difference": rel, "same_token_count": a["ntp_count"] == b["ntp_count"]}


def _shown(path: Path) -> str:
    """A path inside the checkout relative to it (results travel between machines), others as given."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    tokenizer = mload.load_tokenizer(ModelConfig(name_or_path=args.tokenizer), padding_side="right")
    t0 = time.perf_counter()
    rows, counts, cfg = render_rows(args, tokenizer)
    render_s = time.perf_counter() - t0
    rounds = args.warmup + args.steps
    batches = make_batches(rows, args, tokenizer.pad_token_id, rounds)

    torch.manual_seed(args.seed)
    lm = build_lm(args, tokenizer, dtype, device)
    loss_cfg = LossConfig(lambda_ctr=0.3, lambda_lam=0.4, ctr_inputs=args.ctr_inputs)
    model = AlignXModel(lm, loss_cfg, with_alignment=True).to(device)
    model.train()
    check = loss_check(model, batches, device)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6, weight_decay=0.0,
                              fused=device.type == "cuda")

    records: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
        for name in order:
            item = batches[name][r]
            batch = _to(item["batch"], device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            _sync(device)
            start = time.perf_counter()
            out = model(**batch)
            loss = combine_losses(out, loss_cfg.lambda_ctr, loss_cfg.lambda_lam, None, 1, 1)
            loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)
            _sync(device)
            seconds = time.perf_counter() - start
            if r >= args.warmup:
                records[name].append({"seconds": seconds, "tokens": item["tokens"], "rows": item["rows"],
                                      "slots": item["slots"], "sequences": int(item["batch"]["input_ids"].shape[0]),
                                      "peak_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
                                      "loss": float(loss.detach())})
        if not args.quiet:
            print(f"[packing] round {r + 1}/{rounds}" + (" (warm-up)" if r < args.warmup else ""), file=sys.stderr, flush=True)

    variants = {}
    for name, recs in records.items():
        tps = [x["tokens"] / x["seconds"] for x in recs]
        peaks = [x["peak_bytes"] for x in recs if x["peak_bytes"] is not None]
        variants[name] = {
            "step_time_s": _stats([x["seconds"] for x in recs]),
            "tokens_per_s": _stats(tps),
            "tokens_per_s_overall": sum(x["tokens"] for x in recs) / sum(x["seconds"] for x in recs),
            "rows_per_step": statistics.fmean(x["rows"] for x in recs),
            "tokens_per_step": statistics.fmean(x["tokens"] for x in recs),
            "slots_per_step": _stats([float(x["slots"]) for x in recs]),
            "padding_share": 1 - sum(x["tokens"] for x in recs) / sum(x["slots"] for x in recs),
            "peak_bytes": _stats([float(p) for p in peaks]) if peaks else None,
            "steps": recs,
        }
    base = variants["unpacked"]["tokens_per_s"]["median"]
    lengths = sorted(len(e.input_ids) for e in rows)
    return {
        "benchmark": "alignx stage-1 sequence packing (data.packing)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            "model": args.model, "tokenizer": args.tokenizer, "data": _shown(args.data), "device": args.device,
            "dtype": str(dtype).removeprefix("torch."), "attn_implementation": args.attn, "batch_rows": args.batch,
            "max_length": args.max_length, "budget_slots": args.batch * args.max_length, "steps": args.steps,
            "warmup": args.warmup, "seed": args.seed, "threads": torch.get_num_threads(),
            "loss": to_dict(loss_cfg), "optimizer": "AdamW (fused on CUDA), lr 1e-6, no weight decay",
            "render_settings": {k: v for k, v in to_dict(cfg.data).items() if k not in ("parallel", "packing", "instructions")},
        },
        "data": {**counts, "render_s": round(render_s, 2), "row_length": {
            "mean": statistics.fmean(lengths), "median": statistics.median(lengths), "min": lengths[0],
            "max": lengths[-1], "p90": lengths[int(0.9 * (len(lengths) - 1))]}},
        "environment": {**environment(), "cpu_count": os.cpu_count(),
                        "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()}},
        "loss_check": check,
        "variants": variants,
        "ratios": {
            "tokens_per_s_packed_over_unpacked": variants["packed"]["tokens_per_s"]["median"] / base,
            "tokens_per_s_packed_budget_over_unpacked": variants["packed_budget"]["tokens_per_s"]["median"] / base,
            "slots_packed_over_unpacked": variants["packed"]["slots_per_step"]["median"] / variants["unpacked"]["slots_per_step"]["median"],
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="packaged:gemma3-270m",
                   help="a model for alignx's loader (packaged:<name>, a hub id or a directory), or tiny:gemma3 / tiny:llama "
                        "(random, 4 layers, hidden 64, the tokenizer's vocabulary) for a smoke test")
    p.add_argument("--tokenizer", default="packaged:gemma3-270m", help="renders the rows (the experiment's tokenizer)")
    p.add_argument("--data", type=Path, default=DATA, help="stage-1 parallel file (jsonl)")
    p.add_argument("--max-pairs", type=int, default=None, help="data.max_pairs (fewer rows to render, for smoke tests)")
    p.add_argument("--max-length", type=int, default=96, help="data.max_length: longest row and packed length (experiment: 96)")
    p.add_argument("--batch", type=int, default=8, help="optim.batch_size: rows per unpacked / packed micro-batch (experiment: 8)")
    p.add_argument("--ctr-inputs", default="in_context", choices=["in_context", "separate"], help="loss.ctr_inputs")
    p.add_argument("--attn", default="sdpa", help="model.attn_implementation (sdpa, eager, flash_attention_2, ...)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="weights (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--steps", type=int, default=10, help="timed rounds (one step of each variant per round); >= 5 for the IQR")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="result JSON path (e.g. benchmarks/results/packing_cpu_gemma3.json)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.batch < 2:
        p.error("--batch must be >= 2 (L_CTR needs in-batch negatives)")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run(args)
    v = report["variants"]
    print(f"{'variant':<14} {'rows':>5} {'slots':>7} {'pad %':>6} {'step s (med, IQR)':>20} {'tokens/s (med, IQR)':>22}")
    for name, r in v.items():
        st, tp = r["step_time_s"], r["tokens_per_s"]
        print(f"{name:<14} {r['rows_per_step']:>5.1f} {r['slots_per_step']['median']:>7.0f} {100 * r['padding_share']:>6.1f} "
              f"{st['median']:>11.3f} ({st['iqr']:.3f}) {tp['median']:>13.1f} ({tp['iqr']:.1f})")
    print({k: round(x, 3) for k, x in report["ratios"].items()},
          f"loss check: max relative difference {report['loss_check']['max_relative_difference']:.2e}")
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
