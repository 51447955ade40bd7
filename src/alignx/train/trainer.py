"""HF Trainer extended through compute_loss and log (plus saving the LM and the L_LAM head apart).

Loss normalisation (why gradient accumulation and data parallelism do not change the loss):
- L_NTP is a token-level mean over the *whole* optimiser step: each micro-batch contributes
  sum(token losses) / N, N = target tokens in all micro-batches of the step on all ranks (the
  Trainer's ``num_items_in_batch``). Multiplying by the world size undoes DDP's gradient averaging.
  So 1 micro-batch of 8 rows and 8 micro-batches of 1 row give the same loss and gradients.
- L_CTR and L_LAM are batch-level means (in-batch negatives / pairs): each micro-batch contributes
  its value / number of micro-batches, i.e. the step's loss is their mean over micro-batches and
  ranks. (Their value itself depends on the micro-batch size, which sets the negatives.)

Checkpoints are atomic: the Trainer writes ``checkpoint-N`` inside a staging sibling
(``.tmp-checkpoint-N/``), which is renamed into place once every rank has written its part, with the
run's record (``alignx_run.json``: the settings it trains with) inside. So a ``checkpoint-N`` directory
is always complete, and ``resume=latest`` can tell whose it is.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from alignx.model.alignx_model import HEAD_WEIGHTS, AlignXModel
from alignx.train.outputs import RUN_RECORD
from alignx.utils import TMP_PREFIX, TrainingDiverged, commit_dir, write_json

TERMS = ("ntp", "ctr", "lam")
log = logging.getLogger("alignx.train")


def combine_losses(
    out: dict[str, torch.Tensor],
    lambda_ctr: float,
    lambda_lam: float,
    num_items_in_batch: torch.Tensor | int | None,
    grad_accum_steps: int,
    world_size: int,
) -> torch.Tensor:
    """Total loss L = L_NTP + lambda_ctr * L_CTR + lambda_lam * L_LAM for one micro-batch (see module doc)."""
    if num_items_in_batch is not None:
        ntp = out["ntp_sum"] / num_items_in_batch * world_size
        aux_scale = 1.0 / grad_accum_steps
    else:
        ntp = out["ntp_sum"] / out["ntp_count"].clamp(min=1)
        aux_scale = 1.0
    return ntp + aux_scale * (lambda_ctr * out["ctr"] + lambda_lam * out["lam"])


class _NewStep(TrainerCallback):
    """Forgets the non-finite flags of a step the optimiser never saw (fp16's loss scaler skips its overflow steps
    before our guard runs), so they cannot count against the next step; records the steps the scaler skipped."""

    def __init__(self, trainer: AlignXTrainer) -> None:
        self.trainer = trainer

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._bad_terms = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if getattr(self.trainer.accelerator, "optimizer_step_was_skipped", False):  # fp16's loss scaler found inf / NaN
            self.trainer.fp16_overflow_steps.append(state.global_step)


class AlignXTrainer(Trainer):
    # compute_loss already divides by the number of micro-batches; the Trainer must not divide again.
    loss_is_scaled_for_ga = True

    def __init__(
        self, *args: Any, lambda_ctr: float = 0.0, lambda_lam: float = 0.0, run_record: dict[str, Any] | None = None,
        max_nonfinite_steps: int = 3, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lambda_ctr = lambda_ctr
        self.lambda_lam = lambda_lam
        self.run_record = run_record
        self.max_nonfinite_steps = max_nonfinite_steps
        self._sums: dict[str, torch.Tensor] = {}
        self._staging_root: str | None = None
        self._bad_terms: torch.Tensor | None = None  # [3]: micro-batches of this optimiser step with a non-finite term
        self._nonfinite_run = 0
        self.skipped_steps: list[dict[str, Any]] = []  # optimiser steps skipped for a non-finite loss or gradient
        self.fp16_overflow_steps: list[int] = []  # steps fp16's loss scaler skipped (it lowers its scale and goes on)
        self.add_callback(_NewStep(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        out = model(**inputs)
        training = model.training
        world = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        loss = combine_losses(
            out,
            self.lambda_ctr,
            self.lambda_lam,
            num_items_in_batch if training else None,
            max(1, getattr(self, "current_gradient_accumulation_steps", 1)) if training else 1,
            world,
        )
        if training:
            self._record(out)
        return (loss, out) if return_outputs else loss

    # ---- non-finite guard: a step with a NaN / inf loss term or gradient is not applied -----------

    def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.max_nonfinite_steps > 0 and not getattr(optimizer, "_alignx_guarded", False):
            step = optimizer.step

            def guarded_step(*a: Any, **k: Any) -> Any:
                return step(*a, **k) if self._step_is_finite(optimizer) else None

            optimizer.step = guarded_step
            optimizer._alignx_guarded = True
        return optimizer

    def _step_is_finite(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether the optimiser step about to run has finite loss terms (every micro-batch) and gradients, on every
        rank (one all-reduce of 4 numbers, so all ranks decide alike). A step that is not is skipped, counted and
        logged; ``max_nonfinite_steps`` such steps in a row stop training (:class:`TrainingDiverged`)."""
        grads = [g.to_local() if hasattr(g, "to_local") else g  # a sharded (DTensor) gradient: this rank's part
                 for group in optimizer.param_groups for p in group["params"] if (g := p.grad) is not None]
        device = grads[0].device if grads else self.args.device
        grad_bad = (~torch.isfinite(torch.stack(torch._foreach_norm(grads)))).any().float() if grads else torch.zeros((), device=device)
        terms = self._bad_terms.to(device) if self._bad_terms is not None else torch.zeros(len(TERMS), device=device)
        self._bad_terms = None
        flags = self.accelerator.reduce(torch.cat([terms, grad_bad.reshape(1)]), reduction="sum").tolist()
        if not any(flags):
            self._nonfinite_run = 0
            return True
        what = [name for name, f in zip((*TERMS, "gradient"), flags, strict=True) if f]
        step = self.state.global_step + 1
        self._nonfinite_run += 1
        self.skipped_steps.append({"step": step, "non_finite": what})
        log.warning("step %d: non-finite %s; the optimiser step is skipped (%d in a row)", step, ", ".join(what), self._nonfinite_run)
        if self._nonfinite_run >= self.max_nonfinite_steps:
            raise TrainingDiverged(
                f"step {step}: {self._nonfinite_run} optimiser steps in a row had a non-finite {', '.join(what)}; training "
                "stopped (checkpoints hold the last good weights): lower optim.lr, check the data, use model.autocast=bf16 "
                "rather than fp16, or raise max_nonfinite_steps"
            )
        return False

    def _record(self, out: dict[str, torch.Tensor]) -> None:
        """Accumulate per-term values between two log calls (token-weighted for NTP), leaving out a micro-batch with a
        non-finite term (its step is skipped: :meth:`_step_is_finite`), and flag which terms were not finite."""
        terms = torch.stack([out["ntp_sum"].detach().float(), out["ctr"].detach().float(), out["lam"].detach().float()])
        bad = (~torch.isfinite(terms)).float()
        self._bad_terms = bad if self._bad_terms is None else self._bad_terms + bad
        ok = (bad.sum() == 0).float()  # no host sync: the micro-batch's values count times 0 or 1
        terms = torch.nan_to_num(terms, nan=0.0, posinf=0.0, neginf=0.0)
        vals = {
            "ntp_sum": terms[0] * ok,
            "ntp_count": out["ntp_count"].detach().float() * ok,
            "ctr": terms[1] * ok,
            "lam": terms[2] * ok,
            "micro": ok,
        }
        for k, v in vals.items():
            self._sums[k] = self._sums.get(k, torch.zeros((), device=v.device)) + v

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._sums and "loss" in logs:
            keys = sorted(self._sums)
            stacked = torch.stack([self._sums[k] for k in keys])
            stacked = self.accelerator.reduce(stacked, reduction="sum")
            s = dict(zip(keys, stacked.tolist(), strict=True))
            logs["loss_ntp"] = round(s["ntp_sum"] / max(s["ntp_count"], 1.0), 6)
            if self.lambda_ctr > 0:
                logs["loss_ctr"] = round(s["ctr"] / max(s["micro"], 1.0), 6)
            if self.lambda_lam > 0:
                logs["loss_lam"] = round(s["lam"] / max(s["micro"], 1.0), 6)
            self._sums = {}
        super().log(logs, start_time)

    # ---- resuming at the end ---------------------------------------------------------------

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial):  # noqa: ANN001
        epochs_trained, skip = super()._init_training_state(max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial)
        if resume_from_checkpoint is not None and self.state.global_step >= max_steps:
            # A checkpoint of the last step has nothing left to train. The Trainer checks max_steps only after
            # a step, so it would train one step more; no epoch left to run means no step.
            return num_train_epochs, 0
        return epochs_trained, skip

    # ---- atomic checkpoints -----------------------------------------------------------------

    def _get_output_dir(self, trial: Any) -> str:
        # While a checkpoint is saved, the Trainer's checkpoint-N (and its rotation) live in the staging root.
        return self._staging_root or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = os.path.join(run_dir, f"{TMP_PREFIX}{name}")
        self._staging_root = staging_root
        try:
            super()._save_checkpoint(model, trial)  # -> <staging_root>/checkpoint-N, every rank its part
            if self.args.should_save and self.run_record is not None:
                write_json(os.path.join(staging_root, name, RUN_RECORD), self.run_record)
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                commit_dir(os.path.join(staging_root, name), os.path.join(run_dir, name))
                os.rmdir(staging_root)
                rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit, use_mtime=False)
        except BaseException:
            if self.args.should_save:
                shutil.rmtree(staging_root, ignore_errors=True)  # e.g. a full disk: keep the complete checkpoints only
            raise
        finally:
            self._staging_root = None

    # ---- checkpoints: a standard HF directory + the L_LAM head beside it --------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        wrapper: AlignXModel = self.accelerator.unwrap_model(self.model)
        if state_dict is None:
            state_dict = wrapper.state_dict()
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        save_split(wrapper, state_dict, output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        wrapper: AlignXModel = self.accelerator.unwrap_model(model or self.model)
        load_split(wrapper, resume_from_checkpoint)


def save_split(wrapper: AlignXModel, state_dict: dict[str, torch.Tensor], output_dir: str) -> None:
    """Write ``lm`` with save_pretrained (adapter only for PEFT) and the head as lam_head.safetensors."""
    lm_sd = {k[len("lm.") :]: v for k, v in state_dict.items() if k.startswith("lm.")}
    wrapper.lm.save_pretrained(output_dir, state_dict=lm_sd)
    head_sd = {k[len("lam_head.") :]: v.detach().cpu().contiguous() for k, v in state_dict.items() if k.startswith("lam_head.")}
    if head_sd:
        save_file(head_sd, os.path.join(output_dir, HEAD_WEIGHTS))
        meta = {"hidden_size": wrapper.lam_head.hidden_size, "width": wrapper.lam_head.width, "kind": "alignx-language-matching-head"}
        with open(os.path.join(output_dir, "lam_head.json"), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2)


def load_split(wrapper: AlignXModel, ckpt: str) -> None:
    """Load what :func:`save_split` wrote back into a wrapper (resume)."""
    from alignx.model.load import _base

    adapter = os.path.join(ckpt, "adapter_model.safetensors")
    if os.path.exists(adapter):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(wrapper.lm, load_file(adapter))
    else:
        base = _base(wrapper.lm)
        index = os.path.join(ckpt, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index, encoding="utf-8") as fh:
                files = sorted({os.path.join(ckpt, f) for f in json.load(fh)["weight_map"].values()})
        else:
            files = [os.path.join(ckpt, "model.safetensors")]
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(f))
        missing, unexpected = base.load_state_dict(state, strict=False)
        # Tied output embeddings are not stored; anything else missing is a real problem.
        tied = {k for k in missing if "lm_head" in k or "embed_out" in k}
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"{ckpt}: checkpoint does not match the model (missing {sorted(set(missing) - tied)[:5]}, unexpected {unexpected[:5]})")
    head_path = os.path.join(ckpt, HEAD_WEIGHTS)
    if wrapper.lam_head is not None and os.path.exists(head_path):
        wrapper.lam_head.load_state_dict(load_file(head_path))
