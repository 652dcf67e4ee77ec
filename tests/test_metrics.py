import numpy as np
import pytest

from jace.metrics import evaluate_predictions, format_report, global_ndcg, per_group_ndcg, regression_metrics


def test_regression_metrics_on_known_values():
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 5.0])
    assert m["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4)
    assert m["rmse"] == pytest.approx(np.sqrt(m["mse"]))
    assert m["spearman"] == pytest.approx(1.0)
    assert -1 <= m["pearson"] <= 1


def test_constant_predictions_give_no_correlation_instead_of_nan():
    m = regression_metrics([1.0, 2.0, 3.0], [0.5, 0.5, 0.5])
    assert m["pearson"] is None and m["spearman"] is None


def test_per_prompt_ndcg_is_one_for_perfect_and_lower_for_reversed_order():
    truth = [3, 2, 1, 0, 4, 1]
    groups = ["a"] * 4 + ["b"] * 2
    assert per_group_ndcg(truth, truth, groups, k=3).tolist() == [1.0, 1.0]
    reversed_pred = [0, 1, 2, 3, 0, 1]
    assert per_group_ndcg(truth, reversed_pred, groups, k=3).max() < 1.0


def test_random_predictions_score_high_on_global_ndcg_but_not_per_prompt():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), 8)
    truth = rng.integers(0, 5, size=groups.size).astype(float)
    pred = rng.random(groups.size)
    report = evaluate_predictions(truth, pred, groups, ks=(5,))["overall"]
    perfect = evaluate_predictions(truth, truth, groups, ks=(5,))["overall"]
    # Over the whole set as one query (the seed's figure) random predictions look excellent;
    # per-prompt NDCG separates random from perfect.
    assert global_ndcg(truth, pred, k=groups.size) > 0.85
    assert perfect["ndcg@5"] - report["ndcg@5"] > 0.2


def test_negative_true_scores_do_not_crash_ndcg():
    assert 0 <= global_ndcg([-1.33, 0, 4], [0.1, 0.2, 0.9], k=3) <= 1


def test_breakdown_by_type_and_table():
    report = evaluate_predictions([0, 1, 2, 3], [0.1, 0.9, 0.3, 0.8], groups=["a", "a", "b", "b"], types=["text", "text", "image", "image"])
    assert set(report["by_type"]) == {"text", "image"}
    assert report["by_type"]["text"]["n"] == 2
    table = format_report(report)
    assert "ndcg@5" in table and "image" in table and "text" in table


def test_prompts_where_ranking_is_undefined_are_skipped_and_counted():
    truth = [0, 0, 0, 2, 2, 2, 3, 1, 0, 4]
    pred = [0.1, 0.5, 0.9, 0.3, 0.2, 0.1, 0.9, 0.5, 0.1, 0.7]
    groups = ["zeros"] * 3 + ["equal"] * 3 + ["real"] * 3 + ["single"]
    report = evaluate_predictions(truth, pred, groups)["overall"]
    assert report["n_prompts"] == 4 and report["n_prompts_unrankable"] == 3
    assert report["ndcg@3"] == pytest.approx(1.0)  # only the "real" prompt counts, and it is ranked perfectly
    assert per_group_ndcg(truth, pred, groups, k=3).index.tolist() == ["real"]


def test_per_prompt_spearman_averages_prompts_with_five_or_more_answers():
    from jace.metrics import per_group_spearman

    truth = [1, 2, 3, 4, 5] + [5, 4, 3, 2, 1] + [1, 2] + [3, 3, 3, 3, 3]
    pred = [1, 2, 3, 4, 5] + [1, 2, 3, 4, 5] + [2, 1] + [1, 2, 3, 4, 5]
    groups = ["up"] * 5 + ["down"] * 5 + ["small"] * 2 + ["flat"] * 5
    within = per_group_spearman(truth, pred, groups)
    assert within.to_dict() == {"down": pytest.approx(-1.0), "up": pytest.approx(1.0)}  # small and flat left out
    assert evaluate_predictions(truth, pred, groups)["overall"]["spearman_per_prompt"] == pytest.approx(0.0)
