"""``soartc fit`` and ``soartc score``: learn what good images look like, then score new ones."""

from __future__ import annotations

from typing import Annotated

import typer

from soartc_cli.interfaces import tables
from soartc_cli.interfaces.cli.app import (
    SoartcCommand,
    app,
    error_console,
    note,
    output_console,
    printable,
)
from soartc_cli.interfaces.cli.options import (
    Channels,
    Datum,
    Inputs,
    Invert,
    Kernels,
    Labels,
    Maps,
    MaxPixels,
    Metrics,
    NoRecursive,
    Output,
    Patch,
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
    closing,
    command_line,
    image_settings,
    observed,
    run_images,
    run_settings,
)
from soartc_cli.pipeline.runner import TableConsumer
from soartc_cli.settings.features import FeatureSettings
from soartc_cli.settings.inspection import FitSettings, ScoreSettings
from soartc_cli.settings.run import OutputSettings


@app.command(
    "fit", cls=SoartcCommand,
    short_help="Learn the unit space of good images: the model file for 'score'.",
)  # fmt: skip
def fit_command(
    inputs: Inputs = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", metavar="MODEL.npz", help="Where the model goes."),
    ] = None,
    size: Size = 224,
    patch: Patch = 16,
    channels: Channels = "luma",
    invert: Invert = False,
    datum: Datum = "datum",
    kernels: Kernels = None,
    transforms: Transforms = "soartc",
    metrics: Metrics = "soart3",
    unit_space: Annotated[
        str,
        typer.Option(
            help="One mean and covariance per patch position, or one shared by every patch.",
            metavar="position|shared",
        ),
    ] = "position",
    quantile: Annotated[
        float,
        typer.Option(
            help="Quantile of the out-of-fold good scores that sets the threshold.", metavar="Q"
        ),
    ] = 0.99,
    record: Record = None,
    workers: Workers = None,
    strict: Strict = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = 100_000_000,
    no_recursive: NoRecursive = False,
    labels: Labels = "first",
) -> int:
    """Learn the unit space of good images: the model file for 'score'."""
    import sys

    from soartc_cli.pipeline import inspection

    features = FeatureSettings.parse(
        image=image_settings(size, patch, channels, invert, max_pixels), datum=datum,
        kernels=kernels, transforms=transforms, metrics=metrics,
    )  # fmt: skip
    fit = FitSettings(output, features, unit_space, quantile)
    settings = run_settings(
        inputs, output=OutputSettings(None, record=record), workers=workers, strict=strict,
        quiet=quiet, no_recursive=no_recursive, labels=labels,
    )  # fmt: skip
    with observed(settings) as observer:
        result = inspection.fit(
            fit, settings, command=command_line(), observer=observer, stdin=sys.stdin
        )
    if not quiet:
        note(
            f"soartc: model of {result.good_images} good images written to "
            f"{printable(fit.model)}; threshold {result.model.threshold:.4g} (quantile "
            f"{quantile} of out-of-fold scores)"
        )
    return 0 if result.report.ok else 1


@app.command(
    "score", cls=SoartcCommand,
    short_help="Anomaly scores of images against a model: patch distances, verdicts, AUROC.",
)  # fmt: skip
def score_command(
    inputs: Inputs = None,
    model: Annotated[
        str | None, typer.Option(metavar="MODEL.npz", help="The model 'fit' wrote.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Anomalous above this score.", metavar="T", show_default="the model's threshold"
        ),
    ] = None,
    normal_label: Annotated[
        str, typer.Option(help="The label of good images, for the evaluation.", metavar="LABEL")
    ] = "good",
    output: Output = None,
    precision: Precision = 7,
    record: Record = None,
    maps: Maps = None,
    workers: Workers = None,
    shard: Shard = None,
    resume: Resume = False,
    strict: Strict = False,
    quiet: Quiet = False,
    no_recursive: NoRecursive = False,
    labels: Labels = "first",
) -> int:
    """Anomaly scores of images against a model: patch distances, verdicts, AUROC per label."""
    from soartc_cli.pipeline import inspection

    score = ScoreSettings(model, threshold, normal_label)
    job = inspection.score_job(score)
    out_settings = OutputSettings(
        output, inspection.ScoreLayout(), precision=precision, record=record, maps=maps,
        resume=resume,
    )  # fmt: skip
    settings = run_settings(
        inputs, output=out_settings, workers=workers, shard=shard, strict=strict, quiet=quiet,
        no_recursive=no_recursive, labels=labels,
    )  # fmt: skip

    def evaluation(report) -> dict:
        result = inspection.evaluation(report.extras, normal_label=normal_label)
        return {} if result is None else {"evaluation": result}

    table = TableConsumer(keep=tables.TABLE_ROWS) if not settings.output.to_file else None
    options = {"consumer": table} if table is not None else {}
    report, _ = run_images(job, settings, record_extra=evaluation, **options)
    if table is not None and table.rows:
        output_console().print(tables.score_table(table.rows, threshold=job.threshold))
    evaluated = (report.record or {}).get("evaluation")
    if evaluated and not quiet:
        out = output_console() if output != "-" else error_console()
        out.print(tables.evaluation_table(evaluated, normal_label=normal_label))
    elif report.extras and not quiet:
        seen = inspection.labels_seen(report.extras)
        shown = ", ".join(repr(label) for label in seen)
        note(
            f"soartc: no evaluation: no image has the normal label {normal_label!r} "
            f"(labels found: {shown}; --normal-label names the good images' label)"
        )
    closing(report, settings)
    return 0 if report.ok else 1
