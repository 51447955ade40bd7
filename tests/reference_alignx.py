"""The reference computation, ported from its description in ../shared/ALIGNX_SPEC.md, not from alignx.

Nothing here imports alignx: templates, spans, pooling, losses and language labels are written again
from the spec text, with explicit loops and concatenations, so a test that compares alignx with these
functions compares two independent implementations.
- A stage-1 row is the Alpaca-LoRA ``prompt_input`` with x as the input and y as the response, then EOS.
- Spans are prefix lengths, as the reference computes them: x starts at len(tokens(text before x)) and
  ends at len(tokens(text through x)); y starts at len(tokens(prompt through "### Response:\\n")) and
  ends before the EOS. The four numbers of a row are its ``src_tgt_index``.
- NTP: cross-entropy of every next token, prompt included (train_on_inputs=True), mean over tokens.
- L_CTR: mean of hidden_states[l] over x's and y's tokens; a cosine matrix with one row per y and one
  column per x, divided by tau; LogSoftmax over dim 0 (for each x, over the candidate y's); minus the
  mean of its diagonal, halved.
- L_LAM: mean of the last hidden states over each sentence's positions shifted by one; for every
  ordered pair the gated MLP down(silu(gate z) * up z) on the explicit concatenation z = [s_i ; s_j];
  label 1 when the two sentences' language codes are equal; mean cross-entropy over all (2B)^2 pairs.
"""

from __future__ import annotations

import torch

# Alpaca-LoRA's alpaca.json, as quoted in the spec.
PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
# The instruction names the direction; these are the names alignx's language table gives (data, not method).
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "ru": "Russian", "zh": "Chinese (Simplified)"}


def instruction(src_lang: str, tgt_lang: str) -> str:
    return f"Translate the following sentences from {LANGUAGE_NAMES[src_lang]} to {LANGUAGE_NAMES[tgt_lang]}."


def tokenize_row(tokenizer, inst: str, x: str, y: str) -> tuple[list[int], list[int]]:
    """(input_ids, src_tgt_index) of one stage-1 row: BOS (if the tokenizer adds one) ... y EOS."""
    before_x = PROMPT_INPUT.split("{input}")[0].replace("{instruction}", inst)
    prompt = PROMPT_INPUT.replace("{instruction}", inst).replace("{input}", x)

    def n_tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    input_ids = tokenizer(prompt + y)["input_ids"] + [tokenizer.eos_token_id]
    return input_ids, [n_tokens(before_x), n_tokens(before_x + x), n_tokens(prompt), len(input_ids) - 1]


def pad_batch(rows: list[list[int]], pad_id: int, multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right padding to a multiple of 8 (the reference's DataCollatorForSeq2Seq); labels -100 on padding."""
    longest = max(len(r) for r in rows)
    width = -(-longest // multiple) * multiple
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
        labels[b, : len(row)] = torch.tensor(row)
    return ids, mask, labels


def _mean(states: torch.Tensor, b: int, lo: int, hi: int) -> torch.Tensor:
    total = torch.zeros(states.shape[-1], dtype=torch.float64)
    for t in range(lo, hi):
        total = total + states[b, t].double()
    return total / (hi - lo)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum() / (a.pow(2).sum().sqrt() * b.pow(2).sum().sqrt())


def ntp(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every labelled position (float64)."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target != -100:
                total = total - torch.log_softmax(logits[b, t].double(), dim=-1)[target]
                count += 1
    return total / count


def ctr(mid_states: torch.Tensor, src_tgt_index: list[list[int]], tau: float) -> torch.Tensor:
    """L_CTR: [y, x] cosine matrix / tau, LogSoftmax over dim 0, -mean(diagonal) / 2 (float64)."""
    hx = [_mean(mid_states, b, i[0], i[1]) for b, i in enumerate(src_tgt_index)]
    hy = [_mean(mid_states, b, i[2], i[3]) for b, i in enumerate(src_tgt_index)]
    n = len(hx)
    sim = torch.stack([torch.stack([_cos(hy[j], hx[i]) / tau for i in range(n)]) for j in range(n)])
    log_p = torch.nn.LogSoftmax(dim=0)(sim)
    return -sum(log_p[i, i] for i in range(n)) / n / 2


def lam(last_states: torch.Tensor, src_tgt_index: list[list[int]], langs: list[tuple[str, str]],
        w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """L_LAM over all ordered pairs of the 2B sentences, with the gated MLP on explicit concatenations."""
    sents = [_mean(last_states, b, i[0] - 1, i[1] - 1) for b, i in enumerate(src_tgt_index)]
    sents += [_mean(last_states, b, i[2] - 1, i[3] - 1) for b, i in enumerate(src_tgt_index)]
    codes = [src for src, _ in langs] + [tgt for _, tgt in langs]
    return lam_pairs(sents, codes, w_gate, w_up, w_down)


def lam_pairs(sents: list[torch.Tensor], codes: list[str], w_gate: torch.Tensor, w_up: torch.Tensor,
              w_down: torch.Tensor) -> torch.Tensor:
    """L_LAM of given sentence vectors: every ordered pair, label 1 when the language codes are equal."""
    g, u, d = w_gate.double(), w_up.double(), w_down.double()
    total = torch.zeros((), dtype=torch.float64)
    for i in range(len(sents)):
        for j in range(len(sents)):
            z = torch.cat([sents[i], sents[j]]).double()
            logits = d @ (torch.nn.functional.silu(g @ z) * (u @ z))
            same = 1 if codes[i] == codes[j] else 0
            total = total - torch.log_softmax(logits, dim=0)[same]
    return total / len(sents) ** 2
