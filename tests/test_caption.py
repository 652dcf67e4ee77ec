import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from jace.caption import CaptionCache, CaptionError, QwenCaptionClient, image_hash, load_image
from jace.cli import app
from jace.data import load_humor

SMALL = dict(device="cpu", max_new_tokens=6, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)


def pictures(n):
    return [np.random.default_rng(i).integers(0, 255, (30 + 9 * i, 40 + 5 * i, 3), dtype=np.uint8) for i in range(n)]


class Counting:
    """Counts how many images reach the model."""

    def __init__(self, client):
        self.calls = []
        original = client._generate

        def generate(images):
            self.calls.append(len(images))
            return original(images)

        client._generate = generate

    @property
    def images(self):
        return sum(self.calls)


@pytest.fixture()
def client(tiny_qwen_vl_dir, tmp_path):
    return QwenCaptionClient(str(tiny_qwen_vl_dir), batch_size=3, cache_path=tmp_path / "cache.jsonl", **SMALL)


def test_batched_captions_equal_one_at_a_time_and_keep_input_order(tiny_qwen_vl_dir):
    images = pictures(5)
    batched = QwenCaptionClient(str(tiny_qwen_vl_dir), batch_size=4, **SMALL).run(images)
    single = QwenCaptionClient(str(tiny_qwen_vl_dir), batch_size=1, **SMALL)
    assert batched == [single.run([image])[0] for image in images]
    assert len(set(batched)) > 1  # captions depend on the image, so order is really checked
    assert all(isinstance(c, str) and c for c in batched)


def test_every_input_type_is_accepted_and_identical_images_dedup(client, tmp_path):
    rgb = pictures(1)[0]
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    gray = rgb[:, :, 0]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    counter = Counting(client)
    captions = client.run([rgb, Image.fromarray(rgb), str(path), path, buffer.getvalue(), rgba, gray])
    assert len(set(captions[:6])) == 1  # same pixels, whatever the container
    assert counter.images == 2  # rgb (six times) and gray


def test_cache_makes_a_rerun_compute_nothing(client, tiny_qwen_vl_dir, tmp_path):
    images = pictures(4)
    first = client.run(images)
    again = QwenCaptionClient(str(tiny_qwen_vl_dir), batch_size=3, cache_path=tmp_path / "cache.jsonl", **SMALL)
    counter = Counting(again)
    results = again.caption(images)
    assert [r.caption for r in results] == first
    assert counter.images == 0 and all(r.cached for r in results)


def test_cache_is_keyed_by_prompt(client, tiny_qwen_vl_dir, tmp_path):
    images = pictures(2)
    client.run(images)
    other = QwenCaptionClient(str(tiny_qwen_vl_dir), prompt="別の指示", cache_path=tmp_path / "cache.jsonl", **SMALL)
    counter = Counting(other)
    other.run(images)
    assert counter.images == 2


