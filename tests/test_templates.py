"""Translation-row templates (alpaca, chat, free text): exact text and exact x/y spans on three tokenizers.

The three tokenizers are built offline in conftest: byte-level BPE (GPT-2/Qwen style, BOS added), a
Llama-style SentencePiece BPE (Metaspace, BOS, newline as the byte token <0x0A>) and a Unigram with
Metaspace before every piece and no BOS. Expected strings are written here from the spec, not taken
from alignx.
"""

from __future__ import annotations

import pytest

import reference_alignx as ref
from alignx.config import ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, load_config
from alignx.data.readers import Pair
from alignx.data.render import render_translation
from conftest import TOKENIZERS

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FREE = "Translate from {src_name} to {tgt_name}. // Input: {src} // Output: "
PAIRS = [
    Pair("Where is the train station?", "Wo ist der Bahnhof?", "en", "de"),
    Pair("Je voudrais une tasse de thé.", "I would like a cup of tea.", "fr", "en"),
    Pair("The cat sleeps on the warm sofa.", "猫在温暖的沙发上睡觉。", "en", "zh"),
    Pair("Где вокзал?", "Where is the train station?", "ru", "en"),
]


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def tok(request):
    tokenizer = TOKENIZERS[request.param]()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def _expected(template: str, pair: Pair) -> tuple[str, int, int, bool]:
    """(text, where x starts, where y starts, add special tokens?) written from the template's definition."""
    inst = ref.instruction(pair.src_lang, pair.tgt_lang)
    if template == "alpaca":
        before_x = ref.PROMPT_INPUT.split("{input}")[0].replace("{instruction}", inst)
        prompt = ref.PROMPT_INPUT.replace("{instruction}", inst).replace("{input}", pair.src)
        return prompt + pair.tgt, len(before_x), len(prompt), True
    if template == "chat":
        before_x = f"<|im_start|>user\n{inst}\n\n"
        prompt = f"{before_x}{pair.src}<|im_end|>\n<|im_start|>assistant\n"
        return f"{prompt}{pair.tgt}<|im_end|>\n", len(before_x), len(prompt), False
    names = ref.LANGUAGE_NAMES
    before_x = f"Translate from {names[pair.src_lang]} to {names[pair.tgt_lang]}. // Input: "
    prompt = f"{before_x}{pair.src} // Output: "
    return prompt + pair.tgt, len(before_x), len(prompt), True


def _overlapping(offsets: list[tuple[int, int]], lo: int, hi: int) -> tuple[int, int]:
    """[first, last + 1) of the tokens that hold a character of text[lo:hi] (the definition of a span)."""
    hits = [i for i, (a, b) in enumerate(offsets) if a < hi and b > lo and b > a]
    assert hits == list(range(hits[0], hits[-1] + 1))
    return hits[0], hits[-1] + 1


@pytest.mark.parametrize("template", ["alpaca", "chat", FREE])
def test_template_text_and_spans_are_exact(tok, template):
    name = template if template in ("alpaca", "chat") else "free"
    eos = tok.eos_token_id
    for pair in PAIRS:
        ex = render_translation(pair, tok, template, 512, loss_on_prompt=True)
        text, x_lo, y_lo, special = _expected(name, pair)
        enc = tok(text, add_special_tokens=special, return_offsets_mapping=True)
        assert ex.input_ids == enc["input_ids"] + [eos], (name, pair)  # the whole row is this one string + EOS
        offsets = enc["offset_mapping"]
        assert ex.x_span == _overlapping(offsets, x_lo, x_lo + len(pair.src))
        assert ex.y_span == _overlapping(offsets, y_lo, y_lo + len(pair.tgt))
        # the span's tokens hold x (y) and nothing of the template but whitespace
        covered_x = text[offsets[ex.x_span[0]][0] : offsets[ex.x_span[1] - 1][1]]
        covered_y = text[offsets[ex.y_span[0]][0] : offsets[ex.y_span[1] - 1][1]]
        assert covered_x.strip() == pair.src and covered_y.strip() == pair.tgt
        assert ex.labels == ex.input_ids and ex.input_ids[-1] == eos
        if name != "chat":
            assert ex.y_span[1] == len(ex.input_ids) - 1  # y runs to the final EOS, which is outside it
        else:  # the chat template's end-of-turn tokens follow y, outside its span
            assert tok.convert_ids_to_tokens(ex.input_ids[ex.y_span[1]]) == "<|im_end|>"


def test_alpaca_spans_equal_the_reference_prefix_lengths(tok):
    """The reference locates spans by prefix lengths; at the Alpaca template's newlines both agree."""
    for pair in PAIRS:
        ex = render_translation(pair, tok, "alpaca", 512, loss_on_prompt=True)
        ids, src_tgt_index = ref.tokenize_row(tok, ref.instruction(pair.src_lang, pair.tgt_lang), pair.src, pair.tgt)
        assert ex.input_ids == ids
        assert [*ex.x_span, *ex.y_span] == src_tgt_index


def test_chat_template_needed_for_chat(tok):
    bare = TOKENIZERS["byte_bpe"]()
    with pytest.raises(ConfigError, match="data.template=chat but the tokenizer has no chat template"):
        render_translation(PAIRS[0], bare, "chat", 512, True)


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (DataConfig, {"template": "Translate: {text}"}, "data.template must be alpaca, chat, or a text with {src}"),
        (DataConfig, {"template": "{src} in {language}"}, "data.template: unknown field"),
        (DataConfig, {"translation_instruction": "Translate {src}"}, "data.translation_instruction: unknown field"),
        (ModelConfig, {"autocast": "fp8"}, "model.autocast must be auto|bf16|fp16|none"),
        (ModelConfig, {"autocast": "fp16", "dtype": "bfloat16"}, "model.autocast=fp16 needs fp32 master weights"),
        (OptimConfig, {"warmup_steps": -1}, "optim.warmup_steps must be >= 0"),
        (OptimConfig, {"warmup_ratio": 1.5}, r"optim.warmup_ratio must be in \[0, 1\)"),
        (OptimConfig, {"grad_accum": 0}, "optim.batch_size and optim.grad_accum must be >= 1"),
    ],
)
def test_new_settings_are_checked(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs)


def test_template_presets_and_free_text_load():
    cfg = load_config(TrainConfig, [], ["data.template=alpaca", "model.autocast=bf16", "model.dtype=float32"])
    assert cfg.data.template == "alpaca" and cfg.model.autocast == "bf16"
    assert load_config(TrainConfig, [], ["data.template={instruction} {src} =>"]).data.template == "{instruction} {src} =>"
