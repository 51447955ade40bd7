"""Typed configuration: dataclasses with one field per setting, loaded from YAML plus CLI overrides.

Every subcommand takes one config dataclass. Values come, later winning, from the dataclass
defaults, ``--config a.yaml`` (several allowed: base file then override files), and
``key=value`` / ``--key value`` overrides with dotted keys for nested sections
(``loss.lambda_ctr=0.5``). Each field's ``help`` metadata is shown by ``alignx <cmd> --help``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

# data.template values with a fixed meaning (see DataConfig.template); anything else is free text with {src}.
TEMPLATE_PRESETS = ("alpaca", "chat")
CTR_INPUTS = ("in_context", "separate")
TRANSLATION_INSTRUCTION = "Translate the following sentences from {src_name} to {tgt_name}."


class ConfigError(ValueError):
    pass


def opt(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - 'help' mirrors argparse
    """A dataclass field with a help string (mutable defaults are copied per instance)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def section(cls: type, help: str) -> Any:  # noqa: A002
    return field(default_factory=cls, metadata={"help": help})


# --------------------------------------------------------------------------------------------
# Core sections shared by the training stages
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    name_or_path: str = opt("", "HF hub id or local directory of a causal LM")
    gguf_file: str | None = opt(None, "GGUF file name inside name_or_path (dequantised to torch on load)")
    tokenizer: str | None = opt(None, "tokenizer id/dir when it differs from the model")
    dtype: str = opt("auto", "weights/compute dtype: auto|float32|bfloat16|float16 (auto: bf16 on GPUs that support it)")
    attn_implementation: str | None = opt(None, "attention kernel: sdpa|eager|flash_attention_2 (None: transformers default)")
    trust_remote_code: bool = opt(False, "allow custom modelling code from the hub")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward to save memory")
    freeze_embeddings: bool = opt(
        False,
        "keep the input embeddings (and an output head tied to them) frozen: no gradient and no optimiser state for "
        "vocab x hidden weights (Gemma-3: 168M of 268M parameters); full fine-tuning only",
    )
    autocast: str = opt(
        "auto",
        "mixed precision over fp32 master weights: auto|bf16|fp16|none (auto: bf16 when model.dtype=auto on a GPU "
        "that supports it, else none; reference: fp16 with model.dtype=float32). L_CTR and L_LAM always run in fp32",
    )

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype must be auto|float32|bfloat16|float16, got {self.dtype!r}")
        if self.autocast not in ("auto", "bf16", "fp16", "none"):
            raise ConfigError(f"model.autocast must be auto|bf16|fp16|none, got {self.autocast!r}")
        if self.autocast in ("bf16", "fp16") and self.dtype not in ("auto", "float32"):
            raise ConfigError(f"model.autocast={self.autocast} needs fp32 master weights: set model.dtype=float32 (or auto)")


@dataclass
class LoraConfig:
    enabled: bool = opt(False, "train LoRA adapters instead of all weights")
    r: int = opt(16, "LoRA rank")
    alpha: int = opt(32, "LoRA alpha")
    dropout: float = opt(0.05, "LoRA dropout")
    target_modules: str = opt("all-linear", "comma-separated module names, or 'all-linear'")
    merge_on_export: bool = opt(True, "write a merged full model (final/merged) at the end of training")

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora.r must be positive, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules.strip(" ,"):
            raise ConfigError("lora.target_modules is empty: give module names (e.g. q_proj,v_proj) or all-linear")


