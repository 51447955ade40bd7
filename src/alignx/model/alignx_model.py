"""AlignXModel: a causal LM plus the language-matching head, whose forward returns every loss term.

The trainer only weighs and normalises the terms (see ``alignx.train.trainer``). Keeping the loss
computation inside ``forward`` means DDP / FSDP / DeepSpeed see one module call per step, so the
output head (fused loss) and the L_LAM head are used inside the engine's forward, where sharded
parameters are gathered.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn

from alignx.config import LossConfig
from alignx.data.packing import packed_forward_kwargs, row_starts
from alignx.distributed import gather_with_grad
from alignx.model import load as mload
from alignx.model.pooling import masked_mean, pool_spans, span_batch
from alignx.objectives import LanguageMatchingHead, fused_next_token_loss, info_nce, language_matching_loss
from alignx.objectives.ntp import next_token_loss_from_logits

HEAD_WEIGHTS = "lam_head.safetensors"


class HiddenStateCapture:
    """Keeps only the two hidden states AlignX needs, via forward hooks, instead of ``output_hidden_states``.

    ``states()`` after a forward gives (hidden_states[align_layer], hidden_states[-1]) as HF would:
    hidden_states[l] (1 <= l < n) is the output of decoder layer l-1; hidden_states[n] (= [-1]) is the
    base model's ``last_hidden_state``, i.e. after the final norm (HF ties the last entry to it).
    The hooks stay installed but only record while ``armed`` (so the re-run of a layer during
    gradient-checkpoint recomputation records nothing). Storage is thread-local, as nn.DataParallel
    runs replicas in threads, and a plain attribute while torch.compile traces (dynamo cannot trace
    threading.local).
    """

    def __init__(self, lm: nn.Module, align_layer: int) -> None:
        layers = mload.decoder_layers(lm)
        owner = next((m for m in mload._base(lm).modules() if any(c is layers for c in m.children())), None)
        if owner is None:
            raise ValueError("no module owns the decoder layers; cannot hook the final hidden state")
        self._local = threading.local()
        self._compiled_slot: dict[str, Any] = {}
        self.handles = [owner.register_forward_hook(self._record("final"))]
        self.mid_is_final = align_layer == len(layers)
        if not self.mid_is_final:
            self.handles.append(layers[align_layer - 1].register_forward_hook(self._record("mid")))

    def _slot(self) -> dict[str, Any]:
        if torch.compiler.is_compiling():
            return self._compiled_slot
        if not hasattr(self._local, "slot"):
            self._local.slot = {}
        return self._local.slot

    def _record(self, key: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            slot = self._slot()
            if not slot.get("armed", False):
                return
            if isinstance(output, torch.Tensor):
                slot[key] = output
            elif hasattr(output, "last_hidden_state") and output.last_hidden_state is not None:
                slot[key] = output.last_hidden_state
            else:  # tuple outputs (older decoder layers, return_dict=False)
                slot[key] = output[0]

        return hook

    def arm(self) -> None:
        slot = self._slot()
        slot.clear()
        slot["armed"] = True

    def disarm(self) -> dict[str, Any]:
        """Stop recording and hand over what was recorded (the slot drops its references, so nothing outlives the step)."""
        slot = self._slot()
        taken = {k: v for k, v in slot.items() if k != "armed"}
        slot.clear()
        return taken

    def states(self, taken: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden_states[align_layer], hidden_states[-1]) from what :meth:`disarm` returned."""
        final = taken.get("final")
        mid = final if self.mid_is_final else taken.get("mid")
        if final is None or mid is None:
            raise RuntimeError("hidden-state hooks did not fire; construct AlignXModel with capture='hidden_states'")
        return mid, final

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class AlignXModel(nn.Module):
    """Wraps ``lm`` (a transformers causal LM, possibly a PEFT model).

    forward(...) -> dict with
      ntp_sum [] / ntp_count []: summed next-token loss and its token count,
      ctr []: L_CTR (0 when disabled or the batch has one pair),
      lam []: L_LAM (0 when disabled).
    It takes a padded batch (:class:`alignx.data.render.Collator`: attention_mask, one row per sequence) or a
    packed one (:class:`alignx.data.packing.PackingCollator`: position_ids and packed_row, no attention_mask).
    """

    # Tells the HF Trainer to count target tokens over the whole accumulated batch (num_items_in_batch).
    accepts_loss_kwargs = True

    def __init__(self, lm: nn.Module, loss: LossConfig, with_alignment: bool, capture: str = "hooks") -> None:
        """``capture``: how the align-layer and final states are obtained: ``hooks`` (two forward hooks,
        see :class:`HiddenStateCapture`; falls back to ``hidden_states`` for a model whose layers
        cannot be found) or ``hidden_states`` (``output_hidden_states=True``, all L+1 states)."""
        super().__init__()
        if capture not in ("hooks", "hidden_states"):
            raise ValueError(f"capture must be 'hooks' or 'hidden_states', got {capture!r}")
        self.lm = lm
        self.loss_cfg = loss
        self.align_layer = mload.resolve_align_layer(lm, loss.align_layer)
        self.capture: HiddenStateCapture | None = None
        if capture == "hooks":
            try:
                self.capture = HiddenStateCapture(lm, self.align_layer)
            except ValueError:
                self.capture = None
        self.use_ctr = with_alignment and loss.lambda_ctr > 0
        self.use_lam = with_alignment and loss.lambda_lam > 0
        self.lam_head = LanguageMatchingHead(mload.hidden_size(lm), loss.lam_width, loss.lam_init_std) if self.use_lam else None
        # The fused loss needs the model to skip its own logits (logits_to_keep) and plain logits after it.
        self.fused = loss.ntp_chunk_size > 0 and mload.accepts_logits_to_keep(lm)
        head = lm.get_output_embeddings()  # out_features, not weight.shape: ZeRO-3 leaves the weight empty on a rank
        self.chunk_tokens = loss.ntp_chunk_tokens(getattr(head, "out_features", None) or lm.config.vocab_size) if self.fused else 0
        self.softcap, self.logit_scale = mload.logit_transform(lm)

    @property
    def config(self) -> Any:  # the Trainer reads model.config in a few places
        return self.lm.config

    @property
    def _no_split_modules(self) -> list[str] | None:
        # FSDP's TRANSFORMER_BASED_WRAP reads this from the module it wraps (this wrapper) to find
        # the decoder-layer classes; without it only the root unit is built (nothing sharded per layer).
        return getattr(mload._base(self.lm), "_no_split_modules", None)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        shift_labels: torch.Tensor | None = None,
        x_start: torch.Tensor | None = None,
        x_end: torch.Tensor | None = None,
        y_start: torch.Tensor | None = None,
        y_end: torch.Tensor | None = None,
        src_lang: torch.Tensor | None = None,
        tgt_lang: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        packed_row: torch.Tensor | None = None,
        num_items_in_batch: Any = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        if shift_labels is None:
            if labels is None:
                raise ValueError("AlignXModel needs labels or shift_labels")
            shift_labels = torch.full_like(labels, -100)
            shift_labels[:, :-1] = labels[:, 1:]
        kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": False}
        if packed_row is not None:  # packed rows: position ids restart per row, no attention mask
            if position_ids is None:
                raise ValueError("a packed batch (packed_row) needs position_ids")
            kwargs.update(packed_forward_kwargs(self.lm, position_ids))
        else:
            kwargs["attention_mask"] = attention_mask
        if self.fused:
            kwargs["logits_to_keep"] = 1
        if self.capture is not None:
            self.capture.arm()
            try:
                out = self.lm(**kwargs)
            finally:
                taken = self.capture.disarm()
            mid_states, last_states = self.capture.states(taken)
        else:
            out = self.lm(**kwargs, output_hidden_states=True)
            mid_states, last_states = out.hidden_states[self.align_layer], out.hidden_states[-1]
        if self.fused:
            ntp_sum, ntp_count = fused_next_token_loss(
                last_states, self.lm.get_output_embeddings(), shift_labels, self.chunk_tokens,
                self.softcap, self.logit_scale, grad_in_forward=self.loss_cfg.ntp_backend == "auto",
            )
        else:
            ntp_sum, ntp_count = next_token_loss_from_logits(out.logits, shift_labels)
        zero = ntp_sum * 0.0
        result = {"ntp_sum": ntp_sum, "ntp_count": ntp_count, "ctr": zero, "lam": zero}
        if x_start is None or y_start is None:
            return result
        # Where each row begins in its sequence (packed), so no span or shift reaches into the row before.
        first = None if packed_row is None else row_starts(x_start, position_ids, packed_row)
        # Under the caller's autocast, like the rows' forward; pooled in fp32.
        separate = (
            self.sentence_states(input_ids, x_start, x_end, y_start, y_end, packed_row, first)
            if self.use_ctr and self.loss_cfg.ctr_inputs == "separate" else None
        )
        # Pooling, L_CTR and L_LAM in fp32 even under autocast: the reference computes the cosine in fp32,
        # and a bf16 pooled mean or cosine logit is off by ~0.4 % (1 / 2^8).
        with torch.autocast(device_type=last_states.device.type, enabled=False):
            if self.use_ctr:
                if separate is not None:
                    hx, hy = separate
                else:
                    mid = mid_states.float()  # a copy only when the model computes in bf16/fp16
                    hx = pool_spans(mid, x_start, x_end, row=packed_row)
                    hy = pool_spans(mid, y_start, y_end, row=packed_row)
                if self.loss_cfg.ctr_gather:
                    hy_all, pos = gather_with_grad(hy)
                    result["ctr"] = info_nce(
                        hx, hy_all, self.loss_cfg.tau, self.loss_cfg.ctr_symmetric, positive_index=pos,
                        center=self.loss_cfg.ctr_center,
                    )
                else:
                    result["ctr"] = info_nce(hx, hy, self.loss_cfg.tau, self.loss_cfg.ctr_symmetric, center=self.loss_cfg.ctr_center)
            if self.use_lam:
                # Positions shifted by one: the states that predict the sentence's tokens (reference).
                last = last_states.float()
                sx = pool_spans(last, x_start, x_end, shift=1, row=packed_row, floor=first)
                sy = pool_spans(last, y_start, y_end, shift=1, row=packed_row, floor=first)
                states = torch.cat([sx, sy], dim=0)
                ids = torch.cat([src_lang, tgt_lang], dim=0)
                result["lam"] = language_matching_loss(states, ids, self.lam_head)
        return result

    def sentence_states(
        self, input_ids: torch.Tensor, x_start: torch.Tensor, x_end: torch.Tensor, y_start: torch.Tensor, y_end: torch.Tensor,
        packed_row: torch.Tensor | None = None, first: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean-pooled align-layer states of x and y encoded alone (``loss.ctr_inputs=separate``): [B, H] each, fp32.

        The 2B sentences are cut out of the rows (their tokens as the row has them) into one batch, behind the
        row's first token when it is the model's BOS (the tokenizer adds one, and an analysis encoding the sentence
        alone has it too), and run through the LM once; only the sentence's own tokens are pooled. Packed rows:
        ``packed_row`` [B] is the sequence holding each row, ``first`` [B] where the row begins in it.
        """
        rows = input_ids if packed_row is None else input_ids[packed_row]  # [B, T] token ids, one sequence per row
        batch = rows.shape[0]
        if first is None:
            first = torch.zeros(batch, dtype=torch.long, device=rows.device)
        bos = getattr(self.lm.config, "bos_token_id", None)
        first_tokens = rows.gather(1, first.unsqueeze(1)).squeeze(1)
        prefix = bos if isinstance(bos, int) and bool((first_tokens == bos).all()) else None
        pad = getattr(self.lm.config, "pad_token_id", None)
        ids, mask, content = span_batch(
            rows.repeat(2, 1), torch.cat([x_start, y_start]), torch.cat([x_end, y_end]), prefix, pad if isinstance(pad, int) else 0
        )
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": False}
        if self.fused:
            kwargs["logits_to_keep"] = 1  # only the align-layer states are used
        if self.capture is not None:
            self.capture.arm()
            try:
                self.lm(**kwargs)
            finally:
                taken = self.capture.disarm()
            mid, _ = self.capture.states(taken)
        else:
            mid = self.lm(**kwargs, output_hidden_states=True).hidden_states[self.align_layer]
        pooled = masked_mean(mid.float(), content)
        return pooled[:batch], pooled[batch:]

    # Gradient checkpointing and friends are the LM's business.
    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        mload.enable_gradient_checkpointing(self.lm)
