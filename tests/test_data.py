import numpy as np
import pytest

from jace.data import DataValidationError, PairColumns, grouped_split, load_humor, load_pairs, read_table
from jace.scaling import TargetScaler

from conftest import shared_data


def write(frame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_load_humor_reads_every_supported_format(humor_frame, tmp_path, suffix):
    frame = load_humor(write(humor_frame, tmp_path / f"d{suffix}"))
    assert frame["score"].dtype == float
    assert frame["odai"].tolist() == humor_frame["odai"].tolist()


def test_missing_column_names_file_and_columns(humor_frame, tmp_path):
    path = write(humor_frame.drop(columns=["response"]), tmp_path / "d.csv")
    with pytest.raises(DataValidationError, match=r"d\.csv: missing column\(s\) \['response'\]"):
        load_humor(path)


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("score", "abc", r"row 4 \(line 5\), column 'score': 'abc' is not a finite number"),
        ("score", "", r"row 4 \(line 5\), column 'score'"),
        ("odai", "  ", r"row 4 \(line 5\), column 'odai': empty"),
        ("response", "", r"row 4 \(line 5\), column 'response': empty"),
    ],
)
def test_bad_cells_are_reported_by_row_and_column(humor_frame, tmp_path, column, value, message):
    bad = humor_frame.astype({"score": object}).copy()
    bad.loc[3, column] = value
    with pytest.raises(DataValidationError, match=message):
        load_humor(write(bad, tmp_path / "d.csv"))


def test_nan_score_in_jsonl_is_rejected(humor_frame, tmp_path):
    bad = humor_frame.copy()
    bad.loc[0, "score"] = np.nan
    with pytest.raises(DataValidationError, match=r"row 1, column 'score'"):
        load_humor(write(bad, tmp_path / "d.jsonl"))


def test_unknown_file_type_and_missing_file_are_clear(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataValidationError, match="unsupported file type"):
        read_table(tmp_path / "d.txt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_pairs(str(tmp_path / "missing.csv"))


def test_grouped_split_keeps_every_prompt_in_one_split_and_is_reproducible(humor_frame):
    train, val, test = grouped_split(humor_frame, validation_size=0.25, test_size=0.25, seed=3)
    assert len(train) + len(val) + len(test) == len(humor_frame)
    sets = [set(s.odai_id) for s in (train, val, test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    again = grouped_split(humor_frame, validation_size=0.25, test_size=0.25, seed=3)
    assert again[2].equals(test)
    other = grouped_split(humor_frame, validation_size=0.25, test_size=0.25, seed=4)
    assert set(other[2].odai_id) != sets[2]


def test_grouped_split_falls_back_to_odai_text_without_ids(humor_frame):
    frame = humor_frame.drop(columns=["odai_id"])
    train, _, test = grouped_split(frame, validation_size=0.0, test_size=0.5)
    assert not set(train.odai) & set(test.odai)


def test_scaler_maps_training_range_to_unit_interval_and_back(tmp_path):
    scaler = TargetScaler.fit([-1.33, 0.0, 4.0])
    scaled = scaler.transform([-1.33, 4.0, 5.0, -3.0])
    assert scaled.tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0])
    assert scaler.inverse_transform(scaler.transform([2.0])).tolist() == pytest.approx([2.0])
    scaler.save(tmp_path)
    assert TargetScaler.load(tmp_path) == scaler
    with pytest.raises(ValueError, match="spread"):
        TargetScaler.fit([1.0, 1.0])


@pytest.mark.needs_data
def test_real_humor_files_validate_and_have_no_prompt_leak():
    train = load_humor(shared_data("humor_train.csv"))
    valid = load_humor(shared_data("humor_validation.csv"))
    assert len(train) == 9065 and len(valid) == 1964
    assert not set(train.odai_id) & set(valid.odai_id)


@pytest.mark.needs_data
def test_real_jsts_loads_with_custom_columns():
    cols = PairColumns(first="sentence1", second="sentence2", label="label", group=None)
    frame = load_pairs(shared_data("jsts_valid.jsonl"), cols)
    assert len(frame) == 1457 and frame.label.between(0, 5).all()
