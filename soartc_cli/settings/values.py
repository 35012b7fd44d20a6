"""Strict checks of single option values, shared by every settings object.

One rule per kind of value, whoever gives it — the command line (typer has converted it), the
Python API, or a run record and a model file read back (JSON): a whole number is an ``int`` and
never a ``bool``, a flag is a ``bool``, a choice is one of its names. Each check raises one
:class:`~soartc_cli.errors.UsageError` that names the option and what it takes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from soartc_cli.core.names import check_choice
from soartc_cli.errors import UsageError

__all__ = ["choice", "comma_list", "flag", "number", "text", "whole"]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def whole(
    value: object,
    *,
    option: str,
    low: int | None = None,
    high: int | None = None,
    between: bool = False,
) -> int:
    """``value`` as a whole number within ``[low, high]``; UsageError naming ``option`` (and
    both bounds with ``between``, else the one it crosses).

    Booleans are refused (``True`` is not 1 here), as are floats, even whole ones: a record or
    model that says ``"size": 224.0`` was not written by soartc.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{option} must be a whole number, not {_shown(value)}")
    if between and not low <= value <= high:
        raise UsageError(f"{option} must be between {low} and {high}, not {value}")
    if low is not None and value < low:
        raise UsageError(f"{option} must be at least {low}, not {value}")
    if high is not None and value > high:
        raise UsageError(f"{option} must be at most {high}, not {value}")
    return int(value)


def flag(value: object, *, option: str) -> bool:
    """``value`` if it is a ``bool``; UsageError naming ``option`` otherwise (0 and 1 too)."""
    if not isinstance(value, bool):
        raise UsageError(f"{option} must be true or false, not {_shown(value)}")
    return value


def text(value: object, *, option: str) -> str:
    """``value`` if it is a ``str``; UsageError naming ``option`` otherwise."""
    if not isinstance(value, str):
        raise UsageError(f"{option} must be text, not {_shown(value)}")
    return value


def choice(value: object, *, option: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; UsageError listing them otherwise."""
    return check_choice(value, name=option, choices=choices)


def number(value: object, *, option: str, low=None, high=None, low_open=False) -> float:
    """``value`` as a finite float within ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{option} must be a number, not {_shown(value)}")
    out = float(value)
    bounds = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
    outside = (
        not math.isfinite(out)
        or (low is not None and (out <= low if low_open else out < low))
        or (high is not None and out > high)
    )
    if outside:
        if low is not None and high is not None:
            raise UsageError(f"{option} must be a number in {bounds}, not {_shown(value)}")
        limit = f"greater than {low}" if low_open else f"at least {low}" if low is not None else ""
        raise UsageError(f"{option} must be a finite number {limit}, not {_shown(value)}".strip())
    return out


def comma_list(value: object, *, option: str) -> str:
    """A names option given as ``"a,b"`` or as a sequence of names, as one comma-separated str."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and all(isinstance(item, str) for item in value):
        return ",".join(value)
    raise UsageError(f"{option} must be a comma-separated string or a list of names")
