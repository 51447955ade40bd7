"""transformers.TrainingArguments names in alignx's config: aliases of alignx's own settings, passthrough of the rest,
refused names, lists, the model.dtype rename, run records of older alignx versions and the ported example configs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from alignx import cli
from alignx.config import (
    ConfigError,
    TrainConfig,
    load_config,
    run_settings,
    save_config,
    to_dict,
)
from alignx.pipeline import PipelineConfig
from alignx.train import stage

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "configs" / "examples"


def _yaml(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_hf_names_set_alignx_settings():
    hf = load_config(TrainConfig, [], [
        "per_device_train_batch_size=4", "gradient_accumulation_steps=3", "learning_rate=1e-4", "num_train_epochs=1.5",
        "max_steps=7", "weight_decay=0.1", "max_grad_norm=0.5", "lr_scheduler_type=linear", "optim=sgd", "seed=3",
        "warmup_steps=20", "group_by_length=true", "gradient_checkpointing=true", "dataloader_num_workers=2",
        "resume_from_checkpoint=latest", "bf16=true",
    ])  # fmt: skip
    ours = load_config(TrainConfig, [], [
        "optim.batch_size=4", "optim.grad_accum=3", "optim.lr=1e-4", "optim.epochs=1.5", "optim.max_steps=7",
        "optim.weight_decay=0.1", "optim.max_grad_norm=0.5", "optim.scheduler=linear", "optim.optimizer=sgd", "optim.seed=3",
        "optim.warmup_steps=20", "optim.group_by_length=true", "model.gradient_checkpointing=true", "num_workers=2",
        "resume=latest", "model.autocast=bf16",
    ])  # fmt: skip
    assert to_dict(hf) == to_dict(ours) and hf.trainer == {}
    # transformers 5 reads warmup_steps below 1 as a ratio; its sampling strategy is alignx's group_by_length
    cfg = load_config(TrainConfig, [], ["warmup_steps=0.1", "train_sampling_strategy=group_by_length", "fp16=false", "bf16=false"])
    assert cfg.optim.warmup_ratio == 0.1 and cfg.optim.warmup_steps == 0 and cfg.optim.group_by_length
    assert cfg.model.autocast == "none"  # both HF precisions off: no autocast
    # under `trainer:` too, and in a pipeline's stage sections
    pipe = load_config(PipelineConfig, [], ["stage1.learning_rate=3e-4", "stage2.trainer.per_device_train_batch_size=2"])
    assert pipe.stage1.optim.lr == 3e-4 and pipe.stage2.optim.batch_size == 2


def test_one_setting_under_two_names_must_agree(tmp_path):
    with pytest.raises(ConfigError, match=r"override: learning_rate='1e-4' and optim\.lr='2e-4' both set optim\.lr; keep one"):
        load_config(TrainConfig, [], ["learning_rate=1e-4", "optim.lr=2e-4"])
    same = load_config(TrainConfig, [], ["learning_rate=1e-4", "optim.lr=0.0001"])  # equal values are fine
    assert same.optim.lr == 1e-4
    both = _yaml(tmp_path, "both.yaml", "optim: {batch_size: 4}\nper_device_train_batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"both\.yaml: optim\.batch_size=4 and per_device_train_batch_size=8 both set"):
        load_config(TrainConfig, [both])
    with pytest.raises(ConfigError, match=r"bf16 and fp16 are both true"):
        load_config(TrainConfig, [], ["bf16=true", "fp16=true"])
    with pytest.raises(ConfigError, match=r"model\.autocast='none' and bf16=True both set model\.autocast"):
        load_config(TrainConfig, [_yaml(tmp_path, "p.yaml", "model: {autocast: none}\nbf16: true\n")])
    # a later source overrides an earlier one, whatever the names: no conflict
    base = _yaml(tmp_path, "base.yaml", "optim: {lr: 1.0e-4}\n")
    assert load_config(TrainConfig, [base], ["learning_rate=5e-5"]).optim.lr == 5e-5
    with pytest.raises(ConfigError, match=r"optim is given both as a value and as a section; .*optim\.optimizer"):
        load_config(TrainConfig, [], ["optim=sgd", "optim.lr=1"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["remove_unused_columns=true"], r"override: remove_unused_columns: alignx sets this itself \(the collator needs every column"),
        (["trainer.label_names=[labels]"], r"override: trainer\.label_names: alignx sets this itself"),
        (["hub_token=hf_x"], r"hub_token: alignx sets this itself \(a token in the settings would be written into the run's records"),
        (["learnin_rate=1e-4"], r"override: unknown setting learnin_rate \(did you mean learning_rate\?\)"),
        (["eval_strategy=sometimes"], r"override: eval_strategy: expected one of no\|steps\|epoch, got 'sometimes'"),
        (["ddp_timeout=soon"], r"override: ddp_timeout: expected int, got 'soon'"),
        (["train_sampling_strategy=sequential"], r"alignx samples random or group_by_length"),
        (["warmup_steps=2.5"], r"warmup_steps: expected whole steps"),
        (["trainer=5"], r"trainer is a mapping of transformers\.TrainingArguments names"),
    ],
)
def test_refused_unknown_and_bad_hf_names_are_one_line_errors(settings, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(TrainConfig, [], settings)
    assert "\n" not in str(err.value)


def test_trainer_dict_built_in_python_is_checked():
    assert TrainConfig(trainer={"eval_strategy": "epoch", "ddp_timeout": "60"}).trainer == {"eval_strategy": "epoch", "ddp_timeout": 60}
    with pytest.raises(ConfigError, match=r"trainer\.learning_rate: alignx holds it in optim\.lr; set that"):
        TrainConfig(trainer={"learning_rate": 1e-4})
    with pytest.raises(ConfigError, match=r"trainer\.remove_unused_columns: alignx sets this itself"):
        TrainConfig(trainer={"remove_unused_columns": True})
    with pytest.raises(ConfigError, match=r"trainer\.nonsense: not a transformers\.TrainingArguments field"):
        TrainConfig(trainer={"nonsense": 1})


def test_passthrough_reaches_training_arguments(tmp_path):
    base = _yaml(tmp_path, "base.yaml", "run_name: base-run\ntrainer: {adam_beta2: 0.95}\n")
    arm = _yaml(tmp_path, "arm.yaml", "ddp_timeout: 60\ntrainer: {push_to_hub: false}\n")  # entries add up across files
    cfg = load_config(TrainConfig, [base, arm], [
        f"output_dir={tmp_path / 'out'}", "bf16=true", "eval_strategy=steps", "eval_steps=5", "group_by_length=true",
        "report_to=[tensorboard]", "torch_compile=false", "logging_first_step=false",
    ])  # fmt: skip
    assert cfg.trainer == {"run_name": "base-run", "adam_beta2": 0.95, "ddp_timeout": 60, "push_to_hub": False,
                           "eval_strategy": "steps", "eval_steps": 5.0, "torch_compile": False, "logging_first_step": False}
    args = stage.training_arguments(cfg)
    assert args.run_name == "base-run" and args.adam_beta2 == 0.95 and args.ddp_timeout == 60 and args.push_to_hub is False
    assert args.eval_strategy.value == "steps" and args.eval_steps == 5
    assert args.bf16 and not args.fp16 and args.train_sampling_strategy == "group_by_length"
    assert args.use_cpu == (not torch.cuda.is_available())  # bf16 autocast on a CPU needs use_cpu
    assert args.report_to == ["tensorboard"] and args.logging_first_step is False  # a trainer entry replaces alignx's default
    assert args.remove_unused_columns is False and args.ddp_find_unused_parameters is False  # alignx's
    # alignx train takes no evaluation set: the schedule reaches TrainingArguments, and training refuses it up front
    with pytest.raises(ConfigError, match=r"eval_strategy=steps: alignx train takes no evaluation set"):
        stage.check_training_settings(args)


def test_deepspeed_reaches_training_arguments_or_names_what_is_missing(tmp_path):
    import importlib.util

    ds = _yaml(tmp_path, "ds.json", '{"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 2}}')
    cfg = load_config(TrainConfig, [], [f"output_dir={tmp_path / 'out'}", f"deepspeed={ds}", "report_to=none"])
    assert cfg.trainer == {"deepspeed": str(ds)}
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ConfigError, match=r"^TrainingArguments: .*\(from optim\.\*, model\.autocast, trainer: deepspeed="):
            stage.training_arguments(cfg)
    else:
        assert stage.training_arguments(cfg).deepspeed == str(ds)


def test_unknown_optimiser_and_scheduler_names():
    with pytest.raises(ConfigError, match=r"optim\.optimizer=adamw_nope: not a name transformers knows; choose from .*adamw_torch"):
        stage.training_arguments(load_config(TrainConfig, [], ["optim=adamw_nope"]))
    with pytest.raises(ConfigError, match=r"optim\.scheduler=wavy: not a name transformers knows"):
        stage.training_arguments(load_config(TrainConfig, [], ["lr_scheduler_type=wavy"]))


def test_lists_for_trackers_and_lora_targets(tmp_path):
    cfg = load_config(TrainConfig, [_yaml(tmp_path, "l.yaml", "report_to: [tensorboard, wandb]\nlora: {target_modules: [q_proj, v_proj]}\n")])
    # stored as the comma-separated strings they always were, so run records of older runs read the same
    assert cfg.report_to == "tensorboard,wandb" and cfg.lora.target_modules == "q_proj,v_proj"
    assert load_config(TrainConfig, [], ["lora.target_modules=q_proj, v_proj"]).lora.target_modules == "q_proj, v_proj"  # as written
    with pytest.raises(ConfigError, match="all-linear stands alone"):
        load_config(TrainConfig, [], ["lora.target_modules=[all-linear,q_proj]"])


def test_model_dtype_auto_is_a_deprecated_name_of_fp32_master(caplog):
    from alignx.model.load import resolve_dtype

    assert TrainConfig().model.dtype == "fp32_master" and resolve_dtype("fp32_master") == torch.float32
    with caplog.at_level(logging.WARNING, logger="alignx.config"):
        cfg = load_config(TrainConfig, [], ["model.dtype=auto"])
    assert cfg.model.dtype == "fp32_master"
    warned = [r.getMessage() for r in caplog.records if r.name == "alignx.config"]
    assert len(warned) == 1 and "\n" not in warned[0] and "write model.dtype=fp32_master" in warned[0]
    with pytest.raises(ConfigError, match=r"model\.dtype must be fp32_master\|float32\|bfloat16\|float16"):
        load_config(TrainConfig, [], ["model.dtype=checkpoint"])


def test_records_of_older_alignx_match_the_same_run_today():
    """A record written before the settings added here (and ctr_inputs), with model.dtype=auto, is the same run as
    today's config of the same YAML; operational trainer entries (run_name, ...) do not make another run."""
    then = load_config(TrainConfig, [], ["optim.lr=1e-4", "data.parallel=[a.jsonl]", "loss.ntp_chunk_mib=0"])
    old = to_dict(then)
    old["model"]["dtype"] = "auto"
    for section, key in (("loss", "ctr_inputs"), ("lora", "modules_to_save"), ("data", "chat_template"), ("data", "assistant_turns"),
                         ("data", "packing"), ("data", "num_proc"), ("data", "cache_dir"), ("loss", "ntp_chunk_mib")):
        del old[section][key]
    del old["trainer"]
    assert run_settings(old) == run_settings(then) and run_settings(run_settings(old)) == run_settings(then)
    # the chunk cap (default 256 MiB) only changes how the NTP sum is rounded: the same run
    cfg = load_config(TrainConfig, [], ["optim.lr=1e-4", "data.parallel=[a.jsonl]"])
    assert run_settings(cfg) == run_settings(old)
    assert run_settings(load_config(TrainConfig, [], ["optim.lr=1e-4", "data.parallel=[a.jsonl]", "loss.ntp_chunk_size=7"])) == run_settings(cfg)
    tracked = load_config(TrainConfig, [], ["optim.lr=1e-4", "data.parallel=[a.jsonl]", "run_name=again", "push_to_hub=false"])
    assert run_settings(tracked) == run_settings(cfg)
    changed = load_config(TrainConfig, [], ["optim.lr=1e-4", "data.parallel=[a.jsonl]", "adam_beta2=0.95"])
    assert run_settings(changed) != run_settings(cfg)
    assert run_settings(load_config(TrainConfig, [], ["optim.lr=1e-4", "data.parallel=[a.jsonl]", "data.assistant_turns=all"])) != run_settings(old)


def test_saved_config_loads_back_the_same(tmp_path):
    cfg = load_config(TrainConfig, [], ["run_name=r", "ddp_timeout=60", "report_to=[tensorboard]", "lora.enabled=true",
                                        "lora.modules_to_save=[lm_head]", "learning_rate=1e-4"])
    save_config(cfg, tmp_path / "saved.yaml")
    assert to_dict(load_config(TrainConfig, [tmp_path / "saved.yaml"])) == to_dict(cfg)


def test_help_lists_the_trainingarguments_vocabulary(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "learning_rate -> optim.lr" in out and "trainer = {}" in out and "refused (alignx sets them): remove_unused_columns" in out
    assert "[per_device_train_batch_size]" in out and "data.assistant_turns" in out and "lora.modules_to_save" in out


def test_example_configs_parse_into_alignx_settings(monkeypatch):
    monkeypatch.chdir(ROOT)  # the TRL example names its chat template relative to the repository
    lf = load_config(TrainConfig, [EXAMPLES / "llamafactory_full_sft.yaml"])
    assert (lf.stage, lf.model.name_or_path, lf.model.trust_remote_code, lf.lora.enabled) == (2, "meta-llama/Llama-3.1-8B-Instruct", True, False)
    assert (lf.optim.batch_size, lf.optim.grad_accum, lf.optim.lr, lf.optim.epochs) == (1, 2, 1e-5, 3.0)
    assert (lf.optim.scheduler, lf.optim.warmup_ratio, lf.model.autocast, lf.num_workers) == ("cosine", 0.1, "bf16", 4)
    assert (lf.data.max_length, lf.data.max_pairs, lf.data.assistant_turns) == (2048, 1000, "last")
    assert (lf.output_dir, lf.logging_steps, lf.save_steps, lf.overwrite_output_dir, lf.report_to) == ("saves/llama3-8b/full/sft", 10, 500, True, "none")
    assert lf.resume is None and lf.trainer == {"do_train": True, "save_only_model": False, "ddp_timeout": 180000000}

    trl = load_config(TrainConfig, [EXAMPLES / "trl_sft.yaml"])
    assert (trl.model.name_or_path, trl.model.dtype, trl.model.attn_implementation) == ("Qwen/Qwen2.5-0.5B", "fp32_master", "sdpa")
    assert trl.lora.enabled and (trl.lora.r, trl.lora.alpha, trl.lora.dropout) == (16, 32, 0.05)
    assert trl.lora.target_modules == "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    assert trl.lora.modules_to_save == ["embed_tokens", "lm_head"]
    assert (trl.data.max_length, trl.data.assistant_turns, trl.data.chat_template) == (1024, "all", "configs/examples/chatml.jinja")
    assert (trl.optim.lr, trl.optim.epochs, trl.optim.batch_size, trl.optim.grad_accum, trl.optim.seed) == (2e-4, 1.0, 2, 8, 42)
    assert trl.model.gradient_checkpointing and trl.model.autocast == "bf16" and trl.report_to == "tensorboard"
    assert trl.trainer == {"eval_strategy": "no", "save_strategy": "steps", "run_name": "Qwen2.5-0.5B-SFT", "push_to_hub": False}
    args = stage.training_arguments(trl)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.learning_rate) == (2, 8, 2e-4)
    assert args.run_name == "Qwen2.5-0.5B-SFT" and args.report_to == ["tensorboard"] and args.save_strategy.value == "steps"


def test_a_stage_an_earlier_alignx_finished_is_recognised():
    """The replication's committed record of a finished stage (alignx before the settings added since) reads as the
    settings the same YAML gives today, compared as strictly as possible (only resume and overwrite_output_dir
    ignored; the pipeline also ignores the other operational settings): settings added since must read as what alignx
    did before them."""
    import json

    import yaml

    from alignx.config import RUN_CONTROL

    path = Path(__file__).resolve().parents[1] / "experiments/cpu_gemma3/runs/cpt_sft/stage1/train_summary.json"
    recorded = json.loads(path.read_text(encoding="utf-8"))["config"]
    values = yaml.safe_load(yaml.safe_dump(recorded))
    for key in ("resume", "overwrite_output_dir"):
        values.pop(key, None)
    # no cap, logits recomputed in backward: what it did then
    today = load_config(TrainConfig, [], {**_dotted(values), "loss.ntp_chunk_mib": 0, "loss.ntp_backend": "recompute",
                                                         "max_nonfinite_steps": 0})
    assert run_settings(recorded, RUN_CONTROL) == run_settings(today, RUN_CONTROL)


def _dotted(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
