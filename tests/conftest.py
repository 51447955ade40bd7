"""Shared fixtures: tiny random models of several architectures and an offline fast tokenizer."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# Rendered training rows are cached per data + tokenizer + settings (alignx.data.dataset): tests use a cache of their
# own, removed at exit (subprocesses the tests start inherit it).
os.environ["ALIGNX_DATA_CACHE"] = tempfile.mkdtemp(prefix="alignx-test-data-")
atexit.register(shutil.rmtree, os.environ["ALIGNX_DATA_CACHE"], True)

SENTENCES = [
    ("The cat sleeps on the warm sofa.", "Die Katze schläft auf dem warmen Sofa.", "de"),
    ("I would like a cup of tea.", "Ich hätte gern eine Tasse Tee.", "de"),
    ("Where is the train station?", "Wo ist der Bahnhof?", "de"),
    ("The cat sleeps on the warm sofa.", "Le chat dort sur le canapé chaud.", "fr"),
    ("I would like a cup of tea.", "Je voudrais une tasse de thé.", "fr"),
    ("Where is the train station?", "Où est la gare ?", "fr"),
    ("The cat sleeps on the warm sofa.", "Кошка спит на тёплом диване.", "ru"),
    ("I would like a cup of tea.", "Я хотел бы чашку чая.", "ru"),
    ("Where is the train station?", "Где вокзал?", "ru"),
    ("The cat sleeps on the warm sofa.", "猫在温暖的沙发上睡觉。", "zh"),
    ("I would like a cup of tea.", "我想要一杯茶。", "zh"),
    ("Where is the train station?", "火车站在哪里？", "zh"),
]


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmark scripts are not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"alignx_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_tokenizer(extra_texts: list[str] | None = None):
    """A byte-level BPE fast tokenizer trained offline on the test sentences (BOS/EOS/PAD set)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for s, t, _ in SENTENCES for t in (s, t)] + (extra_texts or [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts * 5, trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def _template_texts() -> list[str]:
    """Training text for the tokenizers below: the test sentences and the prompt words they will meet."""
    prompt = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request. ### Instruction: ### Input: ### Response: "
        "Translate the following sentences from English to German French Russian Chinese. // Input: // Output:"
    )
    return [t for s, t, _ in SENTENCES for t in (s, t)] + [prompt]


def make_sentencepiece_tokenizer():
    """A Llama-style SentencePiece BPE tokenizer, built offline: transformers' LlamaTokenizer (Metaspace
    '▁', BOS, byte fallback: a newline is the byte token <0x0A>, as in Llama-2) over a vocabulary and
    merges trained here."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens], show_progress=False)
    tok.train_from_iterator([t.replace("\n", " ") for t in _template_texts()] * 3, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = LlamaTokenizer(vocab=model["vocab"], merges=merges, add_bos_token=True)
    tokenizer.pad_token = "<unk>"  # as Alpaca-LoRA pads Llama (id 0)
    return tokenizer


def make_unigram_tokenizer():
    """A SentencePiece-Unigram-style tokenizer (Metaspace before every piece, newlines isolated, no BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Metaspace(prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(_template_texts() * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


TOKENIZERS = {
    "byte_bpe": lambda: make_tokenizer([_template_texts()[-1]]),
    "sentencepiece_bpe": make_sentencepiece_tokenizer,
    "unigram": make_unigram_tokenizer,
}


def tiny_config(arch: str, vocab_size: int):
    import transformers as T

    common = dict(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if arch == "llama":
        return T.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, **common)
    if arch == "qwen2":
        return T.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, **common)
    if arch == "mistral":
        return T.MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, **common)
    if arch == "gemma3":
        return T.Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=8, **common)
    if arch == "gpt2":
        return T.GPT2Config(n_embd=32, n_layer=4, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    raise ValueError(arch)


def tiny_lm(texts: list[str]):
    """A 2-layer random Llama and a byte-level BPE tokenizer trained here on ``texts`` (offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval(), tokenizer


ARCHS = ["llama", "qwen2", "mistral", "gemma3", "gpt2"]


def save_tiny_model(path: Path, arch: str = "llama") -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tok = make_tokenizer()
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tok)))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def message(err: str, command: str) -> str:
    """The one line alignx printed on stderr (progress bars interleave with \\r; their lines are skipped)."""
    lines = [part.strip() for line in err.splitlines() for part in line.split("\r")]
    ours = [line for line in lines if line.startswith(f"alignx {command}:")]
    assert len(ours) == 1 and "Traceback" not in err, err[-3000:]
    return ours[0]


def write_pairs(path: Path, rows=SENTENCES) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for src, tgt, lang in rows:
            fh.write(json.dumps({"src": src, "tgt": tgt, "src_lang": "en", "tgt_lang": lang}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module of many tiny trainings: thread start-up and spinning would cost more than the
    work (on a busy 2-core machine 50x more). Subprocesses get OMP_NUM_THREADS=1 to match, so runs stay bit-identical."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def tiny_llama_dir(tmp_path: Path) -> Path:
    return save_tiny_model(tmp_path / "tiny-llama", "llama")


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "pairs.jsonl")
