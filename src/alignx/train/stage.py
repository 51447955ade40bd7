"""`alignx train`: stage 1 (NTP + L_CTR + L_LAM on translation instructions) or stage 2 (instruction SFT).

Output directory (see :mod:`alignx.train.outputs`): ``alignx_run.json`` (the run's record),
``alignx_train.yaml``, ``checkpoint-N/``, ``final/`` (and ``final_adapter/`` with LoRA), ``train_summary.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import TrainerState

from alignx.config import TRAINER_DEFAULTS, ConfigError, TrainConfig, save_config, to_dict
from alignx.data import dataset as data_mod
from alignx.data.dataset import TrainData
from alignx.data.packing import PackingCollator, check_rows_stay_apart
from alignx.data.render import Collator
from alignx.distributed import wait_for_everyone
from alignx.model import load as mload
from alignx.model.alignx_model import AlignXModel
from alignx.train import outputs
from alignx.train.trainer import AlignXTrainer
from alignx.utils import commit_dir, environment, output_lock, remove_path, remove_stale, staging_path, write_json

log = logging.getLogger("alignx.train")


def loss_on_prompt(cfg: TrainConfig) -> bool:
    """``loss.ntp_on_prompt``, or its stage default when unset: stage 1 yes (reference), stage 2 no."""
    return cfg.loss.ntp_on_prompt if cfg.loss.ntp_on_prompt is not None else cfg.stage == 1


def build_dataset(cfg: TrainConfig, tokenizer: Any) -> TrainData:
    """The rendered training rows of the configured stage (:func:`alignx.data.dataset.build`: cached, Arrow-backed)."""
    return data_mod.build(cfg.data, cfg.stage, tokenizer, loss_on_prompt(cfg))


def precision(cfg: TrainConfig) -> str:
    """The autocast a run trains under (bf16 | fp16 | none), for the device it trains on."""
    return mload.resolve_autocast(cfg.model, "cpu" if cfg.trainer.get("use_cpu") else None)


def training_arguments(cfg: TrainConfig) -> Any:
    """The HF TrainingArguments of a run: every optimisation and precision setting maps here, nowhere else.

    alignx's defaults (:data:`alignx.config.TRAINER_DEFAULTS`), then ``cfg.trainer`` (any other TrainingArguments
    field), then the fields alignx holds in settings of its own (``optim.*``, ``model.autocast``, ...) and the ones
    it must set itself (``remove_unused_columns``, :data:`alignx.config.HF_REFUSED`).
    """
    from transformers import TrainingArguments
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    o = cfg.optim
    for key, value, names in (("optim.optimizer", o.optimizer, OptimizerNames), ("optim.scheduler", o.scheduler, SchedulerType)):
        if value not in {n.value for n in names}:
            raise ConfigError(f"{key}={value}: not a name transformers knows; choose from {', '.join(n.value for n in names)}")
    autocast = precision(cfg)
    report = [] if cfg.report_to in ("none", "") else [r.strip() for r in cfg.report_to.split(",")]
    given = dict(cfg.trainer)
    if given.get("parallelism_config") is not None:  # a mapping in the settings; transformers takes the object
        from accelerate.parallelism_config import ParallelismConfig

        given["parallelism_config"] = ParallelismConfig(**given["parallelism_config"])
    kwargs: dict[str, Any] = {
        **TRAINER_DEFAULTS,
        **given,
        "output_dir": cfg.output_dir,
        "per_device_train_batch_size": o.batch_size,
        "gradient_accumulation_steps": o.grad_accum,
        "optim": o.optimizer,
        "learning_rate": o.lr,
        "num_train_epochs": o.epochs,
        "max_steps": o.max_steps,
        # transformers reads an int as steps and a float in [0, 1) as a share of the steps
        "warmup_steps": o.warmup_steps if o.warmup_steps > 0 else o.warmup_ratio,
        "lr_scheduler_type": o.scheduler,
        "train_sampling_strategy": "group_by_length" if o.group_by_length else "random",
        "weight_decay": o.weight_decay,
        "max_grad_norm": o.max_grad_norm,
        "seed": o.seed,
        "bf16": autocast == "bf16",
        "fp16": autocast == "fp16",
        # transformers accepts bf16 without a GPU only when told the run is on the CPU
        "use_cpu": bool(given.get("use_cpu")) or (autocast == "bf16" and not torch.cuda.is_available()),
        "logging_steps": cfg.logging_steps,
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "report_to": report,
        "dataloader_num_workers": cfg.num_workers,
        "resume_from_checkpoint": None,  # alignx's resume setting decides (outputs.choose_checkpoint)
        "remove_unused_columns": False,
    }
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, ImportError, TypeError) as e:  # e.g. deepspeed not installed, save and eval strategies apart
        named = ", ".join(f"{k}={v}" for k, v in sorted(cfg.trainer.items()))
        raise ConfigError(f"TrainingArguments: {mload.first_line(e)} (from optim.*, model.autocast{', trainer: ' + named if named else ''})") from None


def check_training_settings(args: Any) -> None:
    """Settings the Trainer would reject only once training starts: the optimiser (its package), the lr
    schedule (its required arguments), the trackers of ``report_to`` (installed or not) and an evaluation
    schedule (``alignx train`` takes no evaluation set)."""
    from transformers import Trainer, get_scheduler
    from transformers.integrations import get_reporting_integration_callbacks

    if args.eval_strategy.value != "no" or args.eval_on_start or args.load_best_model_at_end:
        raise ConfigError(f"eval_strategy={args.eval_strategy.value}: alignx train takes no evaluation set; evaluate "
                          "checkpoints with alignx eval, and leave eval_strategy=no (and eval_on_start, load_best_model_at_end off)")
    try:
        Trainer.get_optimizer_cls_and_kwargs(args)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"optim.optimizer={args.optim.value}: {mload.first_line(e)}") from None
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    try:
        get_scheduler(args.lr_scheduler_type, probe, num_warmup_steps=1, num_training_steps=10, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    except (ImportError, ValueError, TypeError) as e:
        raise ConfigError(f"optim.scheduler={args.lr_scheduler_type.value}: {mload.first_line(e)}") from None
    try:
        for callback in get_reporting_integration_callbacks(args.report_to):
            callback()
    except (ImportError, RuntimeError, ValueError) as e:
        raise ConfigError(f"report_to={','.join(args.report_to)}: {mload.first_line(e)}; or set report_to=none") from None


def check_data_paths(cfg: TrainConfig) -> None:
    """Every data source is a non-empty file of a known format, a Moses prefix or a hub spec, before anything is read."""
    from alignx.data.readers import DataError, check_source

    d = cfg.data
    if cfg.stage == 1 and not d.parallel:
        raise ConfigError("stage 1 has no training rows: give data.parallel")
    if cfg.stage == 2 and not d.parallel and not d.instructions:
        raise ConfigError("stage 2 has no training rows: give data.instructions or data.parallel")
    for key, sources in (("data.parallel", d.parallel), ("data.instructions", d.instructions)):
        for source in sources:
            try:
                check_source(source)
            except DataError as e:
                raise DataError(f"{key}: {e}") from None


def main(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training stage; returns the summary also written to ``<output_dir>/train_summary.json``.

    Every input is checked before the first write: settings, the model path and what transformers would say
    about the model settings (on a weightless copy), the tokenizer and the data files. Then the run locks its
    output directory and claims it (:mod:`alignx.train.outputs`), reads and renders the data, and only then
    writes: its record, checkpoints (atomic), ``final/`` (atomic), ``train_summary.json`` (atomic, last).
    """
    from transformers.trainer_utils import set_seed

    set_seed(cfg.optim.seed)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # Without this, accelerate treats each CPU process as its own single-process run.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    if cfg.data.packing and cfg.stage != 1:  # the pipeline sets `stage` after the settings were checked
        raise ConfigError("data.packing=true is for stage 1 only; set data.packing=false for stage 2")
    args = training_arguments(cfg)
    check_training_settings(args)
    if cfg.data.packing and args.n_gpu > 1:
        raise ConfigError("data.packing=true: nn.DataParallel (several GPUs in one process) would split packed sequences "
                          "and rows apart; launch one process per GPU (accelerate launch / torchrun)")
    model_config = mload.check_model_path(cfg.model)
    mload.check_model_settings(model_config, cfg.model, cfg.lora, cfg.loss.align_layer, cfg.data.max_length)
    tokenizer = mload.load_tokenizer(cfg.model, padding_side="right", chat_template=cfg.data.chat_template)
    check_data_paths(cfg)
    outputs.check_resume_path(cfg)
    out = Path(cfg.output_dir)
    main_process = args.should_save
    with output_lock(out, "train", enabled=main_process):
        granted = outputs.claim(cfg)
        # Bad rows fail here, before anything is written. One process per machine renders (or finds the rows in the
        # cache); the others then memory-map what it saved.
        with args.main_process_first(local=True, desc="rendering the training data"):
            data = build_dataset(cfg, tokenizer)
        dataset, counts = data.dataset, data.counts
        record = outputs.make_record(cfg, data.digest, precision(cfg))
        resume = outputs.choose_checkpoint(cfg, granted, record)
        wait_for_everyone()  # every rank decided before the main process changes the directory
        if main_process:
            stale = remove_stale(out)
            for partial in outputs.incomplete_checkpoints(out):
                remove_path(partial)
                stale.append(partial.name)
            if stale:
                log.info("removed what killed runs left in %s: %s", out, ", ".join(stale))
            if granted.replace:
                log.warning("overwrite_output_dir: replacing %s in %s", ", ".join(outputs.clear_outputs(out)), out)
            if resume is None:
                write_json(out / outputs.RUN_RECORD, record)
            save_config(cfg, out / outputs.CONFIG_FILE)
        return _train(cfg, args, tokenizer, dataset, counts, record, resume)


