"""Optimised code paths equal their plain definitions: fused/chunked NTP, pairwise L_LAM, hook capture, AlignXModel.

The references here are written from /work/shared/ALIGNX_SPEC.md with explicit loops, independent of
the code under test (which only supplies the model and the L_LAM head's weights).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

import reference_alignx
from alignx.config import ConfigError, LossConfig
from alignx.model import load as mload
from alignx.model.alignx_model import AlignXModel, HiddenStateCapture
from alignx.objectives import LanguageMatchingHead, fused_next_token_loss, language_matching_loss
from alignx.objectives.ntp import next_token_loss_from_logits

VOCAB = 97


# ---------------------------------------------------------------------------------------------
# Fused chunked NTP
# ---------------------------------------------------------------------------------------------


def _reference_ntp(hidden, weight, shift_labels, softcap, scale):
    logits = hidden @ weight.T
    if scale is not None:
        logits = logits * scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    total = hidden.new_zeros(())
    count = 0
    for b in range(hidden.shape[0]):
        for t in range(hidden.shape[1]):
            y = int(shift_labels[b, t])
            if y == -100:
                continue
            total = total - torch.log_softmax(logits[b, t], dim=-1)[y]
            count += 1
    return total, count


@pytest.mark.parametrize("chunk", [0, 5, 16, 10_000])
@pytest.mark.parametrize(("softcap", "scale"), [(None, None), (2.0, 0.5)])
def test_fused_ntp_equals_unfused(chunk: int, softcap: float | None, scale: float | None) -> None:
    g = torch.Generator().manual_seed(0)
    B, T, H = 3, 9, 8
    hidden = torch.randn(B, T, H, generator=g, dtype=torch.float64)
    head = nn.Linear(H, VOCAB, bias=False).double()
    labels = torch.randint(0, VOCAB, (B, T), generator=g)
    labels[0, 6:] = -100  # padding
    labels[2, :3] = -100  # prompt masked
    labels[:, -1] = -100
    assert int(labels.ne(-100).sum()) % 5 != 0  # chunk 5 does not divide the token count

    h1 = hidden.clone().requires_grad_(True)
    total, count = fused_next_token_loss(h1, head, labels, chunk, softcap, scale)
    total.backward()
    g_hidden, g_weight = h1.grad.clone(), head.weight.grad.clone()

    head.weight.grad = None
    h2 = hidden.clone().requires_grad_(True)
    ref, ref_count = _reference_ntp(h2, head.weight, labels, softcap, scale)
    ref.backward()
    assert int(count) == ref_count
    # the fused path computes logits in fp32 by design, so fp32 tolerances
    torch.testing.assert_close(total.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_hidden, h2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_weight, head.weight.grad, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# L_LAM: the pairwise factorisation never builds [S, S, 2H] and equals the explicit-pairs form
# ---------------------------------------------------------------------------------------------


def test_lam_all_pairs_equals_explicit_concatenations() -> None:
    torch.manual_seed(0)
    S, H = 10, 12
    head = LanguageMatchingHead(H, width=16, init_std=0.3)  # the head stays fp32 by design
    states = torch.randn(S, H)
    codes = ["de", "en", "fr", "de", "en", "en", "sw", "de", "fr", "fr"]
    ids = torch.tensor([["de", "en", "fr", "sw"].index(c) for c in codes])

    a = states.clone().requires_grad_(True)
    fast = language_matching_loss(a, ids, head)
    fast.backward()
    grads_fast = [a.grad.clone()] + [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    b = states.clone().requires_grad_(True)
    ref = reference_alignx.lam_pairs(list(b), codes, head.gate.weight, head.up.weight, head.down.weight)
    ref.backward()
    grads_ref = [b.grad] + [p.grad for p in head.parameters()]
    torch.testing.assert_close(fast.double(), ref, rtol=1e-6, atol=1e-6)
    for x, y in zip(grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    # the factorised logits match the head applied to each concatenation
    logits = head.all_pairs(states)
    torch.testing.assert_close(logits[3, 7], head(torch.cat([states[3], states[7]])))


# ---------------------------------------------------------------------------------------------
# Tiny models of four architectures
# ---------------------------------------------------------------------------------------------


def _tiny(arch: str) -> nn.Module:
    torch.manual_seed(0)
    common = {"vocab_size": VOCAB, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if arch == "llama":
        cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                       num_attention_heads=4, num_key_value_heads=2, **common)
        model = transformers.LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        cfg = transformers.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, **common)
        model = transformers.Qwen2ForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = transformers.GPT2Config(n_embd=32, n_layer=4, n_head=4, n_positions=64, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0, **common)
        model = transformers.GPT2LMHeadModel(cfg)
    elif arch == "gemma3":
        cfg = transformers.Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                            num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                            sliding_window=4, final_logit_softcapping=5.0, **common)
        model = transformers.Gemma3ForCausalLM(cfg)
    else:
        raise ValueError(arch)
    return model.double()


ARCHS = ["llama", "qwen2", "gpt2", "gemma3"]


def _batch(B: int = 4, T: int = 16) -> dict[str, torch.Tensor]:
    """Right-padded stage-1-like rows with x/y spans and language ids."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (B, T), generator=g)
    lengths = [T, T - 3, T - 1, T - 5][:B]
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    shift = torch.full_like(labels, -100)
    shift[:, :-1] = labels[:, 1:]
    x_start = torch.tensor([2, 1, 2, 3][:B])
    x_end = torch.tensor([6, 5, 7, 6][:B])
    y_end = torch.tensor([n - 1 for n in lengths])  # final EOS excluded
    y_start = torch.tensor([8, 7, 9, 8][:B])
    return {
        "input_ids": ids, "attention_mask": mask, "labels": labels, "shift_labels": shift,
        "x_start": x_start, "x_end": x_end, "y_start": y_start, "y_end": y_end,
        "src_lang": torch.tensor([0, 1, 0, 2][:B]), "tgt_lang": torch.tensor([1, 0, 2, 0][:B]),
    }


