import json

import pytest

from jace.data import DataValidationError
from jace.pruning.data import build_from_squad, read_rows, split_by_article, validate_rows, write_rows
from jace.pruning.inputs import IGNORE, PairTemplate, encode_windows
from jace.pruning.sentences import split_sentences
from jace.pruning.training import PairDataset, PruningCollator

from conftest import shared_data


def texts(text, spans):
    return [text[s:e] for s, e in spans]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("彼は「こんにちは。元気？」と言った。次の文です。", ["彼は「こんにちは。元気？」と言った。", "次の文です。"]),
        ("本当？？はい！『題名。』を読んだ（注。）\n改行", ["本当？？", "はい！", "『題名。』を読んだ（注。）", "改行"]),
        ("終わりのない文", ["終わりのない文"]),
        ("  ", []),
    ],
)
def test_japanese_sentences_split_on_marks_and_newlines_not_inside_brackets(text, expected):
    assert texts(text, split_sentences(text)) == expected


def test_english_sentences_and_spans_point_into_the_text():
    text = "It rains. Does it?  Yes!\nNew line here"
    spans = split_sentences(text)
    assert texts(text, spans) == ["It rains.", "Does it?", "Yes!", "New line here"]
    with pytest.raises(TypeError):
        split_sentences(None)


ROW = {
    "query": "日本で梅雨がないのは？",
    "texts": ["梅雨は雨季です。北海道には梅雨がない。", "猫が好きです。"],
    "labels": [1, 0],
    "context_spans": [[[0, 8], [8, 19]], [[0, 7]]],
    "context_spans_relevance": [[0, 1], [0]],
}


