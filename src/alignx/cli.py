"""`alignx <command> [--config file.yaml ...] [key=value ...]` — one dispatch table, one config per command.

Exit status: 0 done; 2 bad input (a setting, a data file, a model path, an occupied output directory),
reported before anything was written; 1 the run failed (its output directory is in use by another run,
the disk refused a write, or a bug); 130 interrupted. Every failure is one line on stderr;
``ALIGNX_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# command -> (module with `main(cfg)`, "module:ConfigClass", one-line description)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("alignx.demo", "alignx.demo:DemoConfig", "embedded offline demo: stage 1 -> stage 2 -> evaluation on a packaged model"),
    "train": ("alignx.train.stage", "alignx.config:TrainConfig", "one training stage (stage=1 AlignX CPT, stage=2 instruction SFT)"),
    "pipeline": ("alignx.pipeline", "alignx.pipeline:PipelineConfig", "stage 1 then stage 2 from one YAML"),
    "eval": ("alignx.eval.run", "alignx.eval.run:EvalConfig", "benchmarks (lm-eval) and translation (spBLEU, chrF++, off-target)"),
    "analyze": ("alignx.eval.analyze", "alignx.eval.analyze:AnalyzeConfig", "per-layer alignment of parallel sentences (MEXA, cosine, retrieval) + plots"),
    "report": ("alignx.report.report", "alignx.report.report:ReportConfig", "Markdown/HTML report comparing runs (reads result JSON only)"),
    "compare": ("alignx.report.compare", "alignx.report.compare:CompareConfig", "arm differences with paired-bootstrap 95% CIs and seed spread (reads result JSON only)"),
    "data": ("alignx.data.build", "alignx.data.build:DataBuildConfig", "build parallel/instruction/held-out data from installed packages"),
    "export": ("alignx.export", "alignx.export:ExportConfig", "merge a LoRA adapter into its base model (plain HF dir)"),
    "experiment": ("alignx.experiment", "alignx.experiment:ExperimentConfig", "run experiment arms (override files) and compare them"),
}

# Commands that split their work across the processes of `accelerate launch` / torchrun. The others would run whole
# in every process (N copies of an evaluation writing the same files), so they refuse to start under several.
MULTI_PROCESS = frozenset({"train", "pipeline"})

USAGE = """usage: alignx <command> [--config FILE.yaml ...] [key=value ...]

Settings come from the config class defaults, then each --config file in order, then key=value
overrides (dotted keys for sections, e.g. loss.lambda_ctr=0.5). `alignx <command> --help` lists them.

commands:
"""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Bad input: the message names the setting or file:line and what to do (exit 2)."""
    from alignx.config import ConfigError
    from alignx.data.importers import ImportFormatError
    from alignx.data.readers import DataError
    from alignx.data.sources import MissingSourceError
    from alignx.languages import UnknownLanguageError
    from alignx.model.offline import PackagedModelError

    return (ConfigError, DataError, ImportFormatError, MissingSourceError, PackagedModelError, UnknownLanguageError, FileNotFoundError)


def debug() -> bool:
    return os.environ.get("ALIGNX_DEBUG", "").lower() not in ("", "0", "false", "no")


def _one_line(text: object) -> str:
    return " ".join(str(text).split("\n")).strip()


# How a full disk reads when it is not an OSError: torch.save's zip writer ("unexpected pos ...", "PytorchStreamWriter
# failed writing file ...: file write failed") and safetensors (Rust io::ErrorKind::StorageFull). Its reader's errors
# ("PytorchStreamReader failed reading zip archive": a truncated checkpoint) are not a full disk.
_DISK_FULL = ("unexpected pos", "PytorchStreamWriter failed writing", "file write failed", "No space left on device", "StorageFull")


