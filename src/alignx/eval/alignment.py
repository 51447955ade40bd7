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


def _layer_output(output: Any) -> torch.Tensor:
    """The hidden state a decoder layer (tensor or tuple) or a base model (``last_hidden_state``) returned."""
    if isinstance(output, torch.Tensor):
        return output
    if getattr(output, "last_hidden_state", None) is not None:
        return output.last_hidden_state
    return output[0]


def _state_sources(model: torch.nn.Module) -> list[tuple[torch.nn.Module, bool]]:
    """Where ``hidden_states[k]`` (k = 0..L) passes during a forward: (module, True: its input | False: its output).

    As HF records them: [0] is the input of decoder layer 0 (the embeddings), [k] for 1 <= k < L the output of
    layer k-1, [L] the base model's ``last_hidden_state`` (after the final norm; the output of layer L-1 for
    configs with ``tie_last_hidden_states=False``). Raises ValueError when the decoder layers cannot be found.
    """
    from alignx.model import load as mload

    layers = mload.decoder_layers(model)
    owner = next((m for m in mload._base(model).modules() if any(c is layers for c in m.children())), None)
    if owner is None:
        raise ValueError("no module owns the decoder layers")
    tie_last = getattr(mload.text_config(model), "tie_last_hidden_states", None) is not False
    last = (owner, False) if tie_last else (layers[-1], False)
    return [(layers[0], True), *[(layers[k], False) for k in range(len(layers) - 1)], last]


class _Pooler:
    """Pools one batch's hidden states into sentence vectors, one layer at a time, in float32.

    ``add(k, h)`` turns hidden_states[k] h [B, T, H] into [B, H] per pooling and keeps only that, on h's device
    (one copy to the CPU per batch, in :meth:`take`), so a layer's [B, T, H] tensor can be freed right away.
    """

    def __init__(self, poolings: Sequence[str], keep: list[int], attn: torch.Tensor, content: torch.Tensor) -> None:
        self.poolings, self.keep, self.attn, self.content = poolings, keep, attn, content
        self.wanted = set(keep)
        self.pooled: dict[str, dict[int, torch.Tensor]] = {p: {} for p in poolings}

    def add(self, k: int, hidden: torch.Tensor) -> None:
        if k not in self.wanted:
            return
        h = hidden.float()
        with torch.autocast(device_type=h.device.type, enabled=False):  # pooled in fp32 under the forward's autocast
            for p in self.poolings:
                self.pooled[p][k] = masked_mean(h, self.content) if p == "mean" else last_token(h, self.attn)

    def take(self) -> dict[str, torch.Tensor]:
        """{pooling: [L', B, H] on the CPU, rows in ``keep`` order}; raises when a wanted state was never seen."""
        out = {}
        for p, by_layer in self.pooled.items():
            if len(by_layer) != len(self.wanted):
                raise RuntimeError(
                    f"encode: {len(by_layer)} of {len(self.wanted)} hidden states were captured; this model's layers do not "
                    "pass hidden_states where expected: call encode_poolings(..., capture='hidden_states')"
                )
            out[p] = torch.stack([by_layer[k] for k in self.keep]).cpu()
        return out


