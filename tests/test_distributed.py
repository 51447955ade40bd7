"""Multi-process training: accelerate configs, the cross-rank gather, and real 2-process gloo runs on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SENTENCES, save_tiny_model, write_pairs

REPO = Path(__file__).resolve().parents[1]
ACC = REPO / "configs" / "accelerate"
WORKER = Path(__file__).with_name("_dist_worker.py")


# ---- accelerate configs ---------------------------------------------------------------------


def _launch_args(name: str):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(ACC / f"{name}.yaml"), "-m", "alignx.cli", "train"])
    args, _, _ = _validate_launch_command(args)
    return args


def test_accelerate_configs_parse_and_select_the_intended_engine():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    expected = {
        "ddp": (DistributedType.MULTI_GPU, "bf16"),
        "fsdp": (DistributedType.FSDP, "bf16"),
        "deepspeed_zero2": (DistributedType.DEEPSPEED, "bf16"),
        "cpu_2proc": (DistributedType.MULTI_GPU, "no"),  # torchrun launcher; gloo via ACCELERATE_USE_CPU
    }
    assert sorted(p.stem for p in ACC.glob("*.yaml")) == sorted(expected)
    for name, (dtype, mp) in expected.items():
        cfg = load_config_from_file(str(ACC / f"{name}.yaml"))
        assert (cfg.distributed_type, cfg.mixed_precision) == (dtype, mp), name
        args = _launch_args(name)
        assert (args.use_fsdp, args.use_deepspeed, args.multi_gpu) == (name == "fsdp", name == "deepspeed_zero2", name in ("ddp", "cpu_2proc"))
    ds = load_config_from_file(str(ACC / "deepspeed_zero2.yaml")).deepspeed_config
    assert ds["zero_stage"] == 2
    # Left to the HF Trainer ("auto"), so optim.grad_accum / max_grad_norm cannot disagree with DeepSpeed.
    assert "gradient_accumulation_steps" not in ds and "gradient_clipping" not in ds


def test_fsdp_config_wraps_each_decoder_layer_of_the_alignx_wrapper(tmp_path, monkeypatch):
    """The env accelerate launch exports for fsdp.yaml builds a plugin whose auto-wrap finds the
    decoder layers through AlignXModel (no class name in the file) and saves full state dicts."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from accelerate.utils.launch import prepare_multi_gpu_env
    from transformers import AutoModelForCausalLM

    from alignx.config import LossConfig
    from alignx.model import load as mload
    from alignx.model.alignx_model import AlignXModel

    env = prepare_multi_gpu_env(_launch_args("fsdp"))
    for k, v in env.items():
        if k.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(k, v)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert plugin.transformer_cls_names_to_wrap is None  # taken from the model

    lm = AutoModelForCausalLM.from_pretrained(save_tiny_model(tmp_path / "m"))
    wrapper = AlignXModel(lm, LossConfig(), with_alignment=True)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, wrapper)
    wrapped = [n for n, m in wrapper.named_modules() if policy(m)]
    layers = mload.decoder_layers(lm)
    assert wrapped == [f"lm.model.layers.{i}" for i in range(len(layers))]
    # Embeddings, final norm, output head and the L_LAM head stay in the root unit (see README).
    assert not any(policy(m) for m in (lm.get_output_embeddings(), lm.get_input_embeddings(), wrapper.lam_head))


# ---- gather_with_grad in a real 2-process gloo group -------------------------------------------


