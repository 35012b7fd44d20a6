"""``soartc attention``: the seed article's demo, or attention over the patches of images."""

from __future__ import annotations

import sys

from soartc_cli.core import attention
from soartc_cli.errors import UsageError
from soartc_cli.interfaces import tables
from soartc_cli.interfaces.cli import base, options, running
from soartc_cli.output import targets
from soartc_cli.pipeline.jobs import AttentionJob
from soartc_cli.settings.features import DEMO_HIGH, AttentionSettings, DemoSettings


@base.app.command(
    "attention", cls=base.SoartcCommand,
    short_help="Scaled dot-product attention: the seed article's demo, or over image patches.",
)  # fmt: skip
@options.with_groups(options.IMAGE, options.ROWS, options.RUN)
def attention_command(
    inputs: options.Inputs = None,
    seed: options.Seed = 42,
    high: options.option(
        int | None,
        "Demo: weights are integers drawn from [0, HIGH).",
        "HIGH",
        show_default=str(DEMO_HIGH),
    ) = None,
    dim: options.Dim = None,
    words: options.option(
        str | None,
        "Demo: the input X, rows separated by ';' (e.g. '1,0,1,0;0,1,0,1').",
        "ROWS",
    ) = None,
    softmax: options.option(
        str | None,
        "Demo: 'row' (standard) or 'global' (the article's code).",
        "row|global",
        show_default="row",
    ) = None,
    fmt: options.option(
        str | None,
        "Demo output format (-o FILE: json or csv, else chosen by FILE's suffix).",
        "table|json|csv",
        "--format",
        show_default="table",
    ) = None,
    norm: options.option(
        str, "Images: 'layer' (standardise each patch) or 'none'.", "layer|none"
    ) = "layer",
    weights: options.option(
        str, "Images: 'random', 'identity' or an .npz with W_Q, W_K, W_V.", "MODE|FILE"
    ) = "random",
    *,
    image,
    rows,
    run,
) -> int:
    """Scaled dot-product attention: the seed article's demo, or over the patches of images.

    Without inputs: the seed demo (--seed, --high, --dim, --words, --softmax, --format).
    With inputs: per-patch 'received' and 'entropy' of every image, written like 'compute'.
    """
    if not inputs:
        demo = DemoSettings.parse(
            seed=seed,
            high=high,
            dim=dim,
            words=words,
            softmax=softmax,
            fmt=fmt,
            output=rows.output,
        )
        return _demo(demo, quiet=run.quiet)
    demo_only = {"--high": high, "--words": words, "--softmax": softmax, "--format": fmt}
    given = [name for name, value in demo_only.items() if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: only for the seed demo (no image inputs)")
    features = AttentionSettings.parse(
        image=running.image_settings(image), norm=norm, weights=weights, seed=seed, dim=dim
    )
    settings = running.run_settings(inputs, run, output=running.output_settings(rows))
    job = AttentionJob(features)
    report, table = running.run_images(job, settings)
    return running.finish(report, settings, table=table, columns=job.columns)


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
                shown = base.printable(output)
                base.note(f"soartc: the demo's matrices written to {shown} ({demo.format})")
        return base.EXIT_OK
    out = base.output_console()
    out.print(tables.demo_header(result))
    from rich.columns import Columns

    out.print(Columns(tables.demo_tables(result), padding=(0, 2)))
    if result.softmax == "row" and not quiet:
        base.note("hint: the article's printed probs and attention come from --softmax global")
    return base.EXIT_OK
