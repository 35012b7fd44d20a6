"""Inspection jobs (SPEC §10): ``fit`` collects the good images' patch features through the
``compute`` pipeline; ``score`` turns each image's features into patch distances and a verdict.

The numbers are :mod:`soartc_cli.core.unitspace`'s; this module only adapts them to the pipeline: a
collecting sink for ``fit``, a job and a layout for ``score``, and the model ↔ feature-settings
round trip (a model whose features this soartc cannot reproduce is refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from soartc_cli import __version__
from soartc_cli.core import unitspace
from soartc_cli.errors import UsageError
from soartc_cli.output.layouts import HEAD, Columns, ImageValues, Layout, csv_field, qualified_names
from soartc_cli.output.numbers import format_row
from soartc_cli.pipeline.jobs import FeatureJob, ImageResult, SoartcJob
from soartc_cli.settings.features import FeatureSettings
from soartc_cli.settings.inspection import FitSettings, ScoreSettings
from soartc_cli.settings.run import RunSettings

__all__ = [
    "FeatureCollector",
    "ScoreJob",
    "ScoreLayout",
    "evaluation",
    "fit",
    "job_from_model",
    "model_meta",
    "score_job",
]

#: The version of the model's settings text this soartc writes and reads.
MODEL_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# fit: the good images' features, collected in input order


@dataclass(frozen=True)
class PatchVectors:
    """The encoder of ``fit``: an image's ``(N, k)`` patch vectors (channel → transform →
    metric per patch), made in the worker."""

    def __call__(self, image: ImageValues, names: Sequence[str]) -> np.ndarray:
        return unitspace.patch_vectors(image.values)


class FeatureCollector:
    """The consumer of ``fit``'s run: every good image's ``(N, k)`` patch vectors, in input
    order, written into one array as they come (the features are held once, never a list and
    a stacked copy)."""

    encoder = PatchVectors()
    grid_hint = "a unit space compares patch positions: fit images of one size, or use --size"

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity
        self.store: np.ndarray | None = None
        self.count = 0
        self.names: Sequence[str] = ()

    def begin(self, names: Sequence[str]) -> None:
        self.names = names

    def write(self, result: ImageResult) -> None:
        vectors = np.asarray(result.payload, dtype=np.float64)
        if self.store is None:
            self.store = np.empty((max(self.capacity, 1), *vectors.shape))
        elif self.count == len(self.store):  # more images than reserved: grow by half
            grown = np.empty((len(self.store) * 3 // 2 + 1, *self.store.shape[1:]))
            grown[: self.count] = self.store
            self.store = grown
        self.store[self.count] = vectors
        self.count += 1

    def close(self, record: dict) -> None:
        pass

    def discard(self) -> None:
        self.store = None

    def array(self) -> np.ndarray:
        """``(n, N, k)`` float64: the collected features (a view, no copy)."""
        if self.store is None:
            return np.empty((0, 0, 0))
        return self.store[: self.count]


def feature_names(columns: Columns) -> list[str]:
    """Names of a patch vector's k features: ``[{channel}.]{transform}.{metric}``."""
    return qualified_names(columns)


def model_meta(job: SoartcJob, *, names: Sequence[str], version: str) -> dict:
    """The settings a model stores: enough to compute the same features again."""
    return {
        "model_format": MODEL_FORMAT,
        "soartc_version": version,
        "features": job.to_record(),
        "feature_names": feature_names(job.columns),
        "patch_names": list(names),
    }


def job_from_model(model: unitspace.UnitSpace) -> SoartcJob:
    """The feature job a model was fitted with; UsageError when it cannot be reproduced."""
    meta = model.meta or {}
    if meta.get("model_format") != MODEL_FORMAT:
        raise UsageError(
            f"--model: settings format {meta.get('model_format')!r} is not one this soartc reads "
            f"({MODEL_FORMAT})"
        )
    if not isinstance(meta.get("features"), dict):
        raise UsageError("--model: the model holds no feature settings")
    job = SoartcJob(FeatureSettings.from_record(meta["features"], source="--model"))
    if feature_names(job.columns) != list(meta.get("feature_names", [])):
        raise UsageError("--model: its feature names do not match its settings")
    return job


# ---------------------------------------------------------------------------------------------
# score


class ScoreLayout(Layout):
    """``path,label,width,height,score,anomalous,patch_max`` then ``md.{patch}`` (SPEC §10)."""

    name = "score"
    grid_hint = "the model's patch positions: score images of the size it was fitted on"

    def key_names(self, columns):
        return [*HEAD, "score", "anomalous", "patch_max"]

    def head(self, image):
        return {**super().head(image), **image.extra}

    def value_names(self, columns, names):
        return [f"md.{p}" for p in names]

    def depends_on_grid(self):
        return True

    def numbers(self, columns, image):
        return image.values.ravel()

    def csv(self, columns, image, names, precision):
        extra = image.extra
        head = (
            f"{csv_field(image.path)},{csv_field(image.label)},{image.width},{image.height},"
            f"%.{precision}g,{extra['anomalous']},{csv_field(extra['patch_max'])}" % extra["score"]
        )
        return b"".join((head.encode(), format_row(image.values.ravel(), precision), b"\n"))