@dataclass
class LossConfig:
    lambda_ctr: float = opt(0.3, "weight of the contrastive alignment loss L_CTR (reference 0.3; 0 disables)")
    lambda_lam: float = opt(0.4, "weight of the language-matching loss L_LAM (reference 0.4; 0 disables)")
    tau: float = opt(0.1, "temperature of the InfoNCE similarity cos/tau (reference 0.1)")
    align_layer: int = opt(-1, "hidden_states index for L_CTR (0 = embeddings); -1 = middle layer, num_layers // 2")
    ctr_symmetric: bool = opt(False, "InfoNCE in both directions x->y and y->x (reference: one direction)")
    ctr_gather: bool = opt(False, "gather contrastive negatives across data-parallel ranks (reference: no)")
    ctr_center: bool = opt(
        False,
        "NOT in the reference: subtract the micro-batch mean of the pooled x and y states before the L_CTR cosine "
        "(makes L_CTR learn on models whose mid-layer states share a dominant direction, e.g. Gemma-3)",
    )
    ctr_inputs: str = opt(
        "in_context",
        "what L_CTR pools: in_context (reference: the x and y spans of the training row, y read with x in its "
        "context) | separate (NOT in the reference: x and y re-encoded alone, as the alignment analysis and "
        "retrieval read them; one extra forward of the 2B sentences per step)",
    )
    lam_width: int = opt(128, "hidden width of the language-matching gated MLP (reference 128)")
    lam_init_std: float = opt(
        0.02, "std of the normal init of the L_LAM head's weights, as HF linear layers (reference 0.02); 0: PyTorch's default"
    )
    ntp_on_prompt: bool | None = opt(
        None,
        "next-token loss on the prompt tokens too (true) or on the target only (false); "
        "unset: stage 1 true, stage 2 false (reference: true in both stages)",
    )
    ntp_chunk_size: int = opt(1024, "tokens per chunk of the fused next-token loss (0: full logits at once)")

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ConfigError(f"loss.tau must be > 0, got {self.tau}")
        if self.lambda_ctr < 0 or self.lambda_lam < 0:
            raise ConfigError("loss.lambda_ctr and loss.lambda_lam must be >= 0")
        if self.lam_width <= 0:
            raise ConfigError(f"loss.lam_width must be positive, got {self.lam_width}")
        if self.lam_init_std < 0:
            raise ConfigError(f"loss.lam_init_std must be >= 0, got {self.lam_init_std}")
        if self.align_layer < -1 or self.align_layer == 0:
            raise ConfigError(f"loss.align_layer must be -1 (middle layer) or a layer >= 1, got {self.align_layer}")
        if self.ctr_inputs not in CTR_INPUTS:
            raise ConfigError(f"loss.ctr_inputs must be one of {', '.join(CTR_INPUTS)}, got {self.ctr_inputs!r}")
        if self.ntp_chunk_size < 0:
            raise ConfigError(f"loss.ntp_chunk_size must be >= 0 (0: no chunking), got {self.ntp_chunk_size}")


