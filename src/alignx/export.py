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

    from alignx.model.load import load_model, load_tokenizer

    adapter = Path(cfg.adapter_dir)
    base = cfg.base_model or json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = load_model(ModelConfig(name_or_path=base, dtype=cfg.dtype))
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tmp = Path(cfg.output_dir + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tok_src = str(adapter) if (adapter / "tokenizer_config.json").exists() else base
    load_tokenizer(ModelConfig(name_or_path=tok_src)).save_pretrained(tmp)
    for name in ("lam_head.safetensors", "lam_head.json", "alignx_train.yaml"):
        if (adapter / name).exists():
            shutil.copy(adapter / name, tmp / name)
    tmp.rename(cfg.output_dir)  # all or nothing
    return {"merged": cfg.output_dir, "base": base}
