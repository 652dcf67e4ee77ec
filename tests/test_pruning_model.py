import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from jace.pruning import PruningEncoder

QUERY = "日本で梅雨がないのは北海道とどこか。"
CONTEXT = "梅雨は東アジアの広範囲に見られる気象です。北海道と小笠原諸島には梅雨がない。「雨季。」の一種である。"


@pytest.fixture(scope="module", params=["tiny_mecab_bert_dir", "tiny_xlmr_dir"])
def saved(request, tmp_path_factory):
    backbone = request.getfixturevalue(request.param)
    out = {}
    for mode in ("reranking_pruning", "pruning_only"):
        encoder = PruningEncoder.from_backbone(str(backbone), mode=mode, device="cpu")
        torch.manual_seed(0)
        torch.nn.init.normal_(encoder.model.pruning_head.classifier.weight, std=1.0)
        folder = encoder.save_pretrained(tmp_path_factory.mktemp(mode) / "model")
        out[mode] = (encoder, folder)
    return out


def test_folder_has_the_seed_layout_and_auto_map(saved):
    for mode, (_, folder) in saved.items():
        names = {p.name for p in folder.iterdir()}
        sub = "ranking_model" if mode == "reranking_pruning" else "encoder_model"
        assert {"config.json", "pruning_encoder_config.json", "modeling_pruning_encoder.py", sub, "pruning_head", "README.md"} <= names
        assert "tokenizer_config.json" in names
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "pruning_encoder" and config["mode"] == mode
        assert "model_type" in config["backbone_config"] and config["backbone_config"]["hidden_size"] > 0
        auto = "AutoModelForSequenceClassification" if mode == "reranking_pruning" else "AutoModelForTokenClassification"
        assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", auto}
        card = (folder / "README.md").read_text()
        assert mode in card and "trust_remote_code=True" in card
        assert "import jace" not in (folder / "modeling_pruning_encoder.py").read_text()


def test_jace_reload_gives_identical_pruning_and_scores(saved):
    for mode, (encoder, folder) in saved.items():
        reloaded = PruningEncoder.from_pretrained(folder, device="cpu")
        a, b = encoder.prune(QUERY, CONTEXT), reloaded.prune(QUERY, CONTEXT)
        assert a.sentence_probabilities == pytest.approx(b.sentence_probabilities, abs=1e-6)
        if mode == "reranking_pruning":
            assert a.reranking_score == pytest.approx(b.reranking_score, abs=1e-6)
        else:
            assert a.reranking_score is None


