"""Reading, validating and splitting pair datasets (humor お題/回答 pairs, JSTS, any CSV/JSONL/Parquet).

Every file that enters jace passes :func:`validate_frame`, so a bad row is reported by file, row
and column instead of silently turning into a wrong number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jace.atomic import atomic_file

HUMOR_HUB_ID = "iammytoo/japanese-humor-evaluation-v2"
HUMOR_COLUMNS = ("odai_type", "odai", "response", "score")
SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


class DataValidationError(ValueError):
    """A dataset is malformed; the message names the file, the row and the column."""


@dataclass(frozen=True)
class PairColumns:
    """Which columns hold the two texts of a pair, the target, and the prompt group.

    Example:
        >>> PairColumns(first="sentence1", second="sentence2", label="label", group=None)
        PairColumns(first='sentence1', second='sentence2', label='label', group=None)
    """

    first: str = "odai"
    second: str = "response"
    label: str | None = "score"
    group: str | None = "odai_id"


HUMOR = PairColumns()


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataValidationError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}."
        )
    return suffix


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise DataValidationError(f"{path} is a folder; pass a data file ({', '.join(SUPPORTED_SUFFIXES)}).")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    return path


def _unreadable(path: Path, error: Exception) -> DataValidationError:
    if isinstance(error, UnicodeDecodeError):
        return DataValidationError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.reason}). Re-save the file as UTF-8."
        )
    return DataValidationError(f"{path}: cannot be read as {path.suffix.lower()} ({error}).")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV, JSONL, JSON or Parquet file into a DataFrame with text kept as text."""
    path = _existing_file(path)
    suffix = _suffix(path)
    try:
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    except (UnicodeDecodeError, ValueError, pd.errors.ParserError, OSError) as error:
        raise _unreadable(path, error) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    A line that is not a JSON object, or a file that is not UTF-8, is a :class:`DataValidationError`
    naming the file and line.

    Example:
        >>> rows = list(iter_jsonl("rows.jsonl"))  # doctest: +SKIP
        [(1, {'query': '…'})]
    """
    return _jsonl_rows(_existing_file(path))


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataValidationError(f"{path} line {number}: not UTF-8 text ({error.reason}). Re-save as UTF-8.") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataValidationError(f"{path} line {number}: not valid JSON ({error.msg}).") from None
            if not isinstance(row, dict):
                raise DataValidationError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}.")
            yield number, row


def write_jsonl(rows: Iterator[dict[str, Any]] | Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as JSONL (UTF-8, one object a line), atomically."""
    with atomic_file(path, encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def iter_table_chunks(path: str | Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Yield a CSV/TSV/JSONL file in chunks of ``chunk_size`` rows, in bounded memory.

    The index of each chunk continues from the previous one, so row numbers in errors are global.
    """
    path = _existing_file(path)
    suffix = _suffix(path)
    if suffix in (".csv", ".tsv"):
        reader = pd.read_csv(
            path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False, chunksize=chunk_size
        )
    elif suffix == ".jsonl":
        reader = pd.read_json(path, lines=True, dtype=False, chunksize=chunk_size)
    else:  # JSON and Parquet are not streamed row-wise; they are read whole, then sliced.
        frame = read_table(path)
        for start in range(0, len(frame), chunk_size):
            yield frame.iloc[start : start + chunk_size]
        return
    try:
        with reader:
            yield from reader
    except (UnicodeDecodeError, ValueError, pd.errors.ParserError) as error:
        raise _unreadable(path, error) from None


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame as CSV or JSONL (by suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: output must be .csv or .jsonl.")
    with atomic_file(path, encoding="utf-8", newline="") as handle:
        if suffix == ".csv":
            frame.to_csv(handle, index=False)
        else:
            frame.to_json(handle, orient="records", lines=True, force_ascii=False)
    return path


def _row_label(source: str, index: object) -> str:
    """'file.csv row 7 (line 8)' for CSV-like sources (header on line 1), else 'source row 7'."""
    row = int(index) + 1 if isinstance(index, (int, np.integer)) else index
    if isinstance(row, int) and source.lower().endswith((".csv", ".tsv")):
        return f"{source} row {row} (line {row + 1})"
    return f"{source} row {row}"


def require_columns(frame: pd.DataFrame, source: str, columns: Sequence[str]) -> None:
    """Raise a :class:`DataValidationError` naming ``source`` when any of ``columns`` is missing."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{source}: missing column(s) {missing}; found {list(frame.columns)}. "
            f"Rename the columns or pass the column names explicitly."
        )


def invalid_rows(
    frame: pd.DataFrame, text_columns: Sequence[str], numeric_columns: Sequence[str] = ()
) -> pd.Series:
    """Why each bad row is bad: a Series indexed like ``frame`` holding a reason, or None for good rows.

    A text column must hold a non-empty string; a numeric column a finite number. Missing columns
    are not checked here (see :func:`validate_frame`).

    Example:
        >>> df = pd.DataFrame({"odai": ["お題", ""], "response": ["回答", "x"], "score": ["2.5", "nan"]})
        >>> invalid_rows(df, ["odai", "response"], ["score"]).tolist()
        [None, "column 'odai': empty or non-text value ''"]
    """
    reasons = np.full(len(frame), None, dtype=object)
    for column in text_columns:
        values = frame[column].to_numpy(dtype=object)
        bad = np.fromiter((not isinstance(v, str) or not v.strip() for v in values), bool, len(values)) & (reasons == None)  # noqa: E711
        reasons[bad] = [f"column {column!r}: empty or non-text value {v!r}" for v in values[bad]]
    for column in numeric_columns:
        values = frame[column].to_numpy(dtype=object)
        numbers = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isfinite(numbers) & (reasons == None)  # noqa: E711
        reasons[bad] = [f"column {column!r}: {v!r} is not a finite number" for v in values[bad]]
    return pd.Series(reasons, index=frame.index, dtype=object)


def validate_frame(
    frame: pd.DataFrame,
    source: str,
    text_columns: Sequence[str],
    numeric_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Check that the text columns hold non-empty strings and numeric columns finite numbers.

    Returns a copy with the numeric columns converted to float. ``source`` names the file in errors.

    Example:
        >>> df = pd.DataFrame({"odai": ["お題"], "response": ["回答"], "score": ["2.5"]})
        >>> validate_frame(df, "x.csv", ["odai", "response"], ["score"])["score"].tolist()
        [2.5]
    """
    require_columns(frame, source, [*text_columns, *numeric_columns])
    if frame.empty:
        raise DataValidationError(f"{source}: no rows. Pass a file with at least one pair.")
    reasons = invalid_rows(frame, text_columns, numeric_columns)
    bad = reasons.notna()
    if bad.any():
        index = reasons[bad].index[0]
        raise DataValidationError(
            f"{_row_label(source, index)}, {reasons[index]} ({int(bad.sum())} bad row(s)). Fix or drop these rows."
        )
    frame = frame.copy()
    for column in numeric_columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def load_pairs(
    source: str | Path | pd.DataFrame,
    columns: PairColumns = HUMOR,
    *,
    split: str = "train",
    require_label: bool = True,
) -> pd.DataFrame:
    """Load and validate a pair dataset from a file, a DataFrame, or a Hugging Face Hub id.

    The humor dataset is ``load_pairs("iammytoo/japanese-humor-evaluation-v2")`` or any
    CSV/JSONL/Parquet with the columns ``odai_type, odai, response, score`` (``odai_id`` optional).

    Example:
        >>> df = load_pairs(pd.DataFrame({"odai": ["お題"], "response": ["回答"], "score": [1.0]}))
        >>> len(df)
        1
    """
    if isinstance(source, pd.DataFrame):
        frame, name = source.reset_index(drop=True), "<DataFrame>"
    elif Path(source).exists():
        frame, name = read_table(source), str(source)
    elif isinstance(source, str) and source.count("/") == 1 and not Path(source).suffix:
        from datasets import load_dataset

        frame, name = load_dataset(source, split=split).to_pandas(), f"{source}[{split}]"
    else:
        raise FileNotFoundError(f"{source}: no such file, and not a Hugging Face Hub dataset id (org/name).")
    numeric = [columns.label] if (require_label and columns.label) else []
    return validate_frame(frame, name, [columns.first, columns.second], numeric)


def load_humor(source: str | Path | pd.DataFrame = HUMOR_HUB_ID, *, split: str = "train") -> pd.DataFrame:
    """Load the humor dataset (hub id or file) and check its columns ``odai_type, odai, response, score``."""
    frame = load_pairs(source, HUMOR, split=split)
    if "odai_type" not in frame.columns:
        raise DataValidationError(f"{source}: missing column 'odai_type' (text or image); found {list(frame.columns)}.")
    return frame


def prompt_groups(frame: pd.DataFrame, columns: PairColumns = HUMOR) -> pd.Series:
    """The prompt each row belongs to: ``odai_id`` when present, else the お題 text itself."""
    if columns.group and columns.group in frame.columns:
        return frame[columns.group].astype(str)
    return frame[columns.first].astype(str)


def grouped_split(
    frame: pd.DataFrame,
    *,
    validation_size: float = 0.1,
    test_size: float = 0.1,
    seed: int = 42,
    columns: PairColumns = HUMOR,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split into train/validation/test by prompt, so that no prompt appears in two splits.

    Sizes are fractions of the prompts. The split is reproducible for a given ``seed``.

    Example:
        >>> df = pd.DataFrame({"odai": list("aabbccddee"), "response": list("xyxyxyxyxy"), "score": range(10)})
        >>> train, val, test = grouped_split(df, validation_size=0.2, test_size=0.2)
        >>> set(train.odai) & set(test.odai)
        set()
    """
    if not (0 <= validation_size < 1 and 0 <= test_size < 1 and validation_size + test_size < 1):
        raise ValueError(
            f"validation_size ({validation_size}) and test_size ({test_size}) must be fractions summing below 1."
        )
    from sklearn.model_selection import GroupShuffleSplit

    groups = prompt_groups(frame, columns).to_numpy()
    n_groups = len(set(groups))
    n_test = int(np.floor(n_groups * test_size + 0.5))
    n_val = int(np.floor(n_groups * validation_size + 0.5))

    def carve(indices: np.ndarray, count: int, seed_offset: int) -> tuple[np.ndarray, np.ndarray]:
        """Split ``indices`` into (rest, held) with ``count`` whole groups held out."""
        if count == 0:
            return indices, indices[:0]
        splitter = GroupShuffleSplit(n_splits=1, test_size=count, random_state=seed + seed_offset)
        rest, held = next(splitter.split(indices, groups=groups[indices]))
        return indices[rest], indices[held]

    rest, test = carve(np.arange(len(frame)), n_test, 0)
    train, val = carve(rest, n_val, 1)
    take = lambda idx: frame.iloc[np.sort(idx)].reset_index(drop=True)  # noqa: E731
    return take(train), take(val), take(test)
