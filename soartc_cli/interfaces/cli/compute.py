"""``soartc compute``: SOARTC / SOART metrics of every patch of every image."""

from __future__ import annotations

from soartc_cli.interfaces.cli.app import SoartcCommand, app
from soartc_cli.interfaces.cli.options import (
    Channels,
    Datum,
    Inputs,
    Invert,
    Kernels,
    Labels,
    Layout,
    Maps,
    MaxPixels,
    Metrics,
    NoRecursive,
    Output,
    Patch,
    Pool,
    Precision,
    Quiet,
    Record,
    Resume,
    Shard,
    Size,
    Strict,
    Transforms,
    Workers,
)
from soartc_cli.interfaces.cli.running import (
    finish,
    image_settings,
    output_settings,
    run_images,
    run_settings,
)
from soartc_cli.pipeline.jobs import SoartcJob
from soartc_cli.settings.features import FeatureSettings


@app.command(
    "compute", cls=SoartcCommand,
    short_help="SOARTC (convolution) and SOART (rotation) metrics of every patch of every image.",
)  # fmt: skip
def compute_command(
    inputs: Inputs = None,
    size: Size = 224,
    patch: Patch = 16,
    channels: Channels = "luma",
    invert: Invert = False,
    datum: Datum = "datum",
    kernels: Kernels = None,
    transforms: Transforms = "soartc",
    metrics: Metrics = "soart3",
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
    """SOARTC (convolution) and SOART (rotation) metrics of every patch of every image."""
    features = FeatureSettings.parse(
        image=image_settings(size, patch, channels, invert, max_pixels), datum=datum,
        kernels=kernels, transforms=transforms, metrics=metrics,
    )  # fmt: skip
    settings = run_settings(
        inputs, output=output_settings(output, layout, pool, precision, record, maps, resume),
        workers=workers, shard=shard, strict=strict, quiet=quiet, no_recursive=no_recursive,
        labels=labels,
    )  # fmt: skip
    job = SoartcJob(features)
    report, table = run_images(job, settings)
    return finish(report, settings, table=table, columns=job.columns)