@pytest.mark.parametrize("fixture", ["tiny_mecab_bert_dir", "tiny_xlmr_dir"])
def test_collator_labels_context_tokens_by_sentence_and_ignores_query_special_and_padding(fixture, request):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    collator = PruningCollator(tokenizer, max_length=64, max_query_tokens=16)
    batch = collator([PairDataset([ROW])[i] for i in range(2)])
    ids, labels = batch["input_ids"], batch["token_labels"]
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}  # [UNK] inside a sentence is context
    query_len = len(tokenizer.encode(ROW["query"], add_special_tokens=False))
    first_sentence = len(tokenizer.encode("梅雨は雨季です。", add_special_tokens=False))
    row0 = labels[0][batch["attention_mask"][0].bool()].tolist()
    # prefix + query (+ middle) ignored, then sentence 0 (label 0), sentence 1 (label 1), suffix ignored
    n_ignored_head = row0.index(0)
    assert n_ignored_head >= query_len + 1
    assert row0[n_ignored_head : n_ignored_head + first_sentence] == [0] * first_sentence
    assert set(row0[n_ignored_head + first_sentence : -1]) == {1} and row0[-1] == IGNORE
    for row in range(2):
        for token, label, mask in zip(ids[row].tolist(), labels[row].tolist(), batch["attention_mask"][row].tolist()):
            if token in special or not mask:
                assert label == IGNORE
    assert labels[1][batch["attention_mask"][1] == 0].eq(IGNORE).all()
    assert batch["ranking_labels"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("fixture", ["tiny_mecab_bert_dir", "tiny_xlmr_dir"])
def test_pair_template_matches_the_tokenizers_own_pair_encoding(fixture, request):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    window = encode_windows(tokenizer, PairTemplate.probe(tokenizer), "猫が好き", "犬も好き。", [(0, 5)], 64, 16)[0]
    reference = tokenizer("猫が好き", "犬も好き。")
    assert window.input_ids == reference["input_ids"]
    if "token_type_ids" in reference:
        assert window.token_type_ids == reference["token_type_ids"]


def test_long_contexts_are_split_into_windows_of_whole_sentences(tiny_mecab_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_mecab_bert_dir)
    context = "".join(f"文{i}は好きです。" for i in range(30))
    windows = encode_windows(tokenizer, PairTemplate.probe(tokenizer), "好き", context, split_sentences(context), 48, 8)
    assert len(windows) > 1 and all(len(w.input_ids) <= 48 for w in windows)
    assert sorted(i for w in windows for i in w.sentences) == list(range(30))


@pytest.mark.parametrize("fixture", ["tiny_xlmr_dir", "tiny_mecab_bert_dir"])
def test_a_context_longer_than_the_model_limit_is_windowed_without_the_tokenizers_indexing_warning(fixture, request):
    import logging

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    tokenizer.model_max_length = 32
    context = "".join(f"文{i}は好きです。" for i in range(30))
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    library = logging.getLogger("transformers")
    level = library.level
    library.addHandler(handler)
    library.setLevel(logging.WARNING)
    try:
        windows = encode_windows(tokenizer, PairTemplate.probe(tokenizer), "好き" * 40, context, split_sentences(context), 32, 8)
    finally:
        library.removeHandler(handler)
        library.setLevel(level)
    assert len(windows) > 1 and all(len(w.input_ids) <= 32 for w in windows)
    assert not [m for m in messages if "longer than the specified maximum" in m]


def test_rows_are_validated_with_row_and_field(tmp_path):
    assert validate_rows([ROW], "x") == [ROW]
    bad = dict(ROW, context_spans=[[[0, 99]], [[0, 7]]], context_spans_relevance=[[1], [0]])
    with pytest.raises(DataValidationError, match=r"x row 1, field 'context_spans'\[0\]: span \[0, 99\]"):
        validate_rows([bad], "x")
    with pytest.raises(DataValidationError, match="missing field"):
        validate_rows([{"query": "q"}], "x")
    with pytest.raises(DataValidationError, match="field 'query'"):
        validate_rows([dict(ROW, query=" ")], "x")
    with pytest.raises(DataValidationError, match="same length"):
        validate_rows([dict(ROW, labels=[1])], "x")
    path = write_rows([ROW], tmp_path / "rows.jsonl")
    assert read_rows(path) == [ROW]
    path.write_text(path.read_text() + "{broken\n")
    with pytest.raises(DataValidationError, match="line 2"):
        read_rows(path)


def test_squad_builder_marks_the_answer_sentence_and_uses_other_paragraphs_as_negatives(tmp_path):
    context0 = "梅雨 [SEP] 梅雨は東アジアの気象です。北海道には梅雨がない。"
    squad = {"data": [{"title": "梅雨", "paragraphs": [
        {"context": context0, "qas": [{"id": "q", "question": "梅雨がないのは？", "answers": [{"text": "北海道", "answer_start": context0.index("北海道")}]}]},
        {"context": "別の段落です。関係ない。", "qas": []},
        {"context": "三つ目の段落。", "qas": []},
    ]}]}  # fmt: skip
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad, ensure_ascii=False))
    rows = [row for _, row in build_from_squad(path, negatives=1)]
    assert len(rows) == 1
    row = validate_rows(rows, "built")[0]
    assert row["labels"] == [1, 0] and row["texts"][0] == context0
    assert row["context_spans_relevance"][0] == [0, 1] and row["context_spans_relevance"][1] == [0] * len(row["context_spans"][1])
    assert row["answers"] == ["北海道"]


