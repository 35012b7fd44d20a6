"""What is computed from each image: the SOARTC/SOART features, attention, the seed demo.

Each settings object is made once — from the command line, the Python API, or a run record or
model read back — and checked when it is made; ``to_record`` is what the run record writes and
``from_record`` reads it back with the same checks, so ``--resume``, ``merge`` and ``score``
compare these objects, not dictionaries assembled elsewhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from soartc_cli.core import attention
from soartc_cli.core.metrics import check_metrics, parse_metrics
from soartc_cli.core.transforms import (
    KERNELS,
    ROTATIONS,
    check_kernels,
    merge_kernels,
    parse_transforms,
)
from soartc_cli.errors import UsageError
from soartc_cli.settings.image import ImageSettings
from soartc_cli.settings.values import choice, comma_list, text, whole

__all__ = ["AttentionSettings", "DemoSettings", "FeatureSettings"]

PathLike = str | os.PathLike[str]


def _user_kernels(kernels: PathLike | Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """User kernels: a JSON file's path (read as ``--kernels`` reads it, size first), or a
    mapping name → rows checked as the file's kernels are."""
    from soartc_cli.settings.optionfiles import load_kernels, read_kernel_file

    if kernels is None or (isinstance(kernels, Mapping) and not kernels):
        return {}
    if isinstance(kernels, Mapping):
        try:
            rows = {name: np.asarray(value).tolist() for name, value in kernels.items()}
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--kernels: kernels must be arrays of numbers ({exc})") from None
        return load_kernels(json.dumps(rows))
    if isinstance(kernels, (str, os.PathLike)):
        return read_kernel_file(kernels)
    raise UsageError("--kernels must be a JSON file's path or a mapping of names to kernels")


@dataclass(frozen=True, eq=False)
class FeatureSettings:
    """The SOARTC / SOART features of ``compute`` (and of ``fit``'s ``soartc`` component).

    Attributes
    ----------
    image : ImageSettings
    datum : str
        The kernel that makes the standard ``s``.
    transforms, metrics : tuple of str
        Names in column order (presets expanded).
    kernels : mapping of str to ndarray
        The kernel bank: built-in and user kernels.

    Two settings are equal when their image settings, names and the values of every kernel
    they use are equal.
    """

    image: ImageSettings = field(default_factory=ImageSettings)
    datum: str = "datum"
    transforms: tuple[str, ...] = ("bend1", "bend2", "bend3", "bend4", "line1", "line2")
    metrics: tuple[str, ...] = ("beta", "delta", "distance")
    kernels: Mapping[str, np.ndarray] = field(default_factory=lambda: dict(KERNELS))

    def __post_init__(self) -> None:
        if not isinstance(self.image, ImageSettings):
            raise UsageError("image must be an ImageSettings")
        text(self.datum, option="--datum")
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "metrics", check_metrics(self.metrics))
        unknown = [t for t in self.transforms if t not in self.kernels and t not in ROTATIONS]
        if unknown or not self.transforms:
            parse_transforms(",".join(self.transforms) or "", kernels=self.kernels)  # raises
        check_kernels(
            datum=self.datum, transforms=self.transforms, kernels=self.kernels,
            patch=self.image.patch,
        )  # fmt: skip

    @classmethod
    def parse(
        cls,
        *,
        image: ImageSettings | None = None,
        datum: str = "datum",
        kernels: PathLike | Mapping[str, Any] | None = None,
        transforms: str | Sequence[str] = "soartc",
        metrics: str | Sequence[str] = "soart3",
    ) -> FeatureSettings:
        """The settings of the feature options as users give them: names and presets as a comma
        list or a sequence, ``kernels`` a JSON kernel file or a mapping ``{name: rows}``."""
        bank = merge_kernels(_user_kernels(kernels))
        chosen = parse_transforms(comma_list(transforms, option="--transforms"), kernels=bank)
        return cls(
            image or ImageSettings(), datum, chosen,
            parse_metrics(comma_list(metrics, option="--metrics")), bank,
        )  # fmt: skip

    @property
    def used_kernels(self) -> dict[str, np.ndarray]:
        """The kernels these features use: the datum, then each kernel transform."""
        names = [self.datum, *(t for t in self.transforms if t in self.kernels)]
        return {name: self.kernels[name] for name in dict.fromkeys(names)}

    def to_record(self) -> dict[str, object]:
        """Every setting, kernels written out with their values (the run record, a model)."""
        out = self.image.to_record()
        out["datum"] = {"name": self.datum, "kernel": self.kernels[self.datum].tolist()}
        out["transforms"] = [
            {"name": t, "rotation": t}
            if t not in self.kernels
            else {"name": t, "kernel": self.kernels[t].tolist()}
            for t in self.transforms
        ]
        out["metrics"] = list(self.metrics)
        return out

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], *, source: str = "the record"
    ) -> FeatureSettings:
        """The settings :meth:`to_record` wrote, checked like options; UsageError when they
        cannot be reproduced here (a built-in kernel of other values, an unknown rotation)."""
        try:
            image = ImageSettings.from_record(record)
            entries = [record["datum"], *record["transforms"]]
            user: dict[str, list] = {}
            for entry in entries:
                name = text(entry["name"], option="a kernel name")
                if "rotation" in entry:
                    if name not in ROTATIONS or entry["rotation"] != name:
                        raise UsageError(f"{source}: unknown rotation {name!r}")
                    continue
                values = np.asarray(entry["kernel"], dtype=np.float64)
                if name in KERNELS:
                    if not np.array_equal(KERNELS[name], values):
                        what = "the model" if source == "--model" else source
                        raise UsageError(
                            f"{source}: kernel {name!r} of {what} differs from this soartc's "
                            "built-in one: its features cannot be reproduced"
                        )
                    continue
                user[name] = entry["kernel"]
            metrics = record["metrics"]
            if not isinstance(metrics, list):
                raise UsageError(f"{source}: metrics must be a list of names")
            return cls(
                image, record["datum"]["name"],
                tuple(text(t["name"], option="a transform name") for t in record["transforms"]),
                tuple(text(m, option="a metric name") for m in metrics),
                merge_kernels(_user_kernels(user)),
            )  # fmt: skip
        except UsageError as exc:
            message = str(exc)
            raise UsageError(
                message if message.startswith(source) else f"{source}: {message}"
            ) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(
                f"{source}: feature settings unreadable ({type(exc).__name__}: {exc})"
            ) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureSettings):
            return NotImplemented
        return self.to_record() == other.to_record()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_record(), sort_keys=True))