def failure(name: str, e: BaseException) -> tuple[str, int]:
    """(one-line message, exit status) for an exception that ended command ``name``."""
    from alignx.utils import WRITE_ERRNOS, OutputDirBusy, TrainingDiverged

    if isinstance(e, KeyboardInterrupt):
        return f"alignx {name}: interrupted", 130
    if isinstance(e, _user_errors()):
        return f"alignx {name}: {_one_line(e)}", 2
    if isinstance(e, OutputDirBusy | TrainingDiverged):
        return f"alignx {name}: {_one_line(e)}", 1
    if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
        where = e.filename or "the output directory"
        return f"alignx {name}: cannot write {where}: {e.strerror} (nothing half-written is left behind)", 1
    text = _one_line(e)
    if any(s in text for s in _DISK_FULL):
        # torch's zip writer and safetensors report a full disk in words of their own, not as ENOSPC
        return (f"alignx {name}: a file could not be written, most likely because the disk is full ({type(e).__name__}: "
                f"{text[:120]}); free space (df -h; /dev/shm too) or choose an output_dir on another disk, then rerun "
                "(training resumes from its last complete checkpoint; nothing half-written is left behind)"), 1
    return f"alignx {name}: internal error: {type(e).__name__}: {_one_line(e)} (ALIGNX_DEBUG=1 shows the traceback)", 1


def _close_progress_bars() -> None:
    """Close the progress bars a failed command left open, so that its one-line message starts a line of its own
    (an open bar ends without a newline, and the message would be glued to it)."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001, S112 - a bar that cannot close must not hide the message
            continue


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


# Commands whose bare arguments fill one list setting (``alignx report runs/*``).
POSITIONAL: dict[str, str] = {"report": "runs"}


def parse_args(argv: list[str], positional: str | None = None) -> tuple[list[str], list[str], bool]:
    """Split argv into (yaml files, key=value overrides, help?). ``--key value`` works like ``key=value``;
    bare arguments go to the ``positional`` list setting when the command has one."""
    bare: list[str] = []
    files: list[str] = []
    overrides: list[str] = []
    want_help = False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            want_help = True
        elif a in ("-c", "--config"):
            if i + 1 >= len(argv):
                raise SystemExit("alignx: --config needs a file")
            files.append(argv[i + 1])
            i += 1
        elif a.startswith("--config="):
            files.append(a.split("=", 1)[1])
        elif "=" in a:
            overrides.append(a.lstrip("-"))
        elif a.startswith("--") and i + 1 < len(argv):
            overrides.append(f"{a[2:].replace('-', '_')}={argv[i + 1]}")
            i += 1
        elif positional is not None:
            bare.append(a)
        else:
            raise SystemExit(f"alignx: cannot read argument {a!r}; use key=value or --config FILE")
        i += 1
    if bare:
        overrides.append(f"{positional}=[{','.join(bare)}]")
    return files, overrides, want_help


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE + "\n".join(f"  {name:<11}{desc}" for name, (_, _, desc) in COMMANDS.items()))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"alignx: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, cfg_spec, desc = COMMANDS[name]
    from alignx.config import describe, load_config
    from alignx.utils import setup_logging

    cfg_cls = _load(cfg_spec)
    files, overrides, want_help = parse_args(rest, POSITIONAL.get(name))
    if want_help:
        print(f"alignx {name}: {desc}\n\nsettings (key = default: help):")
        for key, default, help_text in describe(cfg_cls):
            print(f"  {key} = {default}\n      {help_text}")
        if hasattr(cfg_cls, "help_footer"):
            print("\n" + cfg_cls.help_footer())
        return 0
    world_size = os.environ.get("WORLD_SIZE", "1")
    if name not in MULTI_PROCESS and world_size.isdigit() and int(world_size) > 1:
        print(f"alignx {name}: runs in one process, and this is one of {world_size} (WORLD_SIZE={world_size}): every "
              f"process would run the whole command and write the same files; run `alignx {name} ...` without "
              "accelerate launch / torchrun (only train and pipeline split work across processes)", file=sys.stderr)
        return 2
    setup_logging()
    try:
        cfg = load_config(cfg_cls, files, overrides)
        importlib.import_module(module).main(cfg)
    except (Exception, KeyboardInterrupt) as e:  # one line, no traceback (tracebacks are for bugs: ALIGNX_DEBUG=1)
        if debug():
            raise
        message, status = failure(name, e)
        _close_progress_bars()
        print(message, file=sys.stderr)
        return status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
