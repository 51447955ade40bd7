"""Smoke and invariance tests of both training stages on tiny random models (CPU, no downloads)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignx.config import TrainConfig, load_config
from alignx.train import stage
from conftest import ARCHS, message, save_tiny_model, write_pairs


def _cfg(model_dir: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(
        TrainConfig,
        [],
        [
            f"model.name_or_path={model_dir}",
            f"output_dir={out}",
            "optim.max_steps=3",
            "optim.batch_size=4",
            "optim.lr=5e-3",
            "optim.warmup_ratio=0",
            "logging_steps=1",
            "report_to=none",
            "save_steps=1000",
            "model.autocast=none",  # fp32: these tests compare runs and references to float rounding (auto is bf16 on AVX512-BF16)
            *extra,
        ],
    )


def _params(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.detach().clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_stage1_smoke_all_architectures(tmp_path, pairs_file, arch):
    model_dir = save_tiny_model(tmp_path / arch, arch)
    before = _params(model_dir)
    summary = stage.main(_cfg(model_dir, tmp_path / "out", f"data.parallel=[{pairs_file}]", "loss.ntp_chunk_size=16"))
    # every loss term was logged (their values: test_logged_losses_equal_the_reference_computation)
    first = summary["history"][0]
    assert {"loss_ntp", "loss_ctr", "loss_lam"} <= first.keys()
    # a plain HF checkpoint was written, with the L_LAM head beside it (not inside)
    final = Path(summary["final_model"])
    after = _params(final)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not any("lam_head" in k for k in after)
    head = load_file(final / "lam_head.safetensors")
    assert head["gate.weight"].shape == (128, 64)
    assert summary["data"]["examples"] == 24  # 12 pairs x both directions
    assert json.loads((tmp_path / "out" / "train_summary.json").read_text())["steps"] == 3


def test_logged_losses_equal_the_reference_computation(tmp_path, tiny_llama_dir, pairs_file):
    """The first logged loss and its terms equal the spec's computation (tests/reference_alignx.py) on the
    model and L_LAM head the run started from. lr = 0 keeps them as they were, so the final files hold
    them; one micro-batch holds every row, so the value does not depend on the shuffle."""
    import reference_alignx as ref
    from conftest import SENTENCES

    cfg = _cfg(tiny_llama_dir, tmp_path / "out", f"data.parallel=[{pairs_file}]", "data.template=alpaca",
               "optim.max_steps=1", "optim.batch_size=24", "optim.lr=0")
    summary = stage.main(cfg)
    first = summary["history"][0]
    final = Path(summary["final_model"])

    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    head = load_file(final / "lam_head.safetensors")
    rows = [(s, t, "en", lang) for s, t, lang in SENTENCES] + [(t, s, lang, "en") for s, t, lang in SENTENCES]
    tokenized = [ref.tokenize_row(tokenizer, ref.instruction(a, b), x, y) for x, y, a, b in rows]
    ids, mask, labels = ref.pad_batch([r for r, _ in tokenized], tokenizer.pad_token_id)
    index = [i for _, i in tokenized]
    with torch.no_grad():
        out = lm(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    ntp = ref.ntp(out.logits, labels).item()
    ctr = ref.ctr(out.hidden_states[2], index, tau=0.1).item()
    lam = ref.lam(out.hidden_states[-1], index, [(a, b) for _, _, a, b in rows],
                  head["gate.weight"], head["up.weight"], head["down.weight"]).item()
    assert summary["data"]["examples"] == len(rows) == 24
    assert first["loss_ntp"] == pytest.approx(ntp, rel=1e-4)
    assert first["loss_ctr"] == pytest.approx(ctr, rel=1e-4)
    assert first["loss_lam"] == pytest.approx(lam, rel=1e-4)
    assert first["loss"] == pytest.approx(ntp + 0.3 * ctr + 0.4 * lam, rel=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile (inductor) needs a C++ compiler on CPU")
def test_torch_compile_through_the_trainer_gives_the_eager_losses(tmp_path, tiny_llama_dir, pairs_file):
    """`trainer.torch_compile=true` (TrainingArguments' field, passed through) trains the AlignX wrapper compiled: the
    same loss and three loss terms, step by step, as the eager run, up to the reordered float sums of compiled kernels
    (~1.5 min on 2 CPU cores, most of it compiling)."""
    common = (f"data.parallel=[{pairs_file}]", "loss.ntp_chunk_size=16")
    eager = stage.main(_cfg(tiny_llama_dir, tmp_path / "eager", *common))["history"]
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = stage.main(_cfg(tiny_llama_dir, tmp_path / "compiled", *common, "trainer.torch_compile=true"))["history"]
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did capture graphs: the setting was not ignored
    terms = ("loss", "loss_ntp", "loss_ctr", "loss_lam")
    eager = [[h[k] for k in terms] for h in eager if "loss" in h]
    compiled = [[h[k] for k in terms] for h in compiled if "loss" in h]
    assert len(eager) == len(compiled) == 3
    for e, c in zip(eager, compiled, strict=True):
        assert c == pytest.approx(e, rel=1e-4)


def test_stage2_sft_with_instructions_and_translation(tmp_path, tiny_llama_dir, pairs_file):
    inst = tmp_path / "inst.jsonl"
    inst.write_text(
        "\n".join(
            json.dumps({"instruction": q, "input": "", "output": a, "lang": lang})
            for q, a, lang in [("Name a fruit.", "Apple.", "en"), ("Nenne eine Frucht.", "Apfel.", "de"), ("Назови фрукт.", "Яблоко.", "ru")]
        )
        + "\n"
    )
    summary = stage.main(_cfg(tiny_llama_dir, tmp_path / "s2", "stage=2", f"data.parallel=[{pairs_file}]", f"data.instructions=[{inst}]"))
    assert summary["data"]["examples"] == 24 + 3
    assert "loss_ntp" in summary["history"][0] and "loss_ctr" not in summary["history"][0]
    assert not (Path(summary["final_model"]) / "lam_head.safetensors").exists()


def test_lora_trains_adapters_and_exports_merged_model(tmp_path, tiny_llama_dir, pairs_file):
    from transformers import AutoModelForCausalLM

    before = _params(tiny_llama_dir)
    summary = stage.main(_cfg(tiny_llama_dir, tmp_path / "lora", f"data.parallel=[{pairs_file}]", "lora.enabled=true", "lora.r=4"))
    adapter = tmp_path / "lora" / "final_adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(summary["final_model"])
    after = merged.state_dict()
    assert not any("lora" in k for k in after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("proj" in k for k in changed)  # only LoRA-wrapped linear layers moved
    assert (Path(summary["final_model"]) / "lam_head.safetensors").exists()
    # Offline merge of the adapter (the FSDP route) gives the same weights as the in-place merge.
    from alignx.config import load_config as lc
    from alignx.export import ExportConfig
    from alignx.export import main as export_main

    export_main(lc(ExportConfig, [], {"adapter_dir": str(adapter), "output_dir": str(tmp_path / "merged")}))
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").state_dict()
    assert all(torch.allclose(after[k], again[k], atol=1e-6) for k in after)
    assert (tmp_path / "merged" / "lam_head.safetensors").exists()


def test_resume_equals_uninterrupted_run(tmp_path, tiny_llama_dir, pairs_file):
    straight = stage.main(_cfg(tiny_llama_dir, tmp_path / "s", f"data.parallel=[{pairs_file}]", "optim.max_steps=4"))
    out = tmp_path / "r"
    first = stage.main(_cfg(tiny_llama_dir, out, f"data.parallel=[{pairs_file}]", "optim.max_steps=4", "save_steps=2"))
    assert (out / "checkpoint-2" / "lam_head.safetensors").exists()
    # Pretend the run died after step 2: resume from that checkpoint and finish.
    import shutil

    shutil.rmtree(out / "checkpoint-4")
    resumed = stage.main(_cfg(tiny_llama_dir, out, f"data.parallel=[{pairs_file}]", "optim.max_steps=4", "save_steps=2", "resume=latest"))
    assert resumed["steps"] == 4
    assert resumed["history"][:2] == first["history"][:2]  # restored log of steps 1-2
    a, b = _params(Path(straight["final_model"])), _params(Path(resumed["final_model"]))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    ha = load_file(Path(straight["final_model"]) / "lam_head.safetensors")
    hb = load_file(Path(resumed["final_model"]) / "lam_head.safetensors")
    assert all(torch.allclose(ha[k], hb[k], atol=1e-6) for k in ha)


def _one_sgd_step(model_dir: Path, out: Path, pairs: Path, batch: int, accum: int) -> dict[str, torch.Tensor]:
    cfg = _cfg(
        model_dir, out, f"data.parallel=[{pairs}]", "data.both_directions=false", "optim.max_steps=1",
        f"optim.batch_size={batch}", f"optim.grad_accum={accum}", "optim.optimizer=sgd", "optim.lr=0.5",
        "optim.max_grad_norm=0", "loss.lambda_ctr=0", "loss.lambda_lam=0",
    )
    return _params(Path(stage.main(cfg)["final_model"]))


def test_gradient_accumulation_1x8_equals_8x1(tmp_path, tiny_llama_dir):
    pairs = write_pairs(tmp_path / "p8.jsonl", __import__("conftest").SENTENCES[:8])
    a = _one_sgd_step(tiny_llama_dir, tmp_path / "a", pairs, batch=8, accum=1)
    b = _one_sgd_step(tiny_llama_dir, tmp_path / "b", pairs, batch=1, accum=8)
    c = _one_sgd_step(tiny_llama_dir, tmp_path / "c", pairs, batch=2, accum=4)
    base = _params(tiny_llama_dir)
    assert any(not torch.allclose(base[k], a[k]) for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-6), k
        assert torch.allclose(a[k], c[k], atol=2e-6), k


@pytest.mark.parametrize("grouped", [True, False])
def test_group_by_length_draws_micro_batches_of_similar_length(tmp_path, tiny_llama_dir, pairs_file, grouped):
    """optim.group_by_length reaches the HF Trainer: its LengthGroupedSampler reads the dataset's items."""
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from alignx.data.render import Collator
    from alignx.model import load as mload

    cfg = _cfg(tiny_llama_dir, tmp_path / "g", f"data.parallel=[{pairs_file}]", f"optim.group_by_length={grouped}",
               "data.template=alpaca", "optim.batch_size=1")
    tokenizer = mload.load_tokenizer(cfg.model)
    dataset = stage.build_dataset(cfg, tokenizer).dataset
    trainer = Trainer(model=torch.nn.Linear(1, 1), args=stage.training_arguments(cfg), train_dataset=dataset,
                      data_collator=Collator(tokenizer.pad_token_id), processing_class=tokenizer)
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler) == grouped
    lengths = [int(n) for batch in trainer.get_train_dataloader() for n in batch["attention_mask"].sum(1)]
    assert sorted(lengths) == sorted(dataset["length"])  # every row once
    # HF sorts mega-batches (here 24 rows // 4 = 6 rows each) longest first; only the first row of one
    # mega-batch moves (the longest row of all goes to the front)
    blocks = [lengths[i + 1 : i + 6] for i in range(0, 24, 6)]
    assert all(b == sorted(b, reverse=True) for b in blocks) == grouped


