"""Entry point of ``soartc`` and ``python -m soartc_cli``."""

from soartc_cli._startup import prepare_process


def main() -> None:
    """Tune the process for numeric work, then run the Typer app."""
    prepare_process()
    from soartc_cli.cli import app

    app(prog_name="soartc")


if __name__ == "__main__":
    main()
