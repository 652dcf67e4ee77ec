"""Scoring files of any size in bounded memory, resumable, optionally sharded across processes.

For an output ``OUT`` a run writes, next to it:

* ``OUT.partial`` while running, renamed to ``OUT`` when done;
* ``OUT.rejects.csv`` (or ``.jsonl``): rows that could not be scored, with their input row
  number and the reason (an empty text, say). Scoring goes on past them; ``strict=True`` stops
  at the first one instead;
* ``OUT.progress.json`` while running: how many input rows are done and how many bytes of the
  outputs hold them. A killed run continues from there with ``resume=True`` and ends with the same
  file an uninterrupted run writes;
* for a shard of a sharded run, ``OUT.shard-I-of-N.csv`` and its ``.manifest.json`` (input hash,
  row count, shard, rejected rows), which :func:`merge_shards` checks before it merges.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from jace.atomic import atomic_file
from jace.data import DataValidationError, PairColumns, invalid_rows, iter_table_chunks, require_columns, validate_frame
from jace.scoring import RerankerCrossEncoderClient

SCORE_COLUMN = "predicted_score"
ROW_COLUMN = "row"
REASON_COLUMN = "reason"


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


@dataclass
class ScoreSummary:
    """What a :func:`score_file` run wrote: the output, its row count, and the rejected rows."""

    path: Path
    rows: int
    rejected: int
    rejects_path: Path | None


def shard_path(output: str | Path, shard: Shard) -> Path:
    """Where one shard writes: ``out.csv`` → ``out.shard-00001-of-00004.csv``."""
    output = Path(output)
    if shard.count == 1:
        return output
    return output.with_name(f"{output.stem}.shard-{shard.index:05d}-of-{shard.count:05d}{output.suffix}")


def _sidecar(target: Path, suffix: str) -> Path:
    return target.with_name(target.name + suffix)


def rejects_path(target: Path) -> Path:
    """``out.csv`` → ``out.rejects.csv``: where rows that could not be scored go."""
    return target.with_name(f"{target.stem}.rejects{target.suffix}")


def _writer_format(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: output must be .csv or .jsonl.")
    return suffix


def check_output(path: str | Path) -> None:
    """Refuse an output path that cannot be written: a folder, or a suffix other than .csv/.jsonl."""
    _writer_format(Path(path))
    if Path(path).is_dir():
        raise IsADirectoryError(f"output {path} is a folder; give the path of a .csv or .jsonl file to write.")


def _append(frame: pd.DataFrame, handle, fmt: str, header: bool) -> None:
    if fmt == ".csv":
        frame.to_csv(handle, index=False, header=header)
    elif len(frame):
        text = frame.to_json(orient="records", lines=True, force_ascii=False)
        handle.write(text if text.endswith("\n") else text + "\n")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _Progress:
    """Checkpoint of a run, written after every chunk once its rows are on disk."""

    input_sha256: str
    chunk_size: int
    shard: list[int]
    columns: list[str | None]
    original_scale: bool
    rows_read: int = 0
    rows_written: int = 0
    output_bytes: int = 0
    rejects_bytes: int = 0
    rejected_rows: list[int] = field(default_factory=list)
    header_written: bool = False

    def same_run(self, other: "_Progress") -> bool:
        keys = ("input_sha256", "chunk_size", "shard", "columns", "original_scale")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


def _sync(handle) -> int:
    """Flush ``handle`` to disk; return the file's size in bytes."""
    handle.flush()
    os.fsync(handle.fileno())
    return os.fstat(handle.fileno()).st_size


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
    strict: bool = False,
    resume: bool = False,
) -> ScoreSummary:
    """Score ``input_path`` (CSV/JSONL) chunk by chunk; write its rows plus ``predicted_score``.

    Rows with an empty or non-text pair go to ``OUT.rejects.*`` with their row number and reason,
    and scoring goes on (``strict=True``: stop with an error at the first one). Output goes to
    ``OUT.partial`` and is renamed at the end. ``resume=True`` continues a killed run of the same
    command from its last finished chunk.

    Example:
        >>> summary = score_file(client, "pairs.csv", "scored.csv", PairColumns(label=None))  # doctest: +SKIP
        >>> summary.rows, summary.rejected  # doctest: +SKIP
        (99998, 2)
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    target = shard_path(output_path, shard)
    check_output(target)
    fmt = _writer_format(target)
    partial, progress_file = _sidecar(target, ".partial"), _sidecar(target, ".progress.json")
    rejects, rejects_partial = rejects_path(target), _sidecar(rejects_path(target), ".partial")
    wanted = _Progress(file_sha256(input_path), chunk_size, [shard.index, shard.count],
                       [columns.first, columns.second], original_scale)  # fmt: skip
    state = wanted
    if progress_file.is_file():
        if not resume:
            raise FileExistsError(
                f"{progress_file}: an earlier run into {target} was interrupted. Pass --resume (resume=True) to "
                f"continue it, or delete {progress_file} and {partial} to start over."
            )
        state = _Progress(**json.loads(progress_file.read_text()))
        if not state.same_run(wanted):
            raise ValueError(
                f"{progress_file}: the interrupted run used another input file or other settings; it cannot be "
                f"resumed with these. Delete {progress_file} and {partial} to start over."
            )
    try:
        state = _score_chunks(client, input_path, columns, state, partial, rejects_partial, progress_file, fmt,
                              shard, batch_size, original_scale, strict, show_progress_bar)  # fmt: skip
    except DataValidationError:
        # Bad input: a resume could only fail the same way, so leave nothing half-done behind.
        for path in (partial, rejects_partial, progress_file):
            path.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    if state.rejected_rows:
        os.replace(rejects_partial, rejects)
    else:
        rejects_partial.unlink(missing_ok=True)
        rejects.unlink(missing_ok=True)  # a stale one from an earlier run of this output
    if shard.count > 1:
        manifest = {"input": str(input_path), "input_sha256": wanted.input_sha256, "input_rows": state.rows_read,
                    "shard_index": shard.index, "shard_count": shard.count, "rows_written": state.rows_written,
                    "rejected_rows": state.rejected_rows}  # fmt: skip
        with atomic_file(_sidecar(target, ".manifest.json"), encoding="utf-8") as handle:
            json.dump(manifest, handle)
    progress_file.unlink()
    return ScoreSummary(target, state.rows_written, len(state.rejected_rows), rejects if state.rejected_rows else None)


def _score_chunks(client, input_path, columns, state, partial, rejects_partial, progress_file, fmt, shard,
                  batch_size, original_scale, strict, show_progress_bar) -> _Progress:  # fmt: skip
    """The loop of :func:`score_file`: score, append and checkpoint one chunk at a time."""
    from tqdm.auto import tqdm

    for path, size in ((partial, state.output_bytes), (rejects_partial, state.rejects_bytes)):
        if state.rows_read or path.exists():
            with open(path, "a+b") as handle:
                handle.truncate(size)
    with open(partial, "a", encoding="utf-8", newline="") as out, open(rejects_partial, "a", encoding="utf-8", newline="") as bad, tqdm(
        desc="Scoring rows", unit="row", disable=not show_progress_bar, initial=state.rows_read
    ) as bar:  # fmt: skip
        for chunk in iter_table_chunks(input_path, state.chunk_size):
            if chunk.empty or chunk.index[-1] < state.rows_read:
                continue  # nothing, or done before the interruption
            require_columns(chunk, str(input_path), [columns.first, columns.second])
            kept = chunk[[shard.keeps(int(i)) for i in chunk.index]]
            reasons = invalid_rows(kept, [columns.first, columns.second])
            if strict and reasons.notna().any():
                validate_frame(kept, str(input_path), [columns.first, columns.second])
            good, rejected = kept[reasons.isna()], kept[reasons.notna()]
            scores = client.run(list(zip(good[columns.first], good[columns.second])), batch_size=batch_size,
                                original_scale=original_scale, show_progress_bar=False) if len(good) else []  # fmt: skip
            _append(good.assign(**{SCORE_COLUMN: scores}), out, fmt, header=not state.header_written)
            if len(rejected):
                numbers = [int(i) + 1 for i in rejected.index]
                table = rejected.assign(**{ROW_COLUMN: numbers, REASON_COLUMN: reasons[rejected.index].tolist()})
                _append(table, bad, fmt, header=state.rejects_bytes == 0)
                state.rejected_rows.extend(numbers)
            state.header_written = True
            state.rows_read = int(chunk.index[-1]) + 1
            state.rows_written += len(good)
            state.output_bytes, state.rejects_bytes = _sync(out), _sync(bad)
            with atomic_file(progress_file, encoding="utf-8") as handle:
                json.dump(asdict(state), handle)
            bar.update(len(chunk))
    if not state.header_written:
        raise DataValidationError(f"{input_path}: no rows to score.")
    return state


class _ShardReader:
    """Hands out the rows of one shard file, ``take(n)`` at a time, reading it in chunks."""

    def __init__(self, path: Path, chunk_size: int) -> None:
        self.chunks = iter_table_chunks(path, chunk_size) if path.stat().st_size else iter(())
        self.buffer = pd.DataFrame()

    def take(self, n: int) -> pd.DataFrame:
        while len(self.buffer) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer = pd.concat([self.buffer, chunk.reset_index(drop=True)], ignore_index=True)
        if len(self.buffer) < n:
            raise DataValidationError("a shard file holds fewer rows than its manifest says; re-run that shard.")
        taken, self.buffer = self.buffer.iloc[:n], self.buffer.iloc[n:]
        return taken

    def exhausted(self) -> bool:
        return self.buffer.empty and all(chunk.empty for chunk in self.chunks)


def _manifests(output_path: Path, num_shards: int) -> list[dict]:
    manifests = []
    for index in range(num_shards):
        part = shard_path(output_path, Shard(index, num_shards))
        manifest = _sidecar(part, ".manifest.json")
        if not part.is_file() or not manifest.is_file():
            raise FileNotFoundError(
                f"missing {part if not part.is_file() else manifest}: shard {index} of {num_shards} has not finished "
                "(or was written by an older jace); run every shard first."
            )
        manifests.append(json.loads(manifest.read_text()))
    first = manifests[0]
    for index, manifest in enumerate(manifests):
        if (manifest["shard_index"], manifest["shard_count"]) != (index, num_shards):
            raise DataValidationError(f"shard {index}'s manifest says it is shard {manifest['shard_index']} of {manifest['shard_count']}.")
        if (manifest["input_sha256"], manifest["input_rows"]) != (first["input_sha256"], first["input_rows"]):
            raise DataValidationError(
                f"shard {index} was scored from another input ({manifest['input']}, {manifest['input_rows']} rows) than "
                f"shard 0 ({first['input']}, {first['input_rows']} rows): a stale shard from an earlier run. Re-run it."
            )
    return manifests


def merge_shards(output_path: str | Path, num_shards: int, *, chunk_size: int = 10_000) -> tuple[Path, int]:
    """Merge the shard files of ``output_path`` back into input order, in bounded memory.

    Each shard's manifest must name the same input file (by hash) and row count, so a stale shard
    from an earlier run is refused instead of merged out of order. Rejected rows of every shard
    are gathered into one ``OUT.rejects.*``.
    """
    output_path = Path(output_path)
    fmt = _writer_format(output_path)
    manifests = _manifests(output_path, num_shards)
    total = manifests[0]["input_rows"]
    kept = [np.setdiff1d(np.arange(m["shard_index"], total, num_shards), np.asarray(m["rejected_rows"], dtype=int) - 1)
            for m in manifests]  # fmt: skip
    parts = [shard_path(output_path, Shard(i, num_shards)) for i in range(num_shards)]
    readers = [_ShardReader(p, chunk_size) for p in parts]
    positions = [0] * num_shards
    written = 0
    with atomic_file(output_path, encoding="utf-8", newline="") as handle:
        for start in range(0, max(total, 1), chunk_size):
            pieces, rows = [], []
            for i, reader in enumerate(readers):
                end = int(np.searchsorted(kept[i], start + chunk_size))
                count = end - positions[i]
                if count:
                    pieces.append(reader.take(count))
                    rows.append(kept[i][positions[i] : end])
                positions[i] = end
            if not pieces:
                continue
            frame = pd.concat(pieces, ignore_index=True).iloc[np.argsort(np.concatenate(rows), kind="stable")]
            _append(frame, handle, fmt, header=written == 0)
            written += len(frame)
        if written == 0:
            _append(_empty_like(parts), handle, fmt, header=True)
        for index, reader in enumerate(readers):
            if not reader.exhausted():
                raise DataValidationError(f"{parts[index]} holds more rows than its manifest says; re-run that shard.")
    _merge_rejects(output_path, num_shards, fmt)
    return output_path, written


def _empty_like(parts: list[Path]) -> pd.DataFrame:
    for part in parts:
        if part.suffix.lower() == ".csv" and part.stat().st_size:
            return pd.read_csv(part, nrows=0, dtype=str)
    return pd.DataFrame()


def _merge_rejects(output_path: Path, num_shards: int, fmt: str) -> None:
    parts = [rejects_path(shard_path(output_path, Shard(i, num_shards))) for i in range(num_shards)]
    frames = [frame for part in parts if part.is_file() for frame in iter_table_chunks(part, 100_000)]
    merged = rejects_path(output_path)
    if frames:
        with atomic_file(merged, encoding="utf-8", newline="") as handle:
            _append(pd.concat(frames, ignore_index=True).sort_values(ROW_COLUMN, key=lambda s: s.astype(int)), handle, fmt, True)
    else:
        merged.unlink(missing_ok=True)