def _hook(box: dict[str, _Pooler | None], k: int, is_input: bool) -> Any:
    """A forward (pre-)hook handing hidden_states[k] to the batch's pooler in ``box`` (nothing outside a batch)."""
    if is_input:

        def pre_hook(module: Any, args: Any, kwargs: Any) -> None:
            if box["pooler"] is not None:
                box["pooler"].add(k, args[0] if args else kwargs["hidden_states"])

        return pre_hook

    def hook(module: Any, args: Any, output: Any) -> None:
        if box["pooler"] is not None:
            box["pooler"].add(k, _layer_output(output))

    return hook


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
    capture: str = "hooks",
) -> dict[str, torch.Tensor]:
    """Like :func:`encode` but one forward pass serves several poolings: {pooling: [L', N, H]}.

    Sentences are sorted longest first and batched (right padding); the vectors come back in the input
    order. ``capture="hooks"`` pools each layer's states inside the forward as the layer produces them, so
    a batch never holds all layers' [B, T, H] states; ``capture="hidden_states"`` pools the
    ``output_hidden_states=True`` tuple after the forward (all L+1 states alive at once; also the fallback
    for a model whose decoder layers cannot be found). Both give the same vectors.
    """
    for p in poolings:
        if p not in POOLINGS:
            raise ValueError(f"unknown pooling {p!r}; choose from {', '.join(POOLINGS)}")
    if batch_size <= 0 or max_length <= 0:
        raise ValueError("batch_size and max_length must be positive")
    if capture not in ("hooks", "hidden_states"):
        raise ValueError(f"capture must be 'hooks' or 'hidden_states', got {capture!r}")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("encode: no sentences given")

    sources = None
    if capture == "hooks":
        try:
            sources = _state_sources(model)
        except ValueError:
            sources = None  # layers not found: pool output_hidden_states instead
    keep = None if sources is None else _keep(layers, len(sources))

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
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    out: dict[str, torch.Tensor] = {}
    box: dict[str, _Pooler | None] = {"pooler": None}  # the batch being encoded, as the hooks see it
    handles = []
    for k, (module, is_input) in enumerate(sources or []):
        if k in (keep or []):
            fn = _hook(box, k, is_input)
            handles.append(module.register_forward_pre_hook(fn, with_kwargs=True) if is_input else module.register_forward_hook(fn))
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
            try:
                if keep is not None:
                    box["pooler"] = _Pooler(poolings, keep, attn, content)
                result = model(
                    input_ids=input_ids, attention_mask=attn, output_hidden_states=sources is None, use_cache=False, **extra
                )
                if sources is None:
                    hs = result.hidden_states
                    keep = keep or _keep(layers, len(hs))
                    box["pooler"] = _Pooler(poolings, keep, attn, content)
                    for k in keep:
                        box["pooler"].add(k, hs[k])
                    del hs
                del result
                pooled = box["pooler"].take()  # {pooling: [L', B, H]}
            finally:
                box["pooler"] = None
            rows = torch.tensor(batch)
            for p, v in pooled.items():
                if p not in out:
                    out[p] = torch.empty((v.shape[0], len(sentences), v.shape[-1]), dtype=torch.float32)
                out[p][:, rows] = v  # back to the input order
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return out


def _keep(layers: Sequence[int] | None, n: int) -> list[int]:
    """hidden_states indices to return, in order: all n, or ``layers`` (negative counts from the top)."""
    return list(range(n)) if layers is None else [_layer_index(k, n) for k in layers]


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


