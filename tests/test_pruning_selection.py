import pytest

from jace.pruning.selection import keep_masks


def test_threshold_alone_keeps_sentences_strictly_above_it():
    assert keep_masks([[0.1, 0.5, 0.9], [0.2]], 0.5) == [[False, False, True], [False]]


def test_top_ranked_context_keeps_its_best_sentence_when_none_passes():
    masks = keep_masks([[0.2, 0.1], [0.04, 0.3, 0.01]], 0.5, scores=[0.1, 0.8], keep_top_context=True)
    assert masks == [[False, False], [False, True, False]]  # only the top-ranked context (1) gets its floor


def test_floor_changes_nothing_when_the_top_context_already_keeps_a_sentence():
    probabilities = [[0.6, 0.7], [0.9, 0.1]]
    assert keep_masks(probabilities, 0.5, scores=[0.9, 0.2], keep_top_context=True) == keep_masks(probabilities, 0.5)


def test_without_rerank_scores_the_context_with_the_best_sentence_is_the_top():
    masks = keep_masks([[0.2, 0.1], [0.04, 0.3]], 0.5, scores=[None, None], keep_top_context=True)
    assert masks == [[False, False], [False, True]]
    assert keep_masks([[0.2], [0.3]], 0.5, keep_top_context=True) == [[False], [True]]


@pytest.mark.parametrize("keep_top_context", [False, True])
def test_no_contexts_gives_no_masks(keep_top_context):
    assert keep_masks([], 0.5, keep_top_context=keep_top_context) == []


def test_a_rerank_score_count_that_does_not_match_the_contexts_is_an_error():
    with pytest.raises(ValueError, match="1 rerank score"):
        keep_masks([[0.2], [0.3]], 0.5, scores=[0.9], keep_top_context=True)