def test_bm25_negatives_are_the_articles_paragraphs_closest_to_the_question_hardest_first(tmp_path):
    context0 = "梅雨 [SEP] 北海道には梅雨がない。"
    paragraphs = [context0, "沖縄の天気は暑い。", "北海道の梅雨の時期は短いと言われる。", "北海道の冬は寒い。", "京都の寺。"]
    question = "北海道に梅雨がないのはなぜか。"
    squad = {"data": [{"title": "梅雨", "paragraphs": [
        {"context": context0, "qas": [{"id": "q", "question": question, "answers": [{"text": "北海道", "answer_start": context0.index("北海道")}]}]},
        *({"context": text, "qas": []} for text in paragraphs[1:]),
    ]}]}  # fmt: skip
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad, ensure_ascii=False))
    row = validate_rows([row for _, row in build_from_squad(path, negatives=2, negative_selection="bm25")], "built")[0]
    assert row["texts"] == [context0, paragraphs[2], paragraphs[3]]
    assert row["labels"] == [1, 0, 0]
    random_rows = [row for _, row in build_from_squad(path, negatives=2)]
    assert random_rows == [row for _, row in build_from_squad(path, negatives=2, negative_selection="random")]
    with pytest.raises(ValueError, match="negative_selection='tfidf': use one of random, bm25"):
        next(build_from_squad(path, negative_selection="tfidf"))


@pytest.mark.needs_data
def test_jsquad_builds_valid_rows_and_article_split_does_not_leak():
    pairs = list(build_from_squad(shared_data("jsquad_valid.json")))
    assert len(pairs) == 4442
    train, held = split_by_article(pairs, 0.2)
    train_titles = {t for t, r in pairs if any(r is x for x in train)}
    held_titles = {t for t, r in pairs if any(r is x for x in held)}
    assert not train_titles & held_titles and len(held) > 0
    assert all(any(r) for r in (row["context_spans_relevance"][0] for row in held[:200]))


@pytest.mark.parametrize(
    "text,expected",
    [
        ("これは（注釈。続き。次の文。", ["これは（注釈。", "続き。", "次の文。"]),  # a bracket never closed
        ("第一文．第二文．", ["第一文．", "第二文．"]),  # full-width period
        ("He went home. 東京 is big. She left.", ["He went home.", "東京 is big.", "She left."]),  # mixed scripts
        ("円周率は3.14です。example.com も。", ["円周率は3.14です。", "example.com も。"]),
        ("「閉じ」が先）に来る。次。", ["「閉じ」が先）に来る。", "次。"]),
    ],
)
def test_splitting_survives_stray_brackets_full_width_periods_and_mixed_scripts(text, expected):
    assert texts(text, split_sentences(text)) == expected


def _assert_partition(text, spans):
    cursor = 0
    for start, end in spans:
        assert cursor <= start < end <= len(text)
        assert not text[cursor:start].strip(), (text[cursor:start], text)
        cursor = end
    assert not text[cursor:].strip()


@pytest.mark.needs_data
def test_spans_partition_every_real_jsquad_paragraph():
    data = json.loads(shared_data("jsquad_valid.json").read_text(encoding="utf-8"))
    paragraphs = [p["context"] for article in data["data"] for p in article["paragraphs"]]
    assert len(paragraphs) > 1000
    multi = 0
    for context in paragraphs:
        spans = split_sentences(context)
        _assert_partition(context, spans)
        multi += len(spans) > 1
    assert multi / len(paragraphs) > 0.9  # real passages split into sentences, so they can be pruned


def test_spans_partition_generated_texts():
    import random

    rng = random.Random(0)
    alphabet = list("あいう漢字ABC abc.。．！？!?「」『』（）()\n 　3")
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        _assert_partition(text, split_sentences(text))


@pytest.mark.parametrize("fixture", ["tiny_xlmr_dir", "tiny_bert_dir"])
def test_fast_tokenizers_see_the_context_exactly_as_the_plain_reranker_does(fixture, request):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    query = "日本で梅雨がないのは？"
    context = "梅雨は東アジアの気象です。北海道には梅雨がない。 It rains in June. 沖縄では五月に始まる。"
    window = encode_windows(tokenizer, PairTemplate.probe(tokenizer), query, context, split_sentences(context), 512, 64)[0]
    assert window.input_ids == tokenizer(query, context)["input_ids"]
    assert sorted(set(window.sentence_ids) - {-1}) == list(range(len(split_sentences(context))))