def _gather_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from alignx.distributed import gather_with_grad, world

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        n = 3 if rank == 0 else 1  # uneven row counts
        gen = torch.Generator().manual_seed(100 + rank)
        local = torch.randn(n, 4, generator=gen, requires_grad=True)
        rows, index = gather_with_grad(local)
        weights = torch.arange(rows.numel(), dtype=torch.float32).reshape(rows.shape) + 1
        (rows * weights).sum().backward()
        torch.save({"world": world(), "local": local.detach(), "rows": rows.detach(), "index": index,
                    "grad": local.grad, "weights": weights},
                   os.path.join(out_dir, f"g{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gather_with_grad_uneven_rows_two_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"g{r}.pt") for r in (0, 1))
    assert r0["world"] == (0, 2) and r1["world"] == (1, 2)
    everything = torch.cat([r0["local"], r1["local"]])
    for r in (r0, r1):
        assert torch.equal(r["rows"], everything)  # same concatenation, rank order, no padding rows
        assert torch.equal(r["rows"][r["index"]], r["local"])
    assert r0["index"].tolist() == [0, 1, 2] and r1["index"].tolist() == [3]
    # Exact gradient of the loss summed over ranks: every rank's loss (here both use the same
    # weights) pulls on this rank's rows.
    for r in (r0, r1):
        assert torch.equal(r["grad"], r0["weights"][r["index"]] + r1["weights"][r["index"]])


def _fsdp2_worker(rank: int, port: int, model_dir: str, out_dir: str) -> None:
    """Shard AlignXModel with FSDP2 exactly as fsdp.yaml asks (decoder layers, then the root) and
    compare loss and every gradient with the unsharded model on the same batch."""
    import torch.distributed as dist
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM

    from alignx.config import LossConfig
    from alignx.model.alignx_model import AlignXModel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        os.environ.update(FSDP_VERSION="2", FSDP_AUTO_WRAP_POLICY="TRANSFORMER_BASED_WRAP", FSDP_STATE_DICT_TYPE="FULL_STATE_DICT")
        models = []
        for _ in range(2):
            torch.manual_seed(0)  # same L_LAM head init
            lm = AutoModelForCausalLM.from_pretrained(model_dir)
            models.append(AlignXModel(lm, LossConfig(ntp_chunk_size=8), with_alignment=True).train())
        ref, sharded = models
        assert ref.fused  # the output head is called inside AlignXModel.forward
        gen = torch.Generator().manual_seed(1)
        ids = torch.randint(4, ref.config.vocab_size, (4, 12), generator=gen)
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clone(),
                     x_start=torch.tensor([1, 1, 2, 1]), x_end=torch.tensor([5, 6, 5, 4]),
                     y_start=torch.tensor([6, 7, 6, 5]), y_end=torch.tensor([11, 12, 10, 9]),
                     src_lang=torch.tensor([0, 0, 1, 1]), tgt_lang=torch.tensor([1, 2, 0, 2]))

        def total(o: dict) -> torch.Tensor:
            return o["ntp_sum"] / o["ntp_count"] + 0.3 * o["ctr"] + 0.4 * o["lam"]

        ref_loss = total(ref(**batch))
        ref_loss.backward()
        policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(), sharded)
        mesh = init_device_mesh("cpu", (2,))
        units = [n for n, m in sharded.named_modules() if m is not sharded and policy(m)]
        for name in reversed(units):
            fully_shard(sharded.get_submodule(name), mesh=mesh)
        fully_shard(sharded, mesh=mesh)
        loss = total(sharded(**batch))
        loss.backward()
        ref_grads = dict(ref.named_parameters())
        diffs = {}
        for name, p in sharded.named_parameters():
            grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            diffs[name] = float((grad - ref_grads[name].grad).abs().max())
        torch.save({"units": units, "losses": (float(ref_loss), float(loss)), "diffs": diffs,
                    "head_is_dtensor": type(sharded.lm.get_output_embeddings().weight).__name__ == "DTensor"},
                   os.path.join(out_dir, f"f{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_fsdp2_sharded_alignx_model_matches_unsharded(tmp_path):
    """The fused NTP loss calls the output head inside AlignXModel.forward: with the decoder layers
    auto-wrapped, the head lives in the root unit, which is unsharded for the whole forward."""
    import torch.multiprocessing as mp

    model_dir = save_tiny_model(tmp_path / "m")
    mp.spawn(_fsdp2_worker, args=(_free_port(), str(model_dir), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        r = torch.load(tmp_path / f"f{rank}.pt")
        assert r["units"] == [f"lm.model.layers.{i}" for i in range(4)]
        assert r["head_is_dtensor"]  # really sharded at rest
        assert r["losses"][1] == pytest.approx(r["losses"][0], rel=1e-6)
        assert len(r["diffs"]) > 30 and max(r["diffs"].values()) < 1e-5, r["diffs"]


# ---- real 2-process training runs --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dist")
    rows = SENTENCES + [(s, t + " !", lang) for s, t, lang in SENTENCES]  # 24 pairs -> 48 rows both ways
    return {"model": save_tiny_model(d / "tiny-llama"), "pairs": write_pairs(d / "pairs.jsonl", rows), "root": d}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]), ACCELERATE_USE_CPU="true",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ALIGNX_LOG="WARNING",
               DS_ACCELERATOR="cpu")  # DeepSpeed (when a test launches it) would guess the CPU, with a warning
    return env


def _train(assets, name: str, nproc: int, *overrides: str, accelerate_config: str = "cpu_2proc") -> tuple[Path, dict[int, dict]]:
    """``alignx train`` on the tiny model, alone (nproc=1) or under ``accelerate launch`` with ``accelerate_config``
    (a file of configs/accelerate/) and --mixed_precision no, model.autocast=none: fp32 everywhere, so runs compare to
    float rounding."""
    out, record = assets["root"] / name, assets["root"] / f"{name}-ranks"
    train = ["train", f"model.name_or_path={assets['model']}", f"data.parallel=[{assets['pairs']}]", f"output_dir={out}",
             "optim.max_steps=3", "optim.lr=1e-3", "optim.warmup_ratio=0", "optim.scheduler=constant",
             "logging_steps=1", "save_steps=1000", "report_to=none", "loss.ntp_chunk_size=16", "model.autocast=none", *overrides]
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(record), *train]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACC / f"{accelerate_config}.yaml"),
               "--mixed_precision", "no", "--main_process_port", str(_free_port()), "--num_processes", str(nproc),
               str(WORKER), str(record), *train]
    proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ranks = {int(p.stem[4:]): json.loads(p.read_text()) for p in record.glob("rank*.json")}
    assert sorted(ranks) == list(range(nproc)), ranks.keys()
    return out, ranks


