import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from jace.cli import app
from jace.scoring import RerankerCrossEncoderClient
from jace.streaming import Shard, merge_shards, score_file
from jace.data import PairColumns

runner = CliRunner()


@pytest.mark.parametrize("command", ["train", "evaluate", "score", "export", "demo", "merge-shards", "train-reranker", "evaluate-reranker"])
def test_every_command_has_help_with_examples(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_score_writes_same_rows_plus_predicted_score_in_order(tiny_bert_dir, humor_frame, tmp_path):
    src = tmp_path / "in.csv"
    humor_frame.to_csv(src, index=False)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", str(src), str(out), "--model", str(tiny_bert_dir), "--chunk-size", "7", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    scored = pd.read_json(out, lines=True, dtype=False)
    assert list(scored.columns) == [*humor_frame.columns, "predicted_score"]
    assert scored["response"].tolist() == humor_frame["response"].tolist()
    expected = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu").run(list(zip(humor_frame.odai, humor_frame.response)))
    assert scored["predicted_score"].tolist() == pytest.approx(expected, abs=1e-6)


def test_sharded_scoring_merges_back_to_input_order(tiny_bert_dir, humor_frame, tmp_path):
    src = tmp_path / "in.csv"
    humor_frame.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    columns = PairColumns(label=None)
    counts = [score_file(client, src, out, columns, chunk_size=5, shard=Shard(i, 3), show_progress_bar=False).rows for i in range(3)]
    assert sum(counts) == len(humor_frame)
    path, rows = merge_shards(out, 3, chunk_size=4)
    merged = pd.read_csv(path)
    assert rows == len(humor_frame)
    assert merged["response"].tolist() == humor_frame["response"].tolist()
    single = score_file(client, src, tmp_path / "single.csv", columns, show_progress_bar=False).path
    assert merged["predicted_score"].tolist() == pytest.approx(pd.read_csv(single)["predicted_score"].tolist(), abs=1e-6)


def test_strict_score_reports_empty_text_with_file_row_and_column(tiny_bert_dir, humor_frame, tmp_path):
    src = tmp_path / "in.csv"
    bad = humor_frame.copy()
    bad.loc[9, "response"] = ""
    bad.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    result = subprocess.run(
        [sys.executable, "-m", "jace", "score", str(src), str(out), "--model", str(tiny_bert_dir), "--device", "cpu", "--strict"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert "in.csv row 10 (line 11), column 'response'" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_train_evaluate_cli_round_trip(tiny_bert_dir, humor_frame, tmp_path):
    train, valid = tmp_path / "train.csv", tmp_path / "valid.jsonl"
    humor_frame.iloc[:32].to_csv(train, index=False)
    humor_frame.iloc[32:].to_json(valid, orient="records", lines=True, force_ascii=False)
    run = tmp_path / "run"
    result = runner.invoke(app, [
        "train", "--train", str(train), "--eval", str(valid), "--model", str(tiny_bert_dir), "--output-dir", str(run),
        "--epochs", "1", "--lr", "1e-3", "--device", "cpu", "--merge-to", str(tmp_path / "merged"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (run / "final" / "adapter_config.json").is_file() and (tmp_path / "merged" / "config.json").is_file()
    report, plot = tmp_path / "report.json", tmp_path / "plot.png"
    result = runner.invoke(app, ["evaluate", "--model", str(run / "final"), "--data", str(valid), "--report", str(report), "--plot", str(plot), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert set(data["by_type"]) == {"image", "text"}
    assert data["overall"]["n_prompts"] == 4 and "ndcg@5" in data["overall"]
    assert plot.stat().st_size > 1000
    assert "ndcg@5_global (secondary)" in result.output


def test_train_without_eval_holds_out_whole_prompts(tiny_bert_dir, humor_frame, tmp_path):
    train = tmp_path / "train.csv"
    humor_frame.to_csv(train, index=False)
    result = runner.invoke(app, ["train", "--train", str(train), "--model", str(tiny_bert_dir), "--output-dir", str(tmp_path / "r"), "--max-steps", "1", "--validation-size", "0.25", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "final" / "training_summary.json").read_text())
    assert summary["data"]["eval"]["prompts"] == 3 and summary["data"]["train"]["prompts"] == 9


def test_missing_column_is_a_clear_cli_error(tiny_bert_dir, tmp_path):
    src = tmp_path / "in.csv"
    pd.DataFrame({"odai": ["a"], "answer": ["b"], "score": [1]}).to_csv(src, index=False)
    result = subprocess.run(
        [sys.executable, "-m", "jace", "train", "--train", str(src), "--model", str(tiny_bert_dir)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    assert "missing column(s) ['response']" in result.stderr


def test_export_into_a_folder_with_user_files_keeps_them(tiny_bert_dir, humor_frame, tmp_path):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    from jace.training import LoraTrainingConfig

    result = client.train_with_lora(humor_frame.iloc[:16], None, tmp_path / "run", config=LoraTrainingConfig(max_steps=1))
    target = tmp_path / "models"
    (target / "mydata").mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    (target / "mydata" / "rows.csv").write_text("a\n")
    out = runner.invoke(app, ["export", str(result.final_dir), str(target)])
    assert out.exit_code == 0, out.output
    assert (target / "notes.txt").read_text() == "mine" and (target / "mydata" / "rows.csv").read_text() == "a\n"
    pairs = list(zip(humor_frame.odai[:4], humor_frame.response[:4]))
    assert RerankerCrossEncoderClient(str(target), device="cpu").run(pairs) == pytest.approx(client.run(pairs), abs=1e-5)


@pytest.mark.parametrize("command,config_name", [("train", "LoraTrainingConfig"), ("train-pruner", "PruningTrainingConfig")])
def test_training_options_are_generated_from_every_config_field(command, config_name):
    import dataclasses

    import jace.config

    config_class = getattr(jace.config, config_name)
    text = " ".join(runner.invoke(app, [command, "--help"], terminal_width=400).output.split())
    for field in dataclasses.fields(config_class):
        flag = (field.metadata["flags"] or (f"--{field.name.replace('_', '-')}",))[0].split("/")[0]
        assert flag in text, flag
        assert field.metadata["help"].split(".")[0] in text, field.name


def test_a_default_changed_in_the_config_changes_the_cli_help():
    import dataclasses

    import typer

    from jace.cli.config_options import config_options
    from jace.config import LoraTrainingConfig, option

    @dataclasses.dataclass
    class Tuned(LoraTrainingConfig):
        r: int = option(32, "LoRA rank.", lambda v: v >= 1, "must be >= 1", flags=("--lora-r",))

    seen = {}
    tiny = typer.Typer()

    @tiny.command()
    @config_options(Tuned)
    def run(name: str = typer.Option("x", "--name"), *, config: Tuned) -> None:
        seen["config"] = config

    assert "[default: 32]" in " ".join(runner.invoke(tiny, ["--help"], terminal_width=400).output.split("--lora-r")[1].split()[:8])
    assert runner.invoke(tiny, ["--lr", "0.5"]).exit_code == 0
    assert seen["config"].r == 32 and seen["config"].learning_rate == 0.5
    result = runner.invoke(tiny, ["--lora-r", "0"])
    assert isinstance(result.exception, ValueError) and "r must be >= 1" in str(result.exception)


def test_evaluate_with_baselines_reports_them_beside_the_model_on_the_same_rows(tiny_bert_dir, humor_frame, tmp_path):
    train, valid = tmp_path / "train.csv", tmp_path / "valid.csv"
    humor_frame.iloc[:30].to_csv(train, index=False)
    humor_frame.iloc[30:].to_csv(valid, index=False)
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_bert_dir), "--data", str(valid), "--baselines", str(train),
                                 "--report", str(report), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    baselines = json.loads(report.read_text())["baselines"]
    assert {"random", "response length (characters)", "training mean of the odai_type"} <= set(baselines)
    assert any(name.startswith("char n-gram ridge") for name in baselines)
    length = humor_frame.iloc[30:]
    from jace.metrics import evaluate_predictions

    expected = evaluate_predictions(length.score.to_numpy(float), length.response.str.len().to_numpy(float))["overall"]["spearman"]
    assert baselines["response length (characters)"]["spearman"] == pytest.approx(expected)
    assert "model vs baselines" in result.output


def test_train_reranker_then_evaluate_reranker_from_the_command_line(tiny_bert_dir, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(
        json.dumps({"query": q, "positive": f"{q} {q}", "negatives": ["dog", "fox"]}) + "\n" for q in ("the", "quick", "lazy")
    ))  # fmt: skip
    out = tmp_path / "run"
    result = runner.invoke(app, ["train-reranker", "--train", str(rows), "--model", str(tiny_bert_dir), "--output-dir", str(out),
                                 "--max-steps", "2", "--loss", "bce", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = tmp_path / "rerank.json"
    result = runner.invoke(app, ["evaluate-reranker", "--model", str(out / "final"), "--data", str(rows), "--report", str(report)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(report.read_text())
    assert metrics["n_queries"] == 3 and 0 < metrics["mrr@10"] <= 1
