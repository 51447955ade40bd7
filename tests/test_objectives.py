"""Property tests of the pure loss functions against the spec (../shared/ALIGNX_SPEC.md)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import reference_alignx
from alignx.model.pooling import last_token, masked_mean, pool_spans, span_mask
from alignx.objectives import LanguageMatchingHead, fused_next_token_loss, info_nce, language_matching_loss
from alignx.objectives.ntp import next_token_loss_from_logits


def test_masked_mean_ignores_padding_values():
    h = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    a = masked_mean(h, mask)
    h2 = h.clone()
    h2[0, 3:] = 1e6  # garbage in padding must not leak
    b = masked_mean(h2, mask)
    assert torch.allclose(a, b)
    assert torch.allclose(a[0], h[0, :3].mean(0))


def test_span_mask_and_shift():
    m = span_mask(torch.tensor([2]), torch.tensor([5]), 8)
    assert m.tolist() == [[False, False, True, True, True, False, False, False]]
    m1 = span_mask(torch.tensor([2]), torch.tensor([5]), 8, shift=1)
    assert m1.tolist() == [[False, True, True, True, False, False, False, False]]


def test_span_mask_floor_stops_a_shift_at_the_row_start():
    # a packed row starting at 5: its span [5, 8) shifted by one stops at 5, not at the previous row's last token
    m = span_mask(torch.tensor([5, 2]), torch.tensor([8, 4]), 10, shift=1, floor=torch.tensor([5, 0]))
    assert m.int().tolist() == [[0, 0, 0, 0, 0, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]]


def test_pool_spans_selects_rows_and_spans():
    h = torch.arange(2 * 5 * 1, dtype=torch.float).reshape(2, 5, 1)
    out = pool_spans(h, torch.tensor([0, 3]), torch.tensor([2, 5]), row=torch.tensor([1, 0]))
    assert out[:, 0].tolist() == [5.5, 3.5]


def test_last_token_left_and_right_padding():
    h = torch.arange(8, dtype=torch.float).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token(h, right)[:, 0].tolist() == [1.0, 7.0]
    assert last_token(h, left)[:, 0].tolist() == [3.0, 7.0]


def test_info_nce_reference_value_by_hand():
    hx = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    hy = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    tau = 0.5
    cos = torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]]) / tau
    expected = (-(cos.log_softmax(-1)[0, 0]) - cos.log_softmax(-1)[1, 1]) / 2 / 2  # mean, then /2 (reference)
    assert torch.allclose(info_nce(hx, hy, tau), expected, atol=1e-6)


def test_info_nce_scale_invariant_and_single_pair_zero_grad():
    hx, hy = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.allclose(info_nce(hx, hy), info_nce(hx * 3.0, hy * 0.5), atol=1e-5)
    x1 = torch.randn(1, 8, requires_grad=True)
    y1 = torch.randn(1, 8, requires_grad=True)
    loss = info_nce(x1, y1)
    loss.backward()
    assert loss.item() == 0.0 and x1.grad.abs().sum() == 0 and y1.grad.abs().sum() == 0


def test_info_nce_perfect_alignment_beats_random():
    x = torch.randn(8, 16)
    assert info_nce(x, x, 0.1) < info_nce(x, torch.randn(8, 16), 0.1)


def test_info_nce_symmetric_and_gathered_forms():
    hx, hy = torch.randn(5, 6), torch.randn(5, 6)
    one = info_nce(hx, hy, 0.1)
    sym = info_nce(hx, hy, 0.1, symmetric=True)
    back = F.cross_entropy(F.normalize(hy) @ F.normalize(hx).T / 0.1, torch.arange(5))
    assert torch.allclose(sym, one + back / 2, atol=1e-5)
    # Gathered negatives: extra rows from another rank enlarge the softmax denominator only.
    extra = torch.randn(3, 6)
    g = info_nce(hx, torch.cat([extra, hy]), 0.1, positive_index=torch.arange(3, 8))
    sim = F.normalize(hx) @ F.normalize(torch.cat([extra, hy])).T / 0.1
    assert torch.allclose(g, F.cross_entropy(sim, torch.arange(3, 8)) / 2, atol=1e-5)


def test_info_nce_centred_by_loops():
    """Centred form, from its definition: subtract the mean of all 2N states, then the reference loss."""
    torch.manual_seed(3)
    hx, hy = torch.randn(4, 3) + 50.0, torch.randn(4, 3) + 50.0  # a large shared offset, as in Gemma's mid layers
    tau = 0.1
    rows = hx.tolist() + hy.tolist()
    mean = [sum(r[k] for r in rows) / len(rows) for k in range(3)]
    cx = [[a - m for a, m in zip(r, mean, strict=True)] for r in hx.tolist()]
    cy = [[a - m for a, m in zip(r, mean, strict=True)] for r in hy.tolist()]

    def cos(a: list[float], b: list[float]) -> float:
        dot = sum(p * q for p, q in zip(a, b, strict=True))
        return dot / math.sqrt(sum(p * p for p in a)) / math.sqrt(sum(q * q for q in b))

    total = 0.0
    for i in range(4):
        logits = [cos(cx[i], cy[j]) / tau for j in range(4)]
        total += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    expected = total / 4 / 2
    assert abs(info_nce(hx, hy, tau, center=True).item() - expected) < 1e-4
    # The offset hides the pairs from the raw cosine: the raw loss sits near chance (ln 4 / 2).
    assert abs(info_nce(hx, hy, tau).item() - math.log(4) / 2) < 0.05
    # Centring removes any shared offset exactly.
    assert torch.allclose(info_nce(hx + 7.0, hy + 7.0, tau, center=True), info_nce(hx, hy, tau, center=True), atol=1e-4)


def test_language_matching_equals_explicit_pairs_with_language_labels():
    """Against the spec port: the MLP on each explicit [s_i ; s_j], labels from the language codes themselves."""
    torch.manual_seed(0)
    head = LanguageMatchingHead(hidden_size=6, width=5, init_std=0.5)  # large weights: the labels matter
    codes = ["de", "de", "fr", "zh", "fr", "de"]
    s = torch.randn(6, 6, requires_grad=True)
    ids = torch.tensor([{"de": 7, "fr": 3, "zh": 0}[c] for c in codes])  # any ids, equal exactly when the codes are
    got = language_matching_loss(s, ids, head)
    ref = reference_alignx.lam_pairs(list(s), codes, head.gate.weight, head.up.weight, head.down.weight)
    assert abs(got.item() - ref.item()) < 1e-6 and abs(ref.item() - math.log(2)) > 0.05  # far from chance
    g_got = torch.autograd.grad(got, [s, *head.parameters()])
    g_ref = torch.autograd.grad(ref, [s, *head.parameters()])
    for a, b in zip(g_got, g_ref, strict=True):
        assert torch.allclose(a, b.float(), atol=1e-6)
    # the loss sees the labels: flipping one sentence's language changes it
    flipped = ids.clone()
    flipped[0] = 3
    assert abs(language_matching_loss(s, flipped, head).item() - got.item()) > 1e-3


def test_language_matching_head_init_std():
    torch.manual_seed(0)
    head = LanguageMatchingHead(hidden_size=64, width=128, init_std=0.02)
    for w in (head.gate.weight, head.up.weight):
        assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    default = LanguageMatchingHead(hidden_size=64, width=128, init_std=0)  # PyTorch's Kaiming-uniform
    assert default.gate.weight.abs().max() <= 1 / math.sqrt(128) + 1e-6 and default.gate.weight.std() > 0.03


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_alignment_losses_run_in_fp32_under_autocast(dtype):
    """Under CPU autocast, L_CTR and L_LAM equal their fp32 values (the reference's fp32 cosine)."""
    torch.manual_seed(0)
    hx, hy = torch.randn(8, 64), torch.randn(8, 64)
    head = LanguageMatchingHead(64, 128, init_std=0.1)
    s, ids = torch.randn(16, 64), torch.randint(0, 3, (16,))
    ctr32, lam32 = info_nce(hx, hy, 0.1), language_matching_loss(s, ids, head)
    with torch.autocast("cpu", dtype=dtype):
        ctr_ac, lam_ac = info_nce(hx, hy, 0.1), language_matching_loss(s, ids, head)
        # what the same products give in low precision (the error the fp32 region removes)
        low = (F.normalize(hx) @ F.normalize(hy).T).dtype
    assert low == dtype
    assert ctr_ac.dtype == lam_ac.dtype == torch.float32
    assert abs(ctr_ac.item() - ctr32.item()) < 1e-6 and abs(lam_ac.item() - lam32.item()) < 1e-6


def test_language_matching_runs_in_fp32_when_an_engine_hands_the_head_bf16_weights():
    """FSDP2's mixed precision (param_dtype=bf16) and DeepSpeed's bf16 give the head bf16 weights for the forward,
    while the loss feeds it fp32 states: it computes in fp32 on those weights, and the gradient reaches them in bf16."""
    torch.manual_seed(0)
    head = LanguageMatchingHead(64, 128, init_std=0.1)
    s, ids = torch.randn(16, 64), torch.randint(0, 3, (16,))
    rounded = LanguageMatchingHead(64, 128)
    rounded.load_state_dict({k: v.bfloat16().float() for k, v in head.state_dict().items()})
    expected = language_matching_loss(s, ids, rounded)  # fp32 on the bf16-rounded weights
    head.bfloat16()
    got = language_matching_loss(s, ids, head)
    assert got.dtype == torch.float32 and abs(got.item() - expected.item()) < 1e-6
    got.backward()
    assert head.gate.weight.grad.dtype == torch.bfloat16 and head.gate.weight.grad.abs().sum() > 0
    pair = torch.randn(3, 128)
    assert head(pair).dtype == torch.float32


def test_language_matching_head_shapes_no_bias():
    head = LanguageMatchingHead(hidden_size=8, width=128)
    assert all(m.bias is None for m in (head.gate, head.up, head.down))
    assert head.gate.weight.shape == (128, 16) and head.down.weight.shape == (2, 128)
    assert head(torch.randn(3, 16)).shape == (3, 2)


def test_language_matching_learns_language_identity():
    torch.manual_seed(0)
    ids = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    centers = torch.randn(3, 8) * 3
    s = centers[ids] + 0.1 * torch.randn(8, 8)
    head = LanguageMatchingHead(8, 16)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = language_matching_loss(s, ids, head).item()
    for _ in range(200):
        opt.zero_grad()
        loss = language_matching_loss(s, ids, head)
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


@pytest.mark.parametrize("chunk", [0, 1, 3, 7, 1024])
def test_fused_ntp_equals_full_logits(chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    labels = torch.randint(0, 11, (2, 5))
    labels[0, 3:] = -100
    s1, n1 = fused_next_token_loss(hidden, head, labels, chunk_size=chunk)
    g1 = torch.autograd.grad(s1, [hidden, head.weight])
    s2, n2 = next_token_loss_from_logits(head(hidden), labels)
    g2 = torch.autograd.grad(s2, [hidden, head.weight])
    assert n1 == n2 == 8
    assert torch.allclose(s1, s2, atol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_fused_ntp_softcap_matches():
    head = torch.nn.Linear(4, 7, bias=False)
    hidden = torch.randn(1, 6, 4) * 10
    labels = torch.randint(0, 7, (1, 6))
    s1, _ = fused_next_token_loss(hidden, head, labels, chunk_size=2, softcap=3.0)
    logits = torch.tanh(head(hidden) / 3.0) * 3.0
    s2, _ = next_token_loss_from_logits(logits, labels)
    assert torch.allclose(s1, s2, atol=1e-5)


def test_fused_ntp_no_targets_is_zero_with_grad_path():
    head = torch.nn.Linear(4, 7, bias=False)
    hidden = torch.randn(1, 3, 4, requires_grad=True)
    s, n = fused_next_token_loss(hidden, head, torch.full((1, 3), -100))
    s.backward()
    assert n == 0 and s.item() == 0.0


def test_cpu_bf16_detection_reads_the_cpuinfo_flags(tmp_path, monkeypatch):
    """model.autocast=auto: bf16 on a CPU reporting AVX512-BF16 or AMX, fp32 on one without or with no cpuinfo."""
    from alignx.config import ModelConfig
    from alignx.model import load as mload

    with_bf16 = tmp_path / "zen4"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512vl\n\nprocessor\t: 1\nflags\t\t: fpu avx512_bf16\n")
    amx = tmp_path / "spr"
    amx.write_text("flags\t\t: avx512f amx_bf16 amx_tile\n")
    without = tmp_path / "zen3"
    without.write_text("flags\t\t: fpu sse2 avx2 avx512f\n")
    assert mload.cpu_bf16_flags(str(with_bf16)) == ("avx512_bf16",)
    assert mload.cpu_bf16_flags(str(amx)) == ("amx_bf16",)
    assert mload.cpu_bf16_flags(str(without)) == ()
    assert mload.cpu_bf16_flags(str(tmp_path / "missing")) == ()

    for flags, expected in (((), "none"), (("avx512_bf16",), "bf16")):
        monkeypatch.setattr(mload, "cpu_bf16_flags", lambda flags=flags: flags)
        assert mload.resolve_autocast(ModelConfig(), "cpu") == expected
        assert mload.resolve_autocast(ModelConfig(autocast="none"), "cpu") == "none"
        assert mload.resolve_autocast(ModelConfig(dtype="float32"), "cpu") == "none"  # float32 asks for no autocast
        model = torch.nn.Linear(2, 2)
        with mload.inference_autocast(model, ModelConfig()):
            assert torch.is_autocast_enabled("cpu") == (expected == "bf16")
            if expected == "bf16":
                assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        with mload.inference_autocast(model, ModelConfig(autocast="none")):
            assert not torch.is_autocast_enabled("cpu")
