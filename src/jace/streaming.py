"""Scoring files of any size in bounded memory, optionally sharded across processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from jace.atomic import atomic_file
from jace.data import PairColumns, iter_table_chunks, validate_frame
from jace.scoring import RerankerCrossEncoderClient

SCORE_COLUMN = "predicted_score"


@dataclass(frozen=True)
class Shard:
    """Process ``index`` of ``count`` handles rows ``index, index + count, index + 2·count, …``.

    Example:
        >>> Shard(1, 3).keeps(4), Shard(1, 3).keeps(5)
        (True, False)
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be in [0, {self.count}), got {self.index} (of {self.count}).")

    def keeps(self, row: int) -> bool:
        return row % self.count == self.index

    @classmethod
    def from_env(cls) -> "Shard":
        """The shard of this process under ``torchrun``/``accelerate launch`` (RANK, WORLD_SIZE), else 0 of 1."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def shard_path(output: str | Path, shard: Shard) -> Path:
    """Where one shard writes: ``out.csv`` → ``out.shard-00001-of-00004.csv``."""
    output = Path(output)
    if shard.count == 1:
        return output
    return output.with_name(f"{output.stem}.shard-{shard.index:05d}-of-{shard.count:05d}{output.suffix}")


def _writer_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: output must be .csv or .jsonl.")
    return suffix


def _append(frame: pd.DataFrame, handle, fmt: str, header: bool) -> None:
    if fmt == ".csv":
        frame.to_csv(handle, index=False, header=header)
    else:
        text = frame.to_json(orient="records", lines=True, force_ascii=False)
        handle.write(text if text.endswith("\n") or not text else text + "\n")


def score_file(
    client: RerankerCrossEncoderClient,
    input_path: str | Path,
    output_path: str | Path,
    columns: PairColumns,
    *,
    chunk_size: int = 10_000,
    batch_size: int = 32,
    original_scale: bool = False,
    shard: Shard = Shard(),
    show_progress_bar: bool = True,
) -> tuple[Path, int]:
    """Score ``input_path`` (CSV/JSONL) chunk by chunk; write its rows plus ``predicted_score``.

    The output is written to a temporary file and renamed at the end, so an interrupted run never
    leaves a truncated file under the final name. Returns the path written and the row count.
    """
    from tqdm.auto import tqdm

    target = shard_path(output_path, shard)
    fmt = _writer_format(target)
    written = 0
    with atomic_file(target, encoding="utf-8", newline="") as handle, tqdm(
        desc="Scoring rows", unit="row", disable=not show_progress_bar
    ) as bar:
        for chunk in iter_table_chunks(input_path, chunk_size):
            chunk = chunk[[shard.keeps(int(i)) for i in chunk.index]]
            if chunk.empty:
                continue
            validate_frame(chunk, str(input_path), [columns.first, columns.second])
            pairs = list(zip(chunk[columns.first], chunk[columns.second]))
            scores = client.run(pairs, batch_size=batch_size, original_scale=original_scale, show_progress_bar=False)
            _append(chunk.assign(**{SCORE_COLUMN: scores}), handle, fmt, header=written == 0)
            written += len(chunk)
            bar.update(len(chunk))
    return target, written


def _rows(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    for chunk in iter_table_chunks(path, chunk_size):
        for start in range(len(chunk)):
            yield chunk.iloc[start : start + 1]


def merge_shards(output_path: str | Path, num_shards: int, *, chunk_size: int = 10_000) -> tuple[Path, int]:
    """Interleave the shard files of ``output_path`` back into input order, in bounded memory."""
    output_path = Path(output_path)
    fmt = _writer_format(output_path)
    parts = [shard_path(output_path, Shard(i, num_shards)) for i in range(num_shards)]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing shard file(s): {missing}; run every shard first.")
    iterators = [_rows(p, chunk_size) for p in parts]
    written = 0
    with atomic_file(output_path, encoding="utf-8", newline="") as handle:
        buffer: list[pd.DataFrame] = []
        active = list(iterators)
        while active:
            still = []
            for rows in active:
                row = next(rows, None)
                if row is None:
                    continue
                buffer.append(row)
                still.append(rows)
            # Round-robin: shard i holds rows i, i+N, …, so taking one row from each in turn restores the order.
            active = still
            if len(buffer) >= chunk_size or (not active and buffer):
                frame = pd.concat(buffer, ignore_index=True)
                _append(frame, handle, fmt, header=written == 0)
                written += len(frame)
                buffer = []
    return output_path, written
