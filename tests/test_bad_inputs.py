"""A table of bad inputs to every public entry point: each must fail with a clear error naming what
was wrong (argument, file, row, column), and nothing already written may be lost."""

import json
import re
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from jace.caption import QwenCaptionClient, load_image
from jace.data import load_pairs, read_table
from jace.export import export_merged_model
from jace.metrics import evaluate_predictions
from jace.pruning import PruningEncoder, split_sentences
from jace.pruning.data import read_rows
from jace.scaling import TargetScaler
from jace.scoring import RerankerCrossEncoderClient
from jace.streaming import Shard, merge_shards, score_file
from jace.training import LoraTrainingConfig
from jace.data import PairColumns

PAIRS = [("お題", "回答"), ("猫が好き", "犬も好き")]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert_dir, tiny_xlmr_dir, humor_frame):
    """Folders and files the cases point at, built once."""
    root = tmp_path_factory.mktemp("bad-inputs")
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    adapter = client.train_with_lora(humor_frame.iloc[:8], None, root / "run", config=LoraTrainingConfig(max_steps=1)).final_dir
    truncated = root / "truncated"
    shutil.copytree(tiny_bert_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    no_adapter_config = root / "no-adapter-config"
    shutil.copytree(adapter, no_adapter_config)
    (no_adapter_config / "adapter_config.json").unlink()
    bad_adapter_config = root / "bad-adapter-config"
    shutil.copytree(adapter, bad_adapter_config)
    (bad_adapter_config / "adapter_config.json").write_text("{not json")
    pruner = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu")
    pruner.save_pretrained(root / "pruner")
    pruning_only = PruningEncoder.from_backbone(str(tiny_bert_dir), mode="pruning_only", device="cpu")
    other_model = root / "other-model"
    shutil.copytree(tiny_xlmr_dir, other_model)
    (other_model / "notes.txt").write_text("mine")
    csv = root / "pairs.csv"
    humor_frame.to_csv(csv, index=False)
    latin1 = root / "latin1.csv"
    latin1.write_bytes("odai,response,score\ncaf\xe9,ol\xe9,1\n".encode("latin-1"))
    files = {
        "nan": humor_frame.assign(score=[np.nan] + [1.0] * (len(humor_frame) - 1)),
        "inf": humor_frame.assign(score=[1.0] * 3 + [np.inf] + [1.0] * (len(humor_frame) - 4)),
        "flat": humor_frame.assign(score=2.0),
        "empty_text": humor_frame.assign(response=[""] + list(humor_frame.response[1:])),
        "number_text": pd.DataFrame({"odai": ["お題", 5], "response": ["a", "b"], "score": [1.0, 2.0]}),
        "no_column": humor_frame.drop(columns=["response"]),
    }
    for name, frame in files.items():
        frame.to_json(root / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
    (root / "empty.csv").write_text("odai,response,score\n")
    (root / "pairs.txt").write_text("odai\tresponse\n")
    (root / "a_file").write_text("precious")
    good_row = {"query": "q", "texts": ["文。"], "labels": [1], "context_spans": [[[0, 2]]], "context_spans_relevance": [[1]]}
    (root / "bad.jsonl").write_text(json.dumps(good_row, ensure_ascii=False) + "\nnot json\n")
    (root / "span.jsonl").write_text(json.dumps({"query": "q", "texts": ["短い"], "labels": [1], "context_spans": [[[0, 9]]],
                                                 "context_spans_relevance": [[1]]}) + "\n")  # fmt: skip
    (root / "latin1.jsonl").write_bytes('{"query": "caf\xe9"}\n'.encode("latin-1"))
    (root / "no_images").mkdir()
    return {"root": root, "client": client, "adapter": adapter, "truncated": truncated, "no_adapter_config": no_adapter_config,
            "bad_adapter_config": bad_adapter_config, "pruner": pruner, "pruner_dir": root / "pruner", "pruning_only": pruning_only,
            "other_model": other_model, "csv": csv, "latin1": latin1, "base": tiny_bert_dir}  # fmt: skip


def _train(w, name, **config):
    client = RerankerCrossEncoderClient(str(w["base"]), device="cpu")
    client.train_with_lora(w["root"] / f"{name}.jsonl", None, w["root"] / f"out-{name}", config=LoraTrainingConfig(max_steps=1, **config))


# (id, call, exception, message pattern)
API_CASES = [
    ("run: pair is one string", lambda w: w["client"].run(["お題と回答"]), ValueError, r"pair 0 must be two strings"),
    ("run: None in a pair", lambda w: w["client"].run([("お題", None)]), ValueError, r"pair 0 must be two strings"),
    ("run: three texts", lambda w: w["client"].run([("a", "b", "c")]), ValueError, r"pair 0"),
    ("run: empty passage", lambda w: w["client"].run([PAIRS[0], ("お題", "  ")]), ValueError, r"pair 1 has an empty text"),
    ("run: number instead of text", lambda w: w["client"].run([(1, 2)]), ValueError, r"pair 0"),
    ("run: batch_size 0", lambda w: w["client"].run(PAIRS, batch_size=0), ValueError, r"batch_size must be >= 1"),
    ("run: original_scale without scaler", lambda w: RerankerCrossEncoderClient(str(w["base"]), device="cpu").run(PAIRS, original_scale=True), ValueError, r"original_scale=True needs a target scaler"),
    ("rank: empty query", lambda w: w["client"].rank("", ["回答"]), ValueError, r"pair 0 has an empty text"),
    ("client: missing folder", lambda w: RerankerCrossEncoderClient(str(w["root"] / "nope"), device="cpu"), FileNotFoundError, r"nope: no such model folder"),
    ("client: a file as model", lambda w: RerankerCrossEncoderClient(str(w["root"] / "a_file"), device="cpu"), NotADirectoryError, r"a_file is a file"),
    ("client: truncated safetensors", lambda w: RerankerCrossEncoderClient(str(w["truncated"]), device="cpu"), OSError, r"truncated: cannot load the model.*corrupt"),
    ("client: adapter without adapter_config.json", lambda w: RerankerCrossEncoderClient(str(w["no_adapter_config"]), device="cpu"), FileNotFoundError, r"no adapter_config\.json"),
    ("client: corrupt adapter_config.json", lambda w: RerankerCrossEncoderClient(str(w["bad_adapter_config"]), device="cpu"), ValueError, r"adapter_config\.json: not a readable PEFT adapter config"),
    ("client: unknown dtype", lambda w: RerankerCrossEncoderClient(str(w["base"]), device="cpu", dtype="int4"), ValueError, r"Unknown dtype 'int4'"),
    ("load_lora_adapter: not an adapter", lambda w: RerankerCrossEncoderClient(str(w["base"]), device="cpu").load_lora_adapter(w["base"]), FileNotFoundError, r"no adapter_config\.json"),
    ("train: NaN score", lambda w: _train(w, "nan"), ValueError, r"nan\.jsonl row 1, column 'score'"),
    ("train: inf score", lambda w: _train(w, "inf"), ValueError, r"inf\.jsonl row 4, column 'score'"),
    ("train: all scores equal", lambda w: _train(w, "flat"), ValueError, r"spread"),
    ("train: empty text", lambda w: _train(w, "empty_text"), ValueError, r"row 1, column 'response'"),
    ("train: number in a text column", lambda w: _train(w, "number_text"), ValueError, r"row 2, column 'odai'"),
    ("train: missing column", lambda w: _train(w, "no_column"), ValueError, r"missing column\(s\) \['response'\]"),
    ("train: no rows", lambda w: RerankerCrossEncoderClient(str(w["base"]), device="cpu").train_with_lora(w["root"] / "empty.csv", None, w["root"] / "o"), ValueError, r"empty\.csv: no rows"),
    ("train: non-UTF-8 file", lambda w: RerankerCrossEncoderClient(str(w["base"]), device="cpu").train_with_lora(w["latin1"], None, w["root"] / "o"), ValueError, r"latin1\.csv: not UTF-8"),
    ("train: output_dir is a file", lambda w: RerankerCrossEncoderClient(str(w["base"]), device="cpu").train_with_lora(w["csv"], None, w["root"] / "a_file"), NotADirectoryError, r"a_file is a file"),
    ("config: unknown metric", lambda w: LoraTrainingConfig(metric_for_best_model="ndcg@0"), ValueError, r"metric_for_best_model"),
    ("config: negative lr", lambda w: LoraTrainingConfig(learning_rate=-1), ValueError, r"learning_rate must be > 0"),
    ("export: output is a file", lambda w: export_merged_model(w["adapter"], w["root"] / "a_file"), NotADirectoryError, r"a_file is a file"),
    ("export: not a training output", lambda w: export_merged_model(w["root"], w["root"] / "x"), FileNotFoundError, r"no adapter_config\.json or config\.json"),
    ("export: folder holds another model", lambda w: export_merged_model(w["adapter"], w["other_model"]), FileExistsError, r"different model.*overwrite"),
    ("load_pairs: unsupported suffix", lambda w: load_pairs(w["root"] / "pairs.txt"), ValueError, r"unsupported file type '\.txt'"),
    ("load_pairs: a folder", lambda w: read_table(w["root"]), ValueError, r"is a folder"),
    ("load_pairs: neither file nor hub id", lambda w: load_pairs(str(w["root"] / "missing.csv")), FileNotFoundError, r"missing\.csv: no such file"),
    ("score_file: .txt output", lambda w: score_file(w["client"], w["csv"], w["root"] / "o.txt", PairColumns(label=None)), ValueError, r"must be \.csv or \.jsonl"),
    ("score_file: output is a folder", lambda w: score_file(w["client"], w["csv"], w["root"] / "no_images", PairColumns(label=None)), ValueError, r"must be \.csv or \.jsonl"),
    ("score_file: missing column", lambda w: score_file(w["client"], w["csv"], w["root"] / "o.csv", PairColumns(first="query", label=None), show_progress_bar=False), ValueError, r"missing column\(s\) \['query'\]"),
    ("score_file: chunk_size 0", lambda w: score_file(w["client"], w["csv"], w["root"] / "o.csv", PairColumns(label=None), chunk_size=0), ValueError, r"chunk_size must be >= 1"),
    ("merge_shards: shards missing", lambda w: merge_shards(w["root"] / "never.csv", 2), FileNotFoundError, r"shard 0 of 2 has not finished"),
    ("Shard: index out of range", lambda w: Shard(3, 2), ValueError, r"shard index must be in \[0, 2\)"),
    ("prune: empty query", lambda w: w["pruner"].prune("", "文です。"), ValueError, r"query 0 must be a non-empty string"),
    ("prune: no contexts", lambda w: w["pruner"].prune("q", []), ValueError, r"query 0 has no contexts"),
    ("prune: None context", lambda w: w["pruner"].prune("q", ["文。", None]), ValueError, r"context 1 of query 0 must be a non-empty string"),
    ("prune: threshold 1.5", lambda w: w["pruner"].prune("q", "文。", threshold=1.5), ValueError, r"threshold must be in \[0, 1\]"),
    ("prune: NaN threshold", lambda w: w["pruner"].prune("q", "文。", threshold=float("nan")), ValueError, r"threshold must be in \[0, 1\]"),
    ("predict: pruning_only model", lambda w: w["pruning_only"].predict([("q", "文。")]), ValueError, r"needs a 'reranking_pruning' model"),
    ("PruningEncoder: a reranker folder", lambda w: PruningEncoder.from_pretrained(w["base"]), FileNotFoundError, r"not a PruningEncoder folder"),
    ("PruningEncoder: save over another model", lambda w: w["pruner"].save_pretrained(w["other_model"]), FileExistsError, r"different model"),
    ("read_rows: invalid JSON line", lambda w: read_rows(w["root"] / "bad.jsonl"), ValueError, r"bad\.jsonl line 2: not valid JSON"),
    ("read_rows: span outside text", lambda w: read_rows(w["root"] / "span.jsonl"), ValueError, r"span\.jsonl row 1, field 'context_spans'\[0\]"),
    ("read_rows: non-UTF-8", lambda w: read_rows(w["root"] / "latin1.jsonl"), ValueError, r"latin1\.jsonl line 1: not UTF-8"),
    ("caption: batch_size 0", lambda w: QwenCaptionClient(str(w["base"]), batch_size=0), ValueError, r"batch_size must be >= 1"),
    ("caption: unknown image type", lambda w: load_image(42), ValueError, r"unsupported image type int"),
    ("caption: float array", lambda w: load_image(np.zeros((4, 4, 3))), ValueError, r"unsupported array dtype float64"),
    ("split_sentences: None", lambda w: split_sentences(None), TypeError, r"text must be a string"),
    ("metrics: lengths differ", lambda w: evaluate_predictions([1, 2], [1]), ValueError, r"same length"),
    ("scaler: NaN target", lambda w: TargetScaler.fit([1.0, float("nan")]), ValueError, r"all finite"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_api_input_is_a_clear_error(case, world):
    _, call, exception, pattern = case
    with pytest.raises(exception, match=pattern):
        call(world)


def _cli(monkeypatch, capsys, *args):
    from jace.cli import main

    monkeypatch.setattr(sys, "argv", ["jace", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


CLI_CASES = [
    ("train: missing file", lambda w: ["train", "--train", w["root"] / "missing.csv", "--model", w["base"]], r"missing\.csv: no such file"),
    ("train: bad metric", lambda w: ["train", "--train", w["csv"], "--metric", "ndcg@0", "--model", w["base"]], r"metric_for_best_model"),
    ("train: negative lr", lambda w: ["train", "--train", w["csv"], "--lr", "-1", "--model", w["base"]], r"learning_rate must be > 0"),
    ("evaluate: non-UTF-8 data", lambda w: ["evaluate", "--model", w["base"], "--data", w["latin1"]], r"not UTF-8"),
    ("evaluate: model folder missing", lambda w: ["evaluate", "--model", w["root"] / "nope", "--data", w["csv"]], r"no such model folder"),
    ("score: .txt output", lambda w: ["score", w["csv"], w["root"] / "out.txt", "--model", w["base"]], r"\.csv or \.jsonl"),
    ("score: truncated model", lambda w: ["score", w["csv"], w["root"] / "out.csv", "--model", w["truncated"]], r"corrupt"),
    ("export: into a file", lambda w: ["export", w["adapter"], w["root"] / "a_file"], r"a_file is a file"),
    ("export: into another model's folder", lambda w: ["export", w["adapter"], w["other_model"]], r"--overwrite"),
    ("merge-shards: nothing to merge", lambda w: ["merge-shards", w["root"] / "never.csv", "--num-shards", "2"], r"has not finished"),
    ("prune: threshold 2", lambda w: ["prune", w["root"] / "bad.jsonl", w["root"] / "o.jsonl", "--model", w["pruner_dir"], "--threshold", "2"], r"--threshold must be in \[0, 1\]"),
    ("evaluate-pruner: invalid JSON", lambda w: ["evaluate-pruner", "--model", w["pruner_dir"], "--data", w["root"] / "bad.jsonl"], r"line 2: not valid JSON"),
    ("caption folder: no images", lambda w: ["caption", "folder", w["root"] / "no_images", w["root"] / "c.csv", "--model", w["base"]], r"no images"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_cli_input_exits_2_with_one_clear_line(case, world, monkeypatch, capsys):
    _, arguments, pattern = case
    code, err = _cli(monkeypatch, capsys, *arguments(world))
    assert code == 2, err
    last = err.strip().splitlines()[-1]  # progress bars of model loading may come before it
    assert last.startswith("error: ") and re.search(pattern, last), err
    assert "Traceback" not in err


def test_nothing_already_written_was_lost_by_the_bad_inputs(world):
    """Runs last in this module: the files the cases aimed at are as they were."""
    root = world["root"]
    assert (root / "a_file").read_text() == "precious"
    assert (world["other_model"] / "notes.txt").read_text() == "mine"
    assert json.loads((world["other_model"] / "config.json").read_text())["model_type"] == "xlm-roberta"
    assert (world["adapter"] / "adapter_config.json").is_file()
    assert not list(root.glob("**/*.partial")) and not list(root.glob("**/.*.tmp-*"))


def test_table_is_at_least_forty_cases():
    assert len(API_CASES) + len(CLI_CASES) >= 40


def test_huge_texts_are_truncated_or_windowed_not_errors(world, tiny_bert_dir):
    """A 200,000-character text is not a bad input: scoring truncates it, pruning windows it."""
    huge = "梅雨は東アジアの気象です。" * 15_000
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    head = huge[: 2000]  # far more than 512 tokens: truncation gives the same pair either way
    assert client.run([("梅雨", huge)]) == pytest.approx(client.run([("梅雨", head)]), abs=1e-6)
    result = world["pruner"].prune("梅雨", huge[: 13 * 2_000])  # 2,000 sentences, many windows
    assert len(result.sentence_probabilities) == 2_000 and 0.0 <= result.compression_rate <= 1.0
