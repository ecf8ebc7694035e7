"""The options every command shares: `--config` and `--db`."""

from __future__ import annotations

from pathlib import Path

from corral.cli._app import read_config


def test_db_overrides_the_config_files_database(tmp_path: Path):
    config = tmp_path / "corral.toml"
    config.write_text('database = "sqlite:///from-file.db"\n', encoding="utf-8")
    assert read_config(config, None).database == "sqlite:///from-file.db"
    assert read_config(config, "sqlite:///from-flag.db").database == "sqlite:///from-flag.db"
