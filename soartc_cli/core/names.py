"""Names users type: one of a few choices, or comma-separated lists with presets
(``--transforms``, ``--metrics``, ``--pool``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from soartc_cli.errors import UsageError


def parse_names(
    spec: str, *, option: str, presets: Mapping[str, Sequence[str]], valid: Sequence[str]
) -> tuple[str, ...]:
    """Names and presets of a comma-separated ``spec``, presets expanded, in the order given.

    Spaces around names are ignored and repeats dropped (the first occurrence wins). UsageError
    on an empty value or item, or on names that are neither ``valid`` nor a preset; the message
    lists the valid names and presets.
    """
    return _expand(_split_names(spec, option=option), presets=presets, valid=valid, option=option)


def _split_names(spec: str, *, option: str) -> list[str]:
    """Comma-separated names, stripped; UsageError on an empty list or an empty item."""
    if not isinstance(spec, str):
        raise UsageError(f"{option} must be a comma-separated string, got {spec!r}")
    names = [item.strip() for item in spec.split(",")]
    if names == [""]:
        raise UsageError(f"{option} is empty: give at least one name")
    if "" in names:
        raise UsageError(f"{option} has an empty name in {spec!r}: remove the extra comma")
    return names


def _expand(
    names: Sequence[str],
    *,
    presets: Mapping[str, Sequence[str]],
    valid: Sequence[str],
    option: str,
) -> tuple[str, ...]:
    """Expand presets, keep order, drop repeats (first wins), reject unknown names."""
    unknown = [name for name in names if name not in presets and name not in valid]
    if unknown:
        listed = ", ".join(repr(name) for name in dict.fromkeys(unknown))
        raise UsageError(
            f"unknown {option} {listed}; valid names: {', '.join(valid)}; "
            f"presets: {', '.join(presets)}"
        )
    chosen: dict[str, None] = {}
    for name in names:
        for item in presets.get(name, (name,)):
            chosen.setdefault(item, None)
    return tuple(chosen)


def check_choice(value: object, *, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a UsageError naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise UsageError(f"{name} must be one of {', '.join(choices)}, not {shown}")
    return value
