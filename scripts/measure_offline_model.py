"""Measure the packaged SmolLM2-135M on CPU: load times, training-step cost and generation speed.

These figures size the embedded demo (stage 1 + stage 2 + evaluation in < 5 minutes on 2 cores).

    PYTHONPATH=src python scripts/measure_offline_model.py                 # fresh cache: times the first conversion
    PYTHONPATH=src python scripts/measure_offline_model.py --cache-root ~/.cache/alignx   # reuse a cache

Writes benchmarks/results/cpu_smollm2_step.json (figures + environment).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from alignx.model.offline import cache_dir, is_complete, resolve_model
from alignx.utils import environment, write_json

KEY = "smollm2-135m"


def timed(fn, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time, plus process CPU time: on a shared, loaded box cpu_s / threads estimates
    the wall time the step would take with the cores to itself."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return {"median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3), "max_s": round(max(walls), 3),
            "median_cpu_s": round(statistics.median(cpus), 3), "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-root", default=None, help="alignx cache root (default: a fresh temp dir, to time the first conversion)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-lens", default="64,128")
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--out", default="benchmarks/results/cpu_smollm2_step.json")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res: dict = {"model": f"packaged:{KEY}", "threads": args.threads, "dtype": "float32", "batch": args.batch}
    # Other processes on a shared box inflate every figure: record the load average around the run.
    res["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    root = Path(args.cache_root).expanduser() if args.cache_root else Path(tempfile.mkdtemp(prefix="alignx_measure_"))
    was_cached = is_complete(cache_dir(KEY, root))

    t = time.perf_counter()
    path, _ = resolve_model(f"packaged:{KEY}", cache_root=root)
    res["resolve_first_s" if not was_cached else "resolve_cached_first_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    resolve_model(f"packaged:{KEY}", cache_root=root)
    res["resolve_cached_s"] = round(time.perf_counter() - t, 4)

    t = time.perf_counter()
    gdir, gname = resolve_model(f"packaged:{KEY}", convert=False)
    AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
    res["load_direct_gguf_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    res["load_cached_s"] = round(time.perf_counter() - t, 2)
    res["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    res["layers"] = model.config.num_hidden_layers
    res["hidden"] = model.config.hidden_size

    # Training step: full fine-tuning in float32, hidden states kept (AlignX pools a middle layer).
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    vocab = model.config.vocab_size
    res["train"] = {}
    for seq in (int(s) for s in args.seq_lens.split(",")):
        ids = torch.randint(3, vocab, (args.batch, seq))
        mask = torch.ones_like(ids)

        def fwd_bwd(ids=ids, mask=mask) -> None:
            out = model(input_ids=ids, attention_mask=mask, labels=ids, output_hidden_states=True)
            assert len(out.hidden_states) == model.config.num_hidden_layers + 1
            out.loss.backward()

        entry = {"fwd_bwd": timed(fwd_bwd, args.repeats)}
        entry["tokens_per_s"] = round(args.batch * seq / entry["fwd_bwd"]["median_s"], 1)
        res["train"][f"{args.batch}x{seq}"] = entry
    res["adamw_step"] = timed(lambda: (opt.step(), opt.zero_grad(set_to_none=False)), args.repeats)
    opt.zero_grad(set_to_none=True)

    # Greedy generation, batch of chat prompts, left padding; min_new_tokens forces a fixed count.
    model.eval()
    tok.padding_side = "left"
    questions = ["What is the capital of France?", "Translate 'good morning' into German.", "Name three colours.", "What is 12 times 7?",
                 "Write one sentence about the sea.", "Who wrote Hamlet?", "Give a synonym for 'happy'.", "What language is spoken in Brazil?"]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False) for q in (questions * args.batch)[: args.batch]]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    n = args.gen_tokens

    def gen() -> torch.Tensor:
        with torch.no_grad():
            return model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)

    g = timed(gen, args.repeats)
    out = gen()
    res["generate"] = {"batch": args.batch, "new_tokens": n, "prompt_len": enc["input_ids"].shape[1], **g,
                       "tokens_per_s": round(args.batch * n / g["median_s"], 1),
                       "sample": tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)}
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    res["environment"] = environment()
    write_json(args.out, res)
    print(f"wrote {args.out}")
    print(json.dumps({k: v for k, v in res.items() if k != "environment"}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