def test_auto_classes_load_without_remote_code_once_jace_pruning_is_imported(saved):
    encoder, folder = saved["reranking_pruning"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(QUERY, CONTEXT, return_tensors="pt")
    seq = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    base = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out, out2 = seq(**inputs), base(**inputs)
        expected = encoder.model(**inputs)
    assert out.logits.shape == (1, 1) and out.pruning_logits.shape[:2] == inputs["input_ids"].shape
    assert torch.allclose(out.logits, expected.logits, atol=1e-6)
    assert torch.allclose(out2.ranking_logits, expected.logits, atol=1e-6)
    _, folder_po = saved["pruning_only"]
    tok = AutoModelForTokenClassification.from_pretrained(folder_po).eval()
    with torch.no_grad():
        assert tok(**inputs).logits.shape[-1] == 2


def test_mode_mismatch_is_a_clear_error(saved):
    _, folder = saved["reranking_pruning"]
    with pytest.raises(ValueError, match="needs a 'pruning_only' PruningEncoder"):
        AutoModelForTokenClassification.from_pretrained(folder)
    _, folder_po = saved["pruning_only"]
    with pytest.raises(ValueError, match="needs a 'reranking_pruning'"):
        AutoModelForSequenceClassification.from_pretrained(folder_po)
    with pytest.raises(ValueError, match="pruning_only"):
        PruningEncoder.from_pretrained(folder_po).predict([(QUERY, CONTEXT)])


class _Tracked:
    """An input that records the device the model moves it to."""

    def __init__(self, tensor):
        self.tensor, self.moved_to = tensor, None

    def to(self, device):
        self.moved_to = torch.device(device)
        return self.tensor.to(device)


def test_forward_moves_inputs_to_the_model_device(saved):
    encoder, _ = saved["reranking_pruning"]
    inputs = {k: _Tracked(v) for k, v in encoder.tokenizer(QUERY, CONTEXT, return_tensors="pt").items()}
    with torch.no_grad():
        out = encoder.model(**inputs)
    assert out.logits.shape == (1, 1)
    assert all(t.moved_to == next(encoder.model.parameters()).device for t in inputs.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cpu_inputs_run_on_a_gpu_model(saved):
    encoder, folder = saved["reranking_pruning"]
    model = AutoModelForSequenceClassification.from_pretrained(folder).cuda().eval()
    with torch.no_grad():
        out = model(**encoder.tokenizer(QUERY, CONTEXT, return_tensors="pt"))
    assert out.logits.device.type == "cuda"


def test_cross_encoder_predict_and_rank_match_jace(saved):
    from sentence_transformers import CrossEncoder

    encoder, folder = saved["reranking_pruning"]
    reloaded = PruningEncoder.from_pretrained(folder, device="cpu")
    docs = [CONTEXT, "猫が好きです。犬も好きです。", "今日は晴れです。"]
    ours = reloaded.predict([(QUERY, d) for d in docs])
    for kwargs in ({}, {"trust_remote_code": True}):
        ce = CrossEncoder(str(folder), device="cpu", **kwargs)
        assert ce.predict([(QUERY, d) for d in docs]).tolist() == pytest.approx(ours, abs=1e-5)
        ranked = ce.rank(QUERY, docs)
        assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
        assert {r["corpus_id"]: r["score"] for r in ranked} == pytest.approx(dict(enumerate(ours)), abs=1e-5)


# Hides the jace package itself from a subprocess (whatever the checkout's path, a folder named
# jace included): an import finder that refuses jace and its submodules, before any other finder.
HIDE_JACE = """
import sys
class _HideJace:
    def find_spec(self, name, path=None, target=None):
        if name == "jace" or name.startswith("jace."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _HideJace())
"""


@pytest.mark.parametrize("mode,auto", [("reranking_pruning", "AutoModelForSequenceClassification"), ("pruning_only", "AutoModelForTokenClassification")])
def test_plain_transformers_loads_folder_where_jace_is_not_importable(saved, mode, auto, tmp_path):
    encoder, folder = saved[mode]
    inputs = encoder.tokenizer(QUERY, CONTEXT)
    with torch.no_grad():
        expected = encoder.model(**{k: torch.tensor([v]) for k, v in inputs.items()}).logits
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys, torch
        try:
            import jace
            raise SystemExit("jace must not be importable here")
        except ImportError:
            pass
        from transformers import {auto}, AutoTokenizer
        model = {auto}.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        tok = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)
        with torch.no_grad():
            out = model(**tok({QUERY!r}, {CONTEXT!r}, return_tensors="pt"))
        print("RESULT " + json.dumps({{"logits": out.logits.flatten().tolist(), "pruning": out.pruning_logits.shape[-1]}}))
    """))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", HIDE_JACE + f"exec(open({str(script)!r}).read())"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["logits"] == pytest.approx(expected.flatten().tolist(), abs=1e-5)
    assert out["pruning"] == 2


def test_incomplete_folder_and_wrong_model_are_rejected(saved, tmp_path, tiny_bert_dir):
    import shutil

    _, folder = saved["reranking_pruning"]
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "pruning_head")
    with pytest.raises(OSError, match="pruning_head"):
        PruningEncoder.from_pretrained(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="missing"):
        PruningEncoder.from_pretrained(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="pruning_encoder_config.json"):
        PruningEncoder.from_pretrained(tiny_bert_dir)


def test_push_to_hub_uploads_the_saved_folder(saved, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
            calls["create"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls["files"] = sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir())
            return type("Commit", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    encoder, _ = saved["reranking_pruning"]
    url = encoder.push_to_hub("me/pruner", private=True, token="hf_x")
    assert url.endswith("/commit/1") and calls["token"] == "hf_x" and calls["create"] == ("me/pruner", True, True)
    assert "modeling_pruning_encoder.py" in calls["files"] and "ranking_model" in calls["files"]


def test_modernbert_backbone_round_trips_and_scores_like_the_plain_reranker(tiny_modernbert_dir, tmp_path):
    from jace.scoring import RerankerCrossEncoderClient

    encoder = PruningEncoder.from_backbone(str(tiny_modernbert_dir), device="cpu")
    reloaded = PruningEncoder.from_pretrained(encoder.save_pretrained(tmp_path / "m"), device="cpu")
    assert reloaded.prune(QUERY, CONTEXT).sentence_probabilities == pytest.approx(encoder.prune(QUERY, CONTEXT).sentence_probabilities, abs=1e-6)
    plain = RerankerCrossEncoderClient(str(tiny_modernbert_dir), device="cpu").run([(QUERY, CONTEXT)])
    assert reloaded.predict([(QUERY, CONTEXT)]) == pytest.approx(plain, abs=1e-5)
