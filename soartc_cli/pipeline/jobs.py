"""The per-image work: one file → its values, its output payload and its picture, or a failure.

A job (:class:`Job`: :class:`SoartcJob`, :class:`AttentionJob`, and the inspection jobs of
:mod:`soartc_cli.pipeline.inspection`) says what is computed from an image's fitted pixels and
what its values are called; :func:`process_image` runs one image through load → compute →
encode → draw. Everything here is picklable: it runs in worker processes.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from soartc_cli.core import attention
from soartc_cli.core.patches import patch_grid, patch_names
from soartc_cli.errors import InputError
from soartc_cli.imaging import load
from soartc_cli.imaging.discover import ImageFile
from soartc_cli.output.layouts import Columns, ImageValues
from soartc_cli.settings.features import AttentionSettings, FeatureSettings
from soartc_cli.settings.image import ImageSettings

__all__ = [
    "AttentionJob",
    "Encoder",
    "Failure",
    "FeatureJob",
    "FormatEncoder",
    "ImageResult",
    "Job",
    "SoartcJob",
    "Task",
    "process_image",
]


#: Working memory one image may take (bytes), judged before it is decoded. ``--size 0`` on a
#: 5000 × 5000 photo with ``--channels rgb --transforms all --metrics all`` made 19.3 million
#: values and peaked at 6.1 GB (about 320 bytes a value: the values, the chunked correlation, the
#: formatted row); the same photo at the default settings, 0.7 GB.
MAX_WORK_BYTES = 2 << 30
#: Peak bytes per feature value of one image, measured as above.
BYTES_PER_VALUE = 320


@runtime_checkable
class Job(Protocol):
    """The per-image work of an image command (compute, attention, fit, score).

    A job says how images are loaded (``image``), what is computed from the fitted pixels
    (``compute`` → ``(C, T, M, N)`` values, then ``finish``), what the values are called
    (``columns``), how much memory an image of a given grid needs (``check_grid``), how its
    picture is drawn (``draw``) and what the run record says of it (``to_record``). Jobs are
    frozen and picklable: they run in worker processes.
    """

    @property
    def image(self) -> ImageSettings: ...

    @property
    def columns(self) -> Columns: ...

    def compute(self, pixels: np.ndarray) -> np.ndarray: ...

    def finish(self, image: ImageValues, pixels: np.ndarray) -> tuple[ImageValues, Any]: ...

    def check_grid(self, grid: tuple[int, int], *, error: type[Exception] = InputError) -> None: ...

    def draw(self, pixels: np.ndarray, image: ImageValues, extra: Any, *, title: str): ...

    def to_record(self) -> dict[str, object]: ...


class FeatureJob:
    """What the jobs share: the memory check, the finite-values check, the feature picture."""

    #: Most patches an image may have (None: no limit besides memory).
    max_patches: int | None = None

    def work_bytes(self, patches: int) -> int:  # pragma: no cover - every job defines it
        raise NotImplementedError

    def check_grid(self, grid: tuple[int, int], *, error: type[Exception] = InputError) -> None:
        """Refuse (``error``) an image whose work would exceed :data:`MAX_WORK_BYTES`."""
        patches = grid[0] * grid[1]
        if self.max_patches is not None and patches > self.max_patches:
            raise error(
                f"its {grid[0]}×{grid[1]} = {patches} patches are more than the "
                f"{self.max_patches} attention compares pair by pair in reasonable time (use "
                "--size or a larger --patch)"
            )
        need = self.work_bytes(patches)
        if need > MAX_WORK_BYTES:
            raise error(
                f"its {grid[0]}×{grid[1]} patches would need about {need / 2**30:.1f} GiB of "
                f"working memory, more than the {MAX_WORK_BYTES / 2**30:.0f} GiB an image may "
                "take (use --size, a larger --patch, or fewer transforms and metrics)"
            )

    def finish(self, image: ImageValues, pixels: np.ndarray) -> tuple[ImageValues, Any]:
        """The image's values as computed; InputError when finite pixels gave no finite value."""
        if not np.isfinite(image.values).any() and np.isfinite(pixels).all():
            raise InputError(
                "every value is NaN or infinite although the pixels are finite "
                "(kernel or weight values too large?)"
            )
        return image, None

    def draw(self, pixels: np.ndarray, image: ImageValues, extra: Any, *, title: str):
        """The feature picture: the fitted image beside one heat map per transform × metric."""
        from soartc_cli.output import pictures

        columns = self.columns
        return pictures.render_map(
            pixels, image.values, grid=image.grid,
            channels=columns.channels or (self.image.channels,),
            transforms=columns.transforms, metrics=columns.metrics, title=title,
        )  # fmt: skip


