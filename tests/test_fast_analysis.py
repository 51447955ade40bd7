"""Sorted, batched analysis and translation give what a plain sentence-by-sentence computation gives.

The references here run one sentence (or prompt) at a time, in input order, with no padding and
``output_hidden_states=True``; pooling, cosines, MEXA, retrieval and greedy decoding are written out as
loops from their definitions, independently of ``alignx.eval.alignment`` and ``translation.generate``.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignx.config import ModelConfig
from alignx.eval import translation
from alignx.eval.alignment import encode_poolings
from alignx.eval.analyze import AnalyzeConfig, analyze_model
from conftest import make_tokenizer, tiny_config, tiny_lm

# Lengths from 1 to ~14 words, so batches of 3 are padded; several end in the same word ("tea", ".").
EN = [
    "The cat sleeps on the warm sofa.",
    "Tea.",
    "I would like a cup of tea",
    "Where is the train station?",
    "The cat sleeps.",
    "Where is the old train station near the river and the little bridge over the water?",
    "I would like a cup of hot tea.",
]
DE = [
    "Die Katze schläft auf dem warmen Sofa.",
    "Tee.",
    "Ich hätte gern eine Tasse Tee",
    "Wo ist der Bahnhof?",
    "Die Katze schläft.",
    "Wo ist der alte Bahnhof nahe dem Fluss und der kleinen Brücke über das Wasser?",
    "Ich hätte gern eine Tasse heißen Tee.",
]
FR = [
    "Le chat dort sur le canapé chaud.",
    "Thé.",
    "Je voudrais une tasse de thé",
    "Où est la gare ?",
    "Le chat dort.",
    "Où est la vieille gare près de la rivière et du petit pont sur l'eau ?",
    "Je voudrais une tasse de thé chaud.",
]


def _model(arch: str, tok):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(arch, len(tok))).eval()


def reference_states(model, tok, sentences: list[str]) -> dict[str, torch.Tensor]:
    """{pooling: [L+1, N, H]}: each sentence alone (batch 1, no padding), every hidden state pooled by hand:
    mean over the positions whose token is not a special token (all positions if every one is), last = final position."""
    special = set(tok.all_special_ids)
    out: dict[str, list[list[torch.Tensor]]] = {"mean": [], "last": []}
    for s in sentences:
        ids = tok(s)["input_ids"]
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        keep = [t for t, i in enumerate(ids) if i not in special] or list(range(len(ids)))
        means, lasts = [], []
        for h in hs:
            total = torch.zeros(h.shape[-1], dtype=torch.float64)
            for t in keep:
                total += h[0, t].double()
            means.append((total / len(keep)).float())
            lasts.append(h[0, len(ids) - 1].float())
        out["mean"].append(means)
        out["last"].append(lasts)
    return {p: torch.stack([torch.stack(per_layer) for per_layer in rows], dim=1) for p, rows in out.items()}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3", "gpt2"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_encode_matches_sentence_by_sentence_reference(arch, padding_side):
    tok = make_tokenizer(EN + DE)
    tok.padding_side = padding_side  # encode pads on its own (right); the tokenizer's side must not matter
    model = _model(arch, tok)
    sentences = EN + DE  # input order is not length order: the result must come back in input order
    ref = reference_states(model, tok, sentences)
    hooks = encode_poolings(model, tok, sentences, ("mean", "last"), batch_size=3, progress=False)
    tuple_path = encode_poolings(model, tok, sentences, ("mean", "last"), batch_size=3, progress=False, capture="hidden_states")
    for pooling in ("mean", "last"):
        assert hooks[pooling].shape == ref[pooling].shape == (model.config.num_hidden_layers + 1, len(sentences), 32)
        assert hooks[pooling].dtype == torch.float32
        assert torch.allclose(hooks[pooling], ref[pooling], atol=2e-5, rtol=1e-4), (arch, pooling)
        # Pooling inside the forward (hooks) and pooling the output_hidden_states tuple see the same tensors.
        assert torch.equal(hooks[pooling], tuple_path[pooling]), (arch, pooling)
    # Layer selection (negative indices, repeats) picks the same rows.
    sel = encode_poolings(model, tok, sentences, ("last",), layers=[-1, 0, 2, 0], batch_size=3, progress=False)["last"]
    assert torch.equal(sel, hooks["last"][[-1, 0, 2, 0]])
    assert not model.training


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(torch.dot(a, b) / (a.norm().clamp(min=1e-12) * b.norm().clamp(min=1e-12)))


def reference_metrics(x: torch.Tensor, p: torch.Tensor) -> dict:
    """MEXA, its per-pair outcomes, pair/random cosine and top-1 retrieval both ways, by loops over C[i][j] = cos(x_i, p_j)."""
    n = x.shape[0]
    c = [[_cos(x[i], p[j]) for j in range(n)] for i in range(n)]
    row = [all(c[i][i] > c[i][j] for j in range(n) if j != i) for i in range(n)]
    col = [all(c[i][i] > c[j][i] for j in range(n) if j != i) for i in range(n)]
    wins = [r and k for r, k in zip(row, col, strict=True)]
    return {
        "mexa": sum(wins) / n,
        "mexa_items": "".join("1" if w else "0" for w in wins),
        "cos_pair": sum(c[i][i] for i in range(n)) / n,
        "cos_random": sum(c[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1)),
        "retrieval_top1": sum(row) / n,
        "retrieval_top1_from_pivot": sum(col) / n,
    }


def test_analysis_numbers_match_sentence_by_sentence_reference(tmp_path):
    tok = make_tokenizer(EN + DE + FR)
    model = _model("llama", tok)
    pairs = {"de": list(zip(EN, DE, strict=True)), "fr": list(zip(EN[1:], FR[1:], strict=True))}
    cfg = AnalyzeConfig(output_dir=str(tmp_path), plots=False, pooling=["mean", "last"], centering=["raw", "centred"], batch_size=3,
                        model=ModelConfig(autocast="none"))  # fp32, as the reference (auto is bf16 on AVX512-BF16 CPUs)
    data = analyze_model(model, tok, pairs, cfg)

    texts = list(dict.fromkeys(s for lang in pairs for pair in pairs[lang] for s in pair))  # every sentence once
    ref = reference_states(model, tok, texts)
    row = {s: i for i, s in enumerate(texts)}
    for pooling in ("mean", "last"):
        for centering in ("raw", "centred"):
            st = ref[pooling]
            if centering == "centred":  # minus the mean state of the analysed sentences, per layer
                st = st - st.mean(dim=1, keepdim=True)
            res = data["pooling"][pooling if centering == "raw" else f"{pooling}_centred"]
            for lang, lang_pairs in pairs.items():
                assert res["n"][lang] == len(lang_pairs)
                joined = "\x1e".join(f"{a}\x1f{b}" for a, b in lang_pairs)
                assert res["pairs_digest"][lang] == hashlib.blake2b(joined.encode(), digest_size=8).hexdigest()
                for layer in range(data["num_layers"] + 1):
                    x = st[layer, [row[t] for _, t in lang_pairs]]
                    p = st[layer, [row[e] for e, _ in lang_pairs]]
                    want = reference_metrics(x, p)
                    where = (pooling, centering, lang, layer)
                    assert res["mexa_items"][lang][layer] == want["mexa_items"], where
                    for key in ("mexa", "retrieval_top1", "retrieval_top1_from_pivot"):
                        assert res[key][lang][layer] == pytest.approx(want[key], abs=1e-12), (key, *where)
                    for key in ("cos_pair", "cos_random"):
                        assert res[key][lang][layer] == pytest.approx(want[key], abs=1e-5), (key, *where)
            means = [sum(res["mexa"][lang][k] for lang in pairs) / len(pairs) for k in range(data["num_layers"] + 1)]
            assert res["mexa_mean"] == pytest.approx(means, abs=1e-12)
    # Layer 0, last pooling: sentences ending in the same token have identical embeddings, so exact ties
    # occur and must not count as wins (the reference and the batched path agree on them above).
    assert "0" in data["pooling"]["last"]["mexa_items"]["de"][0]


def reference_greedy(model, tok, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding of one prompt alone, no padding, no cache: argmax of the last position's logits until
    EOS, a newline after some text, or the budget; then the first line, stripped."""
    ids = tok(prompt)["input_ids"]
    new: list[int] = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
        token = int(logits.argmax())
        if token == tok.eos_token_id:
            break
        new.append(token)
        if "\n" in tok.decode(new, skip_special_tokens=True).lstrip():
            break
    text = tok.decode(new, skip_special_tokens=True)
    return text.strip().split("\n", 1)[0].strip()


