"""Log-likelihood of continuations, computing the LM head only where a continuation is scored.

Multiple choice (lm-eval's ``loglikelihood`` requests, alignx's transfer task) needs ``log p(continuation |
context)``: the logits of a handful of positions per row. A plain forward computes the head at every position:
on Gemma-3 (262k vocabulary) that is ``T x 262k`` logits per row and their log-softmax, most of the time of a
question. :func:`continuation_logprobs` asks the model for the logits of the positions a batch scores only
(``logits_to_keep``, which HF causal LMs accept) on left-padded rows, so the numbers are those of ``HFLM`` to float
rounding (benchmarks/eval_speed.py measures both).

:class:`ContinuationLM` is ``HFLM`` with that scorer in ``_loglikelihood_tokens``; tokenisation, request
handling and generation stay lm-eval's. Models whose ``forward`` takes no ``logits_to_keep`` (a PEFT wrapper,
older architectures) fall back to lm-eval's own path.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

Request = tuple[list[int], list[int]]  # (context token ids, continuation token ids)


def takes_logits_to_keep(model: Any) -> bool:
    """Whether ``model.forward`` accepts ``logits_to_keep`` (HF causal LMs since transformers 4.50)."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def encode_pair(tokenizer: Any, context: str, continuation: str) -> Request:
    """Token ids of ``context`` and of ``continuation`` as it follows the context.

    The whole text is encoded once and split after the context's own tokens, so a continuation is tokenised as
    it would be read in place; trailing spaces of the context move to the continuation (lm-eval's convention).
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    return ctx, whole[len(ctx):]


@torch.no_grad()
def continuation_logprobs(model: Any, requests: Sequence[Request], batch_size: int = 8, max_length: int | None = None,
                          pad_id: int = 0, softmax_dtype: torch.dtype | None = None, progress: bool = False,
                          desc: str = "scoring") -> list[tuple[float, bool]]:
    """``(sum of log p(continuation token), every continuation token is the argmax)`` per request, in order.

    Requests that feed the model the same tokens share one row (the one-token choices of a question). Rows are
    sorted longest first, batched ``batch_size`` at a time and left-padded (with position ids counted from each
    row's first token), so the scored positions of every row are its last ones and the model computes logits for
    those only (``logits_to_keep``). ``max_length`` truncates context from the left as lm-eval does (the last
    ``max_length`` input tokens). Contexts and continuations must be non-empty (lm-eval puts the EOT token in an
    empty context).
    """
    device = next(model.parameters()).device
    # Requests that feed the model the same tokens (one-token continuations of one context: the choices of a
    # multiple-choice question) share one row; each reads its own last positions of it.
    inputs: dict[tuple[int, ...], list[int]] = {}
    for i, (ctx, cont) in enumerate(requests):
        if not cont or not ctx:
            raise ValueError(f"request {i}: empty {'continuation' if not cont else 'context'}")
        if max_length is not None and len(cont) > max_length:
            raise ValueError(f"request {i}: the continuation ({len(cont)} tokens) is longer than max_length={max_length}")
        full = list(ctx) + list(cont)
        inputs.setdefault(tuple(full[:-1] if max_length is None else full[-(max_length + 1):][:-1]), []).append(i)
    rows = sorted(inputs, key=len, reverse=True)
    out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, leave=False, disable=not progress):
        batch = rows[start: start + batch_size]
        width = len(batch[0])
        keep = max(len(requests[i][1]) for inp in batch for i in inputs[inp])
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, inp in enumerate(batch):  # left-padded: every row's scored positions are its last ones
            ids[r, width - len(inp):] = torch.tensor(inp, dtype=torch.long)
            mask[r, width - len(inp):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from 0 at its first real token
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                       logits_to_keep=keep).logits  # [B, keep, V]
        logp = F.log_softmax(logits, dim=-1, dtype=softmax_dtype)
        for r, inp in enumerate(batch):
            for i in inputs[inp]:
                cont = torch.tensor(requests[i][1], dtype=torch.long, device=device)
                part = logp[r, keep - len(cont):]  # [len(cont), V]: the positions that predict the continuation
                greedy = bool((part.argmax(-1) == cont).all())
                out[i] = (float(part.gather(-1, cont[:, None]).sum()), greedy)
    return out


def continuation_lm_class() -> type:
    """lm-eval's ``HFLM`` with :func:`continuation_logprobs` behind ``loglikelihood`` (imports lm-eval lazily)."""
    from lm_eval.models.huggingface import HFLM

    class ContinuationLM(HFLM):
        """``HFLM`` that computes the LM head only at the positions a request scores."""

        def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                                  disable_tqdm: bool = False, override_bs: int | None = None) -> list[tuple[float, bool]]:
            if self.backend != "causal" or not takes_logits_to_keep(self.model) or self.batch_size == "auto":
                return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            return continuation_logprobs(
                self.model, [(ctx, cont) for _, ctx, cont in requests], batch_size=int(override_bs or self.batch_size),
                max_length=self.max_length, pad_id=pad, softmax_dtype=self.softmax_dtype,
                progress=not disable_tqdm and self.rank == 0, desc="loglikelihood",
            )  # fmt: skip

    return ContinuationLM
