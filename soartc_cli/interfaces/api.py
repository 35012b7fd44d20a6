"""The notebook API: a list of image paths → feature rows with their column names, in one call.

:func:`features_table` runs the pipeline of ``soartc compute`` (discovery, loading, the SOARTC /
SOART features, the layouts of SPEC §6, the worker pool) with the same settings objects and
returns the table in memory instead of writing a file: a dict of columns, or a pandas DataFrame.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from soartc_cli.output.layouts import DEFAULT_POOL, Columns, ImageValues, Layout, get_layout
from soartc_cli.pipeline.jobs import SoartcJob
from soartc_cli.settings.features import FeatureSettings
from soartc_cli.settings.image import ImageSettings
from soartc_cli.settings.run import InputSettings, RunSettings
from soartc_cli.settings.values import whole

__all__ = ["FeatureTable", "SkippedImagesWarning", "TableCollector", "features_table"]

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


@dataclass(frozen=True)
class TableEncoder:
    """What a worker makes of an image for :func:`features_table`: the layout's key columns and
    unrounded float64 numbers, ``(keys, (rows, values))``."""

    layout: Layout
    columns: Columns

    def __call__(self, image: ImageValues, names: Sequence[str]):
        layout = self.layout
        if layout.per_image:
            keys = {name: [value] for name, value in layout.head(image).items()}
            return keys, layout.numbers(self.columns, image)[np.newaxis]
        return layout.rows(self.columns, image, names)


class TableCollector:
    """The consumer of :func:`features_table`'s run: the rows of every image, in input order."""

    def __init__(self, layout: Layout, columns: Columns) -> None:
        self.layout = layout
        self.columns = columns
        self.encoder = TableEncoder(layout, columns)
        self.grid_hint = layout.grid_hint if layout.depends_on_grid() else None
        self.names: Sequence[str] = ()
        self.parts: list[tuple[dict, np.ndarray]] = []

    def begin(self, names: Sequence[str]) -> None:
        self.names = names

    def write(self, result) -> None:
        self.parts.append(result.payload)

    def close(self, record: dict) -> None:
        pass

    def discard(self) -> None:
        self.parts = []

    def table(self) -> dict[str, Any]:
        """The columns by name: key columns as lists of str or int64 / float64 arrays, then the
        value columns as float64 arrays."""
        layout = self.layout
        key_names = layout.key_names(self.columns)
        value_names = layout.value_names(self.columns, self.names)
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
    labels: str = "first",
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
    labels : {"first", "parent", "none"}
        How the ``label`` column is found (SPEC §2.2): the first directory below the root, the
        image's own directory, or empty.
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
    from soartc_cli.pipeline.runner import run

    if as_frame:
        _pandas()  # say so before any work
    image = ImageSettings(size, patch, channels, invert, max_pixels)
    features = FeatureSettings.parse(
        image=image, datum=datum, kernels=kernels, transforms=transforms, metrics=metrics
    )
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    settings = RunSettings(
        InputSettings(tuple(paths), recursive, labels), workers=whole(workers, option="workers")
    )
    chosen = get_layout(layout, pool=(pool,) if isinstance(pool, str) else tuple(pool))
    job = SoartcJob(features)
    collector = TableCollector(chosen, job.columns)
    report = run(job, settings, consumer=collector)
    failures = [(f.path, f.error) for f in report.failures]
    if failures:
        path, reason = failures[0]
        warnings.warn(
            f"soartc: {len(failures)} image(s) skipped, the first {path}: {reason} "
            "(all of them in .failures or .attrs['failures'])",
            SkippedImagesWarning,
            stacklevel=2,
        )
    columns = collector.table()
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
