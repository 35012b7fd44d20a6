"""``soartc compute``: SOARTC / SOART metrics of every patch of every image."""

from __future__ import annotations

from soartc_cli.interfaces.cli import options, running
from soartc_cli.interfaces.cli.base import SoartcCommand, app
from soartc_cli.pipeline.jobs import SoartcJob


@app.command(
    "compute", cls=SoartcCommand,
    short_help="SOARTC (convolution) and SOART (rotation) metrics of every patch of every image.",
)  # fmt: skip
@options.with_groups(options.IMAGE, options.FEATURES, options.ROWS, options.RUN)
def compute_command(inputs: options.Inputs = None, *, image, features, rows, run) -> int:
    """SOARTC (convolution) and SOART (rotation) metrics of every patch of every image."""
    job = SoartcJob(running.feature_settings(image, features))
    settings = running.run_settings(inputs, run, output=running.output_settings(rows))
    report, table = running.run_images(job, settings)
    return running.finish(report, settings, table=table, columns=job.columns)
