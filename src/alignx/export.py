"""`alignx export`: merge a LoRA adapter (``final_adapter/`` or a checkpoint) into its base model.

Use it when training could not merge in place (e.g. FSDP runs with ``lora.merge_on_export=false``)
or to merge an intermediate checkpoint. The result is a plain HF directory; an L_LAM head found
beside the adapter is copied along.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignx.config import ConfigError, ModelConfig, opt
from alignx.utils import atomic_dir, output_lock


@dataclass
class ExportConfig:
    adapter_dir: str = opt("", "directory with adapter_config.json + adapter_model.safetensors")
    base_model: str = opt("", "base model (default: base_model_name_or_path recorded in adapter_config.json)")
    output_dir: str = opt("", "where the merged model is written (must not exist)")
    dtype: str = opt("float32", "dtype of the merged weights: float32|bfloat16|float16")

    def __post_init__(self) -> None:
        if not self.adapter_dir or not (Path(self.adapter_dir) / "adapter_config.json").exists():
            raise ConfigError(f"adapter_dir: {self.adapter_dir or '(empty)'} has no adapter_config.json")
        if not self.output_dir:
            raise ConfigError("output_dir: give where the merged model goes")
        if Path(self.output_dir).exists():
            raise ConfigError(f"output_dir: {self.output_dir} exists; refusing to overwrite")


def main(cfg: ExportConfig) -> dict[str, Any]:
    from peft import PeftModel

    from alignx.model.load import check_model_path, load_model, load_tokenizer

    adapter = Path(cfg.adapter_dir)
    base = cfg.base_model or json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    base_cfg = ModelConfig(name_or_path=base, dtype=cfg.dtype)
    check_model_path(base_cfg)
    tok_src = str(adapter) if (adapter / "tokenizer_config.json").exists() else base
    tokenizer = load_tokenizer(ModelConfig(name_or_path=tok_src))
    dest = Path(cfg.output_dir)
    # the lock is on the parent: the merged directory appears only when complete (all or nothing)
    with output_lock(dest.parent, "export"), atomic_dir(dest) as tmp:
        merged = PeftModel.from_pretrained(load_model(base_cfg), str(adapter)).merge_and_unload()
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name in ("lam_head.safetensors", "lam_head.json", "alignx_train.yaml"):
            if (adapter / name).exists():
                shutil.copy(adapter / name, tmp / name)
    return {"merged": cfg.output_dir, "base": base}
