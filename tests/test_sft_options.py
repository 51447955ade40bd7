"""Stage-2 SFT options: the loss on every assistant turn or the last one (data.assistant_turns), a chat template
override (data.chat_template) and LoRA modules_to_save.

Expected label masks are built here from the conversation by explicit concatenation: each message's tokens
tokenised on its own between the template's special tokens (chat), or prefix lengths of the hand-written Alpaca
text at its newlines, never with alignx's rendering helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignx.config import ConfigError, ModelConfig, TrainConfig, load_config
from alignx.data.dataset import examples as data_examples
from alignx.data.readers import Instruction
from alignx.data.render import render_instruction
from alignx.model import load as mload
from alignx.objectives.ntp import IGNORE_INDEX
from alignx.train import stage
from conftest import make_tokenizer, save_tiny_model, write_pairs

TAGS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TWO_TURNS = [
    {"role": "user", "content": "Where is the train station?"},
    {"role": "assistant", "content": "Wo ist der Bahnhof?"},
    {"role": "user", "content": "I would like a cup of tea."},
    {"role": "assistant", "content": "Ich hätte gern eine Tasse Tee."},
]
THREE_TURNS = [
    {"role": "system", "content": "Translate into German."},
    {"role": "user", "content": "The cat sleeps."},
    {"role": "assistant", "content": "Die Katze schläft."},
    {"role": "user", "content": "On the warm sofa."},
    {"role": "assistant", "content": "Auf dem warmen Sofa."},
    {"role": "user", "content": "Where is the station?"},
    {"role": "assistant", "content": "Wo ist der Bahnhof?"},
]


@pytest.fixture(scope="module")
def chat_tok():
    tok = make_tokenizer()
    tok.add_tokens(TAGS, special_tokens=True)
    tok.chat_template = TEMPLATE
    return tok


def expected_chat(tok, msgs: list[dict[str, str]], all_turns: bool) -> tuple[list[int], list[int]]:
    """ids and labels of TEMPLATE by hand: <|role|> + content + <|end|> per message, then EOS; an assistant message
    that carries the loss labels its content and <|end|> (its <|assistant|> tag is the prompt asking for it)."""
    ids: list[int] = []
    labels: list[int] = []
    end = tok.convert_tokens_to_ids("<|end|>")
    for i, m in enumerate(msgs):
        tag = [tok.convert_tokens_to_ids(f"<|{m['role']}|>")]
        body = tok(m["content"], add_special_tokens=False)["input_ids"] + [end]
        trained = m["role"] == "assistant" and (all_turns or i == len(msgs) - 1)
        ids += tag + body
        labels += [IGNORE_INDEX] + (body if trained else [IGNORE_INDEX] * len(body))
    return ids + [tok.eos_token_id], labels + [tok.eos_token_id]


@pytest.mark.parametrize("msgs", [TWO_TURNS, THREE_TURNS], ids=["2-turn", "3-turn"])
@pytest.mark.parametrize("all_turns", [False, True], ids=["last", "all"])
def test_chat_label_masks_last_or_every_assistant_turn(chat_tok, msgs, all_turns):
    ids, labels = expected_chat(chat_tok, msgs, all_turns)
    ex = render_instruction(Instruction(msgs), chat_tok, 512, use_chat_template=True, all_turns=all_turns)
    assert ex.input_ids == ids
    assert ex.labels == labels
    n_answers = sum(m["role"] == "assistant" for m in msgs)
    trained = sum(1 for t in ex.labels if t == chat_tok.convert_tokens_to_ids("<|end|>"))
    assert trained == (n_answers if all_turns else 1)


PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"


def expected_alpaca(tok, msgs: list[dict[str, str]], all_turns: bool) -> tuple[list[int], list[int]]:
    """The Alpaca-LoRA conversation written out by hand; answer spans as prefix lengths (token counts of the text
    up to each answer's first and past its last character; both edges sit at a newline or sentence end)."""
    tag = {"system": "### System:\n", "user": "### Instruction:\n", "assistant": "### Response:\n"}
    text, spans = PREAMBLE, []
    for i, m in enumerate(msgs):
        text += tag[m["role"]]
        start = len(text)
        text += m["content"]
        if m["role"] == "assistant" and (all_turns or i == len(msgs) - 1):
            spans.append((start, len(text)))
        if i < len(msgs) - 1:
            text += "\n\n"
    ids = tok(text)["input_ids"] + [tok.eos_token_id]
    count = [len(tok(text[:c])["input_ids"]) for span in spans for c in span]
    keep = set()
    for k in range(0, len(count), 2):
        keep |= set(range(count[k], count[k + 1]))
    keep |= set(range(count[-2], len(ids)))  # the last answer runs through the final EOS
    return ids, [t if i in keep else IGNORE_INDEX for i, t in enumerate(ids)]


@pytest.mark.parametrize("msgs", [TWO_TURNS, THREE_TURNS], ids=["2-turn", "3-turn"])
@pytest.mark.parametrize("all_turns", [False, True], ids=["last", "all"])
def test_alpaca_label_masks_last_or_every_assistant_turn(tokenizer, msgs, all_turns):
    ids, labels = expected_alpaca(tokenizer, msgs, all_turns)
    ex = render_instruction(Instruction(msgs), tokenizer, 512, use_chat_template=False, all_turns=all_turns)
    assert ex.input_ids == ids and ex.labels == labels


def test_all_turns_keeps_a_row_whose_last_answer_is_cut(chat_tok):
    ids, labels = expected_chat(chat_tok, TWO_TURNS, all_turns=True)
    cut = len(expected_chat(chat_tok, TWO_TURNS[:3], all_turns=True)[0]) - 1  # up to the second user turn
    assert render_instruction(Instruction(TWO_TURNS), chat_tok, cut, all_turns=False) is None  # no label left
    ex = render_instruction(Instruction(TWO_TURNS), chat_tok, cut, all_turns=True)
    assert ex.input_ids == ids[:cut] and ex.labels == labels[:cut] and any(t != IGNORE_INDEX for t in ex.labels)


def test_all_turns_refuses_a_template_that_rewrites_earlier_turns(chat_tok):
    hides = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<|assistant|>...<|end|>"
             "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    old, chat_tok.chat_template = chat_tok.chat_template, hides
    try:
        assert render_instruction(Instruction(TWO_TURNS), chat_tok, 512, all_turns=False) is not None
        with pytest.raises(ConfigError, match=r"data\.assistant_turns=all: the chat template renders an earlier turn differently"):
            render_instruction(Instruction(TWO_TURNS), chat_tok, 512, all_turns=True)
    finally:
        chat_tok.chat_template = old


# --------------------------------------------------------------------------------------------
# data.chat_template
# --------------------------------------------------------------------------------------------

OVERRIDE = "{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[ASSISTANT] {% endif %}"


def _chat_rows(path: Path) -> Path:
    path.write_text("".join(json.dumps({"messages": TWO_TURNS}, ensure_ascii=False) + "\n" for _ in range(4)), encoding="utf-8")
    return path


def test_chat_template_override_is_used_and_saved(tmp_path, one_thread):
    model_dir = save_tiny_model(tmp_path / "model")
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(model_dir)
    own.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # the model's own, to be replaced
    own.save_pretrained(model_dir)
    template_file = tmp_path / "override.jinja"
    template_file.write_text(OVERRIDE, encoding="utf-8")
    cfg = load_config(TrainConfig, [], [
        "stage=2", f"model.name_or_path={model_dir}", f"output_dir={tmp_path / 'out'}", f"data.instructions=[{_chat_rows(tmp_path / 'chat.jsonl')}]",
        f"data.chat_template={template_file}", "data.assistant_turns=all", "optim.max_steps=1", "optim.batch_size=2",
        "report_to=none", "save_steps=1000", "logging_steps=1",
    ])  # fmt: skip
    tok = mload.load_tokenizer(cfg.model, chat_template=cfg.data.chat_template)
    assert tok.chat_template == OVERRIDE
    first = data_examples(stage.build_dataset(cfg, tok).dataset)[0]
    text = tok.decode(first.input_ids)
    assert text.startswith("[USER] Where is the train station?\n[ASSISTANT] Wo ist der Bahnhof?\n[USER]")
    answers = tok.decode([t for t in first.labels if t != IGNORE_INDEX])
    assert "Wo ist der Bahnhof?" in answers and "Tasse Tee." in answers and "train station" not in answers
    summary = stage.main(cfg)
    assert AutoTokenizer.from_pretrained(summary["final_model"]).chat_template == OVERRIDE  # final/ keeps the template it trained with
    # the template text itself works as the setting too
    inline = load_config(TrainConfig, [], [f"data.chat_template={OVERRIDE}"])
    assert mload.load_tokenizer(ModelConfig(name_or_path=str(model_dir)), chat_template=inline.data.chat_template).chat_template == OVERRIDE


@pytest.mark.parametrize(
    ("value", "extra", "message"),
    [
        ("missing.jinja", [], r"data\.chat_template=missing\.jinja: no such file; give a \.jinja file or the template text"),
        ("{% for m in messages %}{{ m.content }}", [], r"data\.chat_template:1: invalid Jinja chat template"),
        ("{{ messages }}", ["data.use_chat_template=false"], r"data\.chat_template is set but unused"),
    ],
)
def test_bad_chat_template_settings(value, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, [], [f"data.chat_template={value}", *extra])


def test_bad_jinja_file_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}\n{{ m.content }\n{% endfor %}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jinja:2: invalid Jinja chat template"):
        load_config(TrainConfig, [], [f"data.chat_template={bad}"])


# --------------------------------------------------------------------------------------------
# lora.modules_to_save
# --------------------------------------------------------------------------------------------


def _lora_cfg(model_dir: Path, out: Path, pairs: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, [], [
        f"model.name_or_path={model_dir}", f"output_dir={out}", f"data.parallel=[{pairs}]", "optim.max_steps=3",
        "optim.batch_size=4", "optim.lr=5e-3", "optim.warmup_ratio=0", "report_to=none", "save_steps=1000", "logging_steps=1",
        "lora.enabled=true", "lora.r=4", *extra,
    ])  # fmt: skip


def test_modules_to_save_are_trainable_saved_and_merged(tmp_path, one_thread):
    from transformers import AutoModelForCausalLM

    from alignx import export

    model_dir = save_tiny_model(tmp_path / "llama")  # untied head
    base = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    cfg = _lora_cfg(model_dir, tmp_path / "out", write_pairs(tmp_path / "pairs.jsonl"), "lora.modules_to_save=[lm_head]")
    lm = mload.apply_lora(AutoModelForCausalLM.from_pretrained(model_dir), cfg.lora)
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert "base_model.model.lm_head.modules_to_save.default.weight" in trainable
    assert not any("original_module" in n or "embed_tokens" in n for n in trainable)

    summary = stage.main(cfg)
    adapter = load_file(tmp_path / "out" / "final_adapter" / "adapter_model.safetensors")
    saved = [k for k in adapter if "lm_head" in k and "lora" not in k]
    assert len(saved) == 1
    trained = adapter[saved[0]]
    assert not torch.equal(trained, base["lm_head.weight"])  # it was trained
    merged = AutoModelForCausalLM.from_pretrained(summary["final_model"]).state_dict()
    assert torch.equal(merged["lm_head.weight"], trained) and torch.equal(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    exported = export.main(export.ExportConfig(adapter_dir=str(tmp_path / "out" / "final_adapter"), base_model=str(model_dir),
                                               output_dir=str(tmp_path / "exported")))
    assert torch.equal(AutoModelForCausalLM.from_pretrained(exported["merged"]).state_dict()["lm_head.weight"], trained)


def test_modules_to_save_keep_tied_embeddings_tied(tmp_path, one_thread):
    from transformers import AutoModelForCausalLM

    model_dir = save_tiny_model(tmp_path / "gemma3", "gemma3")  # its head is tied to the embeddings
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    assert base.get_output_embeddings().weight is base.get_input_embeddings().weight
    cfg = _lora_cfg(model_dir, tmp_path / "out", write_pairs(tmp_path / "pairs.jsonl"), "lora.modules_to_save=[embed_tokens]")
    summary = stage.main(cfg)
    merged = AutoModelForCausalLM.from_pretrained(summary["final_model"])
    emb = merged.get_input_embeddings().weight
    assert merged.get_output_embeddings().weight is emb  # still tied, to the trained embeddings
    assert not torch.equal(emb, base.get_input_embeddings().weight)


def test_modules_to_save_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"lora\.modules_to_save needs lora\.enabled=true"):
        load_config(TrainConfig, [], ["lora.modules_to_save=[lm_head]"])
    from transformers import AutoConfig

    model_dir = save_tiny_model(tmp_path / "llama")
    cfg = load_config(TrainConfig, [], [f"model.name_or_path={model_dir}", "lora.enabled=true", "lora.modules_to_save=[output_layer]"])
    with pytest.raises(ConfigError, match=r"lora\.modules_to_save: no module named 'output_layer' in LlamaForCausalLM \(e\.g\. .*lm_head"):
        mload.check_model_settings(AutoConfig.from_pretrained(model_dir), cfg.model, cfg.lora)
