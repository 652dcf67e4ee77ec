"""``jace caption``: caption a folder of images, or fill in ``odai`` for the image rows of a humor dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from jace.cli import DeviceOption, app
from jace.config import DEFAULT_CAPTION_MODEL

caption_app = typer.Typer(
    help="Caption images into 大喜利-style Japanese お題 with Qwen2.5-VL (dedup, on-disk cache, resumable).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(caption_app, name="caption")

DEFAULT_CACHE = Path(os.environ.get("JACE_CACHE_DIR", Path.home() / ".cache" / "jace")) / "captions.jsonl"

Model = typer.Option(DEFAULT_CAPTION_MODEL, "--model", help="Qwen2.5-VL checkpoint: hub id or folder.")
BatchSize = typer.Option(16, "--batch-size", min=1, help="Images per generation batch.")
Cache = typer.Option(DEFAULT_CACHE, "--cache", help="Caption cache (JSONL); re-runs and resumed runs reuse it.")
NoCache = typer.Option(False, "--no-cache", help="Do not read or write the cache.")
Prompt = typer.Option(None, "--prompt", help="Instruction given with each image (default: the 大喜利 お題 prompt).")
MaxNewTokens = typer.Option(128, "--max-new-tokens", min=1, help="Caption length limit in tokens.")


def _client(model: str, batch_size: int, device: Optional[str], cache: Path, no_cache: bool, prompt: Optional[str], max_new_tokens: int):
    from jace.caption import DEFAULT_PROMPT, QwenCaptionClient

    return QwenCaptionClient(
        model, batch_size=batch_size, device=device, prompt=prompt or DEFAULT_PROMPT,
        max_new_tokens=max_new_tokens, cache_path=None if no_cache else cache,
    )  # fmt: skip


def _report_failures(failures: list[dict], output: Path) -> None:
    """Write failed items beside the output and exit non-zero; errors are never written as captions."""
    errors_path = output.with_name(output.stem + ".errors.jsonl")
    if not failures:
        errors_path.unlink(missing_ok=True)
        return
    with open(errors_path, "w", encoding="utf-8") as handle:
        for failure in failures:
            handle.write(json.dumps(failure, ensure_ascii=False) + "\n")
    typer.echo(f"{len(failures)} item(s) failed; see {errors_path}", err=True)
    for failure in failures[:10]:
        typer.echo(f"  {failure}", err=True)
    raise typer.Exit(code=1)


@caption_app.command(
    "folder",
    epilog="Examples:\n\n  jace caption folder images/ captions.jsonl\n\n"
    "  jace caption folder images/ captions.csv --batch-size 32 --cache runs/captions.jsonl",
)
def caption_folder(
    folder: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    output: Path = typer.Argument(..., help="JSONL or CSV with columns image, caption."),
    model: str = Model,
    batch_size: int = BatchSize,
    device: Optional[str] = DeviceOption,
    cache: Path = Cache,
    no_cache: bool = NoCache,
    prompt: Optional[str] = Prompt,
    max_new_tokens: int = MaxNewTokens,
) -> None:
    """Caption every image in a folder. Failed images go to OUTPUT.errors.jsonl and the exit code is 1."""
    import pandas as pd

    from jace.caption import IMAGE_SUFFIXES
    from jace.data import write_table

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder.")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}).")
    client = _client(model, batch_size, device, cache, no_cache, prompt, max_new_tokens)
    results = client.caption(paths, show_progress_bar=True)
    rows = [{"image": str(p), "caption": r.caption} for p, r in zip(paths, results) if r.ok]
    write_table(pd.DataFrame(rows, columns=["image", "caption"]), output)
    typer.echo(f"wrote {len(rows)} caption(s) to {output} ({sum(r.cached for r in results)} from cache)")
    _report_failures([{"image": str(p), "error": r.error} for p, r in zip(paths, results) if not r.ok], output)


@caption_app.command(
    "humor",
    epilog="Examples:\n\n  jace caption humor iammytoo/japanese-humor-evaluation-v2 humor_train.csv --split train\n\n"
    "  jace caption humor data_with_image_paths.csv humor_captioned.csv --image-column image_path",
)
def caption_humor(
    source: str = typer.Argument(..., help="Hub dataset id with an image column, or a CSV/JSONL whose image column holds paths."),
    output: Path = typer.Argument(..., help="CSV/JSONL to write; `jace train` accepts it."),
    split: str = typer.Option("train", "--split", help="Split, when SOURCE is a hub id."),
    image_column: str = typer.Option("image", "--image-column", help="Column with the image (or its path)."),
    model: str = Model,
    batch_size: int = BatchSize,
    device: Optional[str] = DeviceOption,
    cache: Path = Cache,
    no_cache: bool = NoCache,
    prompt: Optional[str] = Prompt,
    max_new_tokens: int = MaxNewTokens,
) -> None:
    """Fill in odai for the rows with odai_type == image. Rows whose image fails are left out and reported."""
    from jace.data import read_table, write_table

    local = Path(source)
    if local.exists():
        frame = read_table(local)
        base = local.parent
    else:
        from datasets import load_dataset

        frame = load_dataset(source, split=split).to_pandas()
        base = Path.cwd()
    for column in ("odai_type", image_column):
        if column not in frame.columns:
            raise ValueError(f"{source}: missing column {column!r}; found {list(frame.columns)}.")
    if "odai" not in frame.columns:
        frame["odai"] = ""
    is_image = frame["odai_type"] == "image"

    def resolve(value):
        if isinstance(value, dict):  # datasets' Image feature decoded to {"bytes", "path"} by to_pandas()
            return value.get("bytes") or value.get("path") or b""
        if isinstance(value, str) and not Path(value).is_absolute():
            return base / value
        return value

    rows = frame.index[is_image].tolist()
    client = _client(model, batch_size, device, cache, no_cache, prompt, max_new_tokens)
    results = client.caption([resolve(frame.at[i, image_column]) for i in rows], show_progress_bar=True)
    failures = []
    for i, result in zip(rows, results):
        if result.ok:
            frame.at[i, "odai"] = result.caption
        else:
            failures.append({"row": int(i) + 1, "image": str(frame.at[i, image_column])[:200], "error": result.error})
    failed_rows = [f["row"] - 1 for f in failures]
    out = frame.drop(index=failed_rows)
    if out[image_column].map(lambda v: isinstance(v, (dict, bytes))).any():
        out = out.drop(columns=[image_column])
    write_table(out.reset_index(drop=True), output)
    typer.echo(f"captioned {len(rows) - len(failures)} image row(s); wrote {len(out)} rows to {output}")
    _report_failures(failures, output)
