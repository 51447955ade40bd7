"""data.packing: several stage-1 rows per sequence give the losses and gradients of the same rows unpacked.

The expected values are computed from the unpacked, padded rows with the plain HF model (no packing code): NTP
as an explicit loop, L_CTR and L_LAM with tests/reference_alignx.py (written from the spec), and for
loss.ctr_inputs=separate each sentence run through the model alone. Tiny float64 Llama, Gemma-3 and GPT-2 models
built here.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

import reference_alignx as ref
from alignx.config import ConfigError, LossConfig, TrainConfig, load_config
from alignx.data.packing import PackingCollator, check_rows_stay_apart, pack_rows, packed_forward_kwargs
from alignx.data.render import Collator, Example
from alignx.model.alignx_model import AlignXModel

VOCAB = 97
BOS, EOS, PAD = 1, 2, 0
LAYER, TAU = 2, 0.1
# (length, x span, y span, src lang, tgt lang); y ends before the final EOS. Capacity 20 packs them (first fit,
# longest first) as [13 + 7], [11 + 9], [6]: three sequences, two of two rows, padding in each.
ROWS = [(13, (2, 6), (8, 12), 0, 1), (9, (1, 4), (5, 8), 1, 0), (6, (1, 3), (3, 5), 0, 2), (11, (2, 5), (6, 10), 2, 0),
        (7, (1, 3), (4, 6), 1, 2)]
CAPACITY = 20


def _tiny(arch: str, attn: str = "sdpa") -> nn.Module:
    torch.manual_seed(0)
    common = {"vocab_size": VOCAB, "pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS, "attn_implementation": attn}
    if arch == "llama":
        cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                                       num_key_value_heads=2, **common)
        model = transformers.LlamaForCausalLM(cfg)
    elif arch == "gemma3":  # a sliding window shorter than the rows: it must count row positions, not packed ones
        cfg = transformers.Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                                            num_key_value_heads=2, head_dim=8, sliding_window=4,
                                            final_logit_softcapping=5.0, **common)
        model = transformers.Gemma3ForCausalLM(cfg)
    elif arch == "gpt2":  # learned absolute positions instead of rotary ones
        cfg = transformers.GPT2Config(n_embd=32, n_layer=4, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0, **common)
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        raise ValueError(arch)
    return model.double().eval()


def _rows(bos: bool = True, seed: int = 1, rows: list = ROWS) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, x, y, a, b in rows:
        ids = torch.randint(3, VOCAB, (n,), generator=g).tolist()
        if bos:
            ids[0] = BOS
        ids[-1] = EOS
        out.append(Example(ids, list(ids), x, y, a, b))
    return out


# ---------------------------------------------------------------------------------------------
# The expected values: unpacked rows, plain model, written from the spec
# ---------------------------------------------------------------------------------------------


def _expected(lm: nn.Module, head: nn.Module, rows: list[Example], ctr_inputs: str) -> dict[str, torch.Tensor]:
    """The loss terms of ``rows`` as one unpacked micro-batch: each row through the model on its own (the padded
    batch gives the same; a row alone has no padding, whose fully masked queries turn eager float64 Gemma-3 NaN)."""
    outs = [lm(input_ids=torch.tensor([e.input_ids]), output_hidden_states=True, use_cache=False) for e in rows]
    ntp_sum, count = torch.zeros((), dtype=torch.float64), 0
    for e, out in zip(rows, outs, strict=True):
        for t in range(len(e.input_ids) - 1):
            target = e.labels[t + 1]
            if target != -100:
                ntp_sum = ntp_sum - torch.log_softmax(out.logits[0, t].double(), -1)[target]
                count += 1

    def stacked(layer: int) -> torch.Tensor:  # [B, T, H], zeros after each row (never read: spans lie inside rows)
        return nn.utils.rnn.pad_sequence([out.hidden_states[layer][0] for out in outs], batch_first=True)

    index = [[*e.x_span, *e.y_span] for e in rows]
    if ctr_inputs == "in_context":
        ctr = ref.ctr(stacked(LAYER), index, TAU)
    else:  # each sentence alone, behind BOS when every row starts with it
        prefix = [BOS] if all(e.input_ids[0] == BOS for e in rows) else []

        def alone(e: Example, lo: int, hi: int) -> torch.Tensor:
            seq = torch.tensor([prefix + e.input_ids[lo:hi]])
            states = lm(input_ids=seq, output_hidden_states=True, use_cache=False).hidden_states[LAYER][0]
            return states[len(prefix):].double().mean(0)

        hx = [alone(e, *e.x_span) for e in rows]
        hy = [alone(e, *e.y_span) for e in rows]
        n = len(rows)
        sim = torch.stack([torch.stack([F.cosine_similarity(hy[j], hx[i], dim=0) / TAU for i in range(n)]) for j in range(n)])
        log_p = torch.log_softmax(sim, dim=0)
        ctr = -sum(log_p[i, i] for i in range(n)) / n / 2
    lam = ref.lam(stacked(-1), index, [(e.src_lang, e.tgt_lang) for e in rows],
                  head.gate.weight, head.up.weight, head.down.weight)
    return {"ntp_sum": ntp_sum, "ntp_count": torch.tensor(count), "ctr": ctr, "lam": lam}


def _total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return terms["ntp_sum"] / terms["ntp_count"] + 0.3 * terms["ctr"] + 0.4 * terms["lam"]


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _model(lm: nn.Module, ctr_inputs: str, capture: str = "hooks") -> AlignXModel:
    loss = LossConfig(lambda_ctr=0.3, lambda_lam=0.4, tau=TAU, align_layer=LAYER, ctr_inputs=ctr_inputs, ntp_chunk_size=7)
    model = AlignXModel(lm, loss, with_alignment=True, capture=capture)
    for p in model.lam_head.parameters():  # larger than the HF init, so L_LAM's gradient is not tiny
        nn.init.normal_(p, std=0.2, generator=torch.Generator().manual_seed(3))
    return model


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("ctr_inputs", ["in_context", "separate"])
def test_packed_losses_and_gradients_equal_the_unpacked_rows(arch: str, attn: str, ctr_inputs: str) -> None:
    lm = _tiny(arch, attn)
    model = _model(lm, ctr_inputs)
    rows = _rows()
    batch = PackingCollator(PAD, CAPACITY)(rows)
    assert batch["input_ids"].shape == (3, 24) and "attention_mask" not in batch  # 5 rows in 3 sequences

    got = model(**batch)
    _total(got).backward()
    got_grads = _grads(model)

    expected = _expected(lm, model.lam_head, rows, ctr_inputs)
    _total(expected).backward()
    expected_grads = _grads(model)

    assert int(got["ntp_count"]) == int(expected["ntp_count"]) == sum(len(e.input_ids) - 1 for e in rows)
    for key in ("ntp_sum", "ctr", "lam"):
        # fp32 tolerances: the fused NTP, the pooling and L_CTR / L_LAM compute in fp32 by design
        torch.testing.assert_close(got[key].double(), expected[key].double(), rtol=1e-5, atol=1e-6, msg=key)
    assert expected["ctr"].item() > 0 and expected["lam"].item() > 0
    assert got_grads.keys() == expected_grads.keys() and len(got_grads) == len(list(model.parameters()))
    for name, g in got_grads.items():
        want = expected_grads[name]
        assert (g - want).abs().max() <= 1e-5 * want.abs().max() + 1e-9, name


@pytest.mark.parametrize("capture", ["hooks", "hidden_states"])
@pytest.mark.parametrize("ctr_inputs", ["in_context", "separate"])
def test_packed_equals_padded_alignx_model_when_x_opens_the_row(capture: str, ctr_inputs: str) -> None:
    """Rows without BOS whose x is their first token: L_LAM's shifted span must stop at the row's start (as the
    padded batch stops at position 0), not take the last token of the row packed before it."""
    rows = _rows(bos=False, rows=[(13, (0, 6), (8, 12), 0, 1), (9, (0, 4), (5, 8), 1, 0), (6, (1, 3), (3, 5), 0, 2),
                                  (11, (0, 5), (6, 10), 2, 0), (7, (0, 3), (4, 6), 1, 2)])
    model = _model(_tiny("gemma3"), ctr_inputs, capture)
    packed = model(**PackingCollator(PAD, CAPACITY)(rows))
    _total(packed).backward()
    packed_grads = _grads(model)
    padded = model(**Collator(PAD)(rows))
    _total(padded).backward()
    padded_grads = _grads(model)
    assert int(packed["ntp_count"]) == int(padded["ntp_count"])
    for key in ("ntp_sum", "ctr", "lam"):
        torch.testing.assert_close(packed[key], padded[key], rtol=1e-6, atol=1e-7, msg=key)
    for name, g in packed_grads.items():
        assert (g - padded_grads[name]).abs().max() <= 1e-5 * padded_grads[name].abs().max() + 1e-9, name


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_row_never_attends_across_its_boundary(arch: str, attn: str) -> None:
    lm = _tiny(arch, attn)
    rows = _rows()
    changed = _rows()
    changed[0].input_ids[1:-1] = [(t + 5) % (VOCAB - 3) + 3 for t in changed[0].input_ids[1:-1]]  # row 0, packed first

    def states(examples: list[Example]) -> tuple[dict, tuple[torch.Tensor, ...]]:
        batch = PackingCollator(PAD, CAPACITY)(examples)
        out = lm(input_ids=batch["input_ids"], use_cache=False, output_hidden_states=True,
                 **packed_forward_kwargs(lm, batch["position_ids"]))
        return batch, out.hidden_states

    batch, before = states(rows)
    _, after = states(changed)
    seq = int(batch["packed_row"][0])
    assert int(batch["packed_row"][4]) == seq  # row 4 (7 tokens) follows row 0 (13) in the same sequence
    lo = int(batch["x_start"][4]) - rows[4].x_span[0]
    row4 = slice(lo, lo + len(rows[4].input_ids))
    assert lo == len(rows[0].input_ids)
    for layer, (a, b) in enumerate(zip(before, after, strict=True)):
        torch.testing.assert_close(a[seq, row4], b[seq, row4], rtol=0, atol=1e-12, msg=f"hidden_states[{layer}]")
    assert not torch.allclose(before[-1][seq, :lo], after[-1][seq, :lo])  # row 0 itself did change
    # and row 4 packed is row 4 alone: positions restart, nothing before it is seen (eager attention takes its
    # softmax in fp32 whatever the model's dtype, and the two shapes sum it in different orders)
    alone = lm(input_ids=torch.tensor([rows[4].input_ids]), use_cache=False, output_hidden_states=True).hidden_states
    tol = 1e-10 if attn == "sdpa" else 1e-5
    for layer, (p, a) in enumerate(zip(before, alone, strict=True)):
        torch.testing.assert_close(p[seq, row4], a[0], rtol=tol, atol=tol, msg=f"hidden_states[{layer}]")


# ---------------------------------------------------------------------------------------------
# The layout, the model check, the settings
# ---------------------------------------------------------------------------------------------


def test_first_fit_decreasing_places_every_row_once_within_capacity() -> None:
    lengths = [13, 9, 6, 11, 7]
    bins = pack_rows(lengths, 20)
    assert bins == [[0, 4], [3, 1], [2]]
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        lengths = torch.randint(1, 40, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g).tolist()
        bins = pack_rows(lengths, 40)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= 40 for b in bins)
        # first fit: no row of a later sequence would have fitted into an earlier one when it was placed
        assert len(bins) <= len(lengths)
    assert pack_rows([50, 3], 40) == [[0], [1]]  # a row over capacity gets a sequence of its own


def test_collator_layout() -> None:
    rows = [Example([1, 5, 6, 2], [1, 5, 6, 2], (1, 2), (2, 3), 0, 1), Example([1, 7, 2], [-100, 7, 2], (1, 2), (1, 2), 1, 0),
            Example([1, 8, 9, 10, 11, 2], [1, 8, 9, 10, 11, 2], (1, 3), (3, 5), 1, 0)]
    batch = PackingCollator(PAD, capacity=8, pad_to_multiple_of=4)(rows)
    # longest first: row 2 (6 tokens) opens sequence 0, row 0 (4) opens sequence 1, row 1 (3) joins it
    assert batch["input_ids"].tolist() == [[1, 8, 9, 10, 11, 2, 0, 0], [1, 5, 6, 2, 1, 7, 2, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 0, 1], [0, 1, 2, 3, 0, 1, 2, 0]]
    # within each row only: a row's last token predicts nothing, padding predicts nothing
    assert batch["shift_labels"].tolist() == [[8, 9, 10, 11, 2, -100, -100, -100], [5, 6, 2, -100, 7, 2, -100, -100]]
    assert batch["packed_row"].tolist() == [1, 1, 0]
    assert batch["x_start"].tolist() == [1, 5, 1] and batch["x_end"].tolist() == [2, 6, 3]
    assert batch["y_start"].tolist() == [2, 5, 3] and batch["y_end"].tolist() == [3, 6, 5]
    assert batch["src_lang"].tolist() == [0, 1, 1] and batch["tgt_lang"].tolist() == [1, 0, 0]


def test_flash_attention_gets_the_segments_cumulative_lengths() -> None:
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1], [0, 1, 2, 3, 0, 1, 2, 0]])
    sdpa = types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation="sdpa"))
    assert packed_forward_kwargs(sdpa, position_ids) == {"position_ids": position_ids, "attention_mask": None}
    flash = types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation="flash_attention_2"))
    kwargs = packed_forward_kwargs(flash, position_ids)
    # over the flattened 16 tokens: rows and padding segments alike
    assert kwargs["cu_seq_lens_q"].tolist() == kwargs["cu_seq_lens_k"].tolist() == [0, 6, 8, 12, 15, 16]
    assert kwargs["max_length_q"] == kwargs["max_length_k"] == 6


def test_model_check_refuses_a_model_that_lets_rows_see_each_other() -> None:
    lm = _tiny("llama")
    check_rows_stay_apart(lm)  # transformers' masks keep them apart
    forward = lm.forward
    lm.forward = lambda **kw: forward(**{k: v for k, v in kw.items() if k != "position_ids"})  # one causal mask over all
    with pytest.raises(ConfigError, match="data.packing=true: .* attend to the row before it"):
        check_rows_stay_apart(lm)


def test_packing_is_a_stage_1_setting() -> None:
    from alignx.pipeline import PipelineConfig

    assert load_config(TrainConfig, [], ["data.packing=true"]).data.packing
    with pytest.raises(ConfigError, match="data.packing=true is for stage 1 only"):
        load_config(TrainConfig, [], ["stage=2", "data.packing=true"])
    with pytest.raises(ConfigError, match="stage2.data.packing=true: packing is for stage 1 only"):
        load_config(PipelineConfig, [], ["stage2.data.packing=true"])
    assert load_config(PipelineConfig, [], ["stage1.data.packing=true"]).stage1.data.packing


def test_packed_training_run_equals_the_unpacked_run(tmp_path, tiny_llama_dir, pairs_file) -> None:
    """The whole stage: same rows per micro-batch, same logged losses, same trained weights (fp32, 3 AdamW steps).
    Rows are 84-112 tokens, so data.max_length=224 packs the 4 rows of a micro-batch two or three per sequence."""
    from alignx.train import stage
    from test_train import _cfg, _params

    runs = {}
    for packing in (False, True):
        cfg = _cfg(tiny_llama_dir, tmp_path / f"p{packing}", f"data.parallel=[{pairs_file}]", "data.max_length=224",
                   f"data.packing={packing}", "loss.ntp_chunk_size=16")
        runs[packing] = stage.main(cfg)
    unpacked, packed = runs[False], runs[True]
    assert packed["data"]["examples"] == unpacked["data"]["examples"] == 24
    assert len(packed["history"]) == len(unpacked["history"]) == 3
    for a, b in zip(unpacked["history"], packed["history"], strict=True):
        for key in ("loss", "loss_ntp", "loss_ctr", "loss_lam"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    wa, wb = _params(unpacked["final_model"]), _params(packed["final_model"])
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k