def test_two_process_stage1_with_ctr_gather(assets):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, ranks = _train(assets, "ctr", 2, "optim.batch_size=2", "loss.ctr_gather=true")
    assert json.loads((out / "train_summary.json").read_text())["distributed"] == {"engine": "MULTI_CPU", "processes": 2}
    for r in ranks.values():
        assert r["rc"] == 0 and r["world"] == 2 and "MULTI_CPU" in r["distributed_type"]
        # Every step gathered y rows from both ranks: 2 local rows, 4 candidates, index at this rank's rows.
        assert len(r["gathers"]) == 3 and all(g == [2, 4, 2 * r["rank"]] for g in r["gathers"])
    # DDP kept the replicas identical, bit for bit.
    assert ranks[0]["digest"] == ranks[1]["digest"]

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3
    assert [h["step"] for h in summary["history"]] == [1, 2, 3]
    for h in summary["history"]:
        assert {"loss_ntp", "loss_ctr", "loss_lam"} <= set(h) and all(h[k] > 0 for k in ("loss_ntp", "loss_ctr", "loss_lam"))
    assert set(summary["final_losses"]) >= {"loss", "loss_ntp", "loss_ctr", "loss_lam"}

    final = out / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    assert (final / "lam_head.safetensors").exists() and (final / "tokenizer.json").exists()
    # final/ holds the trained rank-0 weights (not the initial ones).
    saved = load_file(final / "model.safetensors")
    init = AutoModelForCausalLM.from_pretrained(assets["model"]).state_dict()
    assert any(not torch.equal(saved[k], init[k]) for k in saved)
    for k, v in model.state_dict().items():
        if k in saved:
            assert torch.equal(v, saved[k]), k


def test_two_ranks_of_two_rows_equal_one_rank_of_four_ntp_only(assets):
    """L_NTP is normalised by the target tokens of the whole step on all ranks, and accelerate gives
    rank r the r-th batch of the same seeded permutation, so 2 x 2 rows == 1 x 4 rows per step."""
    ntp_only = ("loss.lambda_ctr=0", "loss.lambda_lam=0")
    out2, _ = _train(assets, "ntp2", 2, "optim.batch_size=2", *ntp_only)
    out1, ranks1 = _train(assets, "ntp1", 1, "optim.batch_size=4", *ntp_only)
    assert ranks1[0]["world"] == 1
    h2 = json.loads((out2 / "train_summary.json").read_text())["history"]
    h1 = json.loads((out1 / "train_summary.json").read_text())["history"]
    assert len(h1) == len(h2) == 3
    for a, b in zip(h1, h2, strict=True):
        for key in ("loss", "loss_ntp", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key, a[key], b[key])
    from safetensors.torch import load_file

    w1, w2 = load_file(out1 / "final" / "model.safetensors"), load_file(out2 / "final" / "model.safetensors")
    assert w1.keys() == w2.keys()
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert worst < 1e-4, worst  # Adam steps are ~lr = 1e-3; a different batch would move weights by that much


