"""``flask tokens add|list|revoke``: a secret shown once, only its hash kept, and errors
in one line."""
from __future__ import annotations

from pathlib import Path

from flask import Flask

from app.access.token_file import digest
from tests.support import open_app


def tokens_app(logs_dir: Path, tokens_file: Path) -> Flask:
    return open_app({"AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": False,
                     "AGENT_API_TOKENS_FILE": str(tokens_file)})


def test_add_list_and_revoke(logs_dir: Path, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    app = tokens_app(logs_dir, tokens_file)
    cli = app.test_cli_runner()
    added = cli.invoke(args=["tokens", "add", "prometheus", "--role", "read"])
    assert added.exit_code == 0, added.output
    secret = added.stdout.strip()
    assert len(secret) >= 32 and secret not in tokens_file.read_text()
    assert digest(secret) in tokens_file.read_text()
    reader = {"Authorization": f"Bearer {secret}"}
    assert app.test_client().get("/api/whoami", headers=reader).json == {
        "name": "prometheus", "role": "read"}
    assert cli.invoke(args=["tokens", "list"]).stdout == "prometheus\tread\n"
    again = cli.invoke(args=["tokens", "add", "prometheus", "--role", "admin"])
    assert again.exit_code == 1 and "exists already" in again.output
    bad_name = cli.invoke(args=["tokens", "add", "a/b", "--role", "run"])
    assert bad_name.exit_code == 1 and "name" in bad_name.output
    assert cli.invoke(args=["tokens", "revoke", "prometheus"]).exit_code == 0
    assert app.test_client().get("/api/whoami", headers=reader).status_code == 401
    missing = cli.invoke(args=["tokens", "revoke", "prometheus"])
    assert missing.exit_code == 1 and "no token named" in missing.output


def test_a_file_that_cannot_be_written_is_one_line(logs_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tokens"
    app = tokens_app(logs_dir, folder / "tokens.json")
    folder.write_text("")  # where the file should go is a file now
    failed = app.test_cli_runner().invoke(args=["tokens", "add", "x", "--role", "read"])
    assert failed.exit_code == 1, failed.output
    assert failed.output.startswith("Error: ") and len(failed.output.splitlines()) == 1
    assert "Traceback" not in failed.output


def test_without_the_setting_the_commands_say_so(app: Flask) -> None:
    listed = app.test_cli_runner().invoke(args=["tokens", "list"])
    assert listed.exit_code == 1 and "AGENT_API_TOKENS_FILE is not set" in listed.output
