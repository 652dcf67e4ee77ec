import pytest
import torch
from sentence_transformers import CrossEncoder

from jace.scoring import RerankerCrossEncoderClient, encode_pairs
from jace.batching import plan_batches, run_batched

PAIRS = [
    ("今日の天気は？", "晴れです。"),
    ("日本で梅雨がないのは北海道とどこか。", "小笠原諸島です。梅雨は東アジアの広範囲に見られる気象です。" * 3),
    ("猫が好き", "犬も好き"),
    ("その理由とは？", "今までありがとうと大きいクマの彫刻を渡された"),
    ("a", "b"),
]


def reference_scores(folder, pairs):
    """The seed's way: one pair at a time, sigmoid of the logit."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for q, p in pairs:
            logits = model(**tok(q, p, return_tensors="pt", truncation=True, max_length=512)).logits
            out.append(torch.sigmoid(logits).item())
    return out


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_mecab_bert_dir", "tiny_xlmr_dir"])
def test_run_scores_match_unbatched_reference_in_input_order(fixture, request):
    folder = request.getfixturevalue(fixture)
    client = RerankerCrossEncoderClient(str(folder), device="cpu")
    scores = client.run(PAIRS, batch_size=2)
    assert scores == pytest.approx(reference_scores(folder, PAIRS), abs=1e-5)
    assert all(0.0 < s < 1.0 for s in scores)


def test_run_matches_sentence_transformers_cross_encoder(tiny_bert_dir):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    ce = CrossEncoder(str(tiny_bert_dir), device="cpu")
    assert client.run(PAIRS) == pytest.approx(ce.predict(PAIRS).tolist(), abs=1e-5)


def test_batch_size_and_token_budget_do_not_change_scores(tiny_bert_dir):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    base = client.run(PAIRS, batch_size=32)
    client.max_batch_tokens = 40
    assert client.run(PAIRS, batch_size=1) == pytest.approx(base, abs=1e-5)
    assert client.run(PAIRS, batch_size=3) == pytest.approx(base, abs=1e-5)


def test_rank_orders_documents_best_first_like_cross_encoder(tiny_bert_dir):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    docs = [p for _, p in PAIRS]
    ranked = client.rank("今日の天気は？", docs, top_k=3, return_documents=True)
    ce_ranked = CrossEncoder(str(tiny_bert_dir), device="cpu").rank("今日の天気は？", docs, top_k=3)
    assert [r["corpus_id"] for r in ranked] == [r["corpus_id"] for r in ce_ranked]
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert ranked[0]["text"] == docs[ranked[0]["corpus_id"]]


def test_empty_input_gives_empty_output(tiny_bert_dir):
    assert RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu").run([]) == []


@pytest.mark.parametrize("bad", [[("only one",)], [("q", None)], ["not a pair"], [("q", "p", "x")]])
def test_malformed_pairs_raise_with_position(tiny_bert_dir, bad):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    with pytest.raises(ValueError, match="pair 0"):
        client.run(bad)


def test_original_scale_without_scaler_is_an_error(tiny_bert_dir):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    with pytest.raises(ValueError, match="target scaler"):
        client.run(PAIRS, original_scale=True)


def test_unknown_local_model_fails_fast_offline(tmp_path):
    with pytest.raises(OSError):
        RerankerCrossEncoderClient(str(tmp_path / "nope"), device="cpu")


def test_long_pairs_are_truncated_to_max_length(tiny_bert_dir):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu", max_length=16)
    enc = encode_pairs(client.tokenizer, [("猫" * 50, "犬" * 50)], client.max_length)
    assert len(enc["input_ids"][0]) == 16
    assert len(client.run([("猫" * 50, "犬" * 50)])) == 1


def test_plan_batches_respects_row_and_token_limits():
    lengths = [5, 50, 7, 48, 6, 49]
    batches = plan_batches(lengths, batch_size=4, max_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches:
        assert len(batch) <= 4
        assert max(lengths[i] for i in batch) * len(batch) <= 100
    assert batches[0][0] == 1  # longest first


def test_run_batched_halves_the_batch_on_out_of_memory():
    seen = []

    def forward(indices):
        seen.append(len(indices))
        if len(indices) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [i * 2 for i in indices]

    out = run_batched([1] * 8, forward, batch_size=8)
    assert out == [i * 2 for i in range(8)]
    assert seen[0] == 8 and max(seen[1:]) <= 4 and seen.count(8) == 1


def test_run_batched_does_not_swallow_other_errors():
    def forward(indices):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_batched([1, 2], forward, batch_size=2)


def test_bfloat16_opt_in_on_cpu_stays_close_to_fp32(tiny_bert_dir):
    fp32 = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu").run(PAIRS)
    bf16 = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu", dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert bf16.run(PAIRS) == pytest.approx(fp32, abs=1e-2)


def test_device_and_dtype_defaults_and_bad_dtype(tiny_bert_dir):
    from jace.device import resolve_dtype

    client = RerankerCrossEncoderClient(str(tiny_bert_dir))
    assert client.device.type in ("cpu", "cuda", "mps")
    if client.device.type == "cpu":
        assert client.dtype == torch.float32
    with pytest.raises(ValueError, match="Unknown dtype"):
        resolve_dtype("int4", torch.device("cpu"))


def test_bfloat16_on_a_cpu_without_native_bf16_warns_once_with_the_measured_factor(monkeypatch):
    import warnings

    import torch

    from jace import device

    device._warn_slow_bf16.cache_clear()
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert device.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
        device.resolve_dtype(torch.bfloat16, torch.device("cpu"))
    slow = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(slow) == 1 and "7.7x slower" in str(slow[0].message)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    device._warn_slow_bf16.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        device.resolve_dtype("bfloat16", torch.device("cpu"))
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert device.resolve_dtype(None, torch.device("cpu")) == torch.float32


def test_default_cpu_dtype_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, tiny_bert_dir):
    from jace import device

    cpu = torch.device("cpu")
    monkeypatch.delenv("JACE_CPU_DTYPE")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.resolve_dtype(None, cpu) == device.resolve_dtype("auto", cpu) == torch.bfloat16
    assert device.resolve_dtype(None, cpu, cpu_bf16=False) == torch.float32
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    assert next(client.model.parameters()).dtype == torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert device.resolve_dtype(None, cpu) == device.resolve_dtype("auto", cpu) == torch.float32
    monkeypatch.setenv("JACE_CPU_DTYPE", "bfloat16")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.resolve_dtype(None, cpu) == torch.bfloat16
    monkeypatch.setenv("JACE_CPU_DTYPE", "float32")
    assert device.resolve_dtype("auto", cpu) == torch.float32
    assert device.resolve_precision("int8", cpu) == (torch.float32, True)
    with pytest.raises(ValueError, match="CPU path"):
        device.resolve_precision("int8", torch.device("cuda"))


def test_training_from_a_bf16_client_starts_from_the_fp32_weights(tiny_bert_dir, humor_frame, tmp_path):
    from jace.training import LoraTrainingConfig

    pairs = list(zip(humor_frame.odai, humor_frame.response))
    fp32_scores = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu").run(pairs, raw_scores=True)
    bf16 = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu", dtype="bfloat16")
    result = bf16.train_with_lora(humor_frame, None, tmp_path / "run", config=LoraTrainingConfig(max_steps=1, learning_rate=1e-12))
    assert next(bf16.model.parameters()).dtype == torch.bfloat16  # the client keeps its inference precision
    reloaded = RerankerCrossEncoderClient(str(result.final_dir), device="cpu", dtype="float32")
    assert reloaded.run(pairs, raw_scores=True) == pytest.approx(fp32_scores, abs=1e-6)  # bf16-rounded weights: ~1.6e-5 off
