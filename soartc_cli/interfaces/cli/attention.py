"""``soartc attention``: the seed article's demo, or attention over the patches of images."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from soartc_cli.core import attention
from soartc_cli.errors import UsageError
from soartc_cli.interfaces import tables
from soartc_cli.interfaces.cli.app import (
    EXIT_OK,
    SoartcCommand,
    app,
    note,
    output_console,
    printable,
)
from soartc_cli.interfaces.cli.options import (
    Channels,
    Dim,
    Inputs,
    Invert,
    Labels,
    Layout,
    Maps,
    MaxPixels,
    NoRecursive,
    Output,
    Patch,
    Pool,
    Precision,
    Quiet,
    Record,
    Resume,
    Seed,
    Shard,
    Size,
    Strict,
    Workers,
)
from soartc_cli.interfaces.cli.running import (
    finish,
    image_settings,
    output_settings,
    run_images,
    run_settings,
)
from soartc_cli.output import targets
from soartc_cli.pipeline.jobs import AttentionJob
from soartc_cli.settings.features import DEMO_HIGH, AttentionSettings, DemoSettings


@app.command(
    "attention", cls=SoartcCommand,
    short_help="Scaled dot-product attention: the seed article's demo, or over image patches.",
)  # fmt: skip
def attention_command(
    inputs: Inputs = None,
    seed: Seed = 42,
    high: Annotated[
        int | None,
        typer.Option(
            help="Demo: weights are integers drawn from [0, HIGH).",
            metavar="HIGH",
            show_default=str(DEMO_HIGH),
        ),
    ] = None,
    dim: Dim = None,
    words: Annotated[
        str | None,
        typer.Option(
            metavar="ROWS",
            help="Demo: the input X, rows separated by ';' (e.g. '1,0,1,0;0,1,0,1').",
        ),
    ] = None,
    softmax: Annotated[
        str | None,
        typer.Option(
            help="Demo: 'row' (standard) or 'global' (the article's code).",
            metavar="row|global",
            show_default="row",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="table|json|csv",
            help="Demo output format (-o FILE: json or csv, else chosen by FILE's suffix).",
            show_default="table",
        ),
    ] = None,
    norm: Annotated[
        str,
        typer.Option(
            help="Images: 'layer' (standardise each patch) or 'none'.", metavar="layer|none"
        ),
    ] = "layer",
    weights: Annotated[
        str,
        typer.Option(
            help="Images: 'random', 'identity' or an .npz with W_Q, W_K, W_V.", metavar="MODE|FILE"
        ),
    ] = "random",
    size: Size = 224,
    patch: Patch = 16,
    channels: Channels = "luma",
    invert: Invert = False,
    output: Output = None,
    layout: Layout = "wide",
    pool: Pool = "mean,std,min,max",
    precision: Precision = 7,
    record: Record = None,
    maps: Maps = None,
    workers: Workers = None,
    shard: Shard = None,
    resume: Resume = False,
    strict: Strict = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = 100_000_000,
    no_recursive: NoRecursive = False,
    labels: Labels = "first",
) -> int:
    """Scaled dot-product attention: the seed article's demo, or over the patches of images.

    Without inputs: the seed demo (--seed, --high, --dim, --words, --softmax, --format).
    With inputs: per-patch 'received' and 'entropy' of every image, written like 'compute'.
    """
    if not inputs:
        demo = DemoSettings.parse(
            seed=seed, high=high, dim=dim, words=words, softmax=softmax, fmt=fmt, output=output
        )
        return _demo(demo, quiet=quiet)
    demo_only = {"--high": high, "--words": words, "--softmax": softmax, "--format": fmt}
    given = [name for name, value in demo_only.items() if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: only for the seed demo (no image inputs)")
    features = AttentionSettings.parse(
        image=image_settings(size, patch, channels, invert, max_pixels), norm=norm,
        weights=weights, seed=seed, dim=dim,
    )  # fmt: skip
    settings = run_settings(
        inputs, output=output_settings(output, layout, pool, precision, record, maps, resume),
        workers=workers, shard=shard, strict=strict, quiet=quiet, no_recursive=no_recursive,
        labels=labels,
    )  # fmt: skip
    job = AttentionJob(features)
    report, table = run_images(job, settings)
    return finish(report, settings, table=table, columns=job.columns)


def _demo(demo: DemoSettings, *, quiet: bool) -> int:
    """The seed demo: compute, then render as a table, JSON or CSV (to stdout or -o FILE)."""
    output = demo.output
    if output not in (None, "-"):
        targets.check_output_path(output)
    result = attention.seed_demo(
        demo.words, seed=demo.seed, high=demo.high, dim=demo.dim, softmax=demo.softmax
    )
    if demo.format in ("json", "csv"):
        if demo.format == "json":
            text = tables.demo_json(
                result, settings={"seed": demo.seed, "high": demo.high, "dim": demo.dim}
            )
        else:
            text = tables.demo_csv(result)
        if output in (None, "-"):
            sys.stdout.write(text)
        else:
            targets.write_text_atomic(output, text)
            if not quiet:
                note(f"soartc: the demo's matrices written to {printable(output)} ({demo.format})")
        return EXIT_OK
    out = output_console()
    out.print(tables.demo_header(result))
    from rich.columns import Columns

    out.print(Columns(tables.demo_tables(result), padding=(0, 2)))
    if result.softmax == "row" and not quiet:
        note("hint: the article's printed probs and attention come from --softmax global")
    return EXIT_OK
