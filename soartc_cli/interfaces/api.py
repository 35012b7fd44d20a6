"""The notebook API: a list of image paths → feature rows with their column names, in one call.

:func:`features_table` runs the pipeline of ``soartc compute`` (discovery, loading, the SOARTC /
SOART features, the layouts of SPEC §6, the worker pool) and returns the table in memory instead
of writing a file: a dict of columns, or a pandas DataFrame. :func:`soartc_job` makes the job of
the feature options, for the CLI and for this module alike.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from soartc_cli.errors import UsageError
from soartc_cli.output.formats import Format, OutputSpec, Sink
from soartc_cli.output.layouts import DEFAULT_POOL, Columns, ImageValues, get_layout
from soartc_cli.pipeline.jobs import ImageSettings, SoartcJob, Task

__all__ = ["FeatureTable", "SkippedImagesWarning", "features_table", "soartc_job"]

PathLike = str | os.PathLike[str]


class SkippedImagesWarning(UserWarning):
    """Some images of a :func:`features_table` call could not be used (see ``failures``)."""


class FeatureTable(dict):
    """Columns by name (``str`` → list of str or 1-D ndarray), in column order.

    Attributes
    ----------
    failures : list of (str, str)
        ``(path, reason)`` of every image that was skipped, in input order.
    """

    failures: list[tuple[str, str]]

    def __init__(self, columns: Mapping[str, Any], failures: Sequence[tuple[str, str]]) -> None:
        super().__init__(columns)
        self.failures = list(failures)


def _names(spec: str | Sequence[str]) -> str:
    return spec if isinstance(spec, str) else ",".join(spec)


def _user_kernels(kernels: PathLike | Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """``kernels`` as validated user kernels: a JSON file's path (read as ``--kernels`` reads
    it, size first), or a mapping name → rows."""
    from soartc_cli.core.transforms import load_kernels, read_kernel_file

    if kernels is None:
        return {}
    if isinstance(kernels, Mapping):
        return load_kernels(
            json.dumps({name: np.asarray(rows).tolist() for name, rows in kernels.items()})
        )
    return read_kernel_file(kernels)


def soartc_job(
    *,
    size: int = 224,
    patch: int = 16,
    channels: str = "luma",
    invert: bool = False,
    max_pixels: int = 100_000_000,
    datum: str = "datum",
    kernels: PathLike | Mapping[str, Any] | None = None,
    transforms: str | Sequence[str] = "soartc",
    metrics: str | Sequence[str] = "soart3",
) -> SoartcJob:
    """The SOARTC / SOART job of the feature options of ``compute`` (and ``fit``), checked.

    ``transforms`` and ``metrics`` take names and presets, as a comma list or a sequence;
    ``kernels`` adds user kernels (a JSON file as ``--kernels`` reads, or a mapping name → rows).

    Raises
    ------
    UsageError
        An unknown name, a bad geometry or kernel, channels other than luma or rgb.
    """
    from soartc_cli.core import attention
    from soartc_cli.core import transforms as transforms_module
    from soartc_cli.core.metrics import parse_metrics
    from soartc_cli.imaging import load

    attention.check_choice(channels, name="--channels", choices=("luma", "rgb"))
    load.check_geometry(size, patch=patch)
    if max_pixels < 1:
        raise UsageError(f"--max-pixels must be at least 1, not {max_pixels}")
    image = ImageSettings(size, patch, channels, bool(invert), max_pixels)
    bank = transforms_module.merge_kernels(_user_kernels(kernels))
    chosen = transforms_module.parse_transforms(_names(transforms), kernels=bank)
    transforms_module.check_kernels(datum=datum, transforms=chosen, kernels=bank, patch=patch)
    return SoartcJob(image, chosen, parse_metrics(_names(metrics)), datum, bank)


class _TableFormat(Format):
    """Payloads kept as numbers: ``(keys, numbers)`` of one image, as the layout makes them."""

    name = "table"
    text = False

    def encode(self, spec, columns: Columns, image: ImageValues, names):
        layout = spec.layout
        if layout.per_image:
            keys = {name: [value] for name, value in layout.head(image).items()}
            return keys, layout.numbers(columns, image)[np.newaxis]
        return layout.rows(columns, image, names)


class _NoStream:
    def flush(self) -> None:
        pass


class _TableSink(Sink):
    """Collects the payloads of one run in input order."""

    def __init__(self, spec: OutputSpec, columns: Columns) -> None:
        super().__init__(_NoStream(), spec, columns)
        self.parts: list[tuple[dict, np.ndarray]] = []

    def write(self, payload) -> None:
        self.parts.append(payload)

    def close(self, record) -> None:
        pass

    def table(self) -> dict[str, Any]:
        layout = self.spec.layout
        key_names = layout.key_names(self.columns)
        value_names = layout.value_names(self.columns, self.names or ())
        out: dict[str, Any] = {}
        for name in key_names:
            cells = [cell for keys, _ in self.parts for cell in list(keys[name])]
            kind = layout.key_type(name)
            if kind == "int":
                out[name] = np.asarray(cells, dtype=np.int64)
            elif kind == "float":
                out[name] = np.asarray(cells, dtype=np.float64)
            else:
                out[name] = [str(cell) for cell in cells]
        if self.parts:
            numbers = np.concatenate([np.asarray(n, dtype=np.float64) for _, n in self.parts])
        else:
            numbers = np.empty((0, len(value_names)))
        for i, name in enumerate(value_names):
            out[name] = np.ascontiguousarray(numbers[:, i])
        return out


def features_table(
    paths: PathLike | Sequence[PathLike],
    *,
    layout: str = "pooled",
    pool: str | Sequence[str] = DEFAULT_POOL,
    size: int = 224,
    patch: int = 16,
    channels: str = "luma",
    invert: bool = False,
    transforms: str | Sequence[str] = "soartc",
    metrics: str | Sequence[str] = "soart3",
    datum: str = "datum",
    kernels: PathLike | Mapping[str, Any] | None = None,
    workers: int = 1,
    recursive: bool = True,
    max_pixels: int = 100_000_000,
    as_frame: bool | None = None,
):
    """SOARTC / SOART feature rows of image files, with their column names, in one call.

    The same pipeline and the same numbers as ``soartc compute`` with these options (SPEC §2–§6),
    kept in memory instead of written to a file: unrounded float64, whatever ``--precision``.

    Parameters
    ----------
    paths : path or sequence of paths
        Image files and/or directories (walked recursively unless ``recursive=False``).
        ``path`` and ``label`` follow SPEC §2.2 (relative to the input directory; the first
        directory below it).
    layout : {"pooled", "wide", "long", "summary"}
        ``pooled`` (default): one row per image, ``{transform}.{metric}.{stat}`` for each stat of
        ``pool`` over the image's patches — the shape a classifier wants. ``wide``: one row per
        image, every patch. ``long`` and ``summary``: several rows per image.
    pool : str or sequence of str
        Statistics of the pooled layout: mean, std (population), min, max, median, p05, p95.
    size, patch, channels, invert, transforms, metrics, datum, kernels, max_pixels :
        The feature options of ``compute``. ``transforms`` and ``metrics`` take names and presets
        (``"soart"``, ``"all"``, ``"soart2022"`` …) as a comma list or a sequence; ``kernels``
        is a JSON kernel file or a mapping ``{name: rows}`` of extra kernels.
    workers : int
        Worker processes (1, the default, runs in this process).
    as_frame : bool, optional
        True: a pandas DataFrame (pandas must be installed); False: a :class:`FeatureTable`
        (a dict of columns); None (default): a DataFrame when pandas is installed.

    Returns
    -------
    FeatureTable or pandas.DataFrame
        Columns in output order: ``path``, ``label`` (str), ``width``, ``height`` (int64; ``row``
        and ``col`` in the long layout), then the values (float64). Images that cannot be used
        are left out of the rows and listed, as ``(path, reason)`` pairs, in the dict's
        ``failures`` attribute or the DataFrame's ``attrs["failures"]``; a
        :class:`SkippedImagesWarning` names how many there were and the first of them.

    Raises
    ------
    UsageError
        A bad option value or a missing input path.

    Examples
    --------
    >>> import soartc_cli as soartc
    >>> table = soartc.features_table(["photos/cats", "photos/dogs"], size=64, as_frame=False)
    >>> table["bend1.beta.mean"]  # one value per image            # doctest: +SKIP
    """
    from soartc_cli.imaging import discover
    from soartc_cli.pipeline.runner import run_job

    if as_frame:
        _pandas()  # say so before any work
    job = soartc_job(
        size=size, patch=patch, channels=channels, invert=invert, max_pixels=max_pixels,
        datum=datum, kernels=kernels, transforms=transforms, metrics=metrics,
    )  # fmt: skip
    if not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers must be at least 1, not {workers!r}")
    chosen = get_layout(layout, pool=(pool,) if isinstance(pool, str) else tuple(pool))
    spec = OutputSpec(_TableFormat(), chosen)
    inputs = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else list(paths)
    inputs = [os.fspath(p) for p in inputs]
    unreadable: list[tuple[str, str]] = []
    files = discover.discover(
        inputs, recursive=recursive, on_error=lambda path, why: unreadable.append((path, why))
    )
    sink = _TableSink(spec, job.columns)
    report = run_job(files, Task(job, spec), sink=sink, workers=workers)
    failures = unreadable + [(f.path, f.error) for f in report.failures]
    if failures:
        path, reason = failures[0]
        warnings.warn(
            f"soartc: {len(failures)} image(s) skipped, the first {path}: {reason} "
            "(all of them in .failures or .attrs['failures'])",
            SkippedImagesWarning,
            stacklevel=2,
        )
    columns = sink.table()
    if as_frame is None:
        try:
            import pandas  # noqa: F401
        except ImportError:
            as_frame = False
        else:
            as_frame = True
    if not as_frame:
        return FeatureTable(columns, failures)
    frame = _pandas().DataFrame(columns)
    frame.attrs["failures"] = list(failures)
    return frame


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "features_table(as_frame=True) needs pandas (pip install pandas); "
            "as_frame=False returns a dict of columns"
        ) from None
    return pandas
