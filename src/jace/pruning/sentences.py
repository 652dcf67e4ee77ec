"""Sentence splitting with character spans, for Japanese, English and mixed text, and what pruning keeps of it.

One rule serves every language, so a passage that mixes scripts splits correctly:

* 。．｡！？ and ASCII ``! ?`` end a sentence wherever they stand;
* an ASCII ``.`` ends one only before whitespace or the end of the text (so ``3.14`` and
  ``example.com`` stay whole);
* a newline always ends one;
* nothing ends inside a *matched* pair of brackets or quotes (「」『』（）()【】〈〉《》); an opening
  bracket that is never closed on its line is ignored, so one stray bracket cannot block every split;
* repeated marks and closing brackets stay with their sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

_PAIRS = dict(zip("「『（(【〈《", "」』）)】〉》"))
_CLOSE = set(_PAIRS.values())
_ENDS = set("。．｡！？!?")
_TRAILING = _ENDS | _CLOSE | {".", '"', "'", "”", "’"}


def _inside_brackets(text: str) -> list[bool]:
    """For each character, whether it lies strictly inside a matched bracket pair on its line."""
    depth_change = [0] * (len(text) + 1)
    stack: list[tuple[str, int]] = []
    for i, char in enumerate(text):
        if char == "\n":
            stack.clear()
        elif char in _PAIRS:
            stack.append((_PAIRS[char], i))
        elif char in _CLOSE:
            for level in range(len(stack) - 1, -1, -1):
                if stack[level][0] == char:
                    opened = stack[level][1]
                    del stack[level:]
                    depth_change[opened + 1] += 1
                    depth_change[i] -= 1
                    break
    inside, depth = [], 0
    for i in range(len(text)):
        depth += depth_change[i]
        inside.append(depth > 0)
    return inside


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Split ``text`` into sentences; return ``(start, end)`` character spans, whitespace trimmed.

    The spans are in order, never overlap, and only whitespace lies outside them.

    Example:
        >>> text = "彼は「こんにちは。元気？」と言った。He left. 次の文です。"
        >>> [text[s:e] for s, e in split_sentences(text)]
        ['彼は「こんにちは。元気？」と言った。', 'He left.', '次の文です。']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}.")
    inside = _inside_brackets(text)
    spans: list[tuple[int, int]] = []
    start, i, n = 0, 0, len(text)
    while i < n:
        char = text[i]
        if char == "\n":
            spans.append((start, i))
            start = i + 1
        elif not inside[i] and (char in _ENDS or (char == "." and _ends_here(text, i))):
            j = i + 1
            while j < n and text[j] in _TRAILING and not (text[j] == "." and not _ends_here(text, j)):
                j += 1
            spans.append((start, j))
            start, i = j, j
            continue
        i += 1
    spans.append((start, n))
    return [span for span in (_trimmed(text, a, b) for a, b in spans) if span]


def _ends_here(text: str, i: int) -> bool:
    """An ASCII period ends a sentence when whitespace (or the text's end) follows it and its closers."""
    j = i + 1
    while j < len(text) and text[j] in _TRAILING:
        j += 1
    return j == len(text) or text[j].isspace()


def join_kept(text: str, spans: Sequence[tuple[int, int]], keep: Sequence[bool]) -> str:
    """The kept sentences of ``text``, each followed by the separator that followed it there.

    Japanese sentences stay joined with nothing, English ones with their space, lines with their
    newline. Keeping every sentence gives ``text`` back without its leading and trailing whitespace.

    Example:
        >>> text = "It rains. 東京は晴れ。Yes!"
        >>> join_kept(text, split_sentences(text), [True, False, True])
        'It rains. Yes!'
    """
    kept = [index for index, flag in enumerate(keep) if flag]
    pieces = []
    for position, index in enumerate(kept):
        start, end = spans[index]
        pieces.append(text[start:end])
        if position + 1 < len(kept):
            gap_end = spans[index + 1][0] if index + 1 < len(spans) else end
            pieces.append(text[end:gap_end])
    return "".join(pieces)


def compression_rate(spans: Sequence[tuple[int, int]], keep: Sequence[bool]) -> float:
    """Share of the sentences' characters that pruning removed: 0.0 keeps all, 1.0 keeps none.

    Example:
        >>> compression_rate([(0, 6), (6, 10)], [True, False])
        0.4
    """
    total = sum(end - start for start, end in spans)
    kept = sum(end - start for (start, end), flag in zip(spans, keep) if flag)
    return 0.0 if total == 0 else 1.0 - kept / total
