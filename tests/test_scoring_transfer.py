"""Continuation log-likelihoods with the LM head at the scored positions only, and the zero-shot transfer task.

Expected values come from a plain forward of each request alone (no batching, no padding, the full logits) and a
loop over its continuation tokens: not from the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from alignx.data.readers import DataError
from alignx.eval import scoring, transfer
from conftest import ARCHS, make_tokenizer, tiny_config


def _model(arch: str):
    from transformers import AutoModelForCausalLM

    tok = make_tokenizer()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(arch, len(tok))).eval(), tok


def _alone(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """Sum of log p(cont token) from one unpadded forward of ctx + cont, token by token."""
    ids = torch.tensor([ctx + cont[:-1]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    total, greedy = 0.0, True
    for k, tok in enumerate(cont):
        row = logits[len(ctx) - 1 + k]
        total += float(row[tok] - torch.logsumexp(row, 0))
        greedy &= int(row.argmax()) == tok
    return total, greedy


@pytest.mark.parametrize("arch", ARCHS)
def test_continuation_logprobs_match_a_plain_forward(arch):
    model, tok = _model(arch)
    texts = [("The cat sat on", " the mat"), ("A", " b c d e f"), ("Translate to German: house", " Haus"),
             ("The cat sat on", " the"), ("Question: 2 + 2?\nAnswer:", " 4"), ("Question: 2 + 2?\nAnswer:", " 5")]
    requests = [scoring.encode_pair(tok, c, x) for c, x in texts]
    got = scoring.continuation_logprobs(model, requests, batch_size=4, pad_id=tok.pad_token_id)
    for (ctx, cont), (logp, greedy) in zip(requests, got, strict=True):
        want, want_greedy = _alone(model, ctx, cont)
        assert logp == pytest.approx(want, abs=1e-4)
        assert greedy == want_greedy


def test_encode_pair_moves_trailing_space_and_splits_after_context():
    tok = make_tokenizer()
    ctx, cont = scoring.encode_pair(tok, "Answer: ", "yes")
    assert ctx == tok("Answer:")["input_ids"]
    assert ctx + cont == tok("Answer: yes")["input_ids"]


def test_one_token_choices_share_a_row():
    model, tok = _model("llama")
    ctx = tok("Question: which?\nAnswer:")["input_ids"]
    requests = [(ctx, [tok.convert_tokens_to_ids(t)]) for t in ("a", "b", "c", "d")]
    calls = []
    hook = model.register_forward_hook(lambda m, a, k, o: calls.append(k["input_ids"].shape[0]), with_kwargs=True)
    got = scoring.continuation_logprobs(model, requests, batch_size=8, pad_id=tok.pad_token_id)
    hook.remove()
    assert calls == [1]  # four requests, one row
    for (c, x), (logp, _) in zip(requests, got, strict=True):
        assert logp == pytest.approx(_alone(model, c, x)[0], abs=1e-4)


def test_max_length_truncates_context_from_the_left():
    model, tok = _model("llama")
    ctx, cont = tok("one two three four five six seven")["input_ids"], tok(" eight")["input_ids"]
    limit = len(cont) + 2
    (logp, _), = scoring.continuation_logprobs(model, [(ctx, cont)], max_length=limit, pad_id=tok.pad_token_id)
    keep = (ctx + cont)[-(limit + 1):]
    assert len(keep) < len(ctx + cont)
    assert logp == pytest.approx(_alone(model, keep[: len(keep) - len(cont)], cont)[0], abs=1e-4)
    with pytest.raises(ValueError, match="longer than max_length"):
        scoring.continuation_logprobs(model, [(ctx, cont)], max_length=len(cont) - 1)


def test_continuation_lm_equals_hflm_on_lm_eval_requests():
    from lm_eval.models.huggingface import HFLM

    model, tok = _model("llama")
    reqs = [(("Is the sky blue?", " yes"), None), (("Is the sky blue?", " no"), None), (("2 + 2 =", " 4 indeed"), None)]
    plain = HFLM(pretrained=model, tokenizer=tok, batch_size=2)
    fast = scoring.continuation_lm_class()(pretrained=model, tokenizer=tok, batch_size=2)
    encoded = [((c, x), *plain._encode_pair(c, x)) for (c, x), _ in reqs]
    want = plain._loglikelihood_tokens(encoded, disable_tqdm=True)
    got = fast._loglikelihood_tokens(encoded, disable_tqdm=True)
    for (a, ga), (b, gb) in zip(got, want, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb


def _transfer_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_transfer_accuracy_and_gap_by_independent_scoring(tmp_path):
    model, tok = _model("llama")
    instr = "Which app is this from?"
    rows = [
        {"lang": "en", "instruction": instr, "input": "Sum the cells", "choices": ["Calc", "Writer"], "label": 0, "cluster": "s1"},
        {"lang": "en", "instruction": instr, "input": "Insert a page break", "choices": ["Calc", "Writer"], "label": 1, "cluster": "s2"},
        {"lang": "de", "instruction": instr, "input": "Zellen summieren", "choices": ["Calc", "Writer"], "label": 0, "cluster": "s1"},
        {"lang": "de", "instruction": instr, "input": "Seitenumbruch einfügen", "choices": ["Calc", "Writer"], "label": 1, "cluster": "s2"},
        {"lang": "de", "instruction": instr, "input": "Eine Formel", "choices": ["Calc", "Writer"], "label": 0, "cluster": "s3"},
    ]
    sets = transfer.read_transfer_files([str(_transfer_file(tmp_path / "t.jsonl", rows))])
    result = transfer.run_transfer(model, tok, sets, use_chat_template=False, batch_size=3)
    # expected: the Alpaca-LoRA prompt (the tokenizer has no chat template), each choice scored alone
    expected: dict[str, list[int]] = {"en": [], "de": []}
    for r in rows:
        prompt = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                  "Write a response that appropriately completes the request.\n\n"
                  f"### Instruction:\n{instr}\n\n### Input:\n{r['input']}\n\n### Response:\n")
        ctx = tok(prompt)["input_ids"]
        scores = [_alone(model, ctx, tok(prompt + c)["input_ids"][len(ctx):])[0] for c in r["choices"]]
        expected[r["lang"]].append(int(max(range(2), key=lambda i: scores[i]) == r["label"]))
    for lang in ("en", "de"):
        assert result["acc"][lang]["items"]["correct"] == expected[lang]
        assert result["acc"][lang]["acc"] == pytest.approx(sum(expected[lang]) / len(expected[lang]))
        assert result["acc"][lang]["n"] == len(expected[lang])
    assert result["acc"]["de"]["chance"] == pytest.approx(2 / 3)
    assert result["acc"]["de"]["items"]["cluster"] == ["s1", "s2", "s3"]
    assert result["gap"]["de"] == pytest.approx(sum(expected["en"]) / 2 - sum(expected["de"]) / 3)
    assert not math.isnan(result["gap"]["de"])


@pytest.mark.parametrize(("row", "msg"), [
    ({"lang": "de", "instruction": "q", "input": "x", "choices": ["a"], "label": 0}, "at least 2"),
    ({"lang": "de", "instruction": "q", "input": "x", "choices": ["a", "b"], "label": 2}, "index into choices"),
    ({"lang": "xx-nope", "instruction": "q", "input": "x", "choices": ["a", "b"], "label": 0}, ""),
    ({"lang": "de", "instruction": "", "input": "x", "choices": ["a", "b"], "label": 0}, "instruction"),
])
def test_transfer_file_errors_name_file_and_line(tmp_path, row, msg):
    path = _transfer_file(tmp_path / "bad.jsonl", [row])
    with pytest.raises(DataError, match=f"bad.jsonl:1.*{msg}"):
        transfer.read_transfer_files([str(path)])