def _wrap(model: nn.Module, lora: bool) -> nn.Module:
    if not lora:
        return model
    from peft import LoraConfig, get_peft_model

    targets = ["c_attn"] if isinstance(model, transformers.GPT2LMHeadModel) else ["q_proj", "v_proj"]
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["plain", "lora", "checkpointing"])
def test_hook_capture_equals_output_hidden_states(arch: str, mode: str) -> None:
    model = _wrap(_tiny(arch), lora=mode == "lora")
    if mode == "checkpointing":
        mload.enable_gradient_checkpointing(model)
        model.train()  # HF only checkpoints in training mode
    else:
        model.eval()
    batch = _batch()
    n = mload.num_layers(model)
    ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    assert len(ref.hidden_states) == n + 1
    for layer in (1, n // 2, n - 1, n):
        cap = HiddenStateCapture(model, layer)
        try:
            cap.arm()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False, logits_to_keep=1)
            taken = cap.disarm()
            mid, final = cap.states(taken)
            # not armed: a later call (e.g. checkpoint recomputation) records nothing
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
            assert cap.disarm() == {}
        finally:
            cap.remove()
        torch.testing.assert_close(mid, ref.hidden_states[layer], rtol=0, atol=0)
        torch.testing.assert_close(final, ref.hidden_states[-1], rtol=0, atol=0)
        assert final.shape == ref.hidden_states[0].shape  # full length even with logits_to_keep=1


# ---------------------------------------------------------------------------------------------
# Whole AlignXModel against a reference written from the spec
# ---------------------------------------------------------------------------------------------


