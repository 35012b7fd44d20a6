"""The options every image command shares, as module-level ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

import typer

Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        help="Image files and/or directories (walked recursively); '-' reads paths from stdin.",
        metavar="PATH...",
        show_default=False,
    ),
]
Size = Annotated[
    int,
    typer.Option(
        help="Fit: centred square resized to SIZE×SIZE; 0 keeps the native size.", metavar="SIZE"
    ),
]
Patch = Annotated[
    int, typer.Option(help="Patch side P; SIZE must be a multiple of it.", metavar="P")
]
Channels = Annotated[
    str, typer.Option(help="'luma' (one grey channel) or 'rgb' (R, G, B).", metavar="luma|rgb")
]
Invert = Annotated[bool, typer.Option("--invert", help="Use 1 − v (dark objects on light).")]
MaxPixels = Annotated[
    int,
    typer.Option(
        help="Refuse images with more pixels than this (checked from the header).", metavar="N"
    ),
]
NoRecursive = Annotated[
    bool, typer.Option("--no-recursive", help="Only the top level of each directory.")
]
Datum = Annotated[str, typer.Option(help="Kernel that makes the standard s.", metavar="NAME")]
Kernels = Annotated[
    str | None,
    typer.Option(help='JSON file of extra kernels: {"name": [[...], ...]}.', metavar="FILE"),
]
Transforms = Annotated[
    str,
    typer.Option(
        help="Transforms or presets: soartc, soart, all (see 'transforms').", metavar="NAMES"
    ),
]
Metrics = Annotated[
    str, typer.Option(help="Metrics or presets: soart3, soart2022, rt, all.", metavar="NAMES")
]
Output = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write the rows to FILE, format by suffix: .csv .jsonl .ndjson (each may end .gz), "
        ".parquet; '-' is CSV on stdout.",
    ),
]
Layout = Annotated[
    str,
    typer.Option(
        help="Rows: wide (one per image), long (per patch), summary (per transform), pooled "
        "(one per image, --pool stats over the patches: for machine learning).",
        metavar="wide|long|summary|pooled",
    ),
]
Pool = Annotated[
    str,
    typer.Option(
        help="Statistics of --layout pooled: mean, std, min, max, median, p05, p95.",
        metavar="STATS",
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Keep progress in FILE.partial; run the same command again to go on after a kill.",
    ),
]
Precision = Annotated[
    int, typer.Option(help="Significant digits of the numbers written.", metavar="N")
]
Record = Annotated[
    str | None,
    typer.Option(
        help="Where the run record goes.", metavar="FILE", show_default="FILE.meta.json of -o FILE"
    ),
]
Maps = Annotated[
    str | None,
    typer.Option(help="Write one heat-map PNG per image into this directory.", metavar="DIR"),
]
Workers = Annotated[
    int | None,
    typer.Option(
        help="Worker processes (1 = in-process).", metavar="N", show_default="the CPU count"
    ),
]
Shard = Annotated[
    str | None,
    typer.Option(help="Process only slice I of N of the sorted file list ('I/N').", metavar="I/N"),
]
Strict = Annotated[bool, typer.Option("--strict", help="Stop at the first unusable file.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
Seed = Annotated[int, typer.Option(help="Random seed of the weights.", metavar="SEED")]
Dim = Annotated[
    int | None,
    typer.Option(
        metavar="D",
        help="Width d of the projections (images: only with --weights random).",
        show_default="3 for the demo, 64 for images",
    ),
]


Labels = Annotated[
    str,
    typer.Option(
        help="Labels: first (the first directory below the root), parent (the image's own "
        "directory) or none.",
        metavar="first|parent|none",
    ),
]
