"""CLI: dispatch table, config loading from YAML + overrides, errors as one line."""

from __future__ import annotations

import pytest

from alignx import cli
from alignx.config import ConfigError, TrainConfig, load_config


def test_every_command_resolves_to_a_main_and_a_config():
    import importlib

    for name, (module, cfg_spec, _) in cli.COMMANDS.items():
        assert callable(importlib.import_module(module).main), name
        import dataclasses

        assert dataclasses.is_dataclass(cli._load(cfg_spec)), name


def test_yaml_then_overrides(tmp_path):
    y = tmp_path / "a.yaml"
    y.write_text("stage: 1\nloss:\n  lambda_ctr: 0.5\ndata:\n  parallel: [a.jsonl]\n")
    cfg = load_config(TrainConfig, [y], ["loss.tau=0.05", "data.parallel=b.jsonl,c.jsonl", "lora.enabled=true"])
    assert cfg.loss.lambda_ctr == 0.5 and cfg.loss.tau == 0.05 and cfg.lora.enabled
    assert cfg.data.parallel == ["b.jsonl", "c.jsonl"]
    assert cfg.loss.lambda_lam == 0.4 and cfg.optim.lr == 2e-6  # reference defaults


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.lamda_ctr=1", "unknown setting loss.lamda_ctr"),
        ("loss.tau=0", "loss.tau must be > 0"),
        ("optim.batch_size=eight", "optim.batch_size: expected int"),
        ("stage=3", "stage must be 1 or 2"),
        ("lora.enabled=maybe", "expected true/false"),
    ],
)
def test_bad_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, [], [override])


def test_bad_yaml_names_file_and_line(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("stage: 1\nloss: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(TrainConfig, [y])


def test_cli_help_and_errors(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "loss.lambda_ctr = 0.3" in capsys.readouterr().out
    assert cli.main(["nope"]) == 2
    assert cli.main(["train", "loss.tau=-1"]) == 2
    assert "loss.tau must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "analyze", "demo", "experiment", "export"])
def test_one_process_commands_refuse_several_processes(command, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main([command, "output_dir=/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "WORLD_SIZE=2" in err and "without accelerate launch" in err


def test_train_is_not_refused_under_several_processes(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["train", "loss.tau=-1"]) == 2  # reaches the settings check, i.e. past the process-count gate
    assert "loss.tau must be > 0" in capsys.readouterr().err
    assert cli.main(["eval", "--help"]) == 0  # help is not work


def test_failure_line_is_not_glued_to_an_open_progress_bar(monkeypatch, capsys):
    """A command that fails with a progress bar open (no newline after it) still prints its one line on a line of
    its own."""
    import sys

    from tqdm import tqdm

    from alignx.eval import analyze

    def fails(cfg):
        bar = tqdm(total=6, file=sys.stderr, mininterval=0)
        bar.update(4)  # drawn, left open: the cursor stays at the end of the bar
        raise ConfigError("analyze.pairs: no such file")

    monkeypatch.setattr(analyze, "main", fails)
    assert cli.main(["analyze"]) == 2
    err = capsys.readouterr().err
    lines = [part.strip() for line in err.splitlines() for part in line.split("\r")]
    assert "alignx analyze: analyze.pairs: no such file" in lines


def test_positional_runs_for_report():
    files, overrides, _ = cli.parse_args(["runs/a", "runs/b", "title=x"], "runs")
    assert overrides == ["title=x", "runs=[runs/a,runs/b]"]
    with pytest.raises(SystemExit):
        cli.parse_args(["runs/a"], None)


def test_bad_data_file_is_one_line_error(tmp_path, capsys, tiny_llama_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "de"}\n{"src": 1}\n')
    code = cli.main(["train", f"model.name_or_path={tiny_llama_dir}", f"data.parallel=[{bad}]", f"output_dir={tmp_path / 'o'}", "report_to=none"])
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}:2: missing field(s) tgt, src_lang, tgt_lang" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written
