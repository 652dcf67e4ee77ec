"""Input building for the pruning head: (query, context) → model inputs with per-token sentence ids.

The context is tokenized once, whole, and each token is given to the sentence its character
offset falls in, so the model sees exactly the tokens a plain reranker sees (SentencePiece
tokenizers such as XLM-R's would add a ``▁`` per sentence if sentences were tokenized one by one).
Slow tokenizers without offsets (the MeCab ``BertJapaneseTokenizer``) tokenize each sentence on its
own. Query and context go into the tokenizer's own pair template (found once by probing it). Query
tokens, special tokens and padding get sentence id -1 (label -100 in training).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class PairTemplate:
    """Where the special tokens go around a (query, context) pair, and their token type ids."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    types: tuple[int, int, int, int, int] | None  # prefix, query, middle, context, suffix

    @property
    def special_count(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def probe(cls, tokenizer: Any) -> "PairTemplate":
        first = tokenizer.encode("1", add_special_tokens=False)
        second = tokenizer.encode("2", add_special_tokens=False)
        encoded = tokenizer("1", "2")
        ids = list(encoded["input_ids"])
        a = _find(ids, first, 0)
        b = _find(ids, second, a + len(first))
        prefix, middle, suffix = ids[:a], ids[a + len(first) : b], ids[b + len(second) :]
        types = None
        if "token_type_ids" in encoded:
            tt = list(encoded["token_type_ids"])
            types = (tt[0] if a else 0, tt[a], tt[a + len(first)] if middle else tt[a], tt[b], tt[-1] if suffix else tt[b])
        return cls(prefix, middle, suffix, types)


def _find(ids: list[int], piece: list[int], start: int) -> int:
    for i in range(start, len(ids) - len(piece) + 1):
        if ids[i : i + len(piece)] == piece:
            return i
    raise ValueError("could not locate the probe text in the tokenizer's pair encoding; unsupported tokenizer.")


@dataclass
class EncodedWindow:
    """One model input: token ids, token types, and for each token its sentence index (-1: not context)."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    sentence_ids: list[int]
    sentences: list[int]  # sentence indices present in this window


def sentence_tokens(tokenizer: Any, context: str, spans: Sequence[Sequence[int]]) -> list[list[int]]:
    """Token ids of each sentence ``context[start:end]``, as the tokenizer splits the whole context.

    A fast tokenizer tokenizes ``context`` once; a token belongs to the last sentence starting at or
    before its first character (whitespace between sentences goes with the sentence before it).
    A slow tokenizer without offsets tokenizes each sentence separately. The context is longer than
    the model's limit by design (windows cut it), so the tokenizer's length warning is turned off.
    """
    if not spans:
        return []
    if not getattr(tokenizer, "is_fast", False):
        return tokenizer([context[start:end] for start, end in spans], add_special_tokens=False, verbose=False)["input_ids"]
    encoded = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    starts = [start for start, _ in spans]
    tokens: list[list[int]] = [[] for _ in spans]
    for token, (start, _) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        tokens[max(bisect_right(starts, start) - 1, 0)].append(token)
    return tokens


def encode_windows(
    tokenizer: Any,
    template: PairTemplate,
    query: str,
    context: str,
    spans: Sequence[Sequence[int]],
    max_length: int,
    max_query_tokens: int,
    *,
    first_window_only: bool = False,
) -> list[EncodedWindow]:
    """Pack the sentences ``spans`` of ``context`` into as many windows as needed (a longer-than-window sentence is cut)."""
    query_ids = tokenizer.encode(query, add_special_tokens=False, verbose=False)[:max_query_tokens]
    budget = max_length - template.special_count - len(query_ids)
    if budget < 8:
        raise ValueError(f"max_length {max_length} leaves no room for context after the query; raise it.")
    pieces: list[tuple[int, list[int]]] = []
    for index, ids in enumerate(sentence_tokens(tokenizer, context, spans)):
        for start in range(0, max(len(ids), 1), budget):
            pieces.append((index, ids[start : start + budget]))
    windows: list[list[tuple[int, list[int]]]] = [[]]
    used = 0
    for index, ids in pieces:
        if used + len(ids) > budget and windows[-1]:
            if first_window_only:
                break
            windows.append([])
            used = 0
        windows[-1].append((index, ids))
        used += len(ids)
    return [_window(template, query_ids, window) for window in windows]


def _window(template: PairTemplate, query_ids: list[int], window: list[tuple[int, list[int]]]) -> EncodedWindow:
    context = [token for _, ids in window for token in ids]
    owners = [index for index, ids in window for _ in ids]
    head = template.prefix + query_ids + template.middle
    input_ids = head + context + template.suffix
    sentence_ids = [-1] * len(head) + owners + [-1] * len(template.suffix)
    token_types = None
    if template.types is not None:
        p, q, m, c, s = template.types
        token_types = [p] * len(template.prefix) + [q] * len(query_ids) + [m] * len(template.middle) + [c] * len(context) + [s] * len(template.suffix)
    return EncodedWindow(input_ids, token_types, sentence_ids, sorted({index for index, _ in window}))


def collate(windows: Sequence[EncodedWindow], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad windows into a batch; padded positions get sentence id -1."""
    width = max(len(w.input_ids) for w in windows)
    batch = {
        "input_ids": torch.full((len(windows), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(windows), width), dtype=torch.long),
        "sentence_ids": torch.full((len(windows), width), -1, dtype=torch.long),
    }
    if windows[0].token_type_ids is not None:
        batch["token_type_ids"] = torch.zeros((len(windows), width), dtype=torch.long)
    for row, window in enumerate(windows):
        n = len(window.input_ids)
        batch["input_ids"][row, :n] = torch.tensor(window.input_ids)
        batch["attention_mask"][row, :n] = 1
        batch["sentence_ids"][row, :n] = torch.tensor(window.sentence_ids)
        if window.token_type_ids is not None:
            batch["token_type_ids"][row, :n] = torch.tensor(window.token_type_ids)
    return batch