def test_no_rows_is_a_clear_error(tmp_path, tiny_llama_dir):
    with pytest.raises(ValueError, match="stage 1 has no training rows: give data.parallel"):
        stage.main(_cfg(tiny_llama_dir, tmp_path / "x"))


def test_alignment_losses_are_optimisable_through_the_model(tokenizer):
    """Gradient reaches the LM through the captured states: optimising L_CTR + L_LAM alone lowers both."""
    from transformers import AutoModelForCausalLM

    from alignx.config import LossConfig
    from alignx.data.readers import Pair
    from alignx.data.render import Collator, render_translation
    from alignx.model.alignx_model import AlignXModel
    from conftest import SENTENCES, tiny_config

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer)))
    # PyTorch's larger default init of the head: this is about gradient flow, and from N(0, 0.02) the head
    # first has to grow before L_LAM moves
    model = AlignXModel(lm, LossConfig(lam_init_std=0), with_alignment=True)
    tpl = "Translate from {src_name} to {tgt_name}. // Input: {src} // Output: "
    exs = [render_translation(Pair(s, t, "en", lang), tokenizer, tpl, 128, True) for s, t, lang in SENTENCES]
    batch = Collator(tokenizer.pad_token_id)(exs)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        out = model(**batch)
        loss = out["ctr"] + out["lam"]
        first = first or (out["ctr"].item(), out["lam"].item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert out["ctr"].item() < 0.5 * first[0] and out["lam"].item() < 0.7 * first[1]


def test_freeze_embeddings_keeps_tied_head_fixed_and_trains_the_rest(tmp_path):
    """model.freeze_embeddings: the (tied) embedding matrix is bit-identical after training, the layers moved."""
    from alignx.config import ConfigError
    from conftest import SENTENCES

    model = save_tiny_model(tmp_path / "tiny", "llama")
    pairs = write_pairs(tmp_path / "pairs.jsonl", SENTENCES)
    cfg = load_config(TrainConfig, overrides={
        "model.name_or_path": str(model), "model.freeze_embeddings": True, "data.parallel": [str(pairs)],
        "data.max_length": 512, "optim.max_steps": 2, "optim.batch_size": 4, "optim.lr": 1e-2, "report_to": "none",
        "output_dir": str(tmp_path / "out"),
    })
    stage.main(cfg)
    before = load_file(model / "model.safetensors")
    after = load_file(tmp_path / "out" / "final" / "model.safetensors")
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    with pytest.raises(ConfigError, match="freeze_embeddings"):
        load_config(TrainConfig, overrides={"model.freeze_embeddings": True, "lora.enabled": True})


def test_a_checkpoint_of_another_precision_is_not_resumed():
    """model.autocast=auto resolves per machine, so the record keeps what it resolved to: a checkpoint trained in fp32
    is not continued in bf16 (or back) by resume; records of versions before the field are not compared."""
    from alignx.train import outputs

    record = {"settings": {"a": 1}, "precision": "bf16"}
    why = outputs.mismatch({"settings": {"a": 1}, "precision": "none"}, record)
    assert why is not None and "model.autocast=none" in why
    assert outputs.mismatch({"settings": {"a": 1}, "precision": "bf16"}, record) is None
    assert outputs.mismatch({"settings": {"a": 1}}, record) is None  # an older record


def _nan_in(term: str, calls: set[int]):
    """AlignXModel.forward with ``term`` made NaN (through its graph, so its gradient is NaN too) on the given calls."""
    from alignx.model.alignx_model import AlignXModel

    real = AlignXModel.forward
    count = {"n": 0}

    def forward(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        out = real(self, *a, **k)
        count["n"] += 1
        if self.training and count["n"] in calls:
            key = {"ntp": "ntp_sum", "ctr": "ctr", "lam": "lam"}[term]
            out = {**out, key: out[key] * float("nan")}
        return out

    return forward


@pytest.mark.parametrize("term", ["ntp", "ctr", "lam"])
def test_a_step_with_a_non_finite_term_is_skipped_and_counted(tmp_path, tiny_llama_dir, pairs_file, monkeypatch, term):
    """A NaN in one loss term on step 2: that optimiser step is not applied (the weights stay finite), is counted in
    train_summary.json with the term, and training goes on; the logged terms leave the bad micro-batch out."""
    from alignx.model.alignx_model import AlignXModel

    monkeypatch.setattr(AlignXModel, "forward", _nan_in(term, {2}))
    summary = stage.main(_cfg(tiny_llama_dir, tmp_path / "out", f"data.parallel=[{pairs_file}]"))
    assert summary["steps"] == 3
    assert summary["nonfinite_skipped_steps"] == [{"step": 2, "non_finite": [term, "gradient"]}]
    weights = _params(summary["final_model"])
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert all(math.isfinite(h[k]) for h in summary["history"] for k in ("loss_ntp", "loss_ctr", "loss_lam") if k in h)


def test_consecutive_non_finite_steps_stop_training_in_one_line(tmp_path, tiny_llama_dir, pairs_file, monkeypatch, capsys):
    """max_nonfinite_steps=2 and a NaN on every step from the second: training stops at step 3 with one line (exit 1)
    and writes no final model. Step 2 was skipped, so its checkpoint holds exactly step 1's weights."""
    from alignx import cli
    from alignx.model.alignx_model import AlignXModel

    monkeypatch.setattr(AlignXModel, "forward", _nan_in("lam", set(range(2, 100))))
    out = tmp_path / "out"
    argv = ["train", f"model.name_or_path={tiny_llama_dir}", f"output_dir={out}", f"data.parallel=[{pairs_file}]",
            "optim.max_steps=5", "optim.batch_size=4", "save_steps=1", "report_to=none", "model.autocast=none",
            "max_nonfinite_steps=2"]
    assert cli.main(argv) == 1
    line = message(capsys.readouterr().err, "train")  # exactly one line of alignx's own, no traceback
    assert "step 3: 2 optimiser steps in a row had a non-finite lam, gradient; training stopped" in line
    assert not (out / "final").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    one, two = _params(out / "checkpoint-1"), _params(out / "checkpoint-2")
    assert all(torch.equal(one[k], two[k]) for k in one)
