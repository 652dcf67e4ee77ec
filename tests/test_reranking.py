import json

import pytest
import torch
from sentence_transformers import CrossEncoder

from jace.config import RerankerTrainingConfig
from jace.cross_encoder import load_sequence_regressor
from jace.data import DataValidationError
from jace.metrics import reranking_metrics
from jace.reranking import evaluate_reranker, ranking_rows, read_ranking_rows, train_reranker
from jace.scoring import RerankerCrossEncoderClient

# A toy retrieval task a tiny model can learn: the positive repeats the query (words in the tiny vocab).
QUERIES = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]


def toy_rows():
    rows = []
    for i, query in enumerate(QUERIES):
        others = [QUERIES[(i + j) % len(QUERIES)] for j in (1, 3, 5)]
        rows.append({"query": query, "positive": f"{query} {query} 。", "negatives": [f"{o} {o} 。" for o in others]})
    return rows


def test_pruning_rows_become_ranking_rows_with_the_positive_first():
    rows = ranking_rows([{"query": "q", "texts": ["a", "b", "c"], "labels": [0, 1, 0], "context_spans": []}])
    assert rows == [{"query": "q", "positive": "b", "negatives": ["a", "c"]}]


@pytest.mark.parametrize(
    "row,match",
    [
        ({"positive": "a"}, "row 1, field 'query'"),
        ({"query": "q", "positive": "  "}, "field 'positive'"),
        ({"query": "q", "positive": "a", "negatives": ["b", ""]}, "field 'negatives'"),
        ({"query": "q", "texts": ["a", "b"], "labels": [1, "x"]}, "finite numbers"),
        ({"query": "q", "texts": ["a", "b"], "labels": [1]}, "same length"),
    ],
)
def test_bad_ranking_rows_name_the_row_and_field(row, match):
    with pytest.raises(DataValidationError, match=match):
        ranking_rows([row], "train.jsonl")


def test_reranking_metrics_count_ties_against_the_relevant_candidate():
    assert reranking_metrics([[0.5, 0.5, 0.5]], [0])["mrr@10"] == pytest.approx(1 / 3)
    assert reranking_metrics([[0.9, 0.1]], [0])["mrr@10"] == 1.0
    assert reranking_metrics([[0.0] + [1.0] * 10], [0], k=10)["mrr@10"] == 0.0
    with pytest.raises(ValueError, match="outside"):
        reranking_metrics([[0.1]], [3])


def test_missing_pooler_starts_as_identity_and_a_saved_one_is_kept(tiny_bert_dir, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(tiny_bert_dir, add_pooling_layer=False)
    encoder.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path)
    without = load_sequence_regressor(tmp_path)
    assert torch.equal(without.bert.pooler.dense.weight, torch.eye(32)) and not without.bert.pooler.dense.bias.any()
    kept = load_sequence_regressor(tiny_bert_dir)
    assert not torch.equal(kept.bert.pooler.dense.weight, torch.eye(32))


@pytest.mark.parametrize("loss,method,lr", [("listwise", "full", 3e-3), ("bce", "full", 3e-3), ("lambda", "lora", 1e-2)])
def test_trained_reranker_ranks_the_toy_positives_first_and_loads_in_crossencoder(tiny_bert_no_dropout_dir, tmp_path, loss, method, lr):
    rows = toy_rows()
    before = evaluate_reranker(RerankerCrossEncoderClient(str(tiny_bert_no_dropout_dir), device="cpu"), rows)
    config = RerankerTrainingConfig(loss=loss, method=method, num_train_epochs=40, learning_rate=lr, per_device_train_batch_size=4,
                                    max_length=64, freeze_embeddings=False)  # fmt: skip
    result = train_reranker(tiny_bert_no_dropout_dir, rows, tmp_path, config=config, device="cpu")
    files = {p.name for p in result.final_dir.iterdir()}
    assert {"config.json", "model.safetensors", "training_summary.json"} <= files and "adapter_config.json" not in files
    client = RerankerCrossEncoderClient(str(result.final_dir), device="cpu")
    after = evaluate_reranker(client, rows)
    assert after["mrr@10"] > before["mrr@10"] and after["mrr@10"] >= 0.9
    pairs = [(r["query"], r["positive"]) for r in rows]
    assert CrossEncoder(str(result.final_dir), device="cpu").predict(pairs) == pytest.approx(client.run(pairs), abs=1e-5)
    summary = json.loads((result.final_dir / "training_summary.json").read_text())
    assert summary["hyperparameters"]["loss"] == loss and summary["data"]["queries"] == len(rows)


def test_listwise_loss_skips_and_counts_rows_without_negatives_and_refuses_when_none_have_any(tiny_bert_dir, tmp_path):
    with pytest.raises(DataValidationError, match="no row has negatives"):
        train_reranker(tiny_bert_dir, [{"query": "q", "positive": "p"}], tmp_path, config=RerankerTrainingConfig(max_steps=1))
    assert not (tmp_path / "final").exists()
    rows = [*toy_rows()[:2], {"query": "dog", "positive": "dog dog"}]
    with pytest.warns(UserWarning, match="1 of 3 queries have no negatives"):
        result = train_reranker(tiny_bert_dir, rows, tmp_path, config=RerankerTrainingConfig(max_steps=1), device="cpu")
    assert result.summary["data"]["queries_without_negatives_skipped"] == 1


def test_evaluation_skips_and_counts_rows_without_negatives(tiny_bert_dir, tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = toy_rows()[:3] + [{"query": "dog", "positive": "dog", "negatives": []}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    result = evaluate_reranker(RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu"), read_ranking_rows(path))
    assert result["n_queries"] == 3 and result["n_queries_unrankable"] == 1


def test_reranker_config_rejects_bad_values_with_every_problem_listed():
    with pytest.raises(ValueError, match="loss must be one of listwise, bce, lambda.*num_negatives must be >= 1"):
        RerankerTrainingConfig(loss="hinge", num_negatives=0)
    assert RerankerTrainingConfig(method="lora").lr == 2e-4 and RerankerTrainingConfig().lr == 5e-5


def test_scored_pairs_become_graded_lists_per_prompt_and_train_with_lambda_loss_only(tiny_bert_dir, humor_frame, tmp_path):
    path = tmp_path / "humor.csv"
    humor_frame.to_csv(path, index=False)
    rows = read_ranking_rows(path)
    assert len(rows) == humor_frame.odai_id.nunique()
    first = humor_frame[humor_frame.odai_id == humor_frame.odai_id.iloc[0]]
    assert rows[0] == {"query": first.odai.iloc[0], "texts": first.response.tolist(), "labels": first.score.astype(float).tolist()}
    with pytest.raises(DataValidationError, match="--loss lambda only"):
        train_reranker(tiny_bert_dir, path, tmp_path / "listwise", config=RerankerTrainingConfig(max_steps=1), device="cpu")
    result = train_reranker(tiny_bert_dir, path, tmp_path / "lambda", config=RerankerTrainingConfig(loss="lambda", max_steps=2), device="cpu")
    assert (result.final_dir / "model.safetensors").is_file()
    with pytest.raises(DataValidationError, match="jace evaluate"):
        evaluate_reranker(RerankerCrossEncoderClient(str(result.final_dir), device="cpu"), rows)