def test_interrupted_run_resumes_without_recomputing(tiny_qwen_vl_dir, tmp_path):
    images = pictures(6)
    cache = tmp_path / "cache.jsonl"
    crashing = QwenCaptionClient(str(tiny_qwen_vl_dir), batch_size=2, cache_path=cache, **SMALL)
    original, calls = crashing._generate, []

    def crash_on_second_batch(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(batch)

    crashing._generate = crash_on_second_batch
    with pytest.raises(KeyboardInterrupt):
        crashing.run(images)
    resumed = QwenCaptionClient(str(tiny_qwen_vl_dir), batch_size=2, cache_path=cache, **SMALL)
    counter = Counting(resumed)
    resumed.run(images)
    assert counter.images == 4


def test_cache_file_with_a_torn_last_line_is_repaired(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = CaptionCache(path)
    cache.put("k1", "一つ目")
    cache.put("k2", "二つ目")
    with open(path, "ab") as handle:
        handle.write(b'{"key": "k3", "capt')  # crash mid-write
    reopened = CaptionCache(path)
    assert reopened.get("k1") == "一つ目" and reopened.get("k3") is None and len(reopened) == 2
    reopened.put("k3", "三つ目")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["k1", "k2", "k3"]


def test_bad_images_get_error_results_and_never_kill_the_batch(client, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    good = pictures(2)
    items = [good[0], str(tmp_path / "missing.png"), empty, corrupt, np.zeros((4, 4, 2), np.uint8),
             np.zeros((4, 4, 3), np.float32), b"garbage", good[1]]  # fmt: skip
    results = client.caption(items)
    assert [r.ok for r in results] == [True, False, False, False, False, False, False, True]
    assert "no such image file" in results[1].error
    assert "zero-byte" in results[2].error
    assert "not a readable image" in results[3].error
    assert "unsupported array shape" in results[4].error
    assert "dtype" in results[5].error
    assert all(r.caption is None for r in results if not r.ok)
    with pytest.raises(CaptionError, match="6 of 8 image"):
        client.run(items)
    assert client.run(items, on_error="none")[1] is None


def test_load_image_rejects_unknown_types():
    with pytest.raises(ValueError, match="unsupported image type"):
        load_image(3.14)
    assert image_hash(load_image(np.zeros((5, 5), np.uint8))) == image_hash(load_image(Image.new("L", (5, 5))))


def test_empty_prompt_and_non_qwen_tokenizer_are_rejected(tiny_qwen_vl_dir, tiny_bert_dir):
    with pytest.raises(ValueError, match="prompt"):
        QwenCaptionClient(str(tiny_qwen_vl_dir), prompt=" ", **SMALL)
    with pytest.raises(ValueError, match="image_pad"):
        QwenCaptionClient(str(tiny_bert_dir), **SMALL)


runner = CliRunner()


def test_cli_caption_folder_writes_captions_and_fails_on_bad_images(tiny_qwen_vl_dir, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, picture in enumerate(pictures(3)):
        Image.fromarray(picture).save(folder / f"{i}.png")
    out = tmp_path / "captions.jsonl"
    args = ["caption", "folder", str(folder), str(out), "--model", str(tiny_qwen_vl_dir), "--device", "cpu",
            "--cache", str(tmp_path / "c.jsonl"), "--max-new-tokens", "4"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_json(out, lines=True)
    assert rows["image"].map(lambda p: p.rsplit("/", 1)[1]).tolist() == ["0.png", "1.png", "2.png"]
    (folder / "3.png").write_bytes(b"")
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "cached" not in pd.read_json(out, lines=True).columns and len(pd.read_json(out, lines=True)) == 3
    errors = pd.read_json(tmp_path / "captions.errors.jsonl", lines=True)
    assert errors["image"].tolist() == [str(folder / "3.png")]


def test_cli_caption_humor_fills_odai_for_image_rows_into_a_trainable_file(tiny_qwen_vl_dir, tmp_path):
    for i, picture in enumerate(pictures(2)):
        Image.fromarray(picture).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    frame = pd.DataFrame({
        "odai_type": ["image", "text", "image", "image"],
        "odai": ["", "テキストのお題", "", ""],
        "image": ["0.png", "", "1.png", "bad.png"],
        "response": ["回答a", "回答b", "回答c", "回答d"],
        "score": [1.0, 2.0, 3.0, 4.0],
    })  # fmt: skip
    src, out = tmp_path / "humor.csv", tmp_path / "captioned.csv"
    frame.to_csv(src, index=False)
    result = runner.invoke(app, ["caption", "humor", str(src), str(out), "--model", str(tiny_qwen_vl_dir),
                                 "--device", "cpu", "--no-cache", "--max-new-tokens", "4"])  # fmt: skip
    assert result.exit_code == 1  # one image failed
    captioned = load_humor(out)  # what `jace train` reads
    assert captioned["response"].tolist() == ["回答a", "回答b", "回答c"]
    assert captioned["odai"][1] == "テキストのお題" and captioned["odai"][0] and captioned["odai"][2]
    assert "キャプション生成エラー" not in set(captioned["odai"])


def test_decompression_bomb_and_extreme_aspect_ratio_fail_alone(client, tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (300, 300), "red").save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # 90,000 pixels > 2x the limit: PIL raises
    thin = np.zeros((1, 4000, 3), dtype=np.uint8)  # aspect ratio 4000: Qwen's image processor refuses it
    good = pictures(2)
    results = client.caption([good[0], bomb, thin, good[1]])
    assert [r.ok for r in results] == [True, False, False, True]
    assert "decompression bomb" in results[1].error.lower()
    assert "aspect ratio" in results[2].error.lower()
    assert results[0].caption == client.run([good[0]])[0]


def test_long_inputs_stream_in_chunks_with_flat_memory(tiny_qwen_vl_dir, tmp_path):
    import tracemalloc

    client = QwenCaptionClient(str(tiny_qwen_vl_dir), batch_size=4, cache_path=tmp_path / "cache.jsonl", **SMALL)
    pulled, first_put_at = [0], []
    put = client.cache.put

    def spy(*args, **kwargs):
        first_put_at.append(pulled[0])
        put(*args, **kwargs)

    client.cache.put = spy
    n, size = 120, (600, 600, 3)  # 1.08 MB each: 130 MB if all were held at once

    def images():
        for i in range(n):
            pulled[0] += 1
            yield np.random.default_rng(i).integers(0, 255, size, dtype=np.uint8)

    tracemalloc.start()
    results = client.caption(images(), chunk_size=8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(results) == n and all(r.ok for r in results)
    assert first_put_at[0] <= 8  # the first captions were cached before the 9th image was even read
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB"
