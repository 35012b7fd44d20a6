"""How a run goes: its inputs (paths, labels, shard), its output (``-o``, layout, record, pictures,
``--resume``), workers, strictness (SPEC §2.1–2.2, §6–§8)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from soartc_cli.errors import UsageError
from soartc_cli.output.formats import OutputSpec, choose_format
from soartc_cli.output.layouts import DEFAULT_POOL, Layout
from soartc_cli.settings.values import choice, flag, text, whole

__all__ = ["LABELS", "InputSettings", "OutputSettings", "RunSettings", "Shard", "usable_cpus"]

#: ``--labels``: how an image's label is found (SPEC §2.2).
LABELS = ("first", "parent", "none")


def usable_cpus() -> int:
    """The CPUs this process may use: a Slurm task's ``SLURM_CPUS_PER_TASK``, else the CPU
    affinity mask (``taskset``, cgroups), else the machine's count."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Shard:
    """``--shard I/N``: the I-th of N contiguous slices of the sorted file list."""

    index: int
    count: int

    @classmethod
    def parse(cls, value: str) -> Shard:
        """``"I/N"`` → Shard; UsageError on anything else (see ``discover.parse_shard``)."""
        from soartc_cli.imaging.discover import parse_shard

        return cls(*parse_shard(text(value, option="--shard")))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def to_record(self, paths: Sequence[str]) -> dict[str, object]:
        """The record's ``shard``: this slice, and a fingerprint of the whole run's file list
        (its count and the sha256 of the sorted paths), so that ``merge`` joins shards of one
        run only."""
        import hashlib

        digest = hashlib.sha256("\n".join(sorted(paths)).encode("utf-8", "surrogateescape"))
        return {
            "index": self.index, "count": self.count, "files": len(paths),
            "fingerprint": f"{len(paths)}:{digest.hexdigest()}",
        }  # fmt: skip


@dataclass(frozen=True)
class InputSettings:
    """What a run reads: paths (``-`` for stdin), recursion, labels and the shard."""

    paths: tuple[str, ...]
    recursive: bool = True
    labels: str = "first"
    shard: Shard | None = None

    def __post_init__(self) -> None:
        paths = self.paths
        if isinstance(paths, (str, os.PathLike)):
            paths = (paths,)
        try:
            paths = tuple(os.fspath(p) for p in paths)
        except TypeError:
            raise UsageError("inputs must be paths (str or os.PathLike)") from None
        if not paths:
            raise UsageError("give at least one image file or directory (or '-' to read stdin)")
        if any(isinstance(p, bytes) for p in paths):
            paths = tuple(os.fsdecode(p) for p in paths)
        object.__setattr__(self, "paths", paths)
        flag(self.recursive, option="--recursive")
        choice(self.labels, option="--labels", choices=LABELS)
        if self.shard is not None and not isinstance(self.shard, Shard):
            raise UsageError("shard must be a Shard (Shard.parse('I/N'))")

    @classmethod
    def parse(
        cls, paths, *, recursive: bool = True, labels: str = "first", shard: str | None = None
    ):
        """As the options give them: ``shard`` as ``"I/N"``."""
        return cls(paths, recursive, labels, None if shard is None else Shard.parse(shard))


@dataclass(frozen=True)
class OutputSettings:
    """Where a run's rows go and how they are written.

    ``path`` is ``-o`` (None: terminal tables; ``-``: CSV on stdout). ``layout`` is a
    ``--layout`` name, or a :class:`~soartc_cli.output.layouts.Layout` a command fixes (score).
    ``spec`` is the chosen format, layout, precision and compression.
    """

    path: str | None = None
    layout: str | Layout = "wide"
    pool: tuple[str, ...] = DEFAULT_POOL
    precision: int = 7
    record: str | None = None
    maps: str | None = None
    resume: bool = False
    spec: OutputSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from soartc_cli.output.targets import check_output_path, is_special

        for name, option in (("path", "--output"), ("record", "--record"), ("maps", "--maps")):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(text(os.fspath(value), option=option)))
        whole(self.precision, option="--precision")
        flag(self.resume, option="--resume")
        pool = self.pool
        object.__setattr__(self, "pool", (pool,) if isinstance(pool, str) else tuple(pool))
        layout = self.layout
        spec = choose_format(
            self.path, layout=layout if isinstance(layout, str) else "wide",
            precision=self.precision, pool=self.pool,
        )  # fmt: skip
        if isinstance(layout, Layout):
            spec = OutputSpec(spec.format, layout, spec.precision, spec.compression)
            spec.format.check(layout)
        object.__setattr__(self, "spec", spec)
        if self.resume and (self.path in (None, "-") or is_special(self.path)):
            raise UsageError("--resume needs -o FILE (a regular file to finish into)")
        if self.path is not None:
            check_output_path(self.path)
        if self.record is not None:
            directory = os.path.dirname(os.path.abspath(self.record))
            if not os.path.isdir(directory):
                raise UsageError(f"--record: directory of {self.record} does not exist")
            if not os.access(directory, os.W_OK):
                raise UsageError(f"--record: cannot write into {directory}")
            if self.path not in (None, "-") and (
                os.path.realpath(self.record) == os.path.realpath(self.path)
            ):
                raise UsageError(f"--record {self.record} is the output file: name another file")
        if self.maps is not None and os.path.exists(self.maps) and not os.path.isdir(self.maps):
            raise UsageError(f"--maps: {self.maps} is not a directory")

    @property
    def to_file(self) -> bool:
        """True when rows are written (``-o``), False for terminal tables."""
        return self.path is not None

    def describe(self) -> dict[str, Any]:
        """The run record's ``output`` part."""
        return self.spec.describe() if self.to_file else {"format": "table"}


@dataclass(frozen=True)
class RunSettings:
    """Everything about a run that is not the per-image work: inputs, output, workers."""

    inputs: InputSettings
    output: OutputSettings = field(default_factory=OutputSettings)
    workers: int | None = None
    strict: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, InputSettings):
            raise UsageError("inputs must be an InputSettings")
        if self.workers is not None:
            whole(self.workers, option="--workers", low=1)
        flag(self.strict, option="--strict")
        flag(self.quiet, option="--quiet")

    @property
    def worker_count(self) -> int:
        """``--workers``, or the CPUs this process may use."""
        return self.workers or usable_cpus()