def _train(cfg: TrainConfig, args: Any, tokenizer: Any, dataset: Any, counts: dict[str, Any],
           record: dict[str, Any], resume: str | None) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    lm = mload.load_model(cfg.model)
    if getattr(lm.config, "pad_token_id", None) is None:
        lm.config.pad_token_id = tokenizer.pad_token_id
    if cfg.model.freeze_embeddings:
        log.info("frozen embeddings: %d parameters", mload.freeze_embeddings(lm))
    if cfg.model.gradient_checkpointing:
        mload.enable_gradient_checkpointing(lm)
    if cfg.lora.enabled:
        lm = mload.apply_lora(lm, cfg.lora)
    model = AlignXModel(lm, cfg.loss, with_alignment=cfg.stage == 1)
    lm.train()
    model.train()

    trainer = AlignXTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=PackingCollator(tokenizer.pad_token_id, cfg.data.max_length) if cfg.data.packing else Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        lambda_ctr=cfg.loss.lambda_ctr if model.use_ctr else 0.0,
        lambda_lam=cfg.loss.lambda_lam if model.use_lam else 0.0,
        run_record=record,
        max_nonfinite_steps=cfg.max_nonfinite_steps,
    )
    if cfg.data.packing:  # after the Trainer placed the model (flash attention runs on the GPU only)
        check_rows_stay_apart(lm)
    start = time.time()
    resumed_at = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json")).global_step if resume else 0
    result = trainer.train(resume_from_checkpoint=resume)
    runtime = time.time() - start
    trained = trainer.state.global_step - resumed_at

    final = out / "final"
    export(trainer, model, tokenizer, cfg, final, record)
    history = [h for h in trainer.state.log_history if "loss" in h]
    summary = {
        "kind": "train",
        "stage": cfg.stage,
        "output_dir": str(out),
        "final_model": str(final),
        "steps": trainer.state.global_step,
        "resumed_from": {"checkpoint": resume, "step": resumed_at} if resume else None,
        "runtime_s": round(runtime, 2),
        # the Trainer's mean loss over the steps of this call; none were left when resuming at the last step
        "train_loss": result.training_loss if trained > 0 else None,
        "final_losses": {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("loss")},
        "first_losses": {k: v for k, v in (history[0] if history else {}).items() if k.startswith("loss")},
        # optimiser steps not applied because a loss term or a gradient was not finite (max_nonfinite_steps)
        "nonfinite_skipped_steps": trainer.skipped_steps,
        # steps fp16's loss scaler skipped on an overflow (as transformers does; not counted above)
        "fp16_overflow_skipped_steps": trainer.fp16_overflow_steps,
        "history": history,
        "data": counts,
        "align_layer": model.align_layer,
        "precision": {
            "weights": str(next(lm.parameters()).dtype).removeprefix("torch."),
            "autocast": precision(cfg),
            "alignment_losses": "float32",
        },
        # what accelerate ran, whatever the launch config asked for (on CPUs it runs FSDP / DeepSpeed configs as DDP)
        "distributed": {"engine": trainer.accelerator.distributed_type.value, "processes": trainer.accelerator.num_processes},
        "config": to_dict(cfg),
        "env": environment(),
    }
    if trainer.args.should_save:
        write_json(out / outputs.SUMMARY, summary)  # last: its presence (with final/) marks a finished run
    return summary


