"""`aimeter keys list` says which keys are revoked in words, not only by a timestamp."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from aimeter.keys_cli import cmd_create, cmd_list, cmd_revoke
from aimeter.settings import Settings


def test_list_names_revoked_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(data_dir=tmp_path, keys_store="file")  # the file store: no broker in a unit test
    for team in ("search", "ads"):
        cmd_create(argparse.Namespace(team=team, project="", user=""), settings)
    key_id = capsys.readouterr().out.split("key id ")[1].split()[0]
    cmd_revoke(argparse.Namespace(key_id=key_id), settings)
    capsys.readouterr()
    cmd_list(argparse.Namespace(), settings)
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:] if line.strip()}
    assert "revoked 20" in lines[key_id]
    assert [line.split()[-1] for k, line in lines.items() if k != key_id] == ["active"]
