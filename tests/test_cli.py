"""The CLI as a user meets it: init, help, models, clear errors."""

import json
from pathlib import Path

from schemas.models import resolve_model


def test_init_refuses_to_overwrite(cli, tmp_path: Path):
    cli("init", str(tmp_path / "ws"))
    proc = cli("init", str(tmp_path / "ws"), check=False)
    assert proc.returncode == 2 and "already exists; pass --force" in proc.stderr
    cli("init", str(tmp_path / "ws"), "--force")


def test_example_workspace_status(cli, example_workspace: Path):
    status = json.loads(cli("status", "-w", str(example_workspace), "--json").stdout)
    assert status["total_pairs"] == 48
    assert {r["label"] for r in status["pairs"]} == {"L1", "L2", "L3", "L4"}


def test_missing_workspace_is_a_clear_error(cli, tmp_path: Path):
    proc = cli("status", "-w", str(tmp_path / "nowhere"), check=False)
    assert proc.returncode == 2
    assert "cotgen.toml: no such file; run `cotgen init`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_names_the_key(cli, tmp_path: Path):
    cli("init", str(tmp_path / "ws"))
    config = tmp_path / "ws" / "cotgen.toml"
    config.write_text(config.read_text().replace("n = 4", "n = 'four'"))
    proc = cli("status", "-w", str(tmp_path / "ws"), check=False)
    assert proc.returncode == 2 and "policy.n: Input should be a valid integer" in proc.stderr


def test_help_lists_every_area(cli):
    out = cli("--help").stdout
    for command in ("init", "ingest", "status", "run", "models"):
        assert command in out


def _all_commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _all_commands(sub, (*path, name))


def test_help_texts_survive_rich_markup(cli):
    """Rich reads "[word]" in help as a style tag and drops it; literal brackets must be escaped as "\\["."""
    import re

    import typer

    from cotgen.cli import app

    for path, command in _all_commands(typer.main.get_command(app)):
        for param in command.params:
            text = getattr(param, "help", None) or ""
            assert not re.search(r"(?<!\\)\[[^\]\s]*\]", text), f"cotgen {' '.join(path)} {param.name}: {text}"
    out = " ".join(cli("train", "sft", "--help").stdout.split())
    assert "NAME[@vK]" in out and "[training].model" in out


def test_bundled_models_resolve_offline(smollm2_path):
    assert (Path(smollm2_path) / "config.json").exists()
    assert "quantization_config" not in json.loads((Path(smollm2_path) / "config.json").read_text())
    minilm = Path(resolve_model("bundled:all-minilm-l6-v2"))
    assert (minilm / "modules.json").exists()


def test_unknown_model_fails_fast(tmp_path: Path):
    import pytest

    from schemas.errors import CotgenError

    with pytest.raises(CotgenError, match="not in the Hugging Face cache; this toolkit does not download"):
        resolve_model("some-org/some-model")
    with pytest.raises(CotgenError, match="does not exist"):
        resolve_model(str(tmp_path / "no-such-dir"))
    with pytest.raises(CotgenError, match="unknown bundled model"):
        resolve_model("bundled:gpt-5")


def test_usage_error_is_a_message_not_a_traceback(cli):
    proc = cli("ingest", "--bogus", check=False)
    assert proc.returncode == 2
    assert "No such option: --bogus" in proc.stderr and "Traceback" not in proc.stderr


def test_help_fits_80_columns_without_bool_beside_flags():
    """Every command's --help at 80 columns: no `<bool>` beside on/off flags, no line wider than the console."""
    import typer
    from typer.testing import CliRunner

    from cotgen.cli import app

    runner = CliRunner()
    for path, _ in _all_commands(typer.main.get_command(app)):
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80).output
        assert "Usage:" in out, path
        assert "<bool>" not in out, f"cotgen {' '.join(path)} --help"
        assert max(len(line) for line in out.splitlines()) <= 80, f"cotgen {' '.join(path)} --help"


def test_output_at_80_columns_keeps_paths_and_names_whole(cli, tmp_path: Path):
    """In a log (no terminal) at 80 columns: a long path, a long run name and table titles stay whole."""
    from helpers_curation import add_run

    from curation.store import Store

    ws = tmp_path / "ws"
    cli("init", str(ws))
    folder = ws / "exports" / "from-the-search-team" / "2026-12-04" / "relevance-judgements-round-2"
    folder.mkdir(parents=True)
    path = folder / "crowdflower_style_pairs_with_a_long_name.csv"
    path.write_text("query,product_title,median_relevance\nmug,Blue Mug,4\nhat,Red Hat,1\n", encoding="utf-8")
    env = {"COLUMNS": "80"}
    out = cli("ingest", "-w", str(ws), str(path), "--scheme", "crowdflower", env=env)
    assert f"crowdflower_style_pairs_with_a_long_name: {path}" in out.stdout.splitlines()
    assert "columns: query <- query, title <- product_title, label <- median_relevance" in out.stderr
    with Store(ws / "store.duckdb") as store:
        add_run(store, "teacher-smollm2-135m-instruct-e05-40463", "teacher", params={"explain_gold": True})
        add_run(store, "teacher-calibration", "teacher", started=5, params={"explain_gold": False})
    status = cli("status", "-w", str(ws), env=env).stdout
    words = status.split()
    assert "…" not in status and max(len(line) for line in status.splitlines()) <= 80
    assert "teacher-smollm2-135m-instruct-e05-40463" in words and "bundled:smollm2-135m-instruct" in words, \
        "run names and model refs are whole (a table too wide for them becomes one block per run)"
    assert "gold" in status and "shown" in status, "a gold-conditioned run is marked so"
    runs = json.loads(cli("status", "-w", str(ws), "--json").stdout)["runs"]
    assert [(r["name"], r["gold_shown"]) for r in runs] == [
        ("teacher-smollm2-135m-instruct-e05-40463", True), ("teacher-calibration", False)]
    tables = [line for line in status.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(len(line) for line in tables) <= 80
    assert "bundled:smollm2-135m-instruct" in cli("models", "list", env=env).stdout, "model refs are never folded"