#: ``--dim`` of attention over images when it is not given.
IMAGE_DIM = 64
WEIGHT_MODES = attention.WEIGHT_MODES


@dataclass(frozen=True, eq=False)
class AttentionSettings:
    """Attention over the patches of images (SPEC §5): normalisation and projections.

    ``weights_source`` is ``random``, ``identity`` or the absolute path of an ``.npz`` file;
    ``weights`` are the loaded projections.
    """

    image: ImageSettings
    norm: str
    weights_source: str
    seed: int
    weights: attention.Weights = field(repr=False)

    @classmethod
    def parse(
        cls,
        *,
        image: ImageSettings | None = None,
        norm: str = "layer",
        weights: str = "random",
        seed: int = 42,
        dim: int | None = None,
    ) -> AttentionSettings:
        """Check the options and make (or read) the projections."""
        image = image or ImageSettings()
        choice(norm, option="--norm", choices=attention.NORMS)
        text(weights, option="--weights")
        whole(seed, option="--seed", low=0, high=attention.MAX_SEED, between=True)
        if dim is not None:
            whole(dim, option="--dim", low=1, high=attention.MAX_WEIGHTS_DIM)
            if weights != "random":
                raise UsageError(
                    f"--dim: only with --weights random (with {weights} the weights fix d)"
                    if weights in WEIGHT_MODES
                    else "--dim: only with --weights random (an .npz file's arrays fix d)"
                )
        k = image.channel_count * image.patch * image.patch
        if weights == "random":
            made = attention.random_weights(k, dim=IMAGE_DIM if dim is None else dim, seed=seed)
            source = weights
        elif weights == "identity":
            made, source = attention.identity_weights(k), weights
        else:
            from soartc_cli.settings.optionfiles import load_weights_file

            made, source = load_weights_file(weights, k=k), os.path.abspath(weights)
        return cls(image, norm, source, seed, made)

    def to_record(self) -> dict[str, object]:
        """Every setting, for the run record."""
        k, d = self.weights.shape
        out = self.image.to_record()
        out.update(
            norm=self.norm, weights=self.weights_source, seed=self.seed, dim=d, k=k,
            transforms=["attention"], metrics=list(attention.ATTENTION_METRICS),
        )  # fmt: skip
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttentionSettings):
            return NotImplemented
        same = self.to_record() == other.to_record()
        return same and all(
            np.array_equal(getattr(self.weights, n), getattr(other.weights, n))
            for n in attention.WEIGHT_NAMES
        )

    __hash__ = None  # type: ignore[assignment]


