"""The run record of SPEC §6: what a run did, as JSON next to its output."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

__all__ = ["record_json", "run_record"]


def run_record(
    *,
    version: str,
    command: Sequence[str],
    settings: dict,
    output: dict,
    found: int,
    processed: int,
    failures: Sequence[tuple[str, str]],
    started: str,
    finished: str,
    extra: dict | None = None,
) -> dict:
    """The run record as a JSON-ready dict; ``failures`` are ``(path, error)`` pairs.

    The counts add up: ``found = processed + failed``.
    """
    record = {
        "tool": "soartc",
        "version": version,
        "command": list(command),
        "settings": settings,
        "output": output,
        "counts": {"found": found, "processed": processed, "failed": len(failures)},
        "failures": [{"path": path, "error": error} for path, error in failures],
        "started": started,
        "finished": finished,
    }
    record.update(extra or {})
    return record


def record_json(record: dict[str, object]) -> str:
    """The run record as indented JSON (UTF-8 text, non-ASCII kept)."""
    text = json.dumps(record, indent=2, ensure_ascii=False)
    # Lists of numbers (kernel rows) on one line each, so that a kernel reads as a matrix.
    return _NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*,\s*)*-?[0-9][0-9.eE+-]*)\s*\]")
