"""The per-image job: one file → its values, its output payload and its picture, or a failure.

A job (:class:`SoartcJob`, :class:`AttentionJob`, and the inspection jobs of
:mod:`soartc_cli.inspect`) says what is computed from an image's fitted pixels and what its
values are called; :func:`process_image` runs one image through load → compute → encode → draw.
Everything here is picklable: it runs in worker processes.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from soartc_cli.core import attention
from soartc_cli.core.patches import patch_grid, patch_names
from soartc_cli.errors import InputError
from soartc_cli.imaging import load
from soartc_cli.imaging.discover import ImageFile
from soartc_cli.output.layouts import Columns, ImageValues

__all__ = [
    "AttentionJob",
    "Failure",
    "ImageResult",
    "ImageSettings",
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


def check_work(job, grid: tuple[int, int], *, error=None) -> None:
    """Refuse (``error``, default InputError) an image whose work would exceed MAX_WORK_BYTES."""
    kind = error or InputError
    patches = grid[0] * grid[1]
    limit = getattr(job, "max_patches", None)
    if limit is not None and patches > limit:
        raise kind(
            f"its {grid[0]}×{grid[1]} = {patches} patches are more than the {limit} attention "
            "compares pair by pair in reasonable time (use --size or a larger --patch)"
        )
    need = job.work_bytes(patches)
    if need > MAX_WORK_BYTES:
        raise kind(
            f"its {grid[0]}×{grid[1]} patches would need about {need / 2**30:.1f} GiB of working "
            f"memory, more than the {MAX_WORK_BYTES / 2**30:.0f} GiB an image may take (use "
            "--size, a larger --patch, or fewer transforms and metrics)"
        )


@dataclass(frozen=True)
class ImageSettings:
    """The image pipeline of SPEC §2: fit size, patch size, channels, inversion, pixel limit."""

    size: int = 224
    patch: int = 16
    channels: str = "luma"
    invert: bool = False
    max_pixels: int = 100_000_000

    def settings(self) -> dict[str, object]:
        """The run record's image settings."""
        return {
            "size": self.size,
            "patch": self.patch,
            "channels": self.channels,
            "invert": self.invert,
            "max_pixels": self.max_pixels,
        }


@dataclass(frozen=True)
class SoartcJob:
    """SOARTC / SOART features: transforms (in column order), metrics, datum, kernels in use."""

    image: ImageSettings
    transforms: tuple[str, ...]
    metrics: tuple[str, ...]
    datum: str
    kernels: dict[str, np.ndarray] = field(compare=False)

    @property
    def columns(self) -> Columns:
        """Output names of this job's values."""
        channels = ("R", "G", "B") if self.image.channels == "rgb" else None
        return Columns(channels, self.transforms, self.metrics)

    def compute(self, pixels: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` fitted pixels → ``(C, T, M, N)`` float64 values."""
        from soartc_cli.core.features import soartc_features

        return soartc_features(
            pixels,
            patch=self.image.patch,
            transforms=self.transforms,
            datum=self.datum,
            metrics=self.metrics,
            kernels=self.kernels,
        )

    def work_bytes(self, patches: int) -> int:
        """Peak working memory of one image with ``patches`` patches (see BYTES_PER_VALUE)."""
        channels = 3 if self.image.channels == "rgb" else 1
        return BYTES_PER_VALUE * channels * len(self.transforms) * len(self.metrics) * patches

    def settings(self) -> dict[str, object]:
        """Every setting, for the run record (kernels written out with their values)."""
        from soartc_cli.core.transforms import ROTATIONS

        out = self.image.settings()
        out["datum"] = {"name": self.datum, "kernel": self.kernels[self.datum].tolist()}
        out["transforms"] = [
            {"name": t, "rotation": t}
            if t in ROTATIONS
            else {"name": t, "kernel": self.kernels[t].tolist()}
            for t in self.transforms
        ]
        out["metrics"] = list(self.metrics)
        return out


@dataclass(frozen=True)
class AttentionJob:
    """Attention over the patches of an image (SPEC §5): normalisation and projections."""

    image: ImageSettings
    norm: str
    weights: attention.Weights = field(compare=False)
    weights_source: str = "random"
    seed: int | None = None

    @property
    def columns(self) -> Columns:
        """Output names of this job's values (channels are concatenated into each patch row)."""
        return Columns(None, ("attention",), attention.ATTENTION_METRICS)

    def compute(self, pixels: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` fitted pixels → ``(1, 1, 2, N)`` float64 values (received, entropy)."""
        return attention.image_attention(
            pixels, patch=self.image.patch, weights=self.weights, norm=self.norm
        )

    @property
    def max_patches(self) -> int:
        """Most patches an image may have: attention compares every pair of them."""
        return attention.MAX_ATTENTION_PATCHES

    def work_bytes(self, patches: int) -> int:
        """Peak working memory of one image: blocks of at most 2²¹ scores (scores, probabilities
        and a temporary, float64), and the N × k patch rows with their Q, K, V."""
        k, d = self.weights.shape
        block = min(patches * patches, attention.ATTENTION_BLOCK)
        return 8 * (3 * block + patches * (k + 3 * d))

    def settings(self) -> dict[str, object]:
        """Every setting, for the run record."""
        k, d = self.weights.shape
        out = self.image.settings()
        out.update(
            norm=self.norm, weights=self.weights_source, seed=self.seed, dim=d, k=k,
            transforms=["attention"], metrics=list(attention.ATTENTION_METRICS),
        )  # fmt: skip
        return out


@dataclass(frozen=True)
class Task:
    """Everything a worker needs besides the file: the job and where its outputs go.

    ``output`` is the :class:`~soartc_cli.output.formats.OutputSpec` whose payload each image
    makes, or None (terminal tables only: no text is formatted).
    """

    job: Any
    output: Any = None
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
            check_work(task.job, load.native_grid(
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
        extra = None
        if hasattr(task.job, "finish"):  # inspection: distances and score from the values
            image, extra = task.job.finish(image)
        elif not np.isfinite(values).any() and np.isfinite(loaded.pixels).all():
            raise InputError(
                "every value is NaN or infinite although the pixels are finite "
                "(kernel or weight values too large?)"
            )
        payload = None
        if task.output is not None:
            payload = task.output.format.encode(task.output, task.job.columns, image, names)
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
        if hasattr(task.job, "draw"):
            picture = task.job.draw(pixels, image, extra, title=file.path)
        else:
            columns = task.job.columns
            picture = pictures.render_map(
                pixels, image.values, grid=image.grid,
                channels=columns.channels or (task.job.image.channels,),
                transforms=columns.transforms, metrics=columns.metrics, title=file.path,
            )  # fmt: skip
        pictures.write_map(picture, task.maps_dir, file.path)
    except OSError as exc:
        return f"--maps: cannot write the picture of {file.path}: {exc.strerror or exc}"
    except Exception as exc:
        return f"--maps: cannot draw {file.path}: {type(exc).__name__}: {exc}"
    return None