def export(trainer: AlignXTrainer, model: AlignXModel, tokenizer: Any, cfg: TrainConfig, final: Path,
           record: dict[str, Any] | None = None) -> None:
    """Write ``final/`` atomically: a plain HF model dir (merged when LoRA) + tokenizer + lam_head beside it.

    Everything is built in ``.tmp-*`` siblings and renamed into place (LoRA: the adapter to
    ``final_adapter/`` first, then the merged model to ``final/``), so ``final/`` is complete or absent."""
    main_process = trainer.args.should_save
    first = staging_path(final.parent / "final_adapter") if cfg.lora.enabled else staging_path(final)
    if main_process:
        remove_path(first)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(first))  # runs the engine's state-dict gathering on every rank
    trainer.accelerator.wait_for_everyone()
    if not main_process:
        return
    save_config(cfg, first / outputs.CONFIG_FILE)
    if record is not None:
        write_json(first / outputs.RUN_RECORD, record)
    if not cfg.lora.enabled:
        commit_dir(first, final)
        return
    if cfg.lora.merge_on_export:
        merged_dir = staging_path(final)
        remove_path(merged_dir)
        merged = trainer.accelerator.unwrap_model(model).lm.merge_and_unload()
        merged.save_pretrained(str(merged_dir))
        tokenizer.save_pretrained(str(merged_dir))
        for name in ("lam_head.safetensors", "lam_head.json", outputs.CONFIG_FILE, outputs.RUN_RECORD):
            if (first / name).exists():
                shutil.copy(first / name, merged_dir / name)
        commit_dir(first, final.parent / "final_adapter")
        commit_dir(merged_dir, final)
    else:
        commit_dir(first, final.parent / "final_adapter")
