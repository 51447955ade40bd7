"""Multi-process training: accelerate configs, the cross-rank gather, and real 2-process gloo runs on CPU."""

from __future__ import annotations

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
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ALIGNX_LOG="WARNING")
    return env


def _train(assets, name: str, nproc: int, *overrides: str) -> tuple[Path, dict[int, dict]]:
    out, record = assets["root"] / name, assets["root"] / f"{name}-ranks"
    train = ["train", f"model.name_or_path={assets['model']}", f"data.parallel=[{assets['pairs']}]", f"output_dir={out}",
             "optim.max_steps=3", "optim.lr=1e-3", "optim.warmup_ratio=0", "optim.scheduler=constant",
             "logging_steps=1", "save_steps=1000", "report_to=none", "loss.ntp_chunk_size=16", *overrides]
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(record), *train]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACC / "cpu_2proc.yaml"),
               "--main_process_port", str(_free_port()), "--num_processes", str(nproc), str(WORKER), str(record), *train]
    proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ranks = {int(p.stem[4:]): json.loads(p.read_text()) for p in record.glob("rank*.json")}
    assert sorted(ranks) == list(range(nproc)), ranks.keys()
    return out, ranks


def test_two_process_stage1_with_ctr_gather(assets):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, ranks = _train(assets, "ctr", 2, "optim.batch_size=2", "loss.ctr_gather=true")
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
