"""Inspection jobs (SPEC §10): ``fit`` collects the good images' patch features through the
``compute`` pipeline; ``score`` turns each image's features into patch distances and a verdict.

The numbers are :mod:`soartc_cli.core.unitspace`'s; this module only adapts them to the pipeline: a
collecting sink for ``fit``, a job and a layout for ``score``, and the model ↔ feature-settings
round trip (a model whose features this soartc cannot reproduce is refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from soartc_cli.core import unitspace
from soartc_cli.errors import UsageError
from soartc_cli.output.formats import Format, OutputSpec, Sink
from soartc_cli.output.layouts import HEAD, Columns, ImageValues, Layout, csv_field, qualified_names
from soartc_cli.output.numbers import format_row
from soartc_cli.pipeline.jobs import ImageSettings, SoartcJob

__all__ = [
    "FeatureCollector",
    "ScoreJob",
    "ScoreLayout",
    "check_fit_options",
    "evaluation",
    "finish_fit",
    "job_from_model",
    "model_meta",
    "score_job",
    "score_spec",
]

#: The version of the model's settings text this soartc writes and reads.
MODEL_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# fit: the good images' features, collected in input order


class _FeatureLayout(Layout):
    """One image → its ``(N, k)`` patch vectors (channel → transform → metric per patch)."""

    name = "features"
    grid_hint = "a unit space compares patch positions: fit images of one size, or use --size"

    def value_names(self, columns, names):
        return feature_names(columns)

    def depends_on_grid(self):
        return True  # every good image must have the same patch grid


class _CollectFormat(Format):
    name = "features"
    text = False

    def encode(self, spec, columns, image, names):
        return unitspace.patch_vectors(image.values)


class FeatureCollector(Sink):
    """A sink that keeps every image's ``(N, k)`` patch vectors, in input order."""

    def __init__(self) -> None:
        super().__init__(_NullStream(), OutputSpec(_CollectFormat(), _FeatureLayout()), None)
        self.capacity = 0
        self.store: np.ndarray | None = None
        self.count = 0

    def reserve(self, images: int) -> None:
        """Room for this many images: the features are written into one array as they come, so
        fit holds the good images' features once, never a list and a stacked copy."""
        self.capacity = images

    def write(self, payload) -> None:
        vectors = np.asarray(payload, dtype=np.float64)
        if self.store is None:
            self.store = np.empty((max(self.capacity, 1), *vectors.shape))
        elif self.count == len(self.store):  # more images than reserved: grow by half
            grown = np.empty((len(self.store) * 3 // 2 + 1, *self.store.shape[1:]))
            grown[: self.count] = self.store
            self.store = grown
        self.store[self.count] = vectors
        self.count += 1

    def close(self, record) -> None:
        pass

    def array(self) -> np.ndarray:
        """``(n, N, k)`` float64: the collected features (a view, no copy)."""
        if self.store is None:
            return np.empty((0, 0, 0))
        return self.store[: self.count]


class _NullStream:
    def write(self, data) -> int:
        return 0

    def flush(self) -> None:
        pass


def feature_names(columns: Columns) -> list[str]:
    """Names of a patch vector's k features: ``[{channel}.]{transform}.{metric}``."""
    return qualified_names(columns)


def model_meta(job: SoartcJob, *, names: Sequence[str], version: str) -> dict:
    """The settings a model stores: enough to compute the same features again."""
    return {
        "model_format": MODEL_FORMAT,
        "soartc_version": version,
        "features": job.settings(),
        "feature_names": feature_names(job.columns),
        "patch_names": list(names),
    }


def job_from_model(model: unitspace.UnitSpace) -> SoartcJob:
    """The feature job a model was fitted with; UsageError when it cannot be reproduced."""
    from soartc_cli.core.transforms import KERNELS, ROTATIONS

    meta = model.meta or {}
    if meta.get("model_format") != MODEL_FORMAT:
        raise UsageError(
            f"--model: settings format {meta.get('model_format')!r} is not one this soartc reads "
            f"({MODEL_FORMAT})"
        )
    try:
        settings = meta["features"]
        image = ImageSettings(
            int(settings["size"]), int(settings["patch"]), str(settings["channels"]),
            bool(settings["invert"]), int(settings["max_pixels"]),
        )  # fmt: skip
        kernels: dict[str, np.ndarray] = {}
        datum = settings["datum"]
        entries = [datum, *settings["transforms"]]
        for entry in entries:
            name = entry["name"]
            if "rotation" in entry:
                if name not in ROTATIONS:
                    raise UsageError(f"--model: unknown rotation {name!r}")
                continue
            values = np.asarray(entry["kernel"], dtype=np.float64)
            if name in KERNELS and not np.array_equal(KERNELS[name], values):
                raise UsageError(
                    f"--model: kernel {name!r} of the model differs from this soartc's built-in "
                    "one: its features cannot be reproduced"
                )
            kernels[name] = KERNELS[name] if name in KERNELS else values
        job = SoartcJob(
            image, tuple(t["name"] for t in settings["transforms"]), tuple(settings["metrics"]),
            datum["name"], {**KERNELS, **kernels},
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"--model: feature settings unreadable ({type(exc).__name__}: {exc})"
        ) from None
    if feature_names(job.columns) != list(meta.get("feature_names", [])):
        raise UsageError("--model: its feature names do not match its settings")
    if job.image.size == 0 and model.unit_space == "position":
        pass  # the grid is checked per image against the model's patch count
    return job


# ---------------------------------------------------------------------------------------------
# score


class ScoreLayout(Layout):
    """``path,label,width,height,score,anomalous,patch_max`` then ``md.{patch}`` (SPEC §10)."""

    name = "score"
    grid_hint = "the model's patch positions: score images of the size it was fitted on"

    def key_names(self, columns):
        return [*HEAD, "score", "anomalous", "patch_max"]

    def key_type(self, name):
        if name == "score":
            return "float"
        if name == "anomalous":
            return "int"
        return super().key_type(name)

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
class ScoreJob:
    """Features as the model's job computes them, then patch distances, score and verdict."""

    features: SoartcJob
    model: unitspace.UnitSpace = field(compare=False)
    threshold: float

    @property
    def image(self) -> ImageSettings:
        return self.features.image

    @property
    def columns(self) -> Columns:
        return Columns(None, ("md",), ("md",))

    def compute(self, pixels: np.ndarray) -> np.ndarray:
        return self.features.compute(pixels)

    def work_bytes(self, patches: int) -> int:
        return self.features.work_bytes(patches)

    def settings(self) -> dict[str, object]:
        out = dict(self.features.settings())
        out.update(
            unit_space=self.model.unit_space, quantile=self.model.quantile,
            threshold=self.threshold, model_threshold=self.model.threshold,
        )  # fmt: skip
        return out

    def finish(self, image: ImageValues) -> tuple[ImageValues, dict]:
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


def check_fit_options(output: str | None, *, unit_space: str, quantile: float) -> None:
    """UsageError for a model path that is not ``.npz`` or cannot be written, or bad options."""
    from soartc_cli.output.targets import check_output_path

    if output is None or not output.lower().endswith(".npz"):
        raise UsageError("fit needs -o MODEL.npz (the model file)")
    check_output_path(output)
    if unit_space not in unitspace.UNIT_SPACES:
        raise UsageError(
            f"--unit-space must be one of {', '.join(unitspace.UNIT_SPACES)}, not {unit_space!r}"
        )
    if not 0 < quantile <= 1:
        raise UsageError(f"--quantile must be in (0, 1], not {quantile}")


def finish_fit(
    collector: FeatureCollector,
    job: SoartcJob,
    record: dict,
    *,
    output: str,
    record_file: str | None,
    unit_space: str,
    quantile: float,
    version: str,
) -> unitspace.UnitSpace:
    """Fit the unit space of the collected features, save the model, then its run record."""
    from soartc_cli.output.record import record_json
    from soartc_cli.output.targets import record_path, write_text_atomic

    features = collector.array()
    meta = model_meta(job, names=collector.names or (), version=version)
    model = unitspace.fit_unit_space(features, unit_space=unit_space, quantile=quantile, meta=meta)
    unitspace.save_model(model, output)
    record["output"] = {"file": output, "format": "model"}
    record["model"] = {
        "good_images": len(features), "threshold": model.threshold, "quantile": quantile,
        "unit_space": unit_space,
    }  # fmt: skip
    write_text_atomic(record_file or record_path(output), record_json(record))
    return model


def score_job(model_path: str, *, threshold: float | None) -> ScoreJob:
    """The score job of a model file; UsageError for a bad model or threshold."""
    import math

    fitted = unitspace.load_model(model_path)
    features = job_from_model(fitted)
    limit = fitted.threshold if threshold is None else threshold
    if not (math.isfinite(limit) and limit > 0):
        raise UsageError(f"--threshold must be a positive number, not {limit}")
    return ScoreJob(features, fitted, float(limit))


def score_spec(output: str | None, *, precision: int) -> OutputSpec:
    """The output of ``score``: the format of ``-o`` with the score layout."""
    from soartc_cli.output.formats import choose_format

    spec = choose_format(output, precision=precision)
    return OutputSpec(spec.format, ScoreLayout(), precision, spec.compression)


def evaluation(extras: Sequence[tuple[str, dict]], *, normal_label: str) -> dict | None:
    """SPEC §10's evaluation of scored images ``(label, extra)``; None without normal images."""
    labels = [label for label, _ in extras]
    scores = [extra["score"] for _, extra in extras]
    verdicts = [extra["anomalous"] for _, extra in extras]
    return unitspace.evaluate(scores, labels, verdicts, normal_label=normal_label)
