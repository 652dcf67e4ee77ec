import json

import pytest
import torch
from typer.testing import CliRunner

from jace.cli import app
from jace.pruning import PruningEncoder

runner = CliRunner()

CONTEXT0 = "梅雨 [SEP] 梅雨は東アジアの気象です。北海道には梅雨がない。"
SQUAD = {"data": [
    {"title": f"記事{a}", "paragraphs": [
        {"context": CONTEXT0, "qas": [{"id": f"{a}q", "question": "梅雨がないのは？", "answers": [{"text": "北海道", "answer_start": CONTEXT0.index("北海道")}]}]},
        {"context": "別の段落です。猫が好きです。", "qas": [{"id": f"{a}r", "question": "何が好き？", "answers": [{"text": "猫", "answer_start": 7}]}]},
    ]} for a in range(5)
]}  # fmt: skip


@pytest.mark.parametrize("command", ["prune", "train-pruner", "build-pruning-data", "evaluate-pruner"])
def test_pruning_commands_have_help_with_examples(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_build_pruning_data_writes_bm25_negatives_and_rejects_an_unknown_selection(tmp_path):
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD, ensure_ascii=False))
    out = tmp_path / "rows.jsonl"
    result = runner.invoke(app, ["build-pruning-data", str(squad), str(out), "--negatives", "1", "--negative-selection", "bm25"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10 and all(row["labels"] == [1, 0] for row in rows)
    result = runner.invoke(app, ["build-pruning-data", str(squad), str(out), "--negative-selection", "tfidf"])
    assert result.exit_code == 2 and "--negative-selection" in result.output and "random, bm25" in result.output


def test_build_train_evaluate_prune_end_to_end(tiny_bert_dir, tmp_path):
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD, ensure_ascii=False))
    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    result = runner.invoke(app, ["build-pruning-data", str(squad), str(train), "--holdout", str(held), "--holdout-fraction", "0.4"])
    assert result.exit_code == 0, result.output
    assert len(train.read_text().splitlines()) == 6 and len(held.read_text().splitlines()) == 4
    run = tmp_path / "run"
    result = runner.invoke(app, ["train-pruner", "--train", str(train), "--backbone", str(tiny_bert_dir), "--output-dir", str(run),
                                 "--max-steps", "2", "--batch-size", "4", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    model = run / "final"
    assert (model / "modeling_pruning_encoder.py").is_file()
    report, plot = tmp_path / "r.json", tmp_path / "sweep.png"
    result = runner.invoke(app, ["evaluate-pruner", "--model", str(model), "--data", str(held), "--report", str(report), "--plot", str(plot),
                                 "--device", "cpu", "--baselines"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert {"mrr", "ndcg@3", "sweep"} <= set(data) and plot.stat().st_size > 1000
    assert {"mrr", "sweep"} <= set(data["baselines"]["random"]) and "random pruner (baseline" in result.output
    assert data["baselines"]["label_oracle"]["sweep"][0]["sentence_f2"] == 1.0 and "label oracle" in result.output
    assert all(0 <= row["sentence_f2"] <= 1 for row in data["sweep"])
    rows = tmp_path / "in.jsonl"
    rows.write_text(
        json.dumps({"query": "梅雨がないのは？", "context": CONTEXT0}, ensure_ascii=False) + "\n"
        + json.dumps({"query": "何が好き？", "contexts": ["猫が好き。", "犬。"], "id": 7}, ensure_ascii=False) + "\n"
    )
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["prune", str(rows), str(out), "--model", str(model), "--device", "cpu", "--chunk-size", "1"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(line["results"]) for line in lines] == [1, 2] and lines[1]["id"] == 7
    expected = PruningEncoder.from_pretrained(model, device="cpu").prune("何が好き？", ["猫が好き。", "犬。"])
    assert lines[1]["results"][1]["sentence_probabilities"] == pytest.approx(expected[1].sentence_probabilities, abs=1e-6)


def test_prune_cli_rejects_bad_rows_and_threshold(tiny_bert_dir, tmp_path):
    encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu")
    model = encoder.save_pretrained(tmp_path / "m")
    rows = tmp_path / "in.jsonl"
    rows.write_text('{"query": "q"}\n')
    result = runner.invoke(app, ["prune", str(rows), str(tmp_path / "o.jsonl"), "--model", str(model)])
    assert result.exit_code != 0 and "line 1" in str(result.exception)
    result = runner.invoke(app, ["prune", str(rows), str(tmp_path / "o.jsonl"), "--model", str(model), "--threshold", "2"])
    assert "threshold" in str(result.exception)
    assert not (tmp_path / "o.jsonl").exists()


def test_evaluate_pruner_finds_and_saves_the_threshold_for_a_target_has_answer_rate(tiny_bert_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from jace.cli import app
    from jace.pruning import PruningEncoder

    torch.manual_seed(0)
    encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu")
    torch.nn.init.normal_(encoder.model.pruning_head.classifier.weight, std=2.0)
    folder = encoder.save_pretrained(tmp_path / "pruner")
    (folder / "notes.txt").write_text("mine")
    text = "梅雨は雨季です。北海道には梅雨がない。猫が好きです。"
    rows = [{"query": q, "texts": [text, "犬です。"], "labels": [1, 0], "context_spans": [[[0, 8], [8, 19], [19, 26]], [[0, 4]]],
             "context_spans_relevance": [[0, 1, 0], [0]], "answers": ["北海道"]} for q in ("梅雨？", "どこ？", "北海道？", "猫？")]  # fmt: skip
    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["evaluate-pruner", "--model", str(folder), "--data", str(data), "--target-has-answer", "1.0",
                                      "--save-threshold", "--report", str(tmp_path / "r.json"), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    chosen = json.loads((tmp_path / "r.json").read_text())["threshold_for_target"]
    assert chosen["has_answer_rate"] == 1.0
    reloaded = PruningEncoder.from_pretrained(folder, device="cpu")
    assert reloaded.default_threshold == pytest.approx(chosen["threshold"])
    assert (folder / "notes.txt").read_text() == "mine"
    card = (folder / "README.md").read_text()
    assert f"default threshold: {chosen['threshold']:g}" in card and "Held-out evaluation" in card and "held.jsonl" in card
    # prune() without a threshold uses the saved one: the answer survives on every row
    assert all("北海道" in reloaded.prune(r["query"], text).pruned_context for r in rows)
    assert reloaded.prune(rows[0]["query"], text).sentence_probabilities == pytest.approx(
        reloaded.prune(rows[0]["query"], text, threshold=chosen["threshold"]).sentence_probabilities)
    # evaluating again sweeps the saved default too, and marks it
    again = CliRunner().invoke(app, ["evaluate-pruner", "--model", str(folder), "--data", str(data), "--report", str(tmp_path / "r2.json")])
    assert again.exit_code == 0, again.output
    report = json.loads((tmp_path / "r2.json").read_text())
    at_default = [row for row in report["sweep"] if row["threshold"] == pytest.approx(chosen["threshold"])]
    assert report["default_threshold"] == pytest.approx(chosen["threshold"]) and at_default[0]["has_answer_rate"] == 1.0
    assert "(model default)" in again.output


def test_build_pruning_data_with_a_teacher_scores_every_training_text_and_trains_with_mse(tiny_bert_dir, tmp_path):
    from jace.scoring import RerankerCrossEncoderClient

    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD, ensure_ascii=False))
    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    result = runner.invoke(app, ["build-pruning-data", str(squad), str(train), "--holdout", str(held), "--holdout-fraction", "0.4",
                                 "--teacher", str(tiny_bert_dir), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    teacher = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    for row in rows:
        assert row["teacher_scores"] == pytest.approx(teacher.run([(row["query"], text) for text in row["texts"]]), abs=1e-6)
    assert all("teacher_scores" not in json.loads(line) for line in held.read_text().splitlines())
    result = runner.invoke(app, ["train-pruner", "--train", str(train), "--backbone", str(tiny_bert_dir), "--output-dir", str(tmp_path / "run"),
                                 "--max-steps", "2", "--batch-size", "4", "--device", "cpu", "--ranking-loss", "mse"])  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_saving_a_threshold_found_in_reduced_precision_keeps_the_fp32_weights(tiny_bert_dir, tmp_path, monkeypatch, dtype):
    from safetensors.torch import load_file

    from jace.pruning import PruningEncoder

    monkeypatch.setenv("JACE_CACHE_DIR", str(tmp_path / "cache"))
    folder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu").save_pretrained(tmp_path / "pruner")
    def weights():
        return {(str(f.relative_to(folder)), k): v for f in sorted(folder.rglob("*.safetensors")) for k, v in load_file(f).items()}

    before = weights()
    assert before
    text = "梅雨は雨季です。北海道には梅雨がない。"
    rows = [{"query": "梅雨？", "texts": [text], "labels": [1], "context_spans": [[[0, 8], [8, 19]]],
             "context_spans_relevance": [[0, 1]], "answers": ["北海道"]}]  # fmt: skip
    data = tmp_path / "held.jsonl"
    data.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n")
    result = runner.invoke(app, ["evaluate-pruner", "--model", str(folder), "--data", str(data), "--target-has-answer", "1.0",
                                 "--save-threshold", "--device", "cpu", "--dtype", dtype])  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((folder / "config.json").read_text())["default_threshold"]
    assert f"saved default threshold {saved:g} " in result.output
    after = weights()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(v.dtype != torch.bfloat16 for v in after.values())
    assert "default_threshold" in (folder / "config.json").read_text()
    with pytest.raises(ValueError, match="cannot be saved"):
        PruningEncoder.from_pretrained(folder, dtype="int8").save_pretrained(tmp_path / "copy")


def test_keep_top_context_found_by_evaluation_is_saved_and_used_by_prune(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu")
    torch.nn.init.normal_(encoder.model.pruning_head.classifier.weight, std=2.0)
    folder = encoder.save_pretrained(tmp_path / "pruner")
    text = "梅雨は雨季です。北海道には梅雨がない。猫が好きです。"
    rows = [{"query": q, "texts": [text, "犬です。"], "labels": [1, 0], "context_spans": [[[0, 8], [8, 19], [19, 26]], [[0, 4]]],
             "context_spans_relevance": [[0, 1, 0], [0]], "answers": ["北海道"]} for q in ("梅雨？", "どこ？")]  # fmt: skip
    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["evaluate-pruner", "--model", str(folder), "--data", str(data), "--target-has-answer", "0.5",
                                      "--save-threshold", "--keep-top-context", "--report", str(tmp_path / "r.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["keep_top_context"] is True and "keep_top_context on" in result.output
    reloaded = PruningEncoder.from_pretrained(folder, device="cpu")
    assert reloaded.keep_top_context and json.loads((folder / "config.json").read_text())["keep_top_context"] is True
    assert "keep_top_context: on" in (folder / "README.md").read_text()
    # prune() now never empties the top-ranked context, even at threshold 1; explicitly off, it may
    assert [len(r.kept_indices) for r in reloaded.prune("梅雨？", [text, "犬です。"], threshold=1.0)].count(1) == 1
    assert all(r.kept_indices == [] for r in reloaded.prune("梅雨？", [text, "犬です。"], threshold=1.0, keep_top_context=False))
    # and jace prune follows the saved setting unless told otherwise
    (tmp_path / "in.jsonl").write_text(json.dumps({"query": "梅雨？", "contexts": [text, "犬です。"]}, ensure_ascii=False) + "\n")
    for flag, kept in (([], 1), (["--no-keep-top-context"], 0)):
        out = CliRunner().invoke(app, ["prune", "--model", str(folder), str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"),
                                       "--threshold", "1.0", *flag])  # fmt: skip
        assert out.exit_code == 0, out.output
        results = json.loads((tmp_path / "out.jsonl").read_text())["results"]
        assert sum(len(r["kept_indices"]) for r in results) == kept


def test_evaluate_pruner_reports_the_starting_rerankers_ranking_on_the_same_rows(tiny_bert_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from jace.cli import app
    from jace.pruning import PruningEncoder
    from jace.pruning.evaluation import evaluate_rows, reranker_baseline

    torch.manual_seed(0)
    encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu")  # untrained: its ranking head is the reranker's
    folder = encoder.save_pretrained(tmp_path / "pruner")
    texts = ["梅雨は雨季です。北海道には梅雨がない。", "犬です。猫です。", "今日は晴れです。"]
    rows = [{"query": q, "texts": texts, "labels": labels, "context_spans": [[[0, 8], [8, 19]], [[0, 4], [4, 8]], [[0, 8]]],
             "context_spans_relevance": [[0, 1], [0, 0], [0]], "answers": ["北海道"]}
            for q, labels in (("梅雨？", [1, 0, 0]), ("犬？", [0, 1, 0]), ("晴れ？", [0, 0, 1]))]  # fmt: skip
    pruner = PruningEncoder.from_pretrained(folder, device="cpu")
    own = evaluate_rows(pruner, rows)
    baseline = reranker_baseline(tiny_bert_dir, rows, like=pruner)
    assert baseline["mrr"] == pytest.approx(own["mrr"]) and baseline["ndcg@3"] == pytest.approx(own["ndcg@3"])
    assert 0 < baseline["mrr"] <= 1 and baseline["model"] == str(tiny_bert_dir)
    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["evaluate-pruner", "--model", str(folder), "--data", str(data), "--reranker", str(tiny_bert_dir),
                                      "--report", str(tmp_path / "r.json"), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    reported = json.loads((tmp_path / "r.json").read_text())["baselines"]["reranker"]
    assert reported["mrr"] == pytest.approx(own["mrr"]) and f"reranker {tiny_bert_dir}" in result.output
