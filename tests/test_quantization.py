import pytest
import torch

from jace.quantization import int8_kernel
from jace.scoring import RerankerCrossEncoderClient


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JACE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "int8"


def test_int8_quantizes_the_encoder_linears_and_keeps_the_head_in_fp32(tiny_bert_dir, cache):
    client = RerankerCrossEncoderClient(str(tiny_bert_dir), device="cpu", dtype="int8")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    linears = [m for name, m in client.model.named_modules() if name.endswith(("query", "key", "value", "dense")) and "encoder" in name]
    assert linears and all(isinstance(m, DynamicQuantizedLinear) for m in linears)
    assert type(client.model.classifier) is torch.nn.Linear
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
