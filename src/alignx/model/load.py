"""The one place that loads, casts and wraps models (PEFT), and finds layers generically.

Nothing here looks at the model's name: decoder layers, hidden size and the output head are found
from the config and the module tree, so any Hugging Face causal LM works (Llama, Qwen2, Mistral,
Gemma, GPT-2, ...).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignx.config import ConfigError, LoraConfig, ModelConfig, chat_template_text

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """``fp32_master`` means float32 weights; autocast may run them in bf16 (see :func:`resolve_autocast`)."""
    return torch.float32 if name == "fp32_master" else _DTYPES[name]


# CPU flags (Linux /proc/cpuinfo) of native bf16 matmuls: AVX512-BF16 (Intel Cooper Lake+, AMD Zen 4+) and AMX.
# Without them oneDNN emulates bf16 on AVX512, slower than fp32, so auto keeps fp32 there.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The :data:`CPU_BF16_FLAGS` this CPU reports (empty where /proc/cpuinfo is missing: macOS, Windows)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def bf16_supported(device_type: str | None = None) -> bool:
    """Native bf16 on ``device_type`` (default: cuda when available, else cpu): a GPU that supports it, or a CPU
    with AVX512-BF16 / AMX (:func:`cpu_bf16_flags`)."""
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device_type == "cpu" and bool(cpu_bf16_flags())


def resolve_autocast(cfg: ModelConfig, device_type: str | None = None) -> str:
    """The mixed precision to run: ``bf16``, ``fp16`` or ``none`` (see ``model.autocast``).

    ``auto`` is bf16 over fp32 master weights where the device computes bf16 natively (a GPU that supports it,
    a CPU with AVX512-BF16 or AMX), else none. ``fp16`` needs a GPU: accelerate silently skips fp16 autocast on
    the CPU, so asking for it there is an error rather than a quiet fp32 run.
    """
    if cfg.autocast == "auto":
        return "bf16" if cfg.dtype == "fp32_master" and bf16_supported(device_type) else "none"
    if cfg.autocast == "fp16" and not torch.cuda.is_available():
        raise ConfigError("model.autocast=fp16 needs a CUDA GPU (accelerate runs fp16 autocast only there); on CPU use model.autocast=bf16 or none")
    return cfg.autocast


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (cpu for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def inference_precision(model: nn.Module, cfg: ModelConfig, generation: bool = False) -> str:
    """The autocast analysis and evaluation forwards run under (bf16 | fp16 | none), for the device the model is on.

    ``generation``: token-by-token decoding. On a CPU it stays fp32 whatever ``model.autocast`` says: each decoding
    step is a few rows, memory-bound, and bf16 autocast made few-shot translation 0.87x as fast on Gemma-3-270M
    (``benchmarks/results/cpu_gemma3_analysis_bf16.json``; same outputs), while batched forwards gain 2.2x."""
    device = model_device(model).type
    if generation and device == "cpu":
        return "none"
    return resolve_autocast(cfg, device) if device in ("cpu", "cuda") else "none"


def inference_autocast(model: nn.Module, cfg: ModelConfig, generation: bool = False) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` as :func:`inference_precision` decides (autocast switched off for ``none``, so an outer
    autocast does not leak in). Training gets its precision from the trainer (accelerate)."""
    device = model_device(model).type
    mode = inference_precision(model, cfg, generation)
    if device not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    if mode == "none":
        return torch.autocast(device_type=device, enabled=False)
    return torch.autocast(device_type=device, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def resolve_path(name_or_path: str) -> tuple[str, str | None]:
    """Map ``packaged:<key>`` to a local directory (models shipped in PyPI packages); else pass through."""
    if name_or_path.startswith("packaged:"):
        from alignx.model.offline import resolve_model

        return resolve_model(name_or_path)
    return name_or_path, None


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


# Weight files a local Hugging Face model directory holds (one of them).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_path(cfg: ModelConfig, need_weights: bool = True) -> Any:
    """The HF config of ``model.name_or_path``, or a one-line ConfigError saying why it is not a causal LM.

    Cheap (reads config.json and the safetensors headers, loads no weights), so every command calls it
    before any work or write. ``need_weights=False`` accepts a local directory holding only config.json
    (a model to be built with random weights)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not cfg.name_or_path:
        raise ConfigError("model.name_or_path is empty: give a hub id, a local model directory or packaged:<name>")
    where = f"model.name_or_path={cfg.name_or_path}"
    path, gguf = resolve_path(cfg.name_or_path)
    gguf = gguf or cfg.gguf_file
    local = Path(path)
    if local.exists():
        if not local.is_dir():
            raise ConfigError(f"{where}: a file, not a model directory; give the directory holding config.json and the weights")
        if gguf:
            if not (local / gguf).is_file():
                raise ConfigError(f"model.gguf_file={gguf}: no such file in {local}")
        else:
            if not (local / "config.json").is_file():
                raise ConfigError(f"{where}: no config.json, so not a Hugging Face model directory")
            if need_weights:
                if not any((local / f).is_file() for f in WEIGHT_FILES):
                    raise ConfigError(f"{where}: no weights ({', '.join(WEIGHT_FILES)})")
                _check_safetensors(local)
    elif path.startswith((".", "/", "~")) or path.count("/") > 1:  # a path, not a hub id (owner/name)
        raise ConfigError(f"{where}: no such directory")
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        config = AutoConfig.from_pretrained(path, **kwargs)
    except Exception as e:  # noqa: BLE001 - whatever transformers raises, the input is at fault: one line
        if needs_remote_code(e, cfg):
            raise ConfigError(f"{where}: {REMOTE_CODE_HINT}") from None
        hint = "" if local.exists() else " (not a local directory; a hub id needs the network or the HF cache)"
        raise ConfigError(f"{where}: cannot read the model config{hint}: {first_line(e)}") from None
    remote = "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not (remote and cfg.trust_remote_code):
        raise ConfigError(f"{where}: a {config.model_type!r} model, which transformers cannot load as a causal LM")
    return config


REMOTE_CODE_HINT = ("the model comes with its own Python code; set model.trust_remote_code=true to run it (only for "
                    "code you trust: it executes on this machine)")


def needs_remote_code(e: BaseException, cfg: ModelConfig) -> bool:
    """Whether transformers refused ``e`` because the model's own code may not run (model.trust_remote_code=false)."""
    text = str(e)
    return not cfg.trust_remote_code and ("trust_remote_code" in text or "contains custom code" in text)


def _check_safetensors(model_dir: Path) -> None:
    """Every *.safetensors file has a readable header (a truncated or foreign file fails here, not mid-load)."""
    from safetensors import safe_open

    for f in sorted(model_dir.glob("*.safetensors")):
        try:
            with safe_open(f, framework="pt") as fh:
                fh.keys()
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
            raise ConfigError(f"{f}: not a readable safetensors file ({first_line(e)}); re-save or re-download the model") from None


def check_model_settings(config: Any, model: ModelConfig, lora: LoraConfig | None = None, align_layer: int | None = None,
                         max_length: int | None = None) -> None:
    """Settings transformers or peft would reject only after loading the weights, checked on a weightless
    (meta-device) copy of the model: attention kernel, gradient checkpointing, LoRA targets, align layer."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": model.trust_remote_code}
    if model.attn_implementation:
        kwargs["attn_implementation"] = model.attn_implementation
    try:
        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(config, **kwargs)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"model.attn_implementation={model.attn_implementation}: {first_line(e)}") from None
    if model.gradient_checkpointing and not getattr(meta, "supports_gradient_checkpointing", False):
        raise ConfigError(f"model.gradient_checkpointing=true: {type(meta).__name__} does not support it; set it to false")
    if align_layer is not None:
        try:
            resolve_align_layer(meta, align_layer)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if max_length is not None:
        limit = next((getattr(text_config(meta), k) for k in ("max_position_embeddings", "n_positions") if isinstance(getattr(text_config(meta), k, None), int)), None)
        if limit is not None and max_length > limit:
            raise ConfigError(f"data.max_length={max_length} exceeds the model's {limit} positions; lower data.max_length")
    if lora is not None and lora.enabled:
        names = [n for n, _ in meta.named_modules()]
        for wanted in lora.modules_to_save:
            if not any(n == wanted or n.endswith("." + wanted) for n in names):
                raise ConfigError(f"lora.modules_to_save: no module named {wanted!r} in {type(meta).__name__} "
                                  f"(e.g. {', '.join(sorted({n.rsplit('.', 1)[-1] for n in names if 'embed' in n or 'head' in n})[:4])})")
        if lora.target_modules != "all-linear":  # PEFT needs only one name to match: a typo would train nothing there
            leaves = sorted({n.rsplit(".", 1)[-1] for n, m in meta.named_modules() if isinstance(m, nn.Linear)})
            for wanted in (t.strip() for t in str(lora.target_modules).split(",") if t.strip()):
                if not any(n == wanted or n.endswith("." + wanted) for n in names):
                    close = difflib.get_close_matches(wanted, leaves, n=3, cutoff=0.5)
                    hint = f"did you mean {', '.join(close)}?" if close else f"its linear layers: {', '.join(leaves[:10])}"
                    raise ConfigError(f"lora.target_modules: no module named {wanted!r} in {type(meta).__name__} ({hint})")
        try:
            apply_lora(meta, lora)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"lora.target_modules={lora.target_modules}: {first_line(e)}") from None


def load_tokenizer(cfg: ModelConfig, padding_side: str = "right", chat_template: str | None = None) -> Any:
    """The tokenizer of ``cfg`` with a pad token; ``chat_template`` (``data.chat_template``: Jinja text or a
    .jinja file) replaces its chat template, so rendering and the saved tokenizer use it."""
    from transformers import AutoTokenizer

    path, gguf = resolve_path(cfg.tokenizer or cfg.name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    gguf = gguf or (cfg.gguf_file if not cfg.tokenizer else None)
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        tok = AutoTokenizer.from_pretrained(path, **kwargs)
    except Exception as e:  # noqa: BLE001 - a directory without a usable tokenizer: one line
        key = "model.tokenizer" if cfg.tokenizer else "model.name_or_path"
        if needs_remote_code(e, cfg):
            raise ConfigError(f"{key}={cfg.tokenizer or cfg.name_or_path}: {REMOTE_CODE_HINT}") from None
        raise ConfigError(f"{key}={cfg.tokenizer or cfg.name_or_path}: cannot load a tokenizer: {first_line(e)}") from None
    if tok.pad_token_id is None:
        # Causal LMs often ship without a pad token; padding positions are masked everywhere.
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    if chat_template is not None:
        tok.chat_template = chat_template_text(chat_template)
    return tok


def load_model(cfg: ModelConfig) -> nn.Module:
    from transformers import AutoModelForCausalLM

    if not cfg.name_or_path:
        raise ConfigError("model.name_or_path is empty: give a hub id, a local directory or packaged:<name>")
    path, gguf = resolve_path(cfg.name_or_path)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    if gguf or cfg.gguf_file:
        kwargs["gguf_file"] = gguf or cfg.gguf_file
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:  # not a model / corrupt weights: one line (ALIGNX_DEBUG=1 shows the traceback)
        if needs_remote_code(e, cfg):
            raise ConfigError(f"model.name_or_path={cfg.name_or_path}: {REMOTE_CODE_HINT}") from e
        raise ConfigError(f"model.name_or_path={cfg.name_or_path}: cannot load the model: {first_line(e)}") from e


def load_model_and_tokenizer(cfg: ModelConfig, padding_side: str = "right") -> tuple[nn.Module, Any]:
    """Load a causal LM and its tokenizer (pad token set); the model is in eval mode."""
    model = load_model(cfg)
    tok = load_tokenizer(cfg, padding_side=padding_side)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets: str | list[str] = cfg.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM",
        # trained in full and saved with the adapter; a head tied to the embeddings stays tied to their trained copy
        modules_to_save=list(cfg.modules_to_save) or None, ensure_weight_tying=bool(cfg.modules_to_save) and tied,
    )
    return get_peft_model(model, peft_cfg)


def freeze_embeddings(model: nn.Module) -> int:
    """Stop training the input embeddings (and the output head when it is tied to them); returns the frozen count."""
    weight = model.get_input_embeddings().weight
    weight.requires_grad_(False)
    return weight.numel()


def enable_gradient_checkpointing(model: nn.Module) -> None:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        # Frozen embeddings (LoRA) would otherwise cut the graph at the first checkpoint.
        model.enable_input_require_grads()
    model.config.use_cache = False


# ---------------------------------------------------------------------------------------------
# Generic introspection
# ---------------------------------------------------------------------------------------------


def _base(model: nn.Module) -> nn.Module:
    """The plain transformers model under PEFT / DDP / compile wrappers."""
    for _ in range(4):
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
        else:
            break
    return model


def text_config(model: nn.Module) -> Any:
    cfg = _base(model).config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder blocks: the first ModuleList whose length is the configured layer count."""
    n = num_layers(model)
    for _, mod in _base(model).named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return mod
    raise ValueError(f"could not find a ModuleList of {n} decoder layers in {type(_base(model)).__name__}")


def num_layers(model: nn.Module) -> int:
    cfg = text_config(model)
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = getattr(cfg, key, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot tell the number of layers of {type(cfg).__name__}")


def hidden_size(model: nn.Module) -> int:
    emb = _base(model).get_input_embeddings()
    return int(emb.weight.shape[1])


def resolve_align_layer(model: nn.Module, layer: int) -> int:
    """hidden_states index used for L_CTR; -1 means the middle (reference: 16 of 32)."""
    n = num_layers(model)
    if layer < 0:
        return n // 2
    if not 0 < layer <= n:
        raise ValueError(f"loss.align_layer={layer} is outside 1..{n} (hidden_states index; 0 would be the embeddings)")
    return layer


def accepts_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(_base(model).forward).parameters


def output_head(model: nn.Module) -> nn.Module:
    return model.get_output_embeddings()


def logit_transform(model: nn.Module) -> tuple[float | None, float | None]:
    """(final_logit_softcapping, logit_scale) from the config, so the fused loss reproduces the model's logits."""
    cfg = text_config(model)
    return getattr(cfg, "final_logit_softcapping", None), getattr(cfg, "logit_scale", None)
