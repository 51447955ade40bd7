"""`alignx train`: stage 1 (NTP + L_CTR + L_LAM on translation instructions) or stage 2 (instruction SFT)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from alignx.config import ConfigError, TrainConfig, save_config, to_dict
from alignx.data.readers import ReadStats, read_instructions, read_parallel
from alignx.data.render import (
    Collator,
    ExampleDataset,
    RenderStats,
    both_directions,
    render_instruction,
    render_translation,
    subsample,
)
from alignx.model import load as mload
from alignx.model.alignx_model import AlignXModel
from alignx.train.trainer import AlignXTrainer
from alignx.utils import environment, write_json

log = logging.getLogger("alignx.train")


def loss_on_prompt(cfg: TrainConfig) -> bool:
    """``loss.ntp_on_prompt``, or its stage default when unset: stage 1 yes (reference), stage 2 no."""
    return cfg.loss.ntp_on_prompt if cfg.loss.ntp_on_prompt is not None else cfg.stage == 1


def build_dataset(cfg: TrainConfig, tokenizer: Any) -> tuple[ExampleDataset, dict[str, Any]]:
    """Read and render the training rows for the configured stage; returns the dataset and counts."""
    d = cfg.data
    on_prompt = loss_on_prompt(cfg)
    examples = []
    rstats, rend = ReadStats(), RenderStats()
    pairs = []
    for path in d.parallel:
        pairs.extend(subsample(read_parallel(path, d.on_bad_row, rstats), d.max_pairs, d.seed))
    if d.both_directions:
        pairs = both_directions(pairs)
    use_pairs = cfg.stage == 1 or d.translation_in_sft
    if use_pairs:
        for p in pairs:
            ex = render_translation(
                p, tokenizer, d.template, d.max_length, on_prompt, rend,
                instruction=d.translation_instruction, truncate=d.truncate_pairs,
            )
            if ex is not None:
                examples.append(ex)
    if cfg.stage == 2:
        for path in d.instructions:
            for row in subsample(read_instructions(path, d.on_bad_row, rstats), d.max_pairs, d.seed):
                ex = render_instruction(row, tokenizer, d.max_length, d.use_chat_template, rend, loss_on_prompt=on_prompt)
                if ex is not None:
                    examples.append(ex)
    if not examples:
        need = "data.parallel" if cfg.stage == 1 else "data.instructions or data.parallel"
        raise ValueError(f"stage {cfg.stage} has no training rows: give {need} (read {rstats.summary()}, rendered {rend.summary()})")
    counts = {
        "rows_read": rstats.read,
        "rows_skipped": dict(rstats.skipped),
        "examples": len(examples),
        "dropped": dict(rend.dropped),
        "tokens": sum(len(e.input_ids) for e in examples),
        "target_tokens": sum(sum(1 for t in e.labels if t != -100) for e in examples),
    }
    log.info("stage %d data: read %s; rendered %s", cfg.stage, rstats.summary(), rend.summary())
    return ExampleDataset(examples), counts


def training_arguments(cfg: TrainConfig) -> Any:
    """The HF TrainingArguments of a run: every optimisation and precision setting maps here, nowhere else."""
    from transformers import TrainingArguments

    o = cfg.optim
    autocast = mload.resolve_autocast(cfg.model)
    report = [] if cfg.report_to in ("none", "") else [r.strip() for r in cfg.report_to.split(",")]
    try:
        return TrainingArguments(
            output_dir=cfg.output_dir,
            per_device_train_batch_size=o.batch_size,
            gradient_accumulation_steps=o.grad_accum,
            optim=o.optimizer,
            learning_rate=o.lr,
            num_train_epochs=o.epochs,
            max_steps=o.max_steps,
            # transformers reads an int as steps and a float in [0, 1) as a share of the steps
            warmup_steps=o.warmup_steps if o.warmup_steps > 0 else o.warmup_ratio,
            lr_scheduler_type=o.scheduler,
            train_sampling_strategy="group_by_length" if o.group_by_length else "random",
            weight_decay=o.weight_decay,
            max_grad_norm=o.max_grad_norm,
            seed=o.seed,
            bf16=autocast == "bf16",
            fp16=autocast == "fp16",
            # transformers accepts bf16 without a GPU only when told the run is on the CPU
            use_cpu=autocast == "bf16" and not torch.cuda.is_available(),
            logging_steps=cfg.logging_steps,
            logging_first_step=True,
            save_steps=cfg.save_steps,
            save_total_limit=cfg.save_total_limit,
            report_to=report,
            remove_unused_columns=False,
            dataloader_num_workers=cfg.num_workers,
            ddp_find_unused_parameters=False,
            disable_tqdm=False,
        )
    except ValueError as e:  # e.g. an unknown optim.scheduler or optim.optimizer name
        raise ConfigError(f"optim: {e}".splitlines()[0]) from None


def resolve_resume(cfg: TrainConfig) -> str | None:
    if not cfg.resume:
        return None
    if cfg.resume == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(cfg.output_dir) if os.path.isdir(cfg.output_dir) else None
        if last is None:
            log.info("resume=latest: no checkpoint in %s, starting fresh", cfg.output_dir)
        return last
    if not os.path.isdir(cfg.resume):
        raise FileNotFoundError(f"resume: checkpoint directory {cfg.resume} not found")
    return cfg.resume


def main(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training stage; returns the summary also written to ``<output_dir>/train_summary.json``."""
    from transformers.trainer_utils import set_seed

    set_seed(cfg.optim.seed)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # Without this, accelerate treats each CPU process as its own single-process run.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    args = training_arguments(cfg)  # bad optimisation/precision settings fail before any work
    tokenizer = mload.load_tokenizer(cfg.model, padding_side="right")
    dataset, counts = build_dataset(cfg, tokenizer)  # bad data fails here, before anything is written
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "alignx_train.yaml")
    lm = mload.load_model(cfg.model)
    if getattr(lm.config, "pad_token_id", None) is None:
        lm.config.pad_token_id = tokenizer.pad_token_id
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
        data_collator=Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        lambda_ctr=cfg.loss.lambda_ctr if model.use_ctr else 0.0,
        lambda_lam=cfg.loss.lambda_lam if model.use_lam else 0.0,
    )
    start = time.time()
    result = trainer.train(resume_from_checkpoint=resolve_resume(cfg))
    runtime = time.time() - start

    final = out / "final"
    export(trainer, model, tokenizer, cfg, final)
    history = [h for h in trainer.state.log_history if "loss" in h]
    summary = {
        "kind": "train",
        "stage": cfg.stage,
        "output_dir": str(out),
        "final_model": str(final),
        "steps": trainer.state.global_step,
        "runtime_s": round(runtime, 2),
        "train_loss": result.training_loss,
        "final_losses": {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("loss")},
        "first_losses": {k: v for k, v in (history[0] if history else {}).items() if k.startswith("loss")},
        "history": history,
        "data": counts,
        "align_layer": model.align_layer,
        "precision": {
            "weights": str(next(lm.parameters()).dtype).removeprefix("torch."),
            "autocast": mload.resolve_autocast(cfg.model),
            "alignment_losses": "float32",
        },
        "config": to_dict(cfg),
        "env": environment(),
    }
    if trainer.args.should_save:
        write_json(out / "train_summary.json", summary)
    return summary


def export(trainer: AlignXTrainer, model: AlignXModel, tokenizer: Any, cfg: TrainConfig, final: Path) -> None:
    """Write ``final/``: a plain HF model dir (merged when LoRA) + tokenizer + lam_head beside it."""
    trainer.save_model(str(final))  # runs the engine's state-dict gathering on every rank
    if not trainer.args.should_save:
        return
    save_config(cfg, final / "alignx_train.yaml")
    if cfg.lora.enabled:
        adapter_dir = final.parent / "final_adapter"
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        final.rename(adapter_dir)
        if cfg.lora.merge_on_export:
            merged = trainer.accelerator.unwrap_model(model).lm.merge_and_unload()
            final.mkdir(parents=True, exist_ok=True)
            merged.save_pretrained(str(final))
            tokenizer.save_pretrained(str(final))
            for name in ("lam_head.safetensors", "lam_head.json", "alignx_train.yaml"):
                if (adapter_dir / name).exists():
                    shutil.copy(adapter_dir / name, final / name)