@dataclass(frozen=True)
class ScoreJob(FeatureJob):
    """Features as the model's job computes them, then patch distances, score and verdict."""

    features: SoartcJob
    model: unitspace.UnitSpace = field(compare=False)
    threshold: float

    @property
    def image(self):
        return self.features.image

    @property
    def columns(self) -> Columns:
        return Columns(None, ("md",), ("md",))

    def compute(self, pixels: np.ndarray) -> np.ndarray:
        return self.features.compute(pixels)

    def work_bytes(self, patches: int) -> int:
        return self.features.work_bytes(patches)

    def to_record(self) -> dict[str, object]:
        out = dict(self.features.to_record())
        out.update(
            unit_space=self.model.unit_space, quantile=self.model.quantile,
            threshold=self.threshold, model_threshold=self.model.threshold,
        )  # fmt: skip
        return out

    def finish(self, image: ImageValues, pixels: np.ndarray) -> tuple[ImageValues, dict]:
        """Features → ``(1, 1, 1, N)`` patch distances, with score, verdict and worst patch."""
        from soartc_cli.errors import InputError
        from soartc_cli.pipeline.jobs import names_of

        vectors = unitspace.patch_vectors(image.values)
        expected = self.model.n_patches
        if expected is not None and vectors.shape[0] != expected:
            raise InputError(
                f"its patch grid has {vectors.shape[0]} patches, the model's {expected} "
                "(use images of the size the model was fitted on)"
            )
        md = unitspace.patch_distances(self.model, vectors)
        scores, worst = unitspace.image_scores(md)
        score = float(scores)
        extra = {
            "score": score,
            "anomalous": int(score > self.threshold),
            "patch_max": names_of(image.grid)[int(worst)],
        }
        values = md.reshape(1, 1, 1, -1)
        scored = ImageValues(
            image.path, image.label, image.width, image.height, image.grid, values, extra
        )
        return scored, extra

    def draw(self, pixels, image: ImageValues, extra: dict, *, title: str):
        """The score picture: the image with its patch distances on the model's fixed scale."""
        from soartc_cli.output import pictures

        return pictures.render_score_map(
            pixels, image.values.ravel(), grid=image.grid,
            threshold=self.threshold, score=extra["score"], title=title,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The commands' steps around the run (cli parses, calls these, renders)


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` made: the model, the run's report, the number of good images."""

    model: unitspace.UnitSpace
    report: Any
    good_images: int


def fit(
    settings: FitSettings,
    run: RunSettings,
    *,
    command: Sequence[str] = ("soartc", "fit"),
    observer=None,
    stdin=None,
) -> FitResult:
    """``soartc fit``: the good images' features through the ``compute`` pipeline, the unit
    space learnt from them, the model saved, then its run record (SPEC §10).

    Raises
    ------
    UsageError
        Fewer than 5 good images could be used (naming how many were skipped), or any option.
    """
    from soartc_cli.output.record import record_json
    from soartc_cli.output.targets import record_path, write_text_atomic
    from soartc_cli.pipeline.runner import run as run_images

    job = SoartcJob(settings.features)
    collector = FeatureCollector()
    report = run_images(
        job, run, consumer=collector, observer=observer, command=command, stdin=stdin,
        protect=[settings.model],
    )  # fmt: skip
    good = collector.count
    if good < unitspace.MIN_GOOD_IMAGES:
        skipped = f" ({len(report.failures)} skipped)" if report.failures else ""
        raise UsageError(
            f"fit needs at least {unitspace.MIN_GOOD_IMAGES} good images, got {good}{skipped}"
        )
    features = collector.array()
    meta = model_meta(job, names=collector.names, version=__version__)
    model = unitspace.fit_unit_space(
        features, unit_space=settings.unit_space, quantile=settings.quantile, meta=meta
    )
    from soartc_cli.output.modelfile_v1 import save_model

    save_model(model, settings.model)
    record = report.record
    record["output"] = {"file": settings.model, "format": "model"}
    record["model"] = {
        "good_images": good, "threshold": model.threshold, "quantile": settings.quantile,
        "unit_space": settings.unit_space,
    }  # fmt: skip
    write_text_atomic(run.output.record or record_path(settings.model), record_json(record))
    return FitResult(model, report, good)


def score_job(settings: ScoreSettings) -> ScoreJob:
    """The score job of a model file; UsageError for a bad model or threshold."""
    from soartc_cli.output.modelfile_v1 import load_model

    fitted = load_model(settings.model)
    features = job_from_model(fitted)
    limit = fitted.threshold if settings.threshold is None else settings.threshold
    if not limit > 0:
        raise UsageError(f"--threshold must be a positive number, not {limit}")
    return ScoreJob(features, fitted, float(limit))


def evaluation(extras: Sequence[tuple[str, dict]], *, normal_label: str) -> dict | None:
    """SPEC §10's evaluation of scored images ``(label, extra)``; None without normal images."""
    labels = [label for label, _ in extras]
    scores = [extra["score"] for _, extra in extras]
    verdicts = [extra["anomalous"] for _, extra in extras]
    return unitspace.evaluate(scores, labels, verdicts, normal_label=normal_label)


def labels_seen(extras: Sequence[tuple[str, Any]]) -> list[str]:
    """The labels of scored images, sorted, each once."""
    return sorted({label for label, _ in extras})