def test_sorted_batched_generation_equals_unsorted_greedy():
    prompts = [
        f"Translate the following sentences from English to German.\n\nEnglish: {en}\nGerman: {de}\n\nEnglish: {q}\nGerman:"
        for en, de, q in zip(EN, DE, reversed(EN), strict=True)
    ] + ["English: Tea.\nGerman:", "Translate the following sentences from English to German.\n\nEnglish: The cat sleeps.\nGerman:"]
    model, tok = tiny_lm(EN + DE + prompts)
    lengths = [len(tok(p)["input_ids"]) for p in prompts]
    assert lengths != sorted(lengths, reverse=True) and len(set(lengths)) > 3  # sorting reorders; batches are padded
    want = [reference_greedy(model, tok, p, max_new_tokens=10) for p in prompts]
    got = translation.generate(model, tok, prompts, batch_size=3, max_new_tokens=10)
    assert got == want
    assert tok.padding_side == "right"  # generate pads on the left without changing the tokenizer
    assert any(want)  # the model does produce text (the comparison is not between empty strings)


def test_generation_adds_bos_only_to_prompts_without_it():
    """Prompts that already start with BOS text (chat templates) get no second BOS, the others get one, also
    when both kinds share a batch."""
    tok = make_tokenizer(EN + DE)  # adds <s> when encoding
    model = _model("llama", tok)
    plain = ["English: Tea.\nGerman:", "English: The cat sleeps on the warm sofa.\nGerman:"]
    templated = [tok.bos_token + p for p in plain]
    alone = translation.generate(model, tok, plain, batch_size=2, max_new_tokens=6)
    assert translation.generate(model, tok, templated, batch_size=2, max_new_tokens=6) == alone
    assert translation.generate(model, tok, plain + templated, batch_size=3, max_new_tokens=6) == alone + alone
