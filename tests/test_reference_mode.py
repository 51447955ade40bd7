"""Reference mode: the preset files set the reference's setup, and alignx under them computes what the reference does.

The reference computation is tests/reference_alignx.py, written from ../shared/ALIGNX_SPEC.md without
alignx (prefix-length spans, src_tgt_index, a [y, x] cosine matrix with LogSoftmax over dim 0, the
gated MLP on explicit concatenations, NTP on every token).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import reference_alignx as ref
from alignx.config import TrainConfig, load_config, to_dict
from alignx.data.dataset import examples as data_examples
from alignx.data.render import Collator
from alignx.model.alignx_model import AlignXModel
from alignx.pipeline import PipelineConfig
from alignx.train import stage
from conftest import make_sentencepiece_tokenizer

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "reference"
ROWS = [  # (x, y, x language, y language): several directions, so languages repeat across rows and sides
    ("Where is the train station?", "Wo ist der Bahnhof?", "en", "de"),
    ("Je voudrais une tasse de thé.", "I would like a cup of tea.", "fr", "en"),
    ("The cat sleeps on the warm sofa.", "猫在温暖的沙发上睡觉。", "en", "zh"),
    ("Где вокзал?", "Where is the train station?", "ru", "en"),
    ("I would like a cup of tea.", "Ich hätte gern eine Tasse Tee.", "en", "de"),
    ("Die Katze schläft auf dem warmen Sofa.", "Le chat dort sur le canapé chaud.", "de", "fr"),
]


def _preset(name: str, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, [PRESETS / name], list(overrides))


def test_stage_presets_map_to_the_reference_training_arguments():
    for name, stage_no in (("stage1.yaml", 1), ("stage2.yaml", 2)):
        cfg = _preset(name, "model.autocast=none")  # fp16 needs a GPU; the rest maps as on one
        args = stage.training_arguments(cfg)
        assert cfg.stage == stage_no and cfg.model.dtype == "float32"
        assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (16, 8)  # 128 on one process
        assert args.learning_rate == 2e-6 and args.num_train_epochs == 2 and args.weight_decay == 0.0
        assert str(args.lr_scheduler_type.value) == "linear" and args.warmup_steps == 100
        assert args.train_sampling_strategy == "group_by_length" and args.seed == 42
        assert str(args.optim.value) == "adamw_torch" and args.max_grad_norm == 1.0
        assert cfg.data.template == "alpaca" and cfg.data.max_length == 512 and cfg.data.truncate_pairs
        assert cfg.loss.ntp_on_prompt is True and stage.loss_on_prompt(cfg)  # train_on_inputs in both stages
    s1, s2 = _preset("stage1.yaml"), _preset("stage2.yaml")
    assert s1.model.autocast == s2.model.autocast == "fp16"
    loss = s1.loss
    assert (loss.lambda_ctr, loss.lambda_lam, loss.tau, loss.lam_width, loss.lam_init_std) == (0.3, 0.4, 0.1, 128, 0.02)
    assert loss.align_layer == -1 and not loss.ctr_symmetric and not loss.ctr_gather and not loss.ctr_center
    assert not s2.data.use_chat_template  # stage-2 instructions in the Alpaca-LoRA template too
    # the pipeline file holds the same two stages (the pipeline sets `stage` itself)
    pipe = load_config(PipelineConfig, [PRESETS / "pipeline.yaml"])
    for mine, single in ((pipe.stage1, s1), (pipe.stage2, s2)):
        a, b = to_dict(mine), to_dict(single)
        a.pop("stage"), b.pop("stage")
        assert a == b


def test_fp16_autocast_on_cpu_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU runs fp16 autocast")
    from alignx import cli

    assert cli.main(["train", "--config", str(PRESETS / "stage1.yaml"), "model.name_or_path=x", "data.parallel=[y]"]) == 2  # bad input: exit 2, nothing written
    assert "model.autocast=fp16 needs a CUDA GPU" in capsys.readouterr().err


def test_reference_preset_runs_through_the_cli(tmp_path, tiny_llama_dir, pairs_file):
    """`alignx train --config configs/reference/stage1.yaml`: fp32 master weights under autocast (bf16: a CPU),
    accumulation, linear warm-up over 100 steps, length-grouped batches."""
    from alignx import cli

    out = tmp_path / "ref"
    code = cli.main(["train", "--config", str(PRESETS / "stage1.yaml"), f"model.name_or_path={tiny_llama_dir}",
                     f"data.parallel=[{pairs_file}]", "model.autocast=bf16", f"output_dir={out}", "optim.max_steps=2",
                     "optim.batch_size=4", "optim.grad_accum=2", "report_to=none", "logging_steps=1", "save_steps=1000"])
    assert code == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["precision"] == {"weights": "float32", "autocast": "bf16", "alignment_losses": "float32"}
    assert summary["data"]["examples"] == 24 and summary["data"]["dropped"] == {}
    lrs = [h["learning_rate"] for h in summary["history"]]
    assert lrs == pytest.approx([0.0, 2e-6 * 1 / 100])  # steps 1 and 2 of a linear warm-up from 0 over 100 steps
    assert {"loss_ntp", "loss_ctr", "loss_lam"} <= summary["history"][0].keys()
    from transformers import AutoModelForCausalLM

    assert next(AutoModelForCausalLM.from_pretrained(out / "final").parameters()).dtype == torch.float32


def _rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"src": x, "tgt": y, "src_lang": a, "tgt_lang": b}, ensure_ascii=False) + "\n"
                            for x, y, a, b in ROWS), encoding="utf-8")
    return path


def _tiny_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_stage1_spans_and_losses_equal_the_reference(tmp_path, autocast):
    tokenizer = make_sentencepiece_tokenizer()
    cfg = _preset("stage1.yaml", f"data.parallel=[{_rows_file(tmp_path)}]", "data.both_directions=false")
    examples = data_examples(stage.build_dataset(cfg, tokenizer).dataset)

    # rows and spans: the reference's prefix-length src_tgt_index
    ref_rows = [ref.tokenize_row(tokenizer, ref.instruction(a, b), x, y) for x, y, a, b in ROWS]
    assert [e.input_ids for e in examples] == [ids for ids, _ in ref_rows]
    assert [[*e.x_span, *e.y_span] for e in examples] == [index for _, index in ref_rows]
    assert all(e.labels == e.input_ids for e in examples)  # loss on the prompt too
    ids, mask, labels = ref.pad_batch([r for r, _ in ref_rows], tokenizer.pad_token_id)
    batch = Collator(tokenizer.pad_token_id)(examples)
    assert torch.equal(batch["input_ids"], ids) and torch.equal(batch["labels"], labels)

    lm = _tiny_llama(len(tokenizer))
    model = AlignXModel(lm, cfg.loss, with_alignment=True)
    assert model.align_layer == 2  # the middle of 4 layers
    head = model.lam_head
    assert abs(head.gate.weight.std().item() - 0.02) < 0.002  # HF init
    gen = torch.Generator().manual_seed(1)
    for p in head.parameters():  # larger weights than the init, so the pair labels move the loss
        torch.nn.init.normal_(p, std=0.5, generator=gen)

    with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
        got = model(**batch)
        out = lm(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    index = [i for _, i in ref_rows]
    expected = {
        "ntp": ref.ntp(out.logits, labels),
        "ctr": ref.ctr(out.hidden_states[2], index, tau=0.1),
        "lam": ref.lam(out.hidden_states[-1], index, [(a, b) for _, _, a, b in ROWS],
                       head.gate.weight, head.up.weight, head.down.weight),
    }
    actual = {"ntp": got["ntp_sum"] / got["ntp_count"], "ctr": got["ctr"], "lam": got["lam"]}
    assert abs(expected["lam"].item() - 0.6931) > 0.05  # far from chance: the labels are tested
    for key in ("ctr", "lam"):
        # fp32 against float64 on the same states: tight, under autocast too (pooling and losses stay fp32)
        assert actual[key].dtype == torch.float32
        torch.testing.assert_close(actual[key].double(), expected[key], rtol=2e-6, atol=2e-6, msg=key)
    # NTP: the same logits (bf16 under autocast) summed in a different order
    torch.testing.assert_close(actual["ntp"].double(), expected["ntp"], rtol=1e-5, atol=1e-5)


def test_stage2_rows_equal_the_reference(tmp_path):
    tokenizer = make_sentencepiece_tokenizer()
    inst = tmp_path / "inst.jsonl"
    inst.write_text(json.dumps({"instruction": "Name a fruit.", "input": "", "output": "Apple."}) + "\n"
                    + json.dumps({"instruction": "Translate.", "input": "Katze", "output": "Cat", "lang": "de"}) + "\n")
    cfg = _preset("stage2.yaml", f"data.instructions=[{inst}]", "data.translation_in_sft=false")
    examples = data_examples(stage.build_dataset(cfg, tokenizer).dataset)
    expected = [
        ref.PROMPT_NO_INPUT.replace("{instruction}", "Name a fruit.") + "Apple.",
        ref.PROMPT_INPUT.replace("{instruction}", "Translate.").replace("{input}", "Katze") + "Cat",
    ]
    for ex, text in zip(examples, expected, strict=True):
        assert ex.input_ids == tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        assert ex.labels == ex.input_ids  # train_on_inputs=True
