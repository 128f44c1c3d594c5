"""Where the data files are: the repository root in a checkout (an editable install included), the wheel's
copy (``aimeter/_data/``, made by setup.py) when installed. Same relative paths in both."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parents[1]  # services/aimeter -> the repository root
DATA_ROOT = _CHECKOUT if _PACKAGE.parent.name == "services" and (_CHECKOUT / "schemas").is_dir() else _PACKAGE / "_data"


def data_path(*parts: str) -> Path:
    """``data_path("schemas", "clickhouse")``: that file or directory, wherever this copy of aimeter found it."""
    return DATA_ROOT.joinpath(*parts)