def test_two_process_packed_run_equals_the_unpacked_run(assets):
    """data.packing under DDP: each rank packs its own micro-batch, so the logged losses and the trained weights
    are those of the unpacked 2-process run (with L_CTR negatives gathered across ranks)."""
    from safetensors.torch import load_file

    runs = {}
    for packing in (False, True):
        runs[packing], ranks = _train(assets, f"pack{packing}", 2, "optim.batch_size=4", "loss.ctr_gather=true",
                                      "data.max_length=224", f"data.packing={packing}")
        assert ranks[0]["digest"] == ranks[1]["digest"]
    h0, h1 = (json.loads((runs[p] / "train_summary.json").read_text())["history"] for p in (False, True))
    assert len(h0) == len(h1) == 3
    for a, b in zip(h0, h1, strict=True):
        for key in ("loss", "loss_ntp", "loss_ctr", "loss_lam"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    w0, w1 = (load_file(runs[p] / "final" / "model.safetensors") for p in (False, True))
    assert max(float((w0[k] - w1[k]).abs().max()) for k in w0) < 1e-5


# ---- FSDP2 and DeepSpeed ZeRO-2 through accelerate launch, against one process ------------------------------

# case: (settings of both runs, the one process's batch); why each pair of runs is equal: see the FSDP2 test.
ENGINE_CASES = {
    "ctr_lam": (("loss.ctr_gather=false",), ("optim.batch_size=2", "optim.grad_accum=2")),
    "ctr_gathered": (("loss.ctr_gather=true", "loss.lambda_lam=0"), ("optim.batch_size=4",)),
}
# fp32 throughout: the two runs differ only in the order of float sums (all-reduce / reduce-scatter, sharded grad
# norm), ~1e-7 relative, which 3 Adam steps leave below 1e-6 in the weights (measured: FSDP2 5.3e-7 with L_LAM,
# 2.7e-7 gathered; ZeRO-2 9.1e-8).
# A wrong run is far off: lr 1e-3 moves every trained weight by ~1e-3 a step (Adam's early steps are ~lr * sign),
# so a step dropped, another batch or a stale export differs by ~1e-3, 100x this tolerance.
ENGINE_TOLERANCE = 1e-5


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    """final/ reloaded as a user would: AutoModelForCausalLM, plus the L_LAM head file when one was exported."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    weights = dict(AutoModelForCausalLM.from_pretrained(out / "final").state_dict())
    head = out / "final" / "lam_head.safetensors"
    if head.exists():
        weights.update({f"lam_head.{k}": v for k, v in load_file(head).items()})
    return weights


def _one_process_run(assets, case: str) -> Path:
    """The single-process run of ``case`` (shared by the engines' tests)."""
    name = f"one-{case}"
    if not (assets["root"] / name / "train_summary.json").exists():
        both, alone = ENGINE_CASES[case]
        _, ranks = _train(assets, name, 1, *both, *alone)
        assert ranks[0]["world"] == 1
    return assets["root"] / name


def _check_engine_run_equals_one_process(assets, accelerate_config: str, engine: str, case: str) -> dict[int, dict]:
    both, _ = ENGINE_CASES[case]
    out2, ranks = _train(assets, f"{accelerate_config}-{case}", 2, "optim.batch_size=2", *both, accelerate_config=accelerate_config)
    out1 = _one_process_run(assets, case)
    for r in ranks.values():
        assert r["rc"] == 0 and r["world"] == 2 and engine in r["distributed_type"], r  # the engine ran, not a fallback
        gathered = [[2, 4, 2 * r["rank"]]] * 3 if "loss.ctr_gather=true" in both else []
        assert r["gathers"] == gathered

    s2, s1 = (json.loads((o / "train_summary.json").read_text()) for o in (out2, out1))
    assert s2["distributed"] == {"engine": engine, "processes": 2} and s1["distributed"] == {"engine": "NO", "processes": 1}
    h2, h1 = s2["history"], s1["history"]
    assert len(h1) == len(h2) == 3
    terms = ("loss", "loss_ntp", "loss_ctr", "grad_norm") + (("loss_lam",) if case == "ctr_lam" else ())
    for a, b in zip(h1, h2, strict=True):
        for key in terms:
            assert b[key] == pytest.approx(a[key], rel=1e-5), (a["step"], key, a[key], b[key])

    w2, w1 = _final_weights(out2), _final_weights(out1)
    assert w2.keys() == w1.keys() and any(k.startswith("lam_head.") for k in w1) == (case == "ctr_lam")
    assert all(w2[k].dtype == torch.float32 for k in w2)
    diffs = {k: float((w2[k] - w1[k]).abs().max()) for k in w1}
    assert max(diffs.values()) < ENGINE_TOLERANCE, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]
    from transformers import AutoModelForCausalLM

    init = AutoModelForCausalLM.from_pretrained(assets["model"]).state_dict()
    assert max(float((w1[k] - init[k]).abs().max()) for k in init) > 100 * ENGINE_TOLERANCE  # trained, not the start
    return ranks


@pytest.mark.parametrize("case", sorted(ENGINE_CASES))
def test_fsdp2_two_process_stage1_final_equals_one_process(assets, case):
    """``accelerate launch --config_file configs/accelerate/fsdp.yaml`` (FSDP2, FULL_STATE_DICT) with 2 gloo CPU
    processes trains stage 1 for 3 steps and exports final/; reloaded with AutoModelForCausalLM (and the L_LAM head
    file), every weight equals that of one process trained on the same global batches.

    Why the runs are equal. accelerate gives rank r the r-th batch of the same seeded permutation, and L_NTP is
    normalised by the target tokens of the whole step on all ranks. ``ctr_lam`` (L_NTP + L_CTR + L_LAM): L_LAM
    scores every pair of one micro-batch's sentences and is never gathered, so 2 ranks x 2 rows equal 1 process
    accumulating 2 micro-batches of 2 rows (not 1 x 4 rows, whose pairs cross the two halves), and L_CTR keeps its
    negatives local (ctr_gather=false) on both sides; both average the per-micro-batch L_CTR and L_LAM over the 2.
    ``ctr_gathered`` (L_NTP + L_CTR, ctr_gather=true): each rank's 2 anchors meet all 4 targets, as in 1 x 4 rows,
    and the gather's backward delivers every rank's pull on this rank's targets, so the averaged gradient is the
    1 x 4 one; L_LAM is off, as no single-process batch has its per-rank pairs together with gathered negatives.
    On the CPU accelerate would quietly train DDP instead (tests/_dist_worker.py lifts that); every parameter must
    be a sharded DTensor at export."""
    ranks = _check_engine_run_equals_one_process(assets, "fsdp", "FSDP", case)
    n_params = 39 + (3 if case == "ctr_lam" else 0)  # the tiny Llama, the L_LAM head's gate / up / down
    assert all(r["sharded_params"] == n_params for r in ranks.values())
    assert ranks[0]["digest"] != ranks[1]["digest"]  # each rank holds its own shards


def test_deepspeed_zero2_two_process_stage1_final_equals_one_process(assets):
    """The same with ``configs/accelerate/deepspeed_zero2.yaml`` (ZeRO-2: gradients and optimiser state sharded,
    weights replicated), L_NTP + L_CTR + L_LAM. DeepSpeed is not a dependency of alignx: skipped without it. Its
    first launch on a machine JIT-compiles DeepSpeed's CPU shared-memory collective (~45 s on 2 cores)."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install deepspeed)")
    ranks = _check_engine_run_equals_one_process(assets, "deepspeed_zero2", "DEEPSPEED", "ctr_lam")
    assert ranks[0]["digest"] == ranks[1]["digest"]  # ZeRO-2 keeps whole weights on every rank, identical
