"""Server settings: flag > environment (TUNEFORGE_*) > config file > default, resolved by the
same functions ``tuneforge serve``, ``worker`` and ``keys`` call."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from tuneforge.cli.server_commands import serve_settings
from tuneforge.errors import InputError
from tuneforge.server.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TUNEFORGE_"):
            monkeypatch.delenv(name)


# (serve flag, its value, settings field, env value, value from env, file value)
CASES = {
    "TUNEFORGE_WORKERS": ("workers", 5, "workers", "3", 3, 7),
    "TUNEFORGE_RATE_LIMIT_PER_MINUTE": (
        "rate_limit_per_minute",
        50,
        "rate_limit_per_minute",
        "1",
        1,
        70,
    ),
    "TUNEFORGE_LEASE_SECONDS": ("lease_seconds", 20.0, "lease_seconds", "12.5", 12.5, 40.0),
    "TUNEFORGE_MAX_UPLOAD_BYTES": ("max_upload_mb", 2, "max_upload_bytes", "1000", 1000, 3000),
}


def _file(tmp: Path, values: dict) -> Path:
    path = tmp / "server.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return path


@pytest.mark.parametrize("env", list(CASES))
def test_env_is_honoured_a_flag_beats_it_and_it_beats_the_file(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag, flag_value, field, env_value, from_env, file_value = CASES[env]
    default = Settings.model_fields[field].default
    config = _file(tmp_path, {field: file_value})
    assert getattr(serve_settings(), field) == default
    assert getattr(serve_settings(config=config), field) == file_value  # file > default
    monkeypatch.setenv(env, env_value)
    assert getattr(serve_settings(), field) == from_env  # env is honoured
    assert getattr(serve_settings(config=config), field) == from_env  # env > file
    expected = flag_value * 1024 * 1024 if flag == "max_upload_mb" else flag_value
    assert getattr(serve_settings(config=config, **{flag: flag_value}), field) == expected


def test_the_config_file_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _file(tmp_path, {"inference_rate_limit_per_minute": 1200, "port": 9001})
    monkeypatch.setenv("TUNEFORGE_CONFIG", str(config))
    settings = serve_settings(port=9002)
    assert settings.inference_rate_limit_per_minute == 1200 and settings.port == 9002


def test_worker_reads_lease_data_dir_and_database_from_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _file(tmp_path, {"data_dir": str(tmp_path / "d"), "lease_seconds": 9.0})
    settings = load_settings({"config_file": config, "lease_seconds": None})
    assert settings.data_dir == tmp_path / "d" and settings.lease_seconds == 9.0
    assert settings.resolved_database_url().endswith(str(tmp_path / "d" / "tuneforge.db"))
    monkeypatch.setenv("TUNEFORGE_LEASE_SECONDS", "4")
    assert load_settings({"config_file": config}).lease_seconds == 4.0


def test_invalid_values_and_unknown_file_keys_are_input_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="unknown settings rate_limit"):
        serve_settings(config=_file(tmp_path, {"rate_limit": 5}))
    monkeypatch.setenv("TUNEFORGE_WORKERS", "-1")
    with pytest.raises(InputError, match="workers"):
        serve_settings()


def test_keys_use_the_data_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEFORGE_DATA_DIR", str(tmp_path / "env-data"))
    result = run_cli("keys", "create", "--project", "acme")
    assert result.code == 0, result
    assert (tmp_path / "env-data" / "tuneforge.db").is_file()
    flag_dir = tmp_path / "flag-data"
    assert run_cli("keys", "list", "--data-dir", flag_dir, "--json").code == 0
    assert (flag_dir / "tuneforge.db").is_file()


def test_database_passwords_are_masked() -> None:
    settings = Settings(database_url="postgresql+psycopg://tf:s3cret@db.internal/tuneforge")
    assert "s3cret" not in settings.masked_database_url()
    assert "db.internal" in settings.masked_database_url()


def test_defaults_quoted_in_server_help_are_the_settings_defaults() -> None:
    """The flags' help quotes defaults without importing the settings; they must agree."""
    import re

    import typer

    from tuneforge.cli.main import app

    group = typer.main.get_command(app)
    commands = [group.commands["serve"], group.commands["worker"]]  # type: ignore[attr-defined]
    commands += list(group.commands["keys"].commands.values())  # type: ignore[attr-defined]
    checked = set()
    for command in commands:
        for param in command.params:
            found = re.search(r"env (TUNEFORGE_\w+)[^)]*?; default: ([^)]+)\)", param.help or "")
            if not found:
                continue
            field = found.group(1).removeprefix("TUNEFORGE_").lower()
            default = Settings.model_fields[field].default
            quoted = found.group(2).replace(" MiB", "")
            if field == "max_upload_bytes":
                assert int(quoted) * 1024 * 1024 == default
            elif field == "database_url":
                assert default is None and "DATA_DIR/tuneforge.db" in quoted
            else:
                assert type(default)(quoted) == default, (param.name, quoted, default)
            checked.add(field)
    assert {"workers", "rate_limit_per_minute", "lease_seconds", "max_upload_bytes"} <= checked