@dataclass
class DataConfig:
    parallel: list[str] = opt([], "stage 1 / translation-instruction files: .jsonl {src,tgt,src_lang,tgt_lang}, .tsv, or Moses 'prefix.src-tgt'")
    instructions: list[str] = opt([], "stage 2 instruction files: .jsonl Alpaca {instruction,input,output} or chat {messages}")
    translation_in_sft: bool = opt(True, "stage 2: also train on the parallel files rendered as translation instructions")
    template: str = opt(
        "Translate the following sentence from {src_name} to {tgt_name}. // Input: {src} // Output: ",
        "translation rows (both stages): alpaca = the reference's Alpaca-LoRA prompt_input, x as '### Input:', y as "
        "'### Response:' | chat = the tokenizer's chat template, instruction and x in the user turn, y as the answer | "
        "free text with {src} where x goes, y follows the text directly; fields {instruction} {src_name} {tgt_name} "
        "{src_lang} {tgt_lang}",
    )
    translation_instruction: str = opt(
        TRANSLATION_INSTRUCTION,
        "instruction of translation rows: used by the alpaca and chat templates and as {instruction} in a free-text one; "
        "fields {src_name} {tgt_name} {src_lang} {tgt_lang}",
    )
    both_directions: bool = opt(True, "render every pair in both directions (x->y and y->x)")
    max_length: int = opt(512, "max tokens per row (reference 512)")
    truncate_pairs: bool = opt(
        False,
        "translation rows longer than max_length: false = drop them (a cut y is not a translation of x); true = cut "
        "them and drop only rows whose y is cut away entirely (reference). Instruction rows are always cut",
    )
    max_pairs: int | None = opt(None, "use at most this many pairs per file (after shuffling)")
    on_bad_row: str = opt("error", "error: stop at the first bad row (file:line) | skip: skip and count")
    use_chat_template: bool = opt(
        True, "stage 2 instruction rows: the tokenizer's chat template when it has one; false (or none): the Alpaca-LoRA prompt (reference)"
    )
    seed: int = opt(0, "shuffle seed")

    def __post_init__(self) -> None:
        if self.on_bad_row not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_row must be 'error' or 'skip', got {self.on_bad_row!r}")
        if self.max_length < 2:
            raise ConfigError(f"data.max_length must be >= 2, got {self.max_length}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ConfigError(f"data.max_pairs must be >= 1 (or none for all), got {self.max_pairs}")
        # The values a template meets when rows are rendered (a field's format spec or attribute is checked too).
        names = {"src_name": "English", "tgt_name": "German", "src_lang": "en", "tgt_lang": "de"}
        try:
            self.translation_instruction.format(**names)
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
            raise ConfigError(f"data.translation_instruction: unknown field or stray brace ({e!r}); fields: {', '.join(names)}") from None
        if self.template not in TEMPLATE_PRESETS:
            if self.template.count("{src}") != 1:
                raise ConfigError("data.template must be alpaca, chat, or a text with {src} exactly once")
            try:
                self.template.replace("{src}", "").format(instruction="Translate.", **names)
            except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
                raise ConfigError(f"data.template: unknown field or stray brace ({e!r}); fields: src, instruction, {', '.join(names)}") from None


@dataclass
class OptimConfig:
    optimizer: str = opt("adamw_torch", "transformers optimiser name (adamw_torch, adamw_torch_fused, sgd, ...)")
    lr: float = opt(2e-6, "peak learning rate (reference 2e-6 full-parameter; LoRA typically 1e-4..2e-4)")
    epochs: float = opt(2.0, "training epochs (reference 2)")
    max_steps: int = opt(-1, "stop after this many optimiser steps (overrides epochs when > 0)")
    batch_size: int = opt(8, "rows per device per micro-batch; L_CTR negatives and L_LAM pairs come from it (reference 16)")
    grad_accum: int = opt(1, "micro-batches per optimiser step (global batch = batch_size * grad_accum * world size; reference 8)")
    weight_decay: float = opt(0.0, "AdamW weight decay (reference 0)")
    warmup_ratio: float = opt(0.03, "share of steps with linear warm-up (used when optim.warmup_steps is 0)")
    warmup_steps: int = opt(0, "linear warm-up steps; > 0 overrides optim.warmup_ratio (reference 100)")
    scheduler: str = opt("cosine", "transformers lr scheduler name: cosine|linear|constant_with_warmup|... (reference linear)")
    group_by_length: bool = opt(
        False, "micro-batches of rows of similar length (HF LengthGroupedSampler; reference: yes). Off: random batches"
    )
    max_grad_norm: float = opt(1.0, "gradient clipping (reference 1.0)")
    seed: int = opt(42, "training seed (reference 42)")

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError(f"optim.batch_size and optim.grad_accum must be >= 1, got {self.batch_size} and {self.grad_accum}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"optim.max_steps must be > 0, or -1 to train for optim.epochs; got {self.max_steps}")
        if self.max_steps == -1 and not self.epochs > 0:
            raise ConfigError(f"optim.epochs must be > 0 (or set optim.max_steps > 0); got {self.epochs}")
        if not self.lr >= 0:
            raise ConfigError(f"optim.lr must be >= 0, got {self.lr}")
        if not self.weight_decay >= 0 or not self.max_grad_norm >= 0:
            raise ConfigError(f"optim.weight_decay and optim.max_grad_norm must be >= 0, got {self.weight_decay} and {self.max_grad_norm}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass
class TrainConfig:
    stage: int = opt(1, "1: continual pre-training with alignment losses; 2: instruction fine-tuning")
    output_dir: str = opt("runs/alignx", "where checkpoints, logs and the final model are written")
    model: ModelConfig = section(ModelConfig, "model to train")
    lora: LoraConfig = section(LoraConfig, "LoRA adapters (PEFT)")
    loss: LossConfig = section(LossConfig, "objectives (L_CTR and L_LAM: stage 1 only)")
    data: DataConfig = section(DataConfig, "training data")
    optim: OptimConfig = section(OptimConfig, "optimisation")
    logging_steps: int = opt(10, "log every N optimiser steps")
    save_steps: int = opt(500, "checkpoint every N optimiser steps")
    save_total_limit: int = opt(2, "keep at most this many checkpoints")
    resume: str | None = opt(
        None, "resume from a checkpoint dir, or 'latest' for the newest complete checkpoint in output_dir written with these settings"
    )
    overwrite_output_dir: bool = opt(
        False, "replace the training outputs of another run in output_dir (without it a fresh run refuses such a directory)"
    )
    report_to: str = opt("tensorboard", "comma-separated trackers: tensorboard|wandb|none")
    num_workers: int = opt(0, "dataloader workers")

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        if not self.output_dir:
            raise ConfigError("output_dir is empty: give the directory the run writes to")
        if self.logging_steps < 1 or self.save_steps < 1 or self.save_total_limit < 1:
            raise ConfigError(
                f"logging_steps, save_steps and save_total_limit must be >= 1, got {self.logging_steps}, {self.save_steps}, {self.save_total_limit}"
            )
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.model.freeze_embeddings and self.lora.enabled:
            raise ConfigError("model.freeze_embeddings=true is for full fine-tuning; with lora.enabled=true the embeddings are frozen already")
        if self.resume == "":
            self.resume = None
        if self.resume and self.overwrite_output_dir:
            raise ConfigError("resume and overwrite_output_dir=true exclude each other: resume continues a run, overwrite replaces it")


# Settings that say how to run or where to write, not what is trained: a run resumed or compared with
# other values of these is still the same run.
RUN_CONTROL = ("resume", "overwrite_output_dir")
OPERATIONAL = (*RUN_CONTROL, "output_dir", "report_to", "num_workers", "logging_steps", "save_steps", "save_total_limit")


def run_settings(cfg: TrainConfig | dict[str, Any], ignore: tuple[str, ...] = OPERATIONAL) -> dict[str, Any]:
    """The settings that define what a training run computes: a config (or its ``to_dict``) without ``ignore``."""
    values = json.loads(json.dumps(cfg if isinstance(cfg, dict) else to_dict(cfg)))  # plain JSON types, as read back
    for key in ignore:
        values.pop(key, None)
    return values


def settings_diff(recorded: dict[str, Any], current: dict[str, Any], limit: int = 3) -> str:
    """``key: recorded -> current`` for the first differing dotted settings (for one-line messages)."""
    diffs: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix[:-1]}: {json.dumps(a, ensure_ascii=False)} -> {json.dumps(b, ensure_ascii=False)}")

    walk(recorded, current, "")
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


# --------------------------------------------------------------------------------------------
# Loading: defaults <- YAML files <- overrides
# --------------------------------------------------------------------------------------------


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turn a YAML/CLI value into the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: cannot parse {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v] if not value.startswith("[") else yaml.safe_load(value)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, where) for v in value]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            if tp is int and isinstance(value, str):
                return int(float(value)) if float(value).is_integer() else int(value)
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def _merge(target: dict[str, Any], cls: type, updates: dict[str, Any], prefix: str, source: str) -> None:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in updates.items():
        if key not in names:
            close = [n for n in names if n.startswith(key[:3])]
            hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
            raise ConfigError(f"{source}: unknown setting {prefix}{key}{hint}")
        tp = hints[key]
        if _is_dataclass_type(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {prefix}{key} is a section; give a mapping")
            _merge(target.setdefault(key, {}), tp, value, f"{prefix}{key}.", source)
        else:
            target[key] = _coerce(value, tp, f"{source}: {prefix}{key}")


def _build(cls: type[T], values: dict[str, Any]) -> T:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            tp = hints[f.name]
            kwargs[f.name] = _build(tp, values[f.name]) if _is_dataclass_type(tp) else values[f.name]
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def _dotted_to_nested(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def _deep_update(base: dict[str, Any], upd: dict[str, Any]) -> None:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v


def load_config(cls: type[T], yaml_files: list[str | Path] = (), overrides: list[str] | dict[str, Any] = ()) -> T:
    """Build ``cls`` from defaults, YAML files (in order) and ``key=value`` overrides."""
    values: dict[str, Any] = {}
    for path in yaml_files:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        _merge(values, cls, data, "", str(path))
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    for key, raw in items:
        nested: dict[str, Any] = {}
        _merge(nested, cls, _dotted_to_nested(key, _parse_scalar(raw)), "", "override")
        _deep_update(values, nested)
    return _build(cls, values)


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. loss.lambda_ctr=0.5)")
    key, value = text.split("=", 1)
    return key.strip().lstrip("-").replace("-", "_"), value


def _parse_scalar(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    if raw.startswith(("[", "{")):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw
    return raw


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    from alignx.utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every setting, for ``--help``."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            rows.extend(describe(tp, f"{prefix}{f.name}."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((prefix + f.name, json.dumps(default, ensure_ascii=False), f.metadata.get("help", "")))
    return rows