def _unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(distinct rows of x [N, H], index [N] of each row among them) when some rows are bitwise identical, else (x, None).

    Row sums screen first (identical rows have identical sums), so the common all-distinct case costs one reduction.
    """
    if x.shape[0] < 2 or torch.unique(x.sum(dim=1)).numel() == x.shape[0]:
        return x, None
    distinct, index = torch.unique(x, dim=0, return_inverse=True)
    return (x, None) if distinct.shape[0] == x.shape[0] else (distinct, index)


def cosine_matrix(a: Any, b: Any) -> torch.Tensor:
    """Cosine similarity of every row of a [N, H] with every row of b [M, H] -> float64 [N, M].

    Zero vectors get cosine 0 with everything. Bitwise-identical rows get bitwise-identical cosines, so exact
    ties stay ties (e.g. last-token states at the embedding layer of sentences ending in the same token): one
    matrix product may round different output tiles differently, which would break such ties at random.
    """
    a, b = _as64(a), _as64(b)
    an = a / a.norm(dim=1, keepdim=True).clamp(min=1e-12)
    bn = b / b.norm(dim=1, keepdim=True).clamp(min=1e-12)
    an, a_index = _unique_rows(an)
    bn, b_index = _unique_rows(bn)
    c = an @ bn.T
    if a_index is not None:
        c = c[a_index]
    if b_index is not None:
        c = c[:, b_index]
    return c


def _pair_cosines(a: Any, b: Any) -> torch.Tensor:
    """C = cos(a, b) of two aligned [N, H] matrices (N >= 1 pairs checked) -> float64 [N, N]."""
    a, b = _as64(a), _as64(b)
    _check_pairs(a, b)
    return cosine_matrix(a, b)


def _pair_and_random(c: torch.Tensor) -> tuple[float, float]:
    """(mean of the diagonal, mean of the off-diagonal entries; NaN when N = 1) of C [N, N]."""
    n = c.shape[0]
    pair = c.diagonal().mean().item()
    rand = ((c.sum() - c.diagonal().sum()) / (n * (n - 1))).item() if n > 1 else float("nan")
    return pair, rand


def _diagonal_wins(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether C[i, i] strictly beats every other entry of row i, and of column i, of C [N, N] -> two bool [N]
    tensors. A single pair wins trivially."""
    n = c.shape[0]
    if n == 1:
        ok = torch.ones(1, dtype=torch.bool)
        return ok, ok
    diag = c.diagonal()
    off = c.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    return diag > off.max(dim=1).values, diag > off.max(dim=0).values


def pair_vs_random_cosine(a: Any, b: Any) -> tuple[float, float]:
    """(mean cosine of translation pairs (a_i, b_i), mean cosine of non-pairs (a_i, b_j), i != j).

    a, b: [N, H]. The non-pair mean averages over all N(N-1) off-diagonal pairs (the exact
    expectation of a random non-pair); it is NaN when N = 1. Their difference removes the shared
    offset ("anisotropy") that makes all cosines of LM states high.
    """
    return _pair_and_random(_pair_cosines(a, b))


def _strict_diagonal_wins(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """For C = cos(a, b) (a, b: [N, H]): whether C[i, i] strictly beats every other entry of row i,
    and of column i -> two bool [N] tensors. A single pair wins trivially."""
    return _diagonal_wins(_pair_cosines(a, b))


def pair_metrics(a: Any, b: Any) -> dict[str, Any]:
    """Every per-layer metric of ``alignx analyze`` from ONE cosine matrix C = cos(a, b) (a, b: [N, H]):

    ``cos_pair``, ``cos_random`` (:func:`pair_vs_random_cosine`), ``mexa_wins`` (bool [N], :func:`mexa_wins`),
    ``retrieval_top1`` (a -> b, :func:`retrieval_top1`) and ``retrieval_top1_from_pivot`` (b -> a: the column
    wins of C, as ``retrieval_top1(b, a)``; the same matrix MEXA's column test reads).
    """
    c = _pair_cosines(a, b)
    pair, rand = _pair_and_random(c)
    row_ok, col_ok = _diagonal_wins(c)
    return {
        "cos_pair": pair,
        "cos_random": rand,
        "mexa_wins": row_ok & col_ok,
        "retrieval_top1": row_ok.double().mean().item(),
        "retrieval_top1_from_pivot": col_ok.double().mean().item(),
    }


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


def standardize_rows(states: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Centre each dimension over the N sentences and divide it by its standard deviation: [..., N, H] -> same shape.

    The standardised analysis variant: centring alone leaves rogue dimensions (a few dimensions whose values are
    orders of magnitude larger than the rest and vary from sentence to sentence) dominating the cosine; scaling each
    dimension to unit variance over the analysed set gives every dimension the same say. Constant dimensions
    (std < eps) become 0.
    """
    centred = center_rows(states)
    std = centred.pow(2).mean(dim=-2, keepdim=True).sqrt()
    return centred / std.clamp(min=eps)


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
