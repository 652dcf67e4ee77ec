"""Sentence splitting with character spans, for Japanese and English text."""

from __future__ import annotations

import re

_OPEN = "「『（(【〈《"
_CLOSE = "」』）)】〉》"
_JA_END = "。！？!?"
_EN_END = re.compile(r"[.!?]+[\"')\]]*(?=\s+|$)")
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def resolve_language(text: str, language: str = "auto") -> str:
    """'ja' or 'en': ``language`` itself, or for "auto" Japanese when the text has any kana/kanji."""
    if language not in ("auto", "ja", "en"):
        raise ValueError(f"language must be 'auto', 'ja' or 'en', got {language!r}.")
    if language == "auto":
        return "ja" if _JAPANESE.search(text) else "en"
    return language


def split_sentences(text: str, language: str = "auto") -> list[tuple[int, int]]:
    """Split ``text`` into sentences; return ``(start, end)`` character spans (whitespace trimmed).

    Japanese splits after 。！？ (and their ASCII forms) and at newlines, never inside 「」『』（）;
    closing brackets and repeated marks stay with their sentence. English splits after . ! ? that
    are followed by whitespace. ``language`` is "ja", "en" or "auto" (Japanese if any kana/kanji).

    Example:
        >>> text = "彼は「こんにちは。元気？」と言った。次の文です。"
        >>> [text[s:e] for s, e in split_sentences(text)]
        ['彼は「こんにちは。元気？」と言った。', '次の文です。']
    """
    language = resolve_language(text, language)
    spans: list[tuple[int, int]] = []
    start = 0
    if language == "en":
        for match in _EN_END.finditer(text):
            for line_start, line_end in _lines(text, start, match.end()):
                spans.append((line_start, line_end))
            start = match.end()
        spans.extend(_lines(text, start, len(text)))
        return [s for s in (_trimmed(text, a, b) for a, b in spans) if s]
    depth = 0
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth = max(0, depth - 1)
        elif char == "\n":
            spans.append((start, i))
            start, depth = i + 1, 0
        elif char in _JA_END and depth == 0:
            j = i + 1
            while j < n and (text[j] in _JA_END or text[j] in _CLOSE):
                j += 1
            spans.append((start, j))
            start, i = j, j
            continue
        i += 1
    spans.append((start, n))
    return [s for s in (_trimmed(text, a, b) for a, b in spans) if s]


def _lines(text: str, start: int, end: int) -> list[tuple[int, int]]:
    pieces, cursor = [], start
    for index in range(start, end):
        if text[index] == "\n":
            pieces.append((cursor, index))
            cursor = index + 1
    pieces.append((cursor, end))
    return pieces
