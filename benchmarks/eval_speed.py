"""Evaluation speed: few-shot translation and multiple choice, today's path vs the fast one, same model and inputs.

- **Translation** (``alignx.eval.translation.evaluate_direction``): *before* is today's path (demonstrations drawn per
  sentence, every prompt encoded in full, no length cap); *after* uses one fixed set of demonstrations per direction
  (``fixed_shots``), encodes the prompts' shared start once and reuses its cache (``share_prefix``), and caps each
  sentence's new tokens (``length_cap``); *after_unshared* is *after*'s prompts encoded in full, to check that sharing
  the cache changes no output. Run at two settings: the experiments' (3 shots, 48 new tokens, batch 16) and
  ``alignx eval``'s defaults (8 shots, 256 new tokens, batch 8). Sentences/s per variant and identical hypotheses.
- **Multiple choice** (lm-eval ``simple_evaluate`` on alignx's XCOPA and MMLU-dev tasks): *before* is lm-eval's
  ``HFLM`` (full logits at every position), *after* alignx's ``ContinuationLM`` (the LM head at the scored positions
  only, one row per distinct input), both fp32; *after_bf16* is *after* under bf16 autocast, what ``alignx eval`` runs
  on a CPU with native bf16. Questions/s, the largest absolute difference of any log-likelihood from *before*, and
  whether every accuracy is equal.

Each (part, variant) is timed ``--rounds`` times, interleaved (before, after, before, after, ...), after an untimed
warm-up; the JSON keeps every round, the medians and the speed-up of the medians, the settings, the environment and
the load average before and after. Inputs are dev-split data only (``experiments/cpu_gemma3_downstream/data``).

    python benchmarks/eval_speed.py --out benchmarks/results/cpu_gemma3_eval_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "experiments" / "cpu_gemma3_downstream" / "data"


def _load(model_name: str, autocast: str) -> tuple[Any, Any, Any]:
    from alignx.config import ModelConfig
    from alignx.model import load as mload

    mc = ModelConfig(name_or_path=model_name, autocast=autocast)
    tok = mload.load_tokenizer(mc)
    model = mload.load_model(mc).eval()
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok, mc


def translation_part(model: Any, tok: Any, args: argparse.Namespace) -> dict[str, Any]:
    from alignx.eval import translation as T

    sets = T.load_translation_sets([str(DATA / "indomain_dev.jsonl")], [str(ROOT / "experiments/cpu_gemma3/data/indomain/train.jsonl")],
                                   None, args.directions, "devtest", limit=args.sentences)
    settings = {
        "experiments": {"shots": 3, "max_new_tokens": 48, "batch_size": 16},
        "defaults": {"shots": 8, "max_new_tokens": 256, "batch_size": 8},
    }
    out: dict[str, Any] = {}
    for name, s in settings.items():
        variants = {
            "before": {**s, "length_cap": 0.0, "fixed_shots": False, "share_prefix": False},
            "after": {**s, "length_cap": args.length_cap, "fixed_shots": True, "share_prefix": True},
            # the same prompts as after, each encoded in full: whether sharing the prefix's cache changes any output
            "after_unshared": {**s, "length_cap": args.length_cap, "fixed_shots": True, "share_prefix": False},
        }
        if args.after_batch_size:
            variants["after"]["batch_size"] = variants["after_unshared"]["batch_size"] = args.after_batch_size
        hyps: dict[str, list[str]] = {}
        times: dict[str, list[float]] = {v: [] for v in variants}
        n = sum(len(test) for test, _ in sets.values())

        def run(v: str, variants: dict[str, Any] = variants, hyps: dict[str, list[str]] = hyps) -> float:
            cfg = variants[v]
            t0 = time.perf_counter()
            got = []
            for test, dev in sets.values():
                entry, rows = T.evaluate_direction(model, tok, test, dev, shots=cfg["shots"], batch_size=cfg["batch_size"],
                                                   max_new_tokens=cfg["max_new_tokens"], length_cap=cfg["length_cap"], bleu_tokenize="13a",
                                                   fixed_shots=cfg["fixed_shots"], share_prefix=cfg["share_prefix"])
                got += [r["hyp"] for r in rows]
            hyps[v] = got
            return time.perf_counter() - t0

        for v in variants:  # warm-up: one direction's first batch
            test, dev = next(iter(sets.values()))
            T.evaluate_direction(model, tok, test[:2], dev, shots=variants[v]["shots"], batch_size=2, max_new_tokens=8, bleu_tokenize="13a")
        for _ in range(args.rounds):
            for v in variants:
                times[v].append(run(v))
        med = {v: statistics.median(t) for v, t in times.items()}
        out[name] = {
            "settings": variants, "sentences": n, "directions": args.directions,
            "seconds": times, "median_s": med, "sentences_per_s": {v: n / t for v, t in med.items()},
            "speedup": med["before"] / med["after"],
            "speedup_of_prefix_sharing": med["after_unshared"] / med["after"],
            # after vs after_unshared: same prompts, so every output should be identical
            "identical_hypotheses_shared_vs_unshared": sum(a == b for a, b in zip(hyps["after_unshared"], hyps["after"], strict=True)),
            # before vs after: different demonstrations (per sentence vs fixed), so outputs differ by design
            "identical_hypotheses_before_vs_after": sum(a == b for a, b in zip(hyps["before"], hyps["after"], strict=True)),
            "differing_shared_vs_unshared": [{"unshared": a, "shared": b} for a, b in zip(hyps["after_unshared"], hyps["after"], strict=True) if a != b][:5],
        }
        print(name, json.dumps({k: out[name][k] for k in ("sentences_per_s", "speedup", "identical_hypotheses_shared_vs_unshared", "sentences")}), flush=True)
    return out


def mc_part(model: Any, tok: Any, args: argparse.Namespace) -> dict[str, Any]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from alignx.eval.benchmarks import render_tasks
    from alignx.eval.scoring import continuation_lm_class

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        render_tasks(DATA / "benchmarks", tmp)
        manager = TaskManager(include_path=tmp, include_defaults=False)
        for bench, tasks in (("xcopa", args.xcopa_tasks), ("mmlu", args.mmlu_tasks)):
            fast = continuation_lm_class()
            classes = {"before": HFLM, "after": fast, "after_bf16": fast}
            times: dict[str, list[float]] = {v: [] for v in classes}
            samples: dict[str, Any] = {}
            accs: dict[str, Any] = {}
            for r in range(args.rounds + 1):  # round 0 is the warm-up
                for v, cls in classes.items():
                    lm = cls(pretrained=model, tokenizer=tok, batch_size=args.mc_batch_size)
                    t0 = time.perf_counter()
                    # after_bf16: what `alignx eval` runs on a CPU with native bf16 (model.autocast=auto); lm-eval's
                    # HFLM switches autocast off inside its forward, so "before" stays fp32 either way
                    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if v == "after_bf16" else contextlib.nullcontext()
                    with ctx:
                        res = lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=args.mc_limit if r else 2, task_manager=manager,
                                                      log_samples=True, bootstrap_iters=0, random_seed=0, numpy_random_seed=0,
                                                      torch_random_seed=0, fewshot_random_seed=0)
                    dt = time.perf_counter() - t0
                    if r:
                        times[v].append(dt)
                        samples[v] = [x for t in sorted(res["samples"]) for s in res["samples"][t] for x in (q[0] for q in s["resps"])]
                        accs[v] = {t: res["results"][t]["acc,none"] for t in tasks}
            n_q = args.mc_limit * len(tasks)
            med = {v: statistics.median(t) for v, t in times.items()}
            diffs = [abs(float(a[0]) - float(b[0])) for a, b in zip(samples["before"], samples["after"], strict=True)]
            diffs16 = [abs(float(a[0]) - float(b[0])) for a, b in zip(samples["before"], samples["after_bf16"], strict=True)]
            out[bench] = {
                "tasks": tasks, "questions": n_q, "batch_size": args.mc_batch_size, "seconds": times, "median_s": med,
                "questions_per_s": {v: n_q / t for v, t in med.items()}, "speedup": med["before"] / med["after"],
                "loglikelihoods": len(diffs), "max_abs_loglikelihood_diff": max(diffs), "acc": accs,
                "acc_equal": accs["before"] == accs["after"], "speedup_bf16": med["before"] / med["after_bf16"],
                "max_abs_loglikelihood_diff_bf16": max(diffs16), "median_abs_loglikelihood_diff_bf16": statistics.median(diffs16),
            }
            print(bench, json.dumps({k: out[bench][k] for k in ("questions_per_s", "speedup", "max_abs_loglikelihood_diff", "acc_equal")}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="packaged:gemma3-270m")
    ap.add_argument("--autocast", default="none", help="model.autocast for both paths (none: fp32, as the identity checks need)")
    ap.add_argument("--parts", default="translation,mc")
    ap.add_argument("--directions", default="en-de,de-en,en-zh,zh-en", type=lambda s: s.split(","))
    ap.add_argument("--sentences", type=int, default=32, help="per direction")
    ap.add_argument("--length-cap", type=float, default=2.0)
    ap.add_argument("--after-batch-size", type=int, default=0, help="batch size of the fast translation path (0: as before)")
    ap.add_argument("--xcopa-tasks", default="alignx_xcopa_it,alignx_xcopa_zh", type=lambda s: s.split(","))
    ap.add_argument("--mmlu-tasks", default="alignx_mmlu_de", type=lambda s: s.split(","))
    ap.add_argument("--mc-limit", type=int, default=60, help="questions per task")
    ap.add_argument("--mc-batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from alignx.utils import environment

    load_before = os.getloadavg()
    model, tok, _ = _load(args.model, args.autocast)
    result: dict[str, Any] = {
        "kind": "benchmark.eval_speed", "command": " ".join([Path(sys.executable).name, *sys.argv]), "model": args.model,
        "autocast": args.autocast, "torch_threads": torch.get_num_threads(), "load_average_before": load_before,
        "env": environment(), "args": {k: str(v) for k, v in vars(args).items()},
    }
    parts = args.parts.split(",")
    if "translation" in parts:
        result["translation"] = translation_part(model, tok, args)
    if "mc" in parts:
        result["multiple_choice"] = mc_part(model, tok, args)
    result["load_average_after"] = os.getloadavg()
    result["targets"] = {
        "translation_speedup_at_least_5x": {k: v["speedup"] >= 5 for k, v in result.get("translation", {}).items()},
        "mc_speedup_at_least_4x_loglik_within_1e-4": {
            k: v["speedup"] >= 4 and v["max_abs_loglikelihood_diff"] <= 1e-4 for k, v in result.get("multiple_choice", {}).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
