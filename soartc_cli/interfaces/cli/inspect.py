"""``soartc fit`` and ``soartc score``: learn what good images look like, then score new ones."""

from __future__ import annotations

import sys

from soartc_cli.interfaces import tables
from soartc_cli.interfaces.cli import base, options, running
from soartc_cli.pipeline.runner import TableConsumer
from soartc_cli.settings.inspection import FitSettings, ScoreSettings
from soartc_cli.settings.run import OutputSettings


@base.app.command(
    "fit", cls=base.SoartcCommand,
    short_help="Learn the unit space of good images: the model file for 'score'.",
)  # fmt: skip
@options.with_groups(options.IMAGE, options.FEATURES, options.RUN.without("shard"))
def fit_command(
    inputs: options.Inputs = None,
    output: options.option(
        str | None, "Where the model goes.", "MODEL.npz", "--output", "-o"
    ) = None,
    unit_space: options.option(
        str,
        "One mean and covariance per patch position, or one shared by every patch.",
        "position|shared",
    ) = "position",
    quantile: options.option(
        float, "Quantile of the out-of-fold good scores that sets the threshold.", "Q"
    ) = 0.99,
    record: options.Record = None,
    *,
    image,
    features,
    run,
) -> int:
    """Learn the unit space of good images: the model file for 'score'."""
    from soartc_cli.pipeline import inspection

    fit = FitSettings(output, running.feature_settings(image, features), unit_space, quantile)
    settings = running.run_settings(inputs, run, output=OutputSettings(None, record=record))
    with running.observed(settings) as observer:
        result = inspection.fit(
            fit, settings, command=running.command_line(), observer=observer, stdin=sys.stdin
        )
    if not run.quiet:
        base.note(
            f"soartc: model of {result.good_images} good images written to "
            f"{base.printable(fit.model)}; threshold {result.model.threshold:.4g} (quantile "
            f"{quantile} of out-of-fold scores)"
        )
    return base.EXIT_OK if result.report.ok else base.EXIT_FAILED


@base.app.command(
    "score", cls=base.SoartcCommand,
    short_help="Anomaly scores of images against a model: patch distances, verdicts, AUROC.",
)  # fmt: skip
@options.with_groups(options.ROWS.without("layout", "pool"), options.RUN)
def score_command(
    inputs: options.Inputs = None,
    model: options.option(str | None, "The model 'fit' wrote.", "MODEL.npz") = None,
    threshold: options.option(
        float | None, "Anomalous above this score.", "T", show_default="the model's threshold"
    ) = None,
    normal_label: options.option(
        str, "The label of good images, for the evaluation.", "LABEL"
    ) = "good",
    *,
    rows,
    run,
) -> int:
    """Anomaly scores of images against a model: patch distances, verdicts, AUROC per label."""
    from soartc_cli.pipeline import inspection

    job = inspection.score_job(ScoreSettings(model, threshold, normal_label))
    settings = running.run_settings(
        inputs, run, output=running.output_settings(rows, layout=inspection.ScoreLayout())
    )

    def evaluation(report) -> dict:
        result = inspection.evaluation(report.extras, normal_label=normal_label)
        return {} if result is None else {"evaluation": result}

    table = TableConsumer(keep=tables.TABLE_ROWS) if not settings.output.to_file else None
    options = {"consumer": table} if table is not None else {}
    report, _ = running.run_images(job, settings, record_extra=evaluation, **options)
    if table is not None and table.rows:
        base.output_console().print(tables.score_table(table.rows, threshold=job.threshold))
    evaluated = (report.record or {}).get("evaluation")
    if evaluated and not run.quiet:
        out = base.output_console() if rows.output != "-" else base.error_console()
        out.print(tables.evaluation_table(evaluated, normal_label=normal_label))
    elif report.extras and not run.quiet:
        shown = ", ".join(repr(label) for label in inspection.labels_seen(report.extras))
        base.note(
            f"soartc: no evaluation: no image has the normal label {normal_label!r} "
            f"(labels found: {shown}; --normal-label names the good images' label)"
        )
    running.closing(report, settings)
    return base.EXIT_OK if report.ok else base.EXIT_FAILED
