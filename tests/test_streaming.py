import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from jace.cli import app
from jace.data import DataValidationError, PairColumns
from jace.scoring import RerankerCrossEncoderClient
from jace.streaming import Shard, merge_shards, score_file

runner = CliRunner()
COLUMNS = PairColumns(label=None)


@pytest.fixture(scope="module")
def client(tiny_bert_dir):
    return RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")


@pytest.fixture()
def source(humor_frame, tmp_path):
    frame = humor_frame.drop(columns=["score"]).copy()
    frame.loc[5, "response"] = ""
    frame.loc[17, "odai"] = "   "
    path = tmp_path / "in.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_bad_rows_go_to_rejects_with_reason_and_scoring_goes_on(client, source, tmp_path):
    path, frame = source
    summary = score_file(client, path, tmp_path / "out.csv", COLUMNS, chunk_size=7, show_progress_bar=False)
    scored = pd.read_csv(summary.path, dtype=str, keep_default_na=False)
    assert summary.rows == len(frame) - 2 and summary.rejected == 2
    good = frame.drop(index=[5, 17])
    assert scored["response"].tolist() == good["response"].tolist()
    expected = client.run(list(zip(good.odai, good.response)))
    assert scored["predicted_score"].astype(float).tolist() == pytest.approx(expected, abs=1e-6)
    rejects = pd.read_csv(summary.rejects_path, dtype=str, keep_default_na=False)
    assert rejects["row"].tolist() == ["6", "18"]
    assert "'response'" in rejects["reason"][0] and "'odai'" in rejects["reason"][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv", "out.rejects.csv"]


def test_cli_exits_non_zero_when_rows_were_rejected_and_strict_stops_at_the_first(tiny_bert_dir, source, tmp_path):
    path, _ = source
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", str(path), str(out), "--model", str(tiny_bert_dir), "--device", "cpu"])
    assert result.exit_code == 1 and "2 row(s) could not be scored" in result.output
    assert len(pd.read_json(out, lines=True)) == 46
    with pytest.raises(DataValidationError, match=r"row 6 \(line 7\), column 'response'"):
        score_file(RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu"), path, tmp_path / "s.csv", COLUMNS,
                   strict=True, show_progress_bar=False)  # fmt: skip


class _DiesAfter:
    """A client whose run() fails after ``calls`` chunks: an interruption mid-file."""

    def __init__(self, client, calls):
        self.client, self.calls = client, calls

    def run(self, pairs, **kwargs):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return self.client.run(pairs, **kwargs)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_interrupted_run_resumes_to_the_same_file_as_an_uninterrupted_one(client, source, tmp_path, suffix):
    path, _ = source
    whole = score_file(client, path, tmp_path / f"whole{suffix}", COLUMNS, chunk_size=5, show_progress_bar=False)
    out = tmp_path / f"out{suffix}"
    with pytest.raises(KeyboardInterrupt):
        score_file(_DiesAfter(client, 4), path, out, COLUMNS, chunk_size=5, show_progress_bar=False)
    assert not out.exists()
    with pytest.raises(FileExistsError, match="--resume"):
        score_file(client, path, out, COLUMNS, chunk_size=5, show_progress_bar=False)
    resumed = score_file(client, path, out, COLUMNS, chunk_size=5, show_progress_bar=False, resume=True)
    assert out.read_bytes() == whole.path.read_bytes()
    assert resumed.rejects_path.read_bytes() == whole.rejects_path.read_bytes()
    assert not list(tmp_path.glob("out*.progress.json")) and not list(tmp_path.glob("*.partial"))


def test_a_shard_with_no_rows_writes_a_header_and_merges(client, humor_frame, tmp_path):
    src = tmp_path / "in.csv"
    humor_frame.drop(columns=["score"]).head(2).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    for i in range(3):
        score_file(client, src, out, COLUMNS, shard=Shard(i, 3), show_progress_bar=False)
    empty = tmp_path / "out.shard-00002-of-00003.csv"
    assert empty.read_text().startswith("odai_id,")
    path, rows = merge_shards(out, 3)
    assert rows == 2 and pd.read_csv(path)["response"].tolist() == humor_frame.response[:2].tolist()


def test_merge_refuses_a_stale_shard_from_another_input(client, humor_frame, tmp_path):
    out = tmp_path / "out.csv"
    for i, rows in enumerate((20, 20)):
        src = tmp_path / f"in{i}.csv"
        humor_frame.drop(columns=["score"]).head(rows + i).to_csv(src, index=False)
        score_file(client, src, out, COLUMNS, shard=Shard(i, 2), show_progress_bar=False)
    with pytest.raises(DataValidationError, match="stale shard"):
        merge_shards(out, 2)
    assert not out.exists()


def test_sharded_merge_keeps_input_order_with_rejects_in_several_shards(client, source, tmp_path):
    path, frame = source
    out = tmp_path / "out.jsonl"
    for i in range(3):
        score_file(client, path, out, COLUMNS, chunk_size=4, shard=Shard(i, 3), show_progress_bar=False)
    merged, rows = merge_shards(out, 3, chunk_size=5)
    whole = score_file(client, path, tmp_path / "whole.jsonl", COLUMNS, show_progress_bar=False)
    _assert_same_scored_file(merged, whole.path)
    assert rows == 46 and (tmp_path / "out.rejects.jsonl").read_bytes() == whole.rejects_path.read_bytes()


@pytest.mark.slow
def test_score_under_torchrun_with_two_processes_merges_to_the_single_process_file(tiny_bert_dir, source, tmp_path):
    path, _ = source
    out = tmp_path / "out.csv"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
         "-m", "jace", "score", str(path), str(out), "--model", str(tiny_bert_dir), "--device", "cpu", "--chunk-size", "8"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    # Rows were rejected, yet every shard exits 0 (a non-zero exit would make torchrun kill the other
    # shards); merge-shards, which completes the run, exits 1 instead.
    assert result.returncode == 0 and "could not be scored" in result.stderr, result.stderr[-3000:]
    manifests = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("out.shard-*.manifest.json"))]
    assert [m["shard_index"] for m in manifests] == [0, 1] and {m["input_rows"] for m in manifests} == {48}
    merged = runner.invoke(app, ["merge-shards", str(out), "--num-shards", "2"])
    assert merged.exit_code == 1 and "could not be scored" in merged.output, merged.output
    single = runner.invoke(app, ["score", str(path), str(tmp_path / "single.csv"), "--model", str(tiny_bert_dir), "--device", "cpu"])
    assert single.exit_code == 1
    _assert_same_scored_file(out, tmp_path / "single.csv")
    assert (tmp_path / "out.rejects.csv").read_bytes() == (tmp_path / "single.rejects.csv").read_bytes()


def _assert_same_scored_file(path, expected):
    """Same rows in the same order; scores equal up to float noise from other batch compositions."""
    read = (lambda p: pd.read_csv(p, dtype=str, keep_default_na=False)) if path.suffix == ".csv" else (lambda p: pd.read_json(p, lines=True, dtype=False))
    got, want = read(path), read(expected)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got.drop(columns="predicted_score"), want.drop(columns="predicted_score"))
    assert got["predicted_score"].astype(float).tolist() == pytest.approx(want["predicted_score"].astype(float).tolist(), abs=1e-6)
