"""Typed configuration: dataclasses with one field per setting, loaded from YAML plus CLI overrides.

Every subcommand takes one config dataclass. Values come, later winning, from the dataclass
defaults, ``--config a.yaml`` (several allowed: base file then override files), and
``key=value`` / ``--key value`` overrides with dotted keys for nested sections
(``loss.lambda_ctr=0.5``). Each field's ``help`` metadata is shown by ``alignx <cmd> --help``.
:class:`TrainConfig` also takes every ``transformers.TrainingArguments`` field by its HF name (TRL-style), each
routed to the one field that holds it (:func:`route_trainer_names`).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
log = logging.getLogger("alignx.config")

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


ASSISTANT_TURNS = ("last", "all")


def chat_template_text(value: str) -> str:
    """The Jinja text of ``data.chat_template``: the value itself when it holds Jinja tags, else the file it names."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if "{{" in value or "{%" in value:
        text, where = value, "data.chat_template"
    else:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.chat_template={value}: no such file; give a .jinja file or the template text itself")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"data.chat_template={value}: cannot read it ({e})") from None
        where = str(path)
    try:
        # transformers renders chat templates in this sandbox with loop controls; parsing checks the syntax only
        ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"]).parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"{where}:{e.lineno}: invalid Jinja chat template ({e.message})") from None
    return text


# --------------------------------------------------------------------------------------------
# Core sections shared by the training stages
# --------------------------------------------------------------------------------------------


# model.dtype values: fp32_master = float32 weights that autocast may run in bf16 (alignx's own name: transformers'
# torch_dtype="auto" means the checkpoint's dtype, which is not what alignx does).
DTYPES = ("fp32_master", "float32", "bfloat16", "float16")
DEPRECATED_DTYPES = {"auto": "fp32_master"}  # old name -> its meaning; still read, with a warning


@dataclass
class ModelConfig:
    name_or_path: str = opt("", "HF hub id or local directory of a causal LM")
    gguf_file: str | None = opt(None, "GGUF file name inside name_or_path (dequantised to torch on load)")
    tokenizer: str | None = opt(None, "tokenizer id/dir when it differs from the model")
    dtype: str = opt(
        "fp32_master",
        "weights dtype: fp32_master|float32|bfloat16|float16. fp32_master: float32 master weights, with bf16 autocast "
        "where the device computes bf16 natively (GPU, or CPU with AVX512-BF16/AMX) while model.autocast=auto; float32: float32 with no autocast unless model.autocast "
        "asks. 'auto' (older name of fp32_master) still loads, with a warning: it is NOT transformers' "
        "torch_dtype=auto (the checkpoint's dtype)",
    )
    attn_implementation: str | None = opt(None, "attention kernel: sdpa|eager|flash_attention_2 (None: transformers default)")
    trust_remote_code: bool = opt(False, "allow custom modelling code from the hub")
    gradient_checkpointing: bool = opt(
        False, "recompute activations in backward to save memory (TrainingArguments name: gradient_checkpointing)"
    )
    freeze_embeddings: bool = opt(
        False,
        "keep the input embeddings (and an output head tied to them) frozen: no gradient and no optimiser state for "
        "vocab x hidden weights (Gemma-3: 168M of 268M parameters); full fine-tuning only",
    )
    autocast: str = opt(
        "auto",
        "mixed precision over fp32 master weights, in training, analysis and evaluation: auto|bf16|fp16|none (auto: bf16 "
        "when model.dtype=fp32_master on a GPU that supports it or a CPU with AVX512-BF16 or AMX, else none; none: "
        "fp32; reference: fp16 with model.dtype=float32). TrainingArguments names: bf16=true "
        "sets bf16, fp16=true sets fp16, both false set none. L_CTR and L_LAM always run in fp32",
    )

    def __post_init__(self) -> None:
        if self.dtype in DEPRECATED_DTYPES:
            new = DEPRECATED_DTYPES[self.dtype]
            log.warning("model.dtype=%s is deprecated: it means %s (float32 master weights + autocast), not transformers' "
                        "torch_dtype=auto; write model.dtype=%s", self.dtype, new, new)
            self.dtype = new
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype must be {'|'.join(DTYPES)}, got {self.dtype!r}")
        if self.autocast not in ("auto", "bf16", "fp16", "none"):
            raise ConfigError(f"model.autocast must be auto|bf16|fp16|none, got {self.autocast!r}")
        if self.autocast in ("bf16", "fp16") and self.dtype not in ("fp32_master", "float32"):
            raise ConfigError(f"model.autocast={self.autocast} needs fp32 master weights: set model.dtype=fp32_master (or float32)")


@dataclass
class LoraConfig:
    enabled: bool = opt(False, "train LoRA adapters instead of all weights")
    r: int = opt(16, "LoRA rank")
    alpha: int = opt(32, "LoRA alpha")
    dropout: float = opt(0.05, "LoRA dropout")
    # Kept as one comma-separated string (a list is joined), so run records read the same as before lists were taken.
    target_modules: str | list[str] = opt("all-linear", "module names as a list or comma-separated (q_proj,v_proj), or all-linear")
    modules_to_save: list[str] = opt(
        [],
        "modules trained in full beside the adapters and saved with them (peft modules_to_save), e.g. "
        "[embed_tokens,lm_head] for new languages' tokens; merged into final/ and by alignx export. Tied "
        "embeddings stay tied (peft ensure_weight_tying)",
    )
    merge_on_export: bool = opt(True, "write a merged full model (final/merged) at the end of training")

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora.r must be positive, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        names = self.target_modules if isinstance(self.target_modules, list) else self.target_modules.split(",")
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise ConfigError("lora.target_modules is empty: give module names (e.g. q_proj,v_proj) or all-linear")
        if "all-linear" in names and len(names) > 1:
            raise ConfigError("lora.target_modules: all-linear stands alone; give it or a list of module names")
        if isinstance(self.target_modules, list):  # a string stays as written (run records hold it so)
            self.target_modules = ",".join(names)
        if any(not m.strip() for m in self.modules_to_save):
            raise ConfigError(f"lora.modules_to_save has an empty name: {self.modules_to_save}")


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
    ntp_chunk_mib: float = opt(
        256.0,
        "cap on one chunk's fp32 logits in the fused next-token loss, MiB: a chunk holds at most this / (vocabulary x 4 "
        "bytes) tokens (Gemma-3's 262k vocabulary: 256 tokens; 49k: the 1024 of ntp_chunk_size), so its logits, their "
        "log-softmax and their gradients stay small whatever the vocabulary; 0: no cap",
    )
    ntp_backend: str = opt(
        "auto",
        "how the fused next-token loss gets its gradient: auto (computed in the forward, chunk by chunk, when the output "
        "head is a plain linear layer: one head matmul and one softmax fewer; any other head recomputes) | recompute "
        "(each chunk's logits recomputed in backward, activation checkpointing: alignx's path before auto existed). "
        "Same loss and gradients up to float rounding",
    )

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
        if self.ntp_chunk_mib < 0:
            raise ConfigError(f"loss.ntp_chunk_mib must be >= 0 (0: no cap), got {self.ntp_chunk_mib}")
        if self.ntp_backend not in ("auto", "recompute"):
            raise ConfigError(f"loss.ntp_backend must be auto|recompute, got {self.ntp_backend!r}")

    def ntp_chunk_tokens(self, vocab_size: int) -> int:
        """Tokens per chunk of the fused next-token loss for a vocabulary: ntp_chunk_size, capped by ntp_chunk_mib."""
        if self.ntp_chunk_mib <= 0 or self.ntp_chunk_size <= 0:
            return self.ntp_chunk_size
        return min(self.ntp_chunk_size, max(1, int(self.ntp_chunk_mib * 2**20 // (4 * vocab_size))))


@dataclass
class DataConfig:
    parallel: list[str] = opt(
        [],
        "stage 1 / translation-instruction sources: .jsonl/.json/.parquet/.csv/.tsv files of {src,tgt,src_lang,tgt_lang} or HF "
        "{translation: {de: .., en: ..}} rows, a Moses prefix 'corpus.de-en', or a hub dataset hf:NAME[@CONFIG][:SPLIT]",
    )
    instructions: list[str] = opt(
        [],
        "stage 2 instruction sources (files or hf:NAME[@CONFIG][:SPLIT]): rows as chat 'messages', ShareGPT 'conversations', "
        "'prompt'/'completion', or Alpaca instruction/input/output (+ system, history)",
    )
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
    packing: bool = opt(
        False,
        "stage 1: pack the optim.batch_size rows of a micro-batch into as few sequences of at most data.max_length "
        "tokens as fit, each row attending only to itself (position ids restart per row); the rows, so every loss "
        "term, stay those of the unpacked micro-batch, only the padding compute goes. Stage 2: not supported",
    )
    on_bad_row: str = opt("error", "error: stop at the first bad row (file:line) | skip: skip and count")
    use_chat_template: bool = opt(
        True, "stage 2 instruction rows: the tokenizer's chat template when it has one; false (or none): the Alpaca-LoRA prompt (reference)"
    )
    chat_template: str | None = opt(
        None,
        "a chat template used instead of the tokenizer's, for chat rows and data.template=chat: Jinja text, or a path "
        "to a .jinja file; saved with the tokenizer in final/ (TRL: chat_template_path)",
    )
    assistant_turns: str = opt(
        "last",
        "stage 2 multi-turn chat rows: the loss on the last assistant turn only (last) or on every assistant turn (all: "
        "each answer with the template's end-of-turn tokens; LLaMA-Factory mask_history=false, TRL "
        "assistant_only_loss); user and system turns carry none unless loss.ntp_on_prompt=true",
    )
    seed: int = opt(0, "shuffle seed")
    num_proc: int | None = opt(
        None, "processes that render the rows (datasets.Dataset.map num_proc); none: 1 below 20,000 rows, else one per core (at most 8)"
    )
    cache_dir: str | None = opt(
        None,
        "where rendered rows are cached (Arrow, memory-mapped; one directory per data + tokenizer + rendering settings); "
        "none: $ALIGNX_DATA_CACHE, else $ALIGNX_CACHE/data (~/.cache/alignx/data)",
    )

    def __post_init__(self) -> None:
        if self.num_proc is not None and self.num_proc < 1:
            raise ConfigError(f"data.num_proc must be >= 1 (or none), got {self.num_proc}")
        if self.on_bad_row not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_row must be 'error' or 'skip', got {self.on_bad_row!r}")
        if self.max_length < 2:
            raise ConfigError(f"data.max_length must be >= 2, got {self.max_length}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ConfigError(f"data.max_pairs must be >= 1 (or none for all), got {self.max_pairs}")
        if self.assistant_turns not in ASSISTANT_TURNS:
            raise ConfigError(f"data.assistant_turns must be {'|'.join(ASSISTANT_TURNS)}, got {self.assistant_turns!r}")
        if self.chat_template is not None:
            if not self.use_chat_template and self.template != "chat":
                raise ConfigError("data.chat_template is set but unused: data.use_chat_template=false and data.template is not chat")
            chat_template_text(self.chat_template)  # a missing file or a Jinja syntax error fails here
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
    """Optimisation. Each setting also answers to its transformers.TrainingArguments name (in brackets in the help)."""

    optimizer: str = opt("adamw_torch", "transformers optimiser name (adamw_torch, adamw_torch_fused, sgd, ...) [optim]")
    lr: float = opt(2e-6, "peak learning rate (reference 2e-6 full-parameter; LoRA typically 1e-4..2e-4) [learning_rate]")
    epochs: float = opt(2.0, "training epochs (reference 2) [num_train_epochs]")
    max_steps: int = opt(-1, "stop after this many optimiser steps (overrides epochs when > 0) [max_steps]")
    batch_size: int = opt(
        8, "rows per device per micro-batch; L_CTR negatives and L_LAM pairs come from it (reference 16) [per_device_train_batch_size]"
    )
    grad_accum: int = opt(
        1, "micro-batches per optimiser step (global batch = batch_size * grad_accum * world size; reference 8) [gradient_accumulation_steps]"
    )
    weight_decay: float = opt(0.0, "AdamW weight decay (reference 0) [weight_decay]")
    warmup_ratio: float = opt(0.03, "share of steps with linear warm-up (used when optim.warmup_steps is 0) [warmup_ratio; warmup_steps < 1]")
    warmup_steps: int = opt(0, "linear warm-up steps; > 0 overrides optim.warmup_ratio (reference 100) [warmup_steps >= 1]")
    scheduler: str = opt("cosine", "transformers lr scheduler name: cosine|linear|constant_with_warmup|... (reference linear) [lr_scheduler_type]")
    group_by_length: bool = opt(
        False,
        "micro-batches of rows of similar length (HF LengthGroupedSampler; reference: yes). Off: random batches "
        "[group_by_length; train_sampling_strategy=group_by_length|random]",
    )
    max_grad_norm: float = opt(1.0, "gradient clipping (reference 1.0) [max_grad_norm]")
    seed: int = opt(42, "training seed (reference 42) [seed]")

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
    """One training stage. Besides its own settings it takes every transformers.TrainingArguments field by its HF
    name, at the top level or under ``trainer:`` (see :data:`HF_ALIASES`, :data:`HF_REFUSED`, :func:`route_trainer_names`)."""

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
    max_nonfinite_steps: int = opt(
        3,
        "an optimiser step whose loss terms (NTP, L_CTR, L_LAM) or gradients are not finite is skipped, counted and "
        "logged; this many in a row stop training with one line (0: no guard)",
    )
    resume: str | None = opt(
        None,
        "resume from a checkpoint dir, or 'latest' for the newest complete checkpoint in output_dir written with these "
        "settings [resume_from_checkpoint]",
    )
    overwrite_output_dir: bool = opt(
        False, "replace the training outputs of another run in output_dir (without it a fresh run refuses such a directory)"
    )
    # Kept as one comma-separated string (a list is joined), so run records read as they did before lists were taken.
    report_to: str | list[str] = opt("tensorboard", "trackers, a list or comma-separated: tensorboard|wandb|...|none")
    num_workers: int = opt(0, "dataloader workers [dataloader_num_workers]")
    trainer: dict[str, Any] = opt(
        {},
        "any other transformers.TrainingArguments field by its HF name, e.g. eval_strategy, run_name, deepspeed, "
        "push_to_hub, ddp_timeout, adam_beta2, torch_compile; also accepted at the top level (run_name=x). HF names "
        "alignx holds in a setting of its own set that setting (learning_rate -> optim.lr, bf16 -> model.autocast: the "
        "[names] in this help); names alignx must set itself are refused (remove_unused_columns, label_names, "
        "label_smoothing_factor, gradient_checkpointing_kwargs, hub_token). alignx's defaults where HF's differ: "
        "logging_first_step=true, ddp_find_unused_parameters=false, disable_tqdm=false",
        merge=True,
    )

    @staticmethod
    def route_settings(updates: dict[str, Any], prefix: str, source: str) -> dict[str, Any]:
        """Loader hook: the TrainingArguments names of one source moved to the settings that hold them."""
        return route_trainer_names(updates, prefix, source)

    @staticmethod
    def help_footer() -> str:
        """What ``alignx train --help`` prints after the settings: the TrainingArguments vocabulary."""
        aliases = "\n".join(f"  {hf} -> {ours}" for hf, ours in HF_ALIASES.items())
        refused = ", ".join(HF_REFUSED)
        return (f"transformers.TrainingArguments names (top level or under trainer:), as TRL's SFTConfig takes them:\n"
                f"{aliases}\n  output_dir, logging_steps, save_steps, save_total_limit, report_to, overwrite_output_dir: "
                f"the same names\n  any other field -> trainer.<name> (checked against TrainingArguments)\n"
                f"  refused (alignx sets them): {refused}")

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        if not self.output_dir:
            raise ConfigError("output_dir is empty: give the directory the run writes to")
        if self.logging_steps < 1 or self.save_steps < 1 or self.save_total_limit < 1:
            raise ConfigError(
                f"logging_steps, save_steps and save_total_limit must be >= 1, got {self.logging_steps}, {self.save_steps}, {self.save_total_limit}"
            )
        if self.max_nonfinite_steps < 0:
            raise ConfigError(f"max_nonfinite_steps must be >= 0 (0: no guard), got {self.max_nonfinite_steps}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.model.freeze_embeddings and self.lora.enabled:
            raise ConfigError("model.freeze_embeddings=true is for full fine-tuning; with lora.enabled=true the embeddings are frozen already")
        if self.lora.modules_to_save and not self.lora.enabled:
            raise ConfigError("lora.modules_to_save needs lora.enabled=true (full fine-tuning trains every module already)")
        if self.resume == "":
            self.resume = None
        if self.data.packing and self.stage != 1:
            raise ConfigError("data.packing=true is for stage 1 only; set data.packing=false for stage 2")
        if self.resume and self.overwrite_output_dir:
            raise ConfigError("resume and overwrite_output_dir=true exclude each other: resume continues a run, overwrite replaces it")
        if isinstance(self.report_to, list):  # a string stays as written (finished stages' summaries hold it so)
            self.report_to = ",".join(t.strip() for t in self.report_to if t.strip()) or "none"
        self.trainer = check_trainer_arguments(self.trainer)


# --------------------------------------------------------------------------------------------
# transformers.TrainingArguments names (taken as TRL's SFTConfig takes them)
# --------------------------------------------------------------------------------------------

# TrainingArguments fields alignx holds in a setting of its own: the HF name sets that setting. Fields with the same
# name in alignx (output_dir, logging_steps, save_steps, save_total_limit, report_to, overwrite_output_dir) need none.
HF_ALIASES: dict[str, str] = {
    "per_device_train_batch_size": "optim.batch_size",
    "gradient_accumulation_steps": "optim.grad_accum",
    "learning_rate": "optim.lr",
    "num_train_epochs": "optim.epochs",
    "max_steps": "optim.max_steps",
    "weight_decay": "optim.weight_decay",
    "max_grad_norm": "optim.max_grad_norm",
    "lr_scheduler_type": "optim.scheduler",
    "optim": "optim.optimizer",  # a name; a mapping under `optim:` is alignx's section
    "seed": "optim.seed",
    "warmup_steps": "optim.warmup_steps",  # transformers 5 reads a value below 1 as a ratio: optim.warmup_ratio
    "warmup_ratio": "optim.warmup_ratio",  # transformers 4 name
    "group_by_length": "optim.group_by_length",  # transformers 4 name
    "train_sampling_strategy": "optim.group_by_length",  # random | group_by_length
    "bf16": "model.autocast",  # true: bf16; with fp16 also false: none
    "fp16": "model.autocast",
    "gradient_checkpointing": "model.gradient_checkpointing",
    "dataloader_num_workers": "num_workers",
    "resume_from_checkpoint": "resume",
}
# TrainingArguments fields alignx must set itself: giving one is an error saying why.
HF_REFUSED: dict[str, str] = {
    "remove_unused_columns": "the collator needs every column, the x/y spans and language ids included",
    "label_names": "AlignXModel computes its losses from the batch itself",
    "label_smoothing_factor": "alignx computes the next-token loss itself, without label smoothing",
    "gradient_checkpointing_kwargs": "model.gradient_checkpointing=true enables it, non-reentrant",
    "hub_token": "a token in the settings would be written into the run's records; use `hf auth login` or HF_TOKEN",
}
# alignx's values where they differ from HF's defaults (a trainer entry replaces them).
TRAINER_DEFAULTS: dict[str, Any] = {"logging_first_step": True, "ddp_find_unused_parameters": False, "disable_tqdm": False}
# TrainingArguments fields that say how a run reports or is launched, not what it trains (left out of run records).
HF_OPERATIONAL = (
    "run_name", "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id", "disable_tqdm", "log_level",
    "log_level_replica", "log_on_each_node", "logging_strategy", "logging_first_step", "logging_nan_inf_filter",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push", "hub_revision",
    "save_on_each_node", "ddp_timeout", "dataloader_pin_memory", "dataloader_persistent_workers",
    "dataloader_prefetch_factor", "skip_memory_metrics", "include_num_input_tokens_seen", "local_rank",
    "do_train", "do_eval", "do_predict",
)  # fmt: skip


def _hf_fields() -> dict[str, Any]:
    """name -> type of every TrainingArguments field (transformers is imported only once a config needs it)."""
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainingArguments) if f.init}


def hf_value(name: str, value: Any, where: str) -> Any:
    """``value`` as TrainingArguments field ``name`` takes it, in plain YAML/JSON types (an enum as its string)."""
    tp = _hf_fields()[name]
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else ()
    if any(isinstance(a, type) and issubclass(a, enum.Enum) for a in args):
        # Union[SomeStrategy, str]: transformers turns the string into the enum, so only its values are valid
        tp = typing.Union[tuple(a for a in args if a is not str)]  # noqa: UP007 - built from a tuple
    return _coerce(value, tp, where)


def check_trainer_arguments(trainer: dict[str, Any]) -> dict[str, Any]:
    """``TrainConfig.trainer`` checked (TrainingArguments fields that no alignx setting holds) with typed values."""
    if not trainer:
        return {}
    fields = _hf_fields()
    checked = {}
    for name, value in trainer.items():
        if name in HF_REFUSED:
            raise ConfigError(f"trainer.{name}: alignx sets this itself ({HF_REFUSED[name]}); remove it")
        if name in HF_ALIASES or name in _TRAIN_NAMES:
            raise ConfigError(f"trainer.{name}: alignx holds it in {HF_ALIASES.get(name, name)}; set that (or {name} at the top level)")
        if name not in fields:
            raise ConfigError(f"trainer.{name}: not a transformers.TrainingArguments field{_did_you_mean(name, fields)}")
        checked[name] = hf_value(name, value, f"trainer.{name}")
    return checked


def _did_you_mean(key: str, names: typing.Iterable[str], prefix: str = "") -> str:
    """`` (did you mean a, b?)`` from :func:`difflib.get_close_matches` (typos such as ``lerning_rate``), else the names
    sharing the key's first 3 letters; empty when nothing is close."""
    names = sorted(set(names))
    close = difflib.get_close_matches(key, names, n=4, cutoff=0.6) or [n for n in names if n.startswith(key[:3])][:6]
    return f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""


def _hf_alias(name: str, value: Any, where: str) -> tuple[str, Any]:
    """(alignx setting, value) for a TrainingArguments field that an alignx setting holds."""
    if name == "warmup_steps":
        steps = _coerce(value, float, where)
        if 0 < steps < 1:
            return "optim.warmup_ratio", steps
        if not steps.is_integer():
            raise ConfigError(f"{where}: expected whole steps, or a share of the steps below 1; got {value!r}")
        return "optim.warmup_steps", int(steps)
    if name == "train_sampling_strategy":
        if value not in ("random", "group_by_length"):
            raise ConfigError(f"{where}: alignx samples random or group_by_length (optim.group_by_length), got {value!r}")
        return "optim.group_by_length", value == "group_by_length"
    if name == "gradient_checkpointing" and value is None:
        value = False
    return HF_ALIASES[name], value


def route_trainer_names(updates: dict[str, Any], prefix: str, source: str) -> dict[str, Any]:
    """One source's TrainConfig mapping with every TrainingArguments name moved to the setting that holds it.

    ``learning_rate`` becomes ``optim.lr``, ``bf16``/``fp16`` ``model.autocast``, ``run_name`` (top level or under
    ``trainer:``) ``trainer.run_name``. One setting given under two names with different values is an error naming
    both; so are names alignx must set itself and names neither alignx nor transformers knows.
    """
    hints = typing.get_type_hints(TrainConfig)
    placed: dict[str, tuple[str, Any, Any]] = {}  # dotted setting -> (as written, value, value as written)
    precision: dict[str, bool] = {}  # bf16 / fp16 as written -> value

    def place(path: str, value: Any, written: str, shown: Any = None) -> None:
        shown = value if shown is None else shown
        if path in placed and placed[path][0] != written:
            first, earlier, earlier_shown = placed[path]
            if _typed_at(path, earlier, source) != _typed_at(path, value, source):
                raise ConfigError(f"{source}: {prefix}{first}={earlier_shown!r} and {prefix}{written}={shown!r} both set "
                                  f"{prefix}{path}; keep one")
        placed[path] = (written, value, shown)

    unknown: list[str] = []

    def place_hf(name: str, value: Any, written: str) -> None:
        where = f"{source}: {prefix}{written}"
        if name in HF_REFUSED:
            raise ConfigError(f"{where}: alignx sets this itself ({HF_REFUSED[name]}); remove it")
        if name in ("bf16", "fp16"):
            precision[written] = _coerce(value, bool, where)
        elif name in HF_ALIASES:
            place(*_hf_alias(name, value, where), written, value)
        elif name in _TRAIN_NAMES and name != "trainer":  # the same name in alignx and transformers
            place(name, value, written)
        else:
            fields = _hf_fields()
            if name not in fields:  # reported with every other unknown name of this source, below
                unknown.append(f"{prefix}{written}{_did_you_mean(name, [*_TRAIN_NAMES, *fields], prefix)}")
                return
            hf_value(name, value, where)  # a bad value fails here, naming its file
            place(f"trainer.{name}", value, written)

    for key, value in updates.items():
        if key == "trainer":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {prefix}trainer is a mapping of transformers.TrainingArguments names to values")
            for name, v in value.items():
                place_hf(name, v, f"trainer.{name}")
        elif key == "optim" and not isinstance(value, dict):
            place_hf("optim", value, "optim")
        elif key in _TRAIN_NAMES and _is_dataclass_type(hints[key]) and isinstance(value, dict):
            for sub, v in value.items():
                place(f"{key}.{sub}", v, f"{key}.{sub}")
        elif key in _TRAIN_NAMES:
            place(key, value, key)
        else:
            place_hf(key, value, key)
    if unknown:
        raise ConfigError(f"{source}: unknown setting{'s' if len(unknown) > 1 else ''} {'; '.join(unknown)}")
    if precision:
        on = [w for w, v in precision.items() if v]
        if len(on) > 1:
            raise ConfigError(f"{source}: {prefix}{on[0]} and {prefix}{on[1]} are both true; choose one (model.autocast)")
        shown = next(iter(precision.values())) if len(precision) == 1 else tuple(precision.values())
        place("model.autocast", on[0].rsplit(".", 1)[-1] if on else "none", " and ".join(precision), shown)
    routed: dict[str, Any] = {}
    for path, (_, value, _) in placed.items():
        _deep_update(routed, _dotted_to_nested(path, value))
    return routed


def _typed_at(path: str, value: Any, source: str) -> Any:
    """``value`` typed as the setting at dotted ``path`` takes it (to compare two spellings of one setting)."""
    parts = path.split(".")
    try:
        if parts[0] == "trainer":
            return hf_value(parts[1], value, f"{source}: {path}")
        cls: Any = TrainConfig
        for part in parts[:-1]:
            cls = typing.get_type_hints(cls)[part]
        return _coerce(value, typing.get_type_hints(cls)[parts[-1]], f"{source}: {path}")
    except (ConfigError, KeyError):
        return value  # the loader reports a bad value or name with its file


_TRAIN_NAMES = frozenset(f.name for f in dataclasses.fields(TrainConfig))

# Settings that say how to run or where to write, not what is trained: a run resumed or compared with
# other values of these is still the same run.
RUN_CONTROL = ("resume", "overwrite_output_dir")
# The chunking of the fused next-token loss is here too: it changes how the sum is rounded, not what is trained.
OPERATIONAL = (*RUN_CONTROL, "output_dir", "report_to", "num_workers", "logging_steps", "save_steps", "save_total_limit",
               "max_nonfinite_steps",
               "data.num_proc", "data.cache_dir", "loss.ntp_chunk_size", "loss.ntp_chunk_mib", "loss.ntp_backend",
               *(f"trainer.{name}" for name in HF_OPERATIONAL))

# Settings added after runs were first recorded, with the value that does what alignx did before each existed: a
# record without one (an older alignx wrote it) reads as that value, so an unchanged run still matches its record.
ADDED_SETTINGS: dict[str, Any] = {
    "loss.ctr_inputs": "in_context",
    "lora.modules_to_save": [],
    "data.chat_template": None,
    "data.assistant_turns": "last",
    "data.packing": False,
    "data.num_proc": None,
    "data.cache_dir": None,
    "loss.ntp_chunk_mib": 0.0,
    "loss.ntp_backend": "recompute",
    "max_nonfinite_steps": 0,
    "trainer": {},
}
# Setting values renamed since: a record's old value reads as the new one.
RENAMED_VALUES: dict[str, dict[Any, Any]] = {"model.dtype": DEPRECATED_DTYPES}


def run_settings(cfg: TrainConfig | dict[str, Any], ignore: tuple[str, ...] = OPERATIONAL) -> dict[str, Any]:
    """The settings that define what a training run computes: a config (or its ``to_dict``, or a record's settings)
    without ``ignore`` (dotted keys), in today's names (:data:`ADDED_SETTINGS`, :data:`RENAMED_VALUES`)."""
    values = json.loads(json.dumps(cfg if isinstance(cfg, dict) else to_dict(cfg)))  # plain JSON types, as read back
    for key, before in ADDED_SETTINGS.items():
        parent, name = _parent(values, key)
        if parent is not None and name not in parent:
            parent[name] = json.loads(json.dumps(before))
    for key, renamed in RENAMED_VALUES.items():
        parent, name = _parent(values, key)
        if parent is not None and parent.get(name) in renamed:
            parent[name] = renamed[parent[name]]
    for key in ignore:
        parent, name = _parent(values, key)
        if parent is not None:
            parent.pop(name, None)
    return values


def _parent(values: dict[str, Any], dotted: str) -> tuple[dict[str, Any] | None, str]:
    """(the mapping holding dotted key's last part, that part); None when a section on the way is missing."""
    *sections, name = dotted.split(".")
    node = _walk(values, sections)
    return (node if isinstance(node, dict) else None), name


def _walk(values: Any, parts: list[str]) -> Any:
    for part in parts:
        values = values.get(part) if isinstance(values, dict) else None
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
        # a value of one of the types as it is; else str last, as it would take any scalar
        for arg in sorted(args, key=lambda a: (type(value) is not a, a is str)):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: cannot parse {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            try:
                if _coerce(value, type(choice), where) == choice:
                    return choice
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value).value
        except ValueError:
            raise ConfigError(f"{where}: expected one of {'|'.join(str(m.value) for m in tp)}, got {value!r}") from None
    if tp is list:
        tp, origin = list[Any], list
    if tp is dict or _is_dataclass_type(tp):  # a dataclass-typed TrainingArguments field takes its fields as a mapping
        tp, origin = dict[str, Any], dict
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
    """Coerce one source's ``updates`` into ``target`` (later sources win); a class may first rename foreign names
    in them with a ``route_settings(updates, prefix, source)`` hook (TrainConfig: TrainingArguments names)."""
    route = getattr(cls, "route_settings", None)
    if route is not None:
        updates = route(updates, prefix, source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    unknown = [key for key in updates if key not in names]
    if unknown:  # every unknown key of this section in one message
        what = "; ".join(f"{prefix}{key}{_did_you_mean(key, names, prefix)}" for key in unknown)
        raise ConfigError(f"{source}: unknown setting{'s' if len(unknown) > 1 else ''} {what}")
    for key, value in updates.items():
        tp = hints[key]
        if _is_dataclass_type(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {prefix}{key} is a section; give a mapping")
            _merge(target.setdefault(key, {}), tp, value, f"{prefix}{key}.", source)
        elif fields[key].metadata.get("merge") and isinstance(target.get(key), dict):
            target[key] = {**target[key], **_coerce(value, tp, f"{source}: {prefix}{key}")}  # entries add up across sources
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


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing a mapping that holds one key twice (PyYAML silently keeps the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden, by design
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise _DuplicateKey(key, line, seen[key])
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_config(cls: type[T], yaml_files: list[str | Path] = (), overrides: list[str] | dict[str, Any] = ()) -> T:
    """Build ``cls`` from defaults, YAML files (in order) and ``key=value`` overrides."""
    values: dict[str, Any] = {}
    for path in yaml_files:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        if not path.is_file():  # a directory, FIFO or device: reading it would fail or block
            raise ConfigError(f"{path}: not a regular file; give a YAML config file")
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader
        except _DuplicateKey as e:
            raise ConfigError(f"{path}:{e.line}: duplicate key {e.key!r} (first at line {e.first}); keep one") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        _merge(values, cls, data, "", str(path))
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    given: dict[str, Any] = {}  # all overrides as one source (later wins), so two names of one setting meet
    for key, raw in items:
        value = _parse_scalar(raw)
        parts = key.split(".")
        clash = any(not isinstance(_walk(given, parts[:i]), dict | None) for i in range(1, len(parts)))
        clash = clash or (isinstance(_walk(given, parts), dict) and not isinstance(value, dict))
        if clash:  # e.g. optim=adamw_torch (TrainingArguments' optimiser name) beside optim.lr=... (alignx's section)
            raise ConfigError(f"override {key}: {parts[0]} is given both as a value and as a section; "
                              "for the optimiser's name write optim.optimizer=...")
        _deep_update(given, _dotted_to_nested(key, value))
    if given:
        nested: dict[str, Any] = {}
        _merge(nested, cls, given, "", "override")
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
