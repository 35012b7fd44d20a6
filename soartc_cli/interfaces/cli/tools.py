"""``soartc transforms`` (the kernel bank, rotations, presets, metrics) and ``soartc merge``."""

from __future__ import annotations

from typing import Annotated

import typer

from soartc_cli.core.transforms import merge_kernels
from soartc_cli.interfaces import tables
from soartc_cli.interfaces.cli.base import EXIT_OK, SoartcCommand, app, output_console
from soartc_cli.interfaces.cli.options import Record, option
from soartc_cli.interfaces.cli.running import command_line
from soartc_cli.settings.optionfiles import read_kernel_file


@app.command(
    "transforms", cls=SoartcCommand,
    short_help="List every transform and kernel (with its values), the presets and the metrics.",
)  # fmt: skip
def transforms_command(
    kernels: option(str | None, "Also list the kernels of this JSON file.", "FILE") = None,
) -> int:
    """List every transform and kernel (with its values), the presets and the metrics."""
    user = read_kernel_file(kernels) if kernels else {}
    out = output_console()
    for item in tables.transform_listing(merge_kernels(user), set(user)):
        out.print(item)
    return EXIT_OK


@app.command(
    "merge", cls=SoartcCommand,
    short_help="Join the outputs of the shards of one run (any formats) and their run records.",
)  # fmt: skip
def merge_command(
    parts: Annotated[
        list[str], typer.Argument(metavar="PART...", help="Shard outputs, in any order.")
    ],
    output: option(
        str,
        "The joined file, format by suffix like compute's -o ('-': CSV on stdout).",
        "FILE",
        "--output",
        "-o",
    ),
    allow_missing: option(
        bool,
        "Join the shards that are there; the record says which are missing.",
        None,
        "--allow-missing",
    ) = False,
    record: Record = None,
) -> int:
    """Join the outputs of the shards of one run (any formats) and their run records."""
    from soartc_cli.output.merge import merge_outputs

    merge_outputs(parts, output, command=command_line(), allow_missing=allow_missing, record=record)
    return EXIT_OK
