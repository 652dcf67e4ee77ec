"""The ``jace`` command line. Commands live in submodules and import heavy libraries lazily."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    help="jace: Japanese cross-encoders. Score pairs, LoRA-fine-tune a reranker into a regression model, "
    "caption image お題, and prune context by query.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DeviceOption = typer.Option(None, "--device", help="cuda, mps or cpu (default: best available).")
DtypeOption = typer.Option(
    None,
    "--dtype",
    help="Inference precision. Default ('auto'): bf16/fp16 on GPU; on CPU bf16 where the CPU has native bf16 "
    "(AVX512-BF16/AMX), else fp32 ($JACE_CPU_DTYPE overrides). float32, bfloat16, float16, or int8 (CPU: int8 linear layers, cached).",
)

from jace.cli import caption, convert, pruning, reranker, serve  # noqa: E402,F401  (register the commands)


def main() -> None:
    """Entry point of the ``jace`` console script: user errors print one line and exit 2."""
    from jace.data import DataValidationError

    try:
        app()
    except (DataValidationError, OSError, ValueError) as error:  # OSError: missing, existing or unreadable paths
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


__all__ = ["app", "main", "DeviceOption"]
