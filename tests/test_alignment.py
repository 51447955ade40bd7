"""Alignment metrics on hand cases and sentence encoding with tiny random causal LMs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignx.eval.alignment import (
    cosine_matrix,
    encode,
    encode_poolings,
    linear_cka,
    mexa_score,
    mexa_wins,
    pair_metrics,
    pair_vs_random_cosine,
    retrieval_top1,
)

SENTENCES = ["hello world", "the cat sat on the mat", "bonjour", "a much longer sentence with many more words in it", "x"]


def tiny_tokenizer(add_bos: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained here on a few sentences; no pad token (tests the eos fallback)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES * 5, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tiny_llama(vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(vocab: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    return GPT2LMHeadModel(cfg).eval()


# ---------------------------------------------------------------------------- metrics


def test_cosine_matrix_matches_hand_computation():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 0.0], [-1.0, -1.0]])
    c = cosine_matrix(a, b)
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[0.0, 1.0, -s], [s, s, -1.0]], dtype=torch.float64)
    assert c.shape == (2, 3)
    assert torch.allclose(c, expected, atol=1e-12)
    # numpy input gives the same answer
    assert torch.allclose(cosine_matrix(a.numpy(), b.numpy()), expected, atol=1e-12)


def test_pair_vs_random_cosine_hand_case():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 1.0]])
    pair, rand = pair_vs_random_cosine(a, b)
    s = 1 / math.sqrt(2)
    assert pair == pytest.approx((1.0 + s) / 2)
    assert rand == pytest.approx((s + 0.0) / 2)  # cos(a0, b1) = s, cos(a1, b0) = 0


def test_mexa_identical_is_one_and_shuffled_is_chance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 64, generator=g)
    assert mexa_score(x, x) == 1.0
    # Noisy copies stay aligned
    assert mexa_score(x, x + 0.1 * torch.randn(200, 64, generator=g)) == 1.0
    perm = torch.randperm(200, generator=g)
    assert mexa_score(x, x[perm]) < 0.1  # only fixed points of the permutation survive
    y = torch.randn(200, 64, generator=g)
    assert mexa_score(x, y) < 0.1


def test_mexa_needs_row_and_column_and_ties_do_not_count():
    # Row 0's best is column 0, but column 0's best is row 1: retrieval a->b counts pair 0, MEXA does not.
    a = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    b = torch.tensor([[1.0, 0.2], [0.0, 1.0]])
    c = cosine_matrix(a, b)
    assert c[0, 0] > c[0, 1] and c[1, 0] > c[0, 0] and c[1, 0] > c[1, 1]
    assert retrieval_top1(a, b) == pytest.approx(0.5)
    assert mexa_score(a, b) == 0.0
    # Exact ties: both pairs equally similar to everything -> nothing counts
    same = torch.ones(3, 4)
    assert mexa_score(same, same) == 0.0
    assert retrieval_top1(same, same) == 0.0


def test_retrieval_top1_directional():
    a = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0001], [0.0, 1.0]])
    # a->b: a0 best b0 (tie-free: b0 is exactly aligned), a1 best b1 (slightly more y), a2 best b2
    assert retrieval_top1(a, b) == pytest.approx(1.0)
    # b->a: b0 and b1 both prefer a0 -> b1 misses
    assert retrieval_top1(b, a) == pytest.approx(2 / 3)


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x.double() @ q) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(50, 8, generator=g)) < 0.5


def test_identical_rows_get_identical_cosines():
    """Exact ties must survive the matrix product (it may round output tiles differently)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 48, generator=g, dtype=torch.float64)
    y = torch.randn(9, 48, generator=g, dtype=torch.float64)
    x[5], x[6], y[8] = x[1], x[3], y[0]
    c = cosine_matrix(x, y)
    assert torch.equal(c[1], c[5]) and torch.equal(c[3], c[6]) and torch.equal(c[:, 0], c[:, 8])
    # Without duplicate rows it is the plain normalised product, bit for bit.
    xn, yn = x[:5] / x[:5].norm(dim=1, keepdim=True), y[:8] / y[:8].norm(dim=1, keepdim=True)
    assert torch.equal(cosine_matrix(x[:5], y[:8]), xn @ yn.T)


@pytest.mark.parametrize("duplicates", [False, True])
def test_pair_metrics_equal_the_single_metrics(duplicates):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(30, 16, generator=g)
    b = a + 0.8 * torch.randn(30, 16, generator=g)
    if duplicates:
        a[7], b[7], b[20] = a[3], b[3], b[11]
    m = pair_metrics(a, b)
    assert (m["cos_pair"], m["cos_random"]) == pair_vs_random_cosine(a, b)
    assert torch.equal(m["mexa_wins"], mexa_wins(a, b))
    assert m["retrieval_top1"] == retrieval_top1(a, b)
    assert m["retrieval_top1_from_pivot"] == retrieval_top1(b, a)
    if duplicates:
        assert not m["mexa_wins"][3] and not m["mexa_wins"][7]  # pairs 3 and 7 are one pair twice: a tie


def test_metrics_reject_mismatched_pairs():
    with pytest.raises(ValueError, match="same number of pairs"):
        mexa_score(torch.zeros(3, 2), torch.zeros(4, 2))


# ---------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_encode_shapes_and_padding_invariance(arch):
    tok = tiny_tokenizer(add_bos=arch == "llama")
    model = tiny_llama(len(tok)) if arch == "llama" else tiny_gpt2(len(tok))
    n_layers = model.config.num_hidden_layers
    batched = encode_poolings(model, tok, SENTENCES, ("mean", "last"), batch_size=8, progress=False)
    for pooling, st in batched.items():
        assert st.shape == (n_layers + 1, len(SENTENCES), 32)
        assert st.dtype == torch.float32
        for i, s in enumerate(SENTENCES):
            alone = encode(model, tok, [s], pooling=pooling, progress=False)
            assert torch.allclose(alone[:, 0], st[:, i], atol=1e-5), (pooling, s)
    # Layer selection keeps the requested hidden_states indices
    sel = encode(model, tok, SENTENCES, layers=[0, -1], progress=False)
    assert torch.allclose(sel[0], batched["mean"][0]) and torch.allclose(sel[1], batched["mean"][-1], atol=1e-6)
    assert not model.training


def test_encode_mean_skips_bos_and_last_is_last_token():
    tok = tiny_tokenizer(add_bos=True)
    model = tiny_llama(len(tok))
    ids = tok(["hello world"])["input_ids"][0]
    assert ids[0] == tok.bos_token_id
    with torch.no_grad():
        hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    mean = encode(model, tok, ["hello world"], pooling="mean", progress=False)
    last = encode(model, tok, ["hello world"], pooling="last", progress=False)
    for k, h in enumerate(hs):
        assert torch.allclose(mean[k, 0], h[0, 1:].mean(dim=0), atol=1e-5)
        assert torch.allclose(last[k, 0], h[0, -1], atol=1e-5)
