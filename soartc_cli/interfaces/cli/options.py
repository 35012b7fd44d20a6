"""The options the commands share: ``Annotated`` aliases, and groups of them a command takes whole.

A :class:`Group` is a list of options with their defaults. ``@with_groups(IMAGE, FEATURES, …)``
adds a group's options to a command's signature (typer reads them from there, in that order) and
passes the command one namespace per group — ``image.size``, ``features.datum`` — so that every
command declares the options it shares once, and builds its settings from them in one call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Annotated, Any

import typer

__all__ = ["FEATURES", "IMAGE", "ROWS", "RUN", "Group", "Inputs", "with_groups"]


def option(kind: Any, help: str, metavar: str | None = None, *names: str, **more: Any) -> Any:
    """``Annotated[kind, typer.Option(*names, help=…, metavar=…)]``."""
    return Annotated[kind, typer.Option(*names, help=help, metavar=metavar, **more)]


Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        help="Image files and/or directories (walked recursively); '-' reads paths from stdin.",
        metavar="PATH...",
        show_default=False,
    ),
]
Size = option(int, "Fit: centred square resized to SIZE×SIZE; 0 keeps the native size.", "SIZE")
Patch = option(int, "Patch side P; SIZE must be a multiple of it.", "P")
Channels = option(str, "'luma' (one grey channel) or 'rgb' (R, G, B).", "luma|rgb")
Invert = option(bool, "Use 1 − v (dark objects on light).", None, "--invert")
MaxPixels = option(int, "Refuse images with more pixels than this (checked from the header).", "N")
NoRecursive = option(bool, "Only the top level of each directory.", None, "--no-recursive")
Datum = option(str, "Kernel that makes the standard s.", "NAME")
Kernels = option(str | None, 'JSON file of extra kernels: {"name": [[...], ...]}.', "FILE")
Transforms = option(str, "Transforms or presets: soartc, soart, all (see 'transforms').", "NAMES")
Metrics = option(str, "Metrics or presets: soart3, soart2022, rt, all.", "NAMES")
Output = option(
    str | None,
    "Write the rows to FILE, format by suffix: .csv .jsonl .ndjson (each may end .gz), "
    ".parquet; '-' is CSV on stdout.",
    "FILE", "--output", "-o",
)  # fmt: skip
Layout = option(
    str,
    "Rows: wide (one per image), long (per patch), summary (per transform), pooled (one per "
    "image, --pool stats over the patches: for machine learning).",
    "wide|long|summary|pooled",
)
Pool = option(str, "Statistics of --layout pooled: mean, std, min, max, median, p05, p95.", "STATS")
Resume = option(
    bool, "Keep progress in FILE.partial; run the same command again to go on after a kill.",
    None, "--resume",
)  # fmt: skip
Precision = option(int, "Significant digits of the numbers written.", "N")
Record = option(
    str | None, "Where the run record goes.", "FILE", show_default="FILE.meta.json of -o FILE"
)
Maps = option(str | None, "Write one heat-map PNG per image into this directory.", "DIR")
Workers = option(
    int | None,
    "Worker processes (1 = in-process).",
    "N",
    show_default="the CPUs this process may use",
)
Shard = option(str | None, "Process only slice I of N of the sorted file list ('I/N').", "I/N")
Strict = option(bool, "Stop at the first unusable file.", None, "--strict")
Quiet = option(bool, "Print nothing but errors.", None, "--quiet", "-q")
Seed = option(int, "Random seed of the weights.", "SEED")
Dim = option(
    int | None, "Width d of the projections (images: only with --weights random).", "D",
    show_default="3 for the demo, 64 for images",
)  # fmt: skip
Labels = option(
    str,
    "Labels: first (the first directory below the root), parent (the image's own directory) "
    "or none.",
    "first|parent|none",
)


@dataclass(frozen=True)
class Group:
    """Options a command takes together: ``(parameter, Annotated type, default)`` each."""

    name: str
    options: tuple[tuple[str, Any, Any], ...]

    def without(self, *names: str) -> Group:
        """The same group without the options ``names`` (a command that has no use for them)."""
        unknown = set(names) - {name for name, _, _ in self.options}
        if unknown:
            raise ValueError(f"group {self.name} has no option {sorted(unknown)}")
        return Group(self.name, tuple(o for o in self.options if o[0] not in names))


IMAGE = Group("image", (
    ("size", Size, 224), ("patch", Patch, 16), ("channels", Channels, "luma"),
    ("invert", Invert, False), ("max_pixels", MaxPixels, 100_000_000),
))  # fmt: skip
FEATURES = Group("features", (
    ("datum", Datum, "datum"), ("kernels", Kernels, None), ("transforms", Transforms, "soartc"),
    ("metrics", Metrics, "soart3"),
))  # fmt: skip
ROWS = Group("rows", (
    ("output", Output, None), ("layout", Layout, "wide"), ("pool", Pool, "mean,std,min,max"),
    ("precision", Precision, 7), ("record", Record, None), ("maps", Maps, None),
    ("resume", Resume, False),
))  # fmt: skip
RUN = Group("run", (
    ("workers", Workers, None), ("shard", Shard, None), ("strict", Strict, False),
    ("quiet", Quiet, False), ("no_recursive", NoRecursive, False), ("labels", Labels, "first"),
))  # fmt: skip


KEYWORD = inspect.Parameter.KEYWORD_ONLY


def with_groups(*groups: Group) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of ``groups`` to a command, after its own; the command gets one
    :class:`~types.SimpleNamespace` per group, as the keyword argument named after it."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            p for p in inspect.signature(command, eval_str=True).parameters.values()
            if p.name not in {g.name for g in groups}
        ]  # fmt: skip
        added = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind
            )
            for group in groups
            for name, kind, default in group.options
        ]

        @functools.wraps(command)
        def run(**given: Any) -> Any:
            for group in groups:
                given[group.name] = SimpleNamespace(
                    **{name: given.pop(name) for name, _, _ in group.options}
                )
            return command(**given)

        parameters = [p.replace(kind=KEYWORD) for p in own] + added
        run.__signature__ = inspect.Signature(parameters, return_annotation=int)
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate
