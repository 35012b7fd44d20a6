"""The settings of ``fit`` and ``score`` (SPEC §10)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from soartc_cli.errors import UsageError
from soartc_cli.settings.features import FeatureSettings
from soartc_cli.settings.values import choice, number, text

__all__ = ["UNIT_SPACES", "FitSettings", "ScoreSettings"]

#: ``--unit-space``: one model per cell position, or one shared by every cell.
UNIT_SPACES = ("position", "shared")


@dataclass(frozen=True)
class FitSettings:
    """``soartc fit``: the features of the good images and how the model is learnt."""

    model: str
    features: FeatureSettings = field(default_factory=FeatureSettings)
    unit_space: str = "position"
    quantile: float = 0.99

    def __post_init__(self) -> None:
        from soartc_cli.output.targets import check_output_path

        if self.model is None or not str(text(os.fspath(self.model), option="-o")).lower().endswith(
            ".npz"
        ):
            raise UsageError("fit needs -o MODEL.npz (the model file)")
        object.__setattr__(self, "model", os.fspath(self.model))
        check_output_path(self.model)
        choice(self.unit_space, option="--unit-space", choices=UNIT_SPACES)
        object.__setattr__(
            self,
            "quantile",
            number(self.quantile, option="--quantile", low=0, high=1, low_open=True),
        )


@dataclass(frozen=True)
class ScoreSettings:
    """``soartc score``: the model and how its verdicts and evaluation are made."""

    model: str
    threshold: float | None = None
    normal_label: str = "good"

    def __post_init__(self) -> None:
        if self.model is None:
            raise UsageError("score needs --model MODEL.npz (made by 'soartc fit')")
        object.__setattr__(self, "model", os.fspath(text(os.fspath(self.model), option="--model")))
        if self.threshold is not None:
            value = number(self.threshold, option="--threshold", low=0, low_open=True)
            object.__setattr__(self, "threshold", value)
        text(self.normal_label, option="--normal-label")