def _reference_terms(lm: nn.Module, head: LanguageMatchingHead, batch: dict, align_layer: int,
                     tau: float) -> dict[str, torch.Tensor]:
    out = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True,
             use_cache=False)
    logits = out.logits  # full logits, with the model's own softcap (Gemma3): the fused loss must reproduce them
    ntp_sum = logits.new_zeros(())
    count = 0
    B, T = batch["input_ids"].shape
    for b in range(B):
        for t in range(T):
            y = int(batch["shift_labels"][b, t])
            if y != -100:
                ntp_sum = ntp_sum - torch.log_softmax(logits[b, t].double(), -1)[y]
                count += 1

    def mean_pool(states, b, lo, hi):
        return torch.stack([states[b, t] for t in range(lo, hi)]).mean(0)

    mid = out.hidden_states[align_layer]
    hx = [mean_pool(mid, b, int(batch["x_start"][b]), int(batch["x_end"][b])) for b in range(B)]
    hy = [mean_pool(mid, b, int(batch["y_start"][b]), int(batch["y_end"][b])) for b in range(B)]
    per_pair = []
    for i in range(B):
        sims = torch.stack([F.cosine_similarity(hx[i], hy[j], dim=0) / tau for j in range(B)])
        per_pair.append(-torch.log_softmax(sims, 0)[i])
    ctr = torch.stack(per_pair).mean() / 2  # reference: one direction, halved

    last = out.hidden_states[-1]
    sents = [mean_pool(last, b, int(batch["x_start"][b]) - 1, int(batch["x_end"][b]) - 1) for b in range(B)]
    sents += [mean_pool(last, b, int(batch["y_start"][b]) - 1, int(batch["y_end"][b]) - 1) for b in range(B)]
    langs = [int(v) for v in batch["src_lang"]] + [int(v) for v in batch["tgt_lang"]]
    pair_losses = []
    for i in range(2 * B):
        for j in range(2 * B):
            logit = head(torch.cat([sents[i], sents[j]]).float())  # the head is fp32 by design
            pair_losses.append(-torch.log_softmax(logit, 0)[int(langs[i] == langs[j])])
    lam = torch.stack(pair_losses).mean()
    return {"ntp_sum": ntp_sum, "ntp_count": torch.tensor(count), "ctr": ctr, "lam": lam}


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
@pytest.mark.parametrize(("capture", "chunk"), [("hooks", 7), ("hidden_states", 7), ("hooks", 0)])
def test_alignx_model_terms_match_reference(arch: str, capture: str, chunk: int) -> None:
    lm = _tiny(arch).eval()
    loss = LossConfig(lambda_ctr=0.3, lambda_lam=0.4, tau=0.1, align_layer=2, ntp_chunk_size=chunk)
    model = AlignXModel(lm, loss, with_alignment=True, capture=capture)
    assert (model.capture is not None) == (capture == "hooks")
    batch = _batch()
    got = model(**batch)
    ref = _reference_terms(lm, model.lam_head, batch, 2, 0.1)
    assert int(got["ntp_count"]) == int(ref["ntp_count"])
    for key in ("ntp_sum", "ctr", "lam"):
        # fp32 tolerances: the fused NTP and L_CTR/L_LAM compute in fp32 by design
        torch.testing.assert_close(got[key].double(), ref[key].double(), rtol=1e-5, atol=1e-5, msg=key)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hooks_and_hidden_states_give_same_gradients_with_checkpointing(arch: str) -> None:
    loss = LossConfig(align_layer=-1, ntp_chunk_size=5)
    grads = {}
    for capture in ("hooks", "hidden_states"):
        lm = _tiny(arch)
        mload.enable_gradient_checkpointing(lm)
        lm.train()
        model = AlignXModel(lm, loss, with_alignment=True, capture=capture)
        for p in model.lam_head.parameters():
            nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(3))
        out = model(**_batch())
        total = out["ntp_sum"] / out["ntp_count"] + 0.3 * out["ctr"] + 0.4 * out["lam"]
        total.backward()
        grads[capture] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        if model.capture is not None:
            assert model.capture.disarm() == {}  # recomputation in backward recorded nothing
    assert grads["hooks"].keys() == grads["hidden_states"].keys()
    for name, g in grads["hooks"].items():
        torch.testing.assert_close(g, grads["hidden_states"][name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("capture", ["hooks", "hidden_states"])
@pytest.mark.parametrize("bos_row", [True, False])
def test_separate_ctr_encodes_each_sentence_alone(arch: str, capture: str, bos_row: bool) -> None:
    """loss.ctr_inputs=separate: L_CTR on x and y each run through the LM on its own (behind BOS when the rows
    start with BOS), mean-pooled over the sentence's tokens at the align layer; computed here one sentence at a time."""
    lm = _tiny(arch).eval()
    tau, layer = 0.1, 2
    model = AlignXModel(lm, LossConfig(lambda_ctr=0.3, lambda_lam=0.0, tau=tau, align_layer=layer, ctr_inputs="separate"),
                        with_alignment=True, capture=capture)
    batch = _batch()
    batch["input_ids"][:, 0] = 1 if bos_row else 5  # 1 is the tiny models' BOS
    got = model(**batch)["ctr"]

    def alone(b: int, start: int, end: int) -> torch.Tensor:
        tokens = batch["input_ids"][b, start:end].tolist()
        seq = torch.tensor([([1] if bos_row else []) + tokens])
        states = lm(input_ids=seq, output_hidden_states=True).hidden_states[layer][0]
        return states[1:].mean(0) if bos_row else states.mean(0)

    B = batch["input_ids"].shape[0]
    hx = [alone(b, int(batch["x_start"][b]), int(batch["x_end"][b])) for b in range(B)]
    hy = [alone(b, int(batch["y_start"][b]), int(batch["y_end"][b])) for b in range(B)]
    per_pair = []
    for i in range(B):
        sims = torch.stack([F.cosine_similarity(hx[i], hy[j], dim=0) / tau for j in range(B)])
        per_pair.append(-torch.log_softmax(sims, 0)[i])
    expected = torch.stack(per_pair).mean() / 2
    torch.testing.assert_close(got.double(), expected.double(), rtol=1e-6, atol=1e-6)
    # and the in-context default reads something else (y sees x), so the option does change the loss
    in_context = AlignXModel(lm, LossConfig(lambda_ctr=0.3, lambda_lam=0.0, tau=tau, align_layer=layer), with_alignment=True, capture=capture)
    assert not torch.allclose(in_context(**batch)["ctr"].double(), expected.double(), rtol=1e-3, atol=1e-4)


def test_chunk_cap_sizes_the_fused_loss_by_the_vocabulary(monkeypatch) -> None:
    """loss.ntp_chunk_mib caps one chunk's fp32 logits: tokens = MiB * 2^20 / (4 * vocabulary), at most ntp_chunk_size.
    AlignXModel hands fused_next_token_loss that many tokens per chunk, and the loss is the one of the full logits."""
    assert LossConfig().ntp_chunk_tokens(262_144) == 256  # Gemma-3: 256 MiB / 1 MiB per token
    assert LossConfig().ntp_chunk_tokens(151_936) == 441  # Qwen2.5
    assert LossConfig().ntp_chunk_tokens(49_152) == 1024  # SmolLM2: the token limit binds
    assert LossConfig(ntp_chunk_mib=0).ntp_chunk_tokens(262_144) == 1024
    assert LossConfig(ntp_chunk_mib=1).ntp_chunk_tokens(10**9) == 1  # never below one token
    with pytest.raises(ConfigError, match="loss.ntp_chunk_mib must be >= 0"):
        LossConfig(ntp_chunk_mib=-1)

    import alignx.model.alignx_model as am

    lm = _tiny("llama").eval()
    vocab = lm.get_output_embeddings().weight.shape[0]
    seen = []
    real = am.fused_next_token_loss

    def spy(hidden, head, labels, chunk_size, *rest, **kw):  # noqa: ANN001, ANN202 - records the chunk it is given
        seen.append(chunk_size)
        return real(hidden, head, labels, chunk_size, *rest, **kw)

    monkeypatch.setattr(am, "fused_next_token_loss", spy)
    mib = 5 * 4 * vocab / 2**20  # the fp32 logits of 5 tokens of this vocabulary
    model = AlignXModel(lm, LossConfig(lambda_ctr=0.0, lambda_lam=0.0, ntp_chunk_mib=mib), with_alignment=False)
    batch = _batch()
    got = model(**batch)
    assert seen == [5] and int(got["ntp_count"]) > 5  # several chunks
    logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    full, count = next_token_loss_from_logits(logits, batch["shift_labels"])
    assert int(got["ntp_count"]) == int(count)
    torch.testing.assert_close(got["ntp_sum"].double(), full.double(), rtol=1e-5, atol=1e-5)


def _reference_ntp_bias(hidden, weight, bias, shift_labels):
    """Loop reference with a bias: sum over target positions of -log softmax(W h + b)[y]."""
    total = hidden.new_zeros(())
    for b in range(hidden.shape[0]):
        for t in range(hidden.shape[1]):
            y = int(shift_labels[b, t])
            if y != -100:
                total = total - torch.log_softmax(weight @ hidden[b, t] + bias, dim=-1)[y]
    return total


@pytest.mark.parametrize("chunk", [0, 4])
def test_fused_ntp_with_bias_and_frozen_head(chunk: int) -> None:
    """The gradient-in-forward path: a biased head's three gradients, and a frozen head (no weight gradient)."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 6, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, VOCAB, (2, 6), generator=g)
    labels[1, :2] = -100
    head = nn.Linear(8, VOCAB, bias=True).double()
    h1 = hidden.clone().requires_grad_(True)
    total, _ = fused_next_token_loss(h1, head, labels, chunk)
    (2.5 * total).backward()  # a scaled upstream gradient reaches every input
    h2 = hidden.clone().requires_grad_(True)
    w2, b2 = head.weight.detach().clone().requires_grad_(True), head.bias.detach().clone().requires_grad_(True)
    ref = _reference_ntp_bias(h2, w2, b2, labels)
    (2.5 * ref).backward()
    torch.testing.assert_close(total.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.weight.grad, w2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.bias.grad, b2.grad, rtol=1e-5, atol=1e-6)

    frozen = nn.Linear(8, VOCAB, bias=False).double().requires_grad_(False)
    h3 = hidden.clone().requires_grad_(True)
    fused_next_token_loss(h3, frozen, labels, chunk)[0].backward()
    h4 = hidden.clone().requires_grad_(True)
    _reference_ntp(h4, frozen.weight, labels, None, None)[0].backward()
    assert frozen.weight.grad is None
    torch.testing.assert_close(h3.grad, h4.grad, rtol=1e-5, atol=1e-6)


def test_fused_ntp_under_bf16_autocast_matches_the_autograd_path() -> None:
    """Under CPU bf16 autocast the gradient-in-forward path computes what autograd computes through the same bf16
    matmuls (the head behind a wrapper module takes the recomputing path), and stays near fp32."""
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16)
    labels = torch.randint(0, VOCAB, (3, 7))
    labels[0, 5:] = -100
    head = nn.Linear(16, VOCAB, bias=False)

    class Wrapped(nn.Module):  # not a plain nn.Linear: fused_next_token_loss recomputes each chunk in backward
        def __init__(self) -> None:
            super().__init__()
            self.inner = head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    results = []
    for module, autocast in ((head, True), (Wrapped(), True), (head, False)):
        head.weight.grad = None
        h = hidden.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            total, _ = fused_next_token_loss(h, module, labels, 5)
        total.backward()
        results.append((total.detach(), h.grad, head.weight.grad.clone()))
    (fast, fast_h, fast_w), (slow, slow_h, slow_w), (fp32, fp32_h, fp32_w) = results
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fast_h, slow_h, rtol=2e-2, atol=2e-3)  # bf16 gradients rounded in different places
    torch.testing.assert_close(fast_w, slow_w, rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(fast, fp32, rtol=1e-2, atol=0)
    torch.testing.assert_close(fast_h, fp32_h, rtol=5e-2, atol=5e-3)