@dataclass(frozen=True)
class SoartcJob(FeatureJob):
    """SOARTC / SOART features (``compute``, and the features ``fit`` learns from)."""

    settings: FeatureSettings

    @property
    def image(self) -> ImageSettings:
        return self.settings.image

    @property
    def columns(self) -> Columns:
        """Output names of this job's values."""
        s = self.settings
        return Columns(s.image.channel_names, s.transforms, s.metrics)

    def compute(self, pixels: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` fitted pixels → ``(C, T, M, N)`` float64 values."""
        from soartc_cli.core.features import soartc_features

        s = self.settings
        return soartc_features(
            pixels, patch=s.image.patch, transforms=s.transforms, datum=s.datum,
            metrics=s.metrics, kernels=s.kernels,
        )  # fmt: skip

    def work_bytes(self, patches: int) -> int:
        """Peak working memory of one image with ``patches`` patches (see BYTES_PER_VALUE)."""
        s = self.settings
        values = s.image.channel_count * len(s.transforms) * len(s.metrics) * patches
        return BYTES_PER_VALUE * values

    def to_record(self) -> dict[str, object]:
        return self.settings.to_record()


@dataclass(frozen=True)
class AttentionJob(FeatureJob):
    """Attention over the patches of an image (SPEC §5): normalisation and projections."""

    settings: AttentionSettings
    max_patches = attention.MAX_ATTENTION_PATCHES

    @property
    def image(self) -> ImageSettings:
        return self.settings.image

    @property
    def columns(self) -> Columns:
        """Output names of this job's values (channels are concatenated into each patch row)."""
        return Columns(None, ("attention",), attention.ATTENTION_METRICS)

    def compute(self, pixels: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` fitted pixels → ``(1, 1, 2, N)`` float64 values (received, entropy)."""
        s = self.settings
        return attention.image_attention(
            pixels, patch=s.image.patch, weights=s.weights, norm=s.norm
        )

    def work_bytes(self, patches: int) -> int:
        """Peak working memory of one image: blocks of at most 2²¹ scores (scores, probabilities
        and a temporary, float64), and the N × k patch rows with their Q, K, V."""
        k, d = self.settings.weights.shape
        block = min(patches * patches, attention.ATTENTION_BLOCK)
        return 8 * (3 * block + patches * (k + 3 * d))

    def to_record(self) -> dict[str, object]:
        return self.settings.to_record()


class Encoder(Protocol):
    """What a worker makes of one image's values for the run's consumer (its payload)."""

    def __call__(self, image: ImageValues, names: Sequence[str]) -> Any: ...


@dataclass(frozen=True)
class FormatEncoder:
    """The payload of an output format (CSV or JSON text as bytes, arrays for Parquet)."""

    spec: Any  # OutputSpec
    columns: Columns

    def __call__(self, image: ImageValues, names: Sequence[str]) -> Any:
        return self.spec.format.encode(self.spec, self.columns, image, names)


@dataclass(frozen=True)
class Task:
    """Everything a worker needs besides the file: the job, what it makes of each image's values
    (``encoder``; None: only the per-patch means of the terminal tables), where pictures go."""

    job: Job
    encoder: Encoder | None = None
    maps_dir: str | None = None


@dataclass(frozen=True)
class ImageResult:
    """One processed image: names, original size, patch grid, payload and per-patch means.

    ``payload`` is what the output format made of the image (CSV or JSON text as UTF-8 bytes,
    arrays for Parquet); ``means`` is the ``(C, T, M)`` mean over the patches (terminal tables);
    ``extra`` is what a job adds (the inspection score).
    """

    index: int
    path: str
    label: str
    width: int
    height: int
    grid: tuple[int, int]
    payload: Any
    means: np.ndarray
    extra: Any = None
    warning: str | None = None


@dataclass(frozen=True)
class Failure:
    """One image that could not be used, and why."""

    index: int
    path: str
    error: str


Outcome = ImageResult | Failure


@functools.lru_cache(maxsize=64)
def names_of(grid: tuple[int, int]) -> tuple[str, ...]:
    """Patch names of a grid, made once per grid size rather than once per image."""
    return tuple(patch_names(*grid))


def process_image(index: int, file: ImageFile, task: Task) -> Outcome:
    """Load, compute, encode and draw one image; every error becomes a :class:`Failure`."""
    with warnings.catch_warnings():
        # Pillow warns about odd but usable files ("Corrupt EXIF data"): they are used as they
        # are, and a multi-line warning must not land among the output lines.
        warnings.simplefilter("ignore")
        return _process_image(index, file, task)


def crashed(index: int, file: ImageFile, reason: str) -> Failure:
    """The outcome of an image whose worker process died on it."""
    return Failure(index, file.path, f"the worker process crashed on it ({reason})")


def _process_image(index: int, file: ImageFile, task: Task) -> Outcome:
    try:
        settings = task.job.image
        if settings.size == 0:  # the work depends on the image's size: judged from its header
            task.job.check_grid(load.native_grid(
                file.source, patch=settings.patch, max_pixels=settings.max_pixels, orient=False
            ))  # fmt: skip
        loaded = load.load_image(
            file.source,
            size=settings.size,
            patch=settings.patch,
            channels=settings.channels,
            invert=settings.invert,
            max_pixels=settings.max_pixels,
        )
        values = task.job.compute(loaded.pixels)
        grid = patch_grid(loaded.pixels.shape[-2:], patch=settings.patch)
        names = names_of(grid)
        image = ImageValues(file.path, file.label, loaded.width, loaded.height, grid, values)
        image, extra = task.job.finish(image, loaded.pixels)
        payload = None if task.encoder is None else task.encoder(image, names)
        warning = None
        if task.maps_dir is not None:
            warning = _draw(task, file, loaded.pixels, image, extra)
        return ImageResult(
            index, file.path, file.label, loaded.width, loaded.height, grid, payload,
            image.values.mean(axis=-1), extra, warning,
        )  # fmt: skip
    except InputError as exc:
        return Failure(index, file.path, str(exc))
    except MemoryError:
        return Failure(index, file.path, "out of memory")
    except OSError as exc:
        return Failure(index, file.path, f"cannot be read: {exc.strerror or exc}")
    except Exception as exc:  # a bug must not lose the other images' rows
        return Failure(index, file.path, f"internal error: {type(exc).__name__}: {exc}")


def _draw(task: Task, file: ImageFile, pixels, image: ImageValues, extra) -> str | None:
    """Draw and write the image's picture; a failure costs the picture, never the row."""
    from soartc_cli.output import pictures

    try:
        picture = task.job.draw(pixels, image, extra, title=file.path)
        pictures.write_map(picture, task.maps_dir, file.path)
    except OSError as exc:
        return f"--maps: cannot write the picture of {file.path}: {exc.strerror or exc}"
    except Exception as exc:
        return f"--maps: cannot draw {file.path}: {type(exc).__name__}: {exc}"
    return None