#: The seed demo's defaults that differ from attention over images (SPEC §5).
DEMO_HIGH, DEMO_DIM = 3, 3
#: The demo's output formats, and the -o suffixes that choose one.
DEMO_FORMATS = ("table", "json", "csv")
DEMO_SUFFIXES = {".json": "json", ".csv": "csv"}
#: Largest ``--high``: integer weights are drawn with numpy's int64 ``randint``.
MAX_HIGH = 2**62
#: Largest ``--dim`` of the demo, and most numbers ``--words`` may hold: the demo prints every
#: matrix, so they are small; these bound the arrays before they are made.
MAX_DEMO_DIM = 4096
MAX_WORD_VALUES = 1 << 20


@dataclass(frozen=True, eq=False)
class DemoSettings:
    """The seed article's demo (``soartc attention`` without images)."""

    seed: int = 42
    high: int = DEMO_HIGH
    dim: int = DEMO_DIM
    words: np.ndarray = field(default_factory=lambda: attention.SEED_WORDS)
    softmax: str = "row"
    format: str = "table"
    output: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        seed: int = 42,
        high: int | None = None,
        dim: int | None = None,
        words: str | None = None,
        softmax: str | None = None,
        fmt: str | None = None,
        output: str | None = None,
    ) -> DemoSettings:
        """Check the demo's options; the format is ``--format``, else ``-o FILE``'s suffix."""
        from soartc_cli.settings.optionfiles import parse_words

        whole(seed, option="--seed", low=0, high=attention.MAX_SEED, between=True)
        high = DEMO_HIGH if high is None else whole(high, option="--high", low=1, high=MAX_HIGH)
        dim = DEMO_DIM if dim is None else whole(dim, option="--dim", low=1, high=MAX_DEMO_DIM)
        softmax = choice(softmax or "row", option="--softmax", choices=attention.SOFTMAX_MODES)
        x = attention.SEED_WORDS if words is None else parse_words(words)
        if x.size > MAX_WORD_VALUES or x.shape[1] * dim > MAX_WORD_VALUES:
            raise UsageError(
                f"--words and --dim make matrices of {x.shape[0]}×{x.shape[1]} and "
                f"{x.shape[1]}×{dim} numbers: the demo prints them all; keep each under "
                f"{MAX_WORD_VALUES} numbers"
            )
        return cls(seed, high, dim, x, softmax, _demo_format(fmt, output), output)


def _demo_format(fmt: str | None, output: str | None) -> str:
    """The demo's format: ``--format``, else the suffix of ``-o FILE``, else a table (-o -: CSV)."""
    if fmt is not None:
        fmt = choice(fmt, option="--format", choices=DEMO_FORMATS)
    if output is None:
        return fmt or "table"
    if output == "-":
        return fmt or "csv"
    suffix = os.path.splitext(output)[1].lower()
    by_suffix = DEMO_SUFFIXES.get(suffix)
    if fmt is None:
        if by_suffix is None:
            raise UsageError(
                f"--output: the demo writes {', '.join(DEMO_SUFFIXES)} files, not {output!r} "
                "(or give --format json|csv)"
            )
        return by_suffix
    if fmt == "table":
        raise UsageError("--format table is for the terminal; -o FILE takes json or csv")
    if by_suffix is not None and by_suffix != fmt:
        raise UsageError(f"--format {fmt} does not match the suffix of -o {output}")
    return fmt
