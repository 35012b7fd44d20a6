"""The image pipeline's settings (SPEC §2.3–2.6): fit size, patch, channels, inversion, limit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from soartc_cli.imaging.load import CHANNELS, DEFAULT_MAX_PIXELS, check_geometry
from soartc_cli.settings.values import choice, flag, whole

__all__ = ["ImageSettings"]


@dataclass(frozen=True)
class ImageSettings:
    """How every image is loaded and cut: checked once, when the object is made.

    Attributes
    ----------
    size : int
        Side of the fitted square (0: the native size, cropped to whole patches).
    patch : int
        Patch side P; divides ``size``.
    channels : {"luma", "rgb"}
    invert : bool
    max_pixels : int
        Images with more pixels are refused from their header.

    Raises
    ------
    UsageError
        A value of the wrong type or range, a patch that does not divide the size, or a fitted
        image larger than its memory budget with these channels (one line naming the option).
    """

    size: int = 224
    patch: int = 16
    channels: str = "luma"
    invert: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        whole(self.size, option="--size", low=0)
        whole(self.patch, option="--patch", low=1)
        choice(self.channels, option="--channels", choices=CHANNELS)
        flag(self.invert, option="--invert")
        whole(self.max_pixels, option="--max-pixels", low=1)
        check_geometry(self.size, patch=self.patch, channels=self.channels)

    @property
    def channel_count(self) -> int:
        """C: 3 with ``--channels rgb``, else 1."""
        return 3 if self.channels == "rgb" else 1

    @property
    def channel_names(self) -> tuple[str, ...] | None:
        """The output's channel names (``R``, ``G``, ``B``), or None for luma."""
        return ("R", "G", "B") if self.channels == "rgb" else None

    @property
    def fixed_grid(self) -> tuple[int, int] | None:
        """The patch grid every image has, or None with ``size=0`` (it depends on the image)."""
        if self.size == 0:
            return None
        side = self.size // self.patch
        return side, side

    def to_record(self) -> dict[str, object]:
        """The run record's image settings (and a model's)."""
        return {
            "size": self.size,
            "patch": self.patch,
            "channels": self.channels,
            "invert": self.invert,
            "max_pixels": self.max_pixels,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> ImageSettings:
        """The settings a record or model wrote, checked as strictly as options (KeyError: the
        caller says which file lacks what)."""
        return cls(
            record["size"], record["patch"], record["channels"], record["invert"],
            record["max_pixels"],
        )  # fmt: skip
