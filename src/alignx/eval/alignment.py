"""Cross-lingual alignment metrics on sentence representations, layer by layer.

``encode`` turns sentences into one pooled vector per layer of any HF causal LM; the other functions
are pure metrics on two aligned matrices ``a`` [N, H], ``b`` [N, H] where row i of ``a`` and row i of
``b`` are translations of each other (torch tensors or numpy arrays; computed in float64).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from alignx.model.pooling import last_token, masked_mean

POOLINGS = ("mean", "last")


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _pad_id(tokenizer: Any) -> int:
    """Pad id, falling back to eos then 0: GPT-2/Llama tokenizers ship without a pad token.

    Padding positions are masked out of the attention and the pooling, so the id only has to exist.
    """
    for tid in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(tid, int):
            return tid
    return 0


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def encode_poolings(
    model: torch.nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    poolings: Sequence[str] = ("mean",),
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    max_length: int = 256,
    progress: bool = True,
    desc: str = "encode",
) -> dict[str, torch.Tensor]:
    """Like :func:`encode` but one forward pass serves several poolings: {pooling: [L', N, H]}."""
    for p in poolings:
        if p not in POOLINGS:
            raise ValueError(f"unknown pooling {p!r}; choose from {', '.join(POOLINGS)}")
    if batch_size <= 0 or max_length <= 0:
        raise ValueError("batch_size and max_length must be positive")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("encode: no sentences given")

    was_training = model.training
    model.eval()
    device = _model_device(model)
    pad_id = _pad_id(tokenizer)
    # Only hidden states are needed: ask for the logits of one position (skips most of the LM head).
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    enc = tokenizer(
        sentences, add_special_tokens=True, truncation=True, max_length=max_length, return_special_tokens_mask=True
    )
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    # Longest first: batches hold similar lengths (little padding) and an OOM shows up at once.
    order = sorted(range(len(sentences)), key=lambda i: -len(ids[i]))
    out: dict[str, list[torch.Tensor | None]] = {p: [None] * len(sentences) for p in poolings}
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    try:
        for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
            T = max(len(ids[i]) for i in batch)
            # Right padding: real tokens keep positions 0..n-1, so a padded row equals the row alone.
            input_ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
            attn = torch.zeros((len(batch), T), dtype=torch.long)
            content = torch.zeros((len(batch), T), dtype=torch.bool)
            for r, i in enumerate(batch):
                n = len(ids[i])
                input_ids[r, :n] = torch.tensor(ids[i])
                attn[r, :n] = 1
                # Mean pooling skips BOS/EOS: BOS states are huge "attention sinks" in middle layers and
                # identical across sentences, so they would pull every sentence vector together.
                sp = torch.tensor(special[i], dtype=torch.bool)
                content[r, :n] = ~sp if bool((~sp).any()) else torch.ones(n, dtype=torch.bool)
            input_ids, attn, content = input_ids.to(device), attn.to(device), content.to(device)
            hs = model(
                input_ids=input_ids, attention_mask=attn, output_hidden_states=True, use_cache=False, **extra
            ).hidden_states
            keep = range(len(hs)) if layers is None else [_layer_index(k, len(hs)) for k in layers]
            stacked = torch.stack([hs[k] for k in keep]).float()  # [L', B, T, H]
            for p in poolings:
                if p == "mean":
                    pooled = torch.stack([masked_mean(h, content) for h in stacked])
                else:
                    pooled = torch.stack([last_token(h, attn) for h in stacked])
                pooled = pooled.cpu()  # [L', B, H]
                for r, i in enumerate(batch):
                    out[p][i] = pooled[:, r]
    finally:
        model.train(was_training)
    return {p: torch.stack(v, dim=1) for p, v in out.items()}  # type: ignore[arg-type]


def _layer_index(k: int, n: int) -> int:
    idx = k + n if k < 0 else k
    if not 0 <= idx < n:
        raise ValueError(f"layer {k} out of range: the model has hidden_states 0..{n - 1}")
    return idx


def encode(
    model: torch.nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    layers: Sequence[int] | None = None,
    pooling: str = "mean",
    batch_size: int = 16,
    max_length: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """Pooled hidden states of every layer: returns float32 [L+1, N, H] on CPU.

    Index 0 is the embedding output, index l the output of decoder layer l (HF ``hidden_states``);
    ``layers`` keeps only those indices (negative counts from the top) -> [len(layers), N, H].
    pooling "mean": mean over the sentence's non-padding, non-special tokens; "last": state of the
    last non-padding token. Runs in eval mode without gradients, in batches of ``batch_size``
    sentences truncated to ``max_length`` tokens, on the model's device.
    """
    return encode_poolings(model, tokenizer, sentences, (pooling,), layers, batch_size, max_length, progress)[pooling]


# --------------------------------------------------------------------------------------------
# Metrics on aligned pairs
# --------------------------------------------------------------------------------------------


def _as64(x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D [N, H] matrix, got shape {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float64)


def _check_pairs(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must hold the same number of pairs, got {a.shape[0]} and {b.shape[0]}")
    if a.shape[0] == 0:
        raise ValueError("no pairs given")


def cosine_matrix(a: Any, b: Any) -> torch.Tensor:
    """Cosine similarity of every row of a [N, H] with every row of b [M, H] -> float64 [N, M].

    Zero vectors get cosine 0 with everything.
    """
    a, b = _as64(a), _as64(b)
    an = a / a.norm(dim=1, keepdim=True).clamp(min=1e-12)
    bn = b / b.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return an @ bn.T


def pair_vs_random_cosine(a: Any, b: Any) -> tuple[float, float]:
    """(mean cosine of translation pairs (a_i, b_i), mean cosine of non-pairs (a_i, b_j), i != j).

    a, b: [N, H]. The non-pair mean averages over all N(N-1) off-diagonal pairs (the exact
    expectation of a random non-pair); it is NaN when N = 1. Their difference removes the shared
    offset ("anisotropy") that makes all cosines of LM states high.
    """
    a, b = _as64(a), _as64(b)
    _check_pairs(a, b)
    c = cosine_matrix(a, b)
    n = c.shape[0]
    pair = c.diagonal().mean().item()
    rand = ((c.sum() - c.diagonal().sum()) / (n * (n - 1))).item() if n > 1 else float("nan")
    return pair, rand


def _strict_diagonal_wins(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """For C = cos(a, b) (a, b: [N, H]): whether C[i, i] strictly beats every other entry of row i,
    and of column i -> two bool [N] tensors. A single pair wins trivially."""
    a, b = _as64(a), _as64(b)
    _check_pairs(a, b)
    c = cosine_matrix(a, b)
    n = c.shape[0]
    if n == 1:
        ok = torch.ones(1, dtype=torch.bool)
        return ok, ok
    diag = c.diagonal()
    off = c.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    return diag > off.max(dim=1).values, diag > off.max(dim=0).values


def mexa_wins(a: Any, b: Any) -> torch.Tensor:
    """Per pair i: whether C[i, i] is the strict maximum of row i and of column i of C = cos(a, b) -> bool [N].

    Its mean is :func:`mexa_score`; the per-pair outcomes let a paired bootstrap compare two models
    on the same sentences.
    """
    row_ok, col_ok = _strict_diagonal_wins(a, b)
    return row_ok & col_ok


def center_rows(states: torch.Tensor) -> torch.Tensor:
    """Subtract the mean row: states [..., N, H] -> same shape, centred over the N sentences.

    The centred analysis variant: many LMs' states share a large common direction (e.g. SmolLM2's rogue
    dimensions make the cosine of ANY two mean-pooled sentences ~0.99); removing the mean sentence state
    of the analysed set lets the cosine see what distinguishes sentences.
    """
    return states - states.mean(dim=-2, keepdim=True)


def mexa_score(a: Any, b: Any) -> float:
    """MEXA alignment score: share of pairs i whose cosine C[i, i] is the strict maximum of both row i
    and column i of the cosine matrix C = cos(a, b) (a, b: [N, H]). Ties do not count.

    1.0 for identical (distinct) embeddings; about 1/N for unrelated ones (chance).
    """
    return mexa_wins(a, b).double().mean().item()


def retrieval_top1(a: Any, b: Any) -> float:
    """x->y retrieval accuracy: share of rows i of a [N, H] whose most similar row of b [N, H] is b_i.

    Strict: a tie with another candidate counts as a miss. Use ``retrieval_top1(b, a)`` for y->x.
    """
    row_ok, _ = _strict_diagonal_wins(a, b)
    return row_ok.double().mean().item()


def linear_cka(a: Any, b: Any) -> float:
    """Linear centred kernel alignment of a [N, H1] and b [N, H2] (Kornblith et al. 2019).

    ||B^T A||_F^2 / (||A^T A||_F ||B^T B||_F) on column-centred A, B: 1 for identical or
    orthogonally rotated / isotropically scaled representations, near 0 for unrelated ones.
    """
    a, b = _as64(a), _as64(b)
    _check_pairs(a, b)
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    # Gram form (N x N) is cheaper than the feature form when H > N, the usual case here.
    ka, kb = a @ a.T, b @ b.T
    hsic = (ka * kb).sum()
    denom = ka.norm() * kb.norm()
    return (hsic / denom).item() if denom > 0 else float("nan")
