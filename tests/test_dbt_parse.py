"""A new warehouse's first dbt command starts from the project's parse (dbt_cli.py)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from orchestration import dbt_cli
from orchestration.assets.warehouse import DBT_PROJECT_DIR, dbt_command


def test_the_warehouse_option_is_taken_off_dbts_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["build", "--warehouse", "data/w.duckdb", "--select", "x"]
    assert dbt_cli.take_warehouse(args) == (["build", "--select", "x"], tmp_path / "data/w.duckdb")
    assert dbt_cli.take_warehouse(["parse", "--warehouse=/w.duckdb"]) == (
        ["parse"],
        Path("/w.duckdb"),
    )
    assert dbt_cli.take_warehouse(["parse"]) == (["parse"], None)
    with pytest.raises(SystemExit, match="--warehouse needs a path"):
        dbt_cli.take_warehouse(["parse", "--warehouse"])


def test_the_target_folder_is_the_command_lines_else_the_environments():
    env = {"DBT_TARGET_PATH": "/from/env"}
    assert dbt_cli.target_of(["build", "--target-path", "/t"], env) == Path("/t")
    assert dbt_cli.target_of(["build", "--target-path=/t"], env) == Path("/t")
    assert dbt_cli.target_of(["build"], env) == Path("/from/env")
    # A relative folder is relative to the project, which dbt resolves: nothing is seeded.
    assert dbt_cli.target_of(["build", "--target-path", "target"], {}) is None
    assert dbt_cli.target_of(["build"], {}) is None


def test_a_folder_without_a_parse_gets_a_copy_and_one_with_a_parse_keeps_its_own(tmp_path):
    source, target = tmp_path / "project", tmp_path / "w.duckdb.dbt"
    assert not dbt_cli.seed_parse_state(target, source)  # nothing to copy: dbt parses whole
    source.mkdir()
    (source / dbt_cli.PARSE_STATE).write_bytes(b"project")
    assert dbt_cli.seed_parse_state(target, source)
    assert (target / dbt_cli.PARSE_STATE).read_bytes() == b"project"
    (target / dbt_cli.PARSE_STATE).write_bytes(b"its own")
    assert not dbt_cli.seed_parse_state(target, source)
    assert (target / dbt_cli.PARSE_STATE).read_bytes() == b"its own"
    assert not dbt_cli.seed_parse_state(source, source)


def test_the_parse_check_ignores_where_the_database_lies_but_not_its_name():
    def profile(path: str, database: str, memory: str) -> str:
        connection = {"database": database, "schema": "main", "path": path}
        return dbt_cli.parse_profile([*connection.items(), ("settings", {"memory_limit": memory})])

    here = profile("/a/warehouse.duckdb", "warehouse", "-1")
    assert profile("/b/warehouse.duckdb", "warehouse", "4GiB") == here
    # The models compile to the database's name: another name is another parse.
    assert profile("/a/w.duckdb", "w", "-1") != here


def parsed_files(target: Path) -> tuple[int, int]:
    perf = json.loads((target / "perf_info.json").read_text())
    return perf["parsed_path_count"], perf["path_count"]


def test_a_new_warehouses_first_command_starts_from_the_projects_parse(tmp_path):
    # `make setup` parsed the project (DEFAULT_TARGET); a warehouse elsewhere, with other
    # DuckDB settings, parses only the files changed since (none in a clean checkout), where
    # it parsed every one before (~3 s). A warehouse of another name compiles to another
    # database: it parses every file.
    env = {**os.environ, "DUCKDB_MEMORY_LIMIT": "1GiB", "DBT_THREADS": "1"}
    runs = {}
    for name in ("warehouse", "w"):
        warehouse = tmp_path / name / f"{name}.duckdb"
        target = tmp_path / f"{name}.dbt"
        command = dbt_command(warehouse, target, "parse", "--quiet")
        subprocess.run(command, check=True, cwd=DBT_PROJECT_DIR, env=env)
        runs[name] = parsed_files(target)
    parsed, files = runs["warehouse"]
    assert files > 100 and parsed < files
    assert runs["w"] == (files, files)
