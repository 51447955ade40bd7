"""AlignXModel: a causal LM plus the language-matching head, whose forward returns every loss term.

The trainer only weighs and normalises the terms (see ``alignx.train.trainer``). Keeping the loss
computation inside ``forward`` means DDP / FSDP / DeepSpeed see one module call per step, so the
output head (fused loss) and the L_LAM head are used inside the engine's forward, where sharded
parameters are gathered.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from alignx.config import LossConfig
from alignx.distributed import gather_with_grad
from alignx.model import load as mload
from alignx.model.pooling import pool_spans
from alignx.objectives import LanguageMatchingHead, fused_next_token_loss, info_nce, language_matching_loss
from alignx.objectives.ntp import next_token_loss_from_logits

HEAD_WEIGHTS = "lam_head.safetensors"


class AlignXModel(nn.Module):
    """Wraps ``lm`` (a transformers causal LM, possibly a PEFT model).

    forward(...) -> dict with
      ntp_sum [] / ntp_count []: summed next-token loss and its token count,
      ctr []: L_CTR (0 when disabled or the batch has one pair),
      lam []: L_LAM (0 when disabled).
    """

    # Tells the HF Trainer to count target tokens over the whole accumulated batch (num_items_in_batch).
    accepts_loss_kwargs = True

    def __init__(self, lm: nn.Module, loss: LossConfig, with_alignment: bool) -> None:
        super().__init__()
        self.lm = lm
        self.loss_cfg = loss
        self.align_layer = mload.resolve_align_layer(lm, loss.align_layer)
        self.use_ctr = with_alignment and loss.lambda_ctr > 0
        self.use_lam = with_alignment and loss.lambda_lam > 0
        self.lam_head = LanguageMatchingHead(mload.hidden_size(lm), loss.lam_width) if self.use_lam else None
        # The fused loss needs the model to skip its own logits (logits_to_keep) and plain logits after it.
        self.fused = loss.ntp_chunk_size > 0 and mload.accepts_logits_to_keep(lm)
        self.softcap, self.logit_scale = mload.logit_transform(lm)

    @property
    def config(self) -> Any:  # the Trainer reads model.config in a few places
        return self.lm.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        shift_labels: torch.Tensor | None = None,
        x_start: torch.Tensor | None = None,
        x_end: torch.Tensor | None = None,
        y_start: torch.Tensor | None = None,
        y_end: torch.Tensor | None = None,
        src_lang: torch.Tensor | None = None,
        tgt_lang: torch.Tensor | None = None,
        num_items_in_batch: Any = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        if shift_labels is None:
            if labels is None:
                raise ValueError("AlignXModel needs labels or shift_labels")
            shift_labels = torch.full_like(labels, -100)
            shift_labels[:, :-1] = labels[:, 1:]
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False,
                                  "output_hidden_states": True}
        if self.fused:
            kwargs["logits_to_keep"] = 1
        out = self.lm(**kwargs)
        hidden = out.hidden_states
        if self.fused:
            ntp_sum, ntp_count = fused_next_token_loss(
                hidden[-1], self.lm.get_output_embeddings(), shift_labels, self.loss_cfg.ntp_chunk_size,
                self.softcap, self.logit_scale,
            )
        else:
            ntp_sum, ntp_count = next_token_loss_from_logits(out.logits, shift_labels)
        zero = ntp_sum * 0.0
        result = {"ntp_sum": ntp_sum, "ntp_count": ntp_count, "ctr": zero, "lam": zero}
        has_spans = x_start is not None and y_start is not None
        if has_spans and self.use_ctr:
            rows = torch.arange(input_ids.shape[0], device=input_ids.device)
            mid = hidden[self.align_layer]
            hx = pool_spans(mid, rows, x_start, x_end)
            hy = pool_spans(mid, rows, y_start, y_end)
            if self.loss_cfg.ctr_gather:
                hy_all, pos = gather_with_grad(hy)
                result["ctr"] = info_nce(hx, hy_all, self.loss_cfg.tau, self.loss_cfg.ctr_symmetric, positive_index=pos)
            else:
                result["ctr"] = info_nce(hx, hy, self.loss_cfg.tau, self.loss_cfg.ctr_symmetric)
        if has_spans and self.use_lam:
            rows = torch.arange(input_ids.shape[0], device=input_ids.device)
            last = hidden[-1]
            # Positions shifted by one: the states that predict the sentence's tokens (reference).
            sx = pool_spans(last, rows, x_start, x_end, shift=1)
            sy = pool_spans(last, rows, y_start, y_end, shift=1)
            states = torch.cat([sx, sy], dim=0)
            ids = torch.cat([src_lang, tgt_lang], dim=0)
            result["lam"] = language_matching_loss(states, ids, self.lam_head)
        return result

    # Gradient checkpointing and friends are the LM's business.
    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        mload.enable_gradient_checkpointing(self.lm)
