import pytest
import torch

from jace.quantization import Int8Linear, int8_gemm, int8_kernel
from jace.scoring import RerankerCrossEncoderClient


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JACE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "int8"


def test_int8_quantizes_the_encoder_linears_and_keeps_the_head_in_fp32(tiny_bert_dir, cache):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu", dtype="int8")
    linears = [m for name, m in client.model.named_modules() if name.endswith(("query", "key", "value", "dense")) and "encoder" in name]
    assert linears and all(isinstance(m, Int8Linear) for m in linears)
    assert not any(isinstance(m, torch.nn.Linear) for name, m in client.model.named_modules() if "encoder" in name)
    assert type(client.model.classifier) is torch.nn.Linear
    assert type(client.model.bert.pooler.dense) is torch.nn.Linear  # one token per pair, near-identity weights: kept in fp32
    assert int8_kernel() in {"amx", "avx512_vnni", "avx_vnni", "avx2", "generic"}


def test_int8_logits_stay_close_to_fp32_logits(tiny_bert_dir, humor_frame, cache):
    # A random tiny model's logits barely vary across inputs, so this checks closeness, not ranking;
    # ranking fidelity on real models is measured in benchmarks/bench_inference.py.
    pairs = list(zip(humor_frame.odai, humor_frame.response))
    fp32 = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu").run(pairs, raw_scores=True)
    int8 = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu", dtype="int8").run(pairs, raw_scores=True)
    assert max(abs(a - b) for a, b in zip(fp32, int8)) < 1e-3
    assert fp32 != int8


def test_second_int8_load_reads_the_cache_instead_of_rebuilding(tiny_bert_dir, humor_frame, cache, monkeypatch):
    pairs = list(zip(humor_frame.odai, humor_frame.response))
    first = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu", dtype="int8")
    assert len(list(cache.glob("*.pt"))) == 1
    builds = []
    original = RerankerCrossEncoderClient._load_full
    monkeypatch.setattr(RerankerCrossEncoderClient, "_load_full", lambda self, *a: builds.append(a) or original(self, *a))
    second = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu", dtype="int8")
    assert builds == []
    assert second.run(pairs) == first.run(pairs)


def test_int8_of_a_lora_adapter_keeps_its_scaler_and_matches_the_merged_fp32_ranking(tiny_bert_dir, humor_frame, tmp_path, cache):
    from jace.training import LoraTrainingConfig

    trainer = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu")
    result = trainer.train_with_lora(humor_frame, None, tmp_path / "run", config=LoraTrainingConfig(max_steps=3, learning_rate=1e-2))
    pairs = list(zip(humor_frame.odai, humor_frame.response))
    int8 = RerankerCrossEncoderClient(str(result.final_dir), device="cpu", dtype="int8")
    assert int8.scaler is not None and int8.adapter_path == str(result.final_dir)
    scores = int8.run(pairs, original_scale=True)
    assert scores == pytest.approx(trainer.run(pairs, original_scale=True), abs=5e-3)


def test_int8_is_refused_on_gpu_and_for_training(tiny_bert_dir, humor_frame, tmp_path, cache):
    with pytest.raises(ValueError, match="CPU path"):
        RerankerCrossEncoderClient(str(tiny_bert_dir), device="cuda", dtype="int8")
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="cannot be trained"):
        client.train_with_lora(humor_frame, None, tmp_path)


def test_int8_linear_matches_fp32_with_an_outlier_channel_that_breaks_one_scale_per_token():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    x = torch.randn(2, 7, 96)
    x[..., 5] *= 80  # one activation channel far larger than the rest, as in trained transformers
    exact = linear(x)
    error = {k: (Int8Linear.from_linear(linear, outliers=k)(x) - exact).abs().max().item() for k in (0, 2)}
    assert error[2] < 0.02 * exact.abs().max().item()
    assert error[2] < error[0] / 4  # the fp32 side product is what keeps the other channels precise


def test_int8_linear_keeps_shape_handles_empty_input_and_zero_rows():
    layer = Int8Linear.from_linear(torch.nn.Linear(16, 3, bias=False))
    assert layer(torch.zeros(0, 16)).shape == (0, 3)
    assert torch.equal(layer(torch.zeros(4, 16)), torch.zeros(4, 3))
    assert layer(torch.randn(2, 3, 5, 16)).shape == (2, 3, 5, 3)


def test_pruning_encoder_int8_prunes_like_fp32_and_reads_its_cache(tiny_bert_dir, tmp_path, cache, monkeypatch):
    from jace.pruning import PruningEncoder
    from jace.pruning.training import train_pruning_encoder

    torch.manual_seed(0)
    encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu")
    torch.nn.init.normal_(encoder.model.pruning_head.classifier.weight, std=2.0)
    folder = encoder.save_pretrained(tmp_path / "pruner")
    query, contexts = "日本で梅雨がないのは？", ["梅雨は東アジアの気象です。北海道には梅雨がない。", "猫が好きです。今日は晴れです。"]
    fp32 = PruningEncoder.from_pretrained(folder, device="cpu").prune(query, contexts)
    int8 = PruningEncoder.from_pretrained(folder, device="cpu", dtype="int8")
    assert int8.quantized and len(list(cache.glob("*.pt"))) == 1
    for a, b in zip(fp32, int8.prune(query, contexts)):
        assert b.sentence_probabilities == pytest.approx(a.sentence_probabilities, abs=2e-2)
        assert b.reranking_score == pytest.approx(a.reranking_score, abs=2e-2)
    from jace.pruning.encoder import MODEL_CLASSES

    def no_fp32_load(*args, **kwargs):
        raise AssertionError("the fp32 weights were loaded again instead of the int8 cache")

    monkeypatch.setattr(MODEL_CLASSES["reranking_pruning"], "from_pretrained", no_fp32_load)
    again = PruningEncoder.from_pretrained(folder, device="cpu", dtype="int8")
    assert [r.sentence_probabilities for r in again.prune(query, contexts)] == [r.sentence_probabilities for r in int8.prune(query, contexts)]
    with pytest.raises(ValueError, match="cannot be trained"):
        train_pruning_encoder(int8, [], tmp_path / "run")


@pytest.mark.parametrize("gemm", ["int_mm", "fbgemm"])
def test_each_int8_gemm_computes_the_exact_integer_product_of_per_token_quantized_activations(gemm):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    x = torch.randn(21, 96)
    x[:, 5] *= 80
    layer = Int8Linear.from_linear(linear, outliers=4, gemm=gemm)
    given = x.clone()
    assert layer.levels == (63 if gemm == "fbgemm" else 127)  # FBGEMM's AVX2 kernel stays exact with 7-bit activations
    rest = x.double().clone()
    channels = torch.maximum(rest.amax(0), -rest.amin(0)).topk(4).indices
    kept = rest[:, channels].clone()
    rest[:, channels] = 0
    scale = torch.maximum(rest.amax(1, keepdim=True), -rest.amin(1, keepdim=True)) / layer.levels
    weight = layer.weight_t.double()
    expected = ((rest / scale).round() @ weight * scale + kept @ weight[channels]) * layer.weight_scale.double() + linear.bias.double()
    assert torch.allclose(layer(x).double(), expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(x, given)  # the outlier channels zeroed during the call are restored


def test_fbgemm_int8_linear_repacks_after_new_weights_are_loaded():
    torch.manual_seed(1)
    layer = Int8Linear.from_linear(torch.nn.Linear(32, 8), gemm="fbgemm")
    x = torch.randn(5, 32)
    first = layer(x)
    other = Int8Linear.from_linear(torch.nn.Linear(32, 8), gemm="fbgemm")
    layer.load_state_dict(other.state_dict())  # as the int8 cache does
    assert torch.equal(layer(x), other(x)) and not torch.allclose(layer(x), first)


def test_int8_gemm_follows_the_cpu_kernel_family_and_the_environment(monkeypatch):
    assert int8_gemm("avx2") == "fbgemm"  # torch._int_mm has no fast kernel without VNNI
    assert int8_gemm("avx512_vnni") == int8_gemm("amx") == "int_mm"
    monkeypatch.setenv("JACE_INT8_GEMM", "int_mm")
    assert int8_gemm() == "int_mm"
    monkeypatch.setenv("JACE_INT8_GEMM", "cublas")
    with pytest.raises(ValueError, match="JACE_INT8_GEMM"):
        int8_gemm()
    with pytest.raises(ValueError, match="gemm must be one of"):
        Int8Linear(4, 4, gemm="cublas")


def test_int8_gemm_takes_fbgemm_on_avx_vnni_and_warns_on_a_cpu_without_a_fast_int8_kernel(monkeypatch):
    import jace.quantization as quantization

    assert int8_gemm("avx_vnni") == "fbgemm"  # the measured AVX2 kernel, not the unmeasured _int_mm
    monkeypatch.delenv("JACE_INT8_GEMM", raising=False)
    monkeypatch.setattr(quantization, "int8_kernel", lambda: "generic")
    quantization._warn_no_fast_int8.cache_clear()
    with pytest.warns(RuntimeWarning, match="no fast int8 kernel"):
        assert int8_gemm() == "int_mm"
