"""The benchmark's metrics on a small example worked by hand."""
import math

import numpy as np
import pytest

import metrics

# 4 classes: 0 ("other", ignored), 1, 2 and 3 (3 appears in neither map).
GT = np.array([[0, 0, 1, 1],
               [1, 1, 2, 2],
               [2, 2, 2, 0]])
PRED = np.array([[1, 2, 1, 0],
                 [1, 2, 2, 0],
                 [2, 1, 2, 3]])
# Pixel by pixel, where GT != 0 (9 labelled pixels):
#   gt 1: preds 1, 0, 1, 2          -> C[1,1]=2, C[1,0]=1, C[1,2]=1
#   gt 2: preds 2, 0, 2, 1, 2       -> C[2,2]=3, C[2,0]=1, C[2,1]=1
# The two GT-0 pixels (preds 1, 2) and the last one (pred 3) are ignored.
EXPECTED_C = np.array([[0, 0, 0, 0],
                       [1, 2, 1, 0],
                       [1, 1, 3, 0],
                       [0, 0, 0, 0]])


def test_confusion_matrix_by_hand():
    np.testing.assert_array_equal(metrics.confusion_matrix(GT, PRED, 4), EXPECTED_C)


def test_scores_by_hand():
    r = metrics.scores(EXPECTED_C)
    # IoU 1: TP 2, row 4, column 3 -> 2 / (4 + 3 - 2) = 0.4
    # IoU 2: TP 3, row 5, column 4 -> 3 / (5 + 4 - 3) = 0.5
    # class 3: empty union -> undefined, left out of the mean; class 0 never scored.
    assert r["per_class_iou"] == [None, pytest.approx(0.4), pytest.approx(0.5), None]
    assert r["pixel_accuracy"] == pytest.approx(5 / 9)
    assert r["mean_iou"] == pytest.approx(0.45)
    assert r["mean_accuracy"] == pytest.approx((2 / 4 + 3 / 5) / 2)
    assert r["frequency_weighted_iou"] == pytest.approx(4 / 9 * 0.4 + 5 / 9 * 0.5)
    assert r["benchmark_score"] == pytest.approx((5 / 9 + 0.45) / 2)
    # CSAIL's eval.py's mean: every scored class, class 3's empty union counting 0.
    assert r["mean_iou_all_classes"] == pytest.approx((0.4 + 0.5 + 0) / 3)
    # Per-class accuracy: 2 of class 1's 4 pixels, 3 of class 2's 5; class 3 has none.
    assert r["per_class_accuracy"] == [None, pytest.approx(0.5), pytest.approx(0.6), None]


def test_a_perfect_prediction_scores_one_whatever_it_says_on_ignored_pixels():
    pred = np.where(GT == 0, 3, GT)
    r = metrics.scores(metrics.confusion_matrix(GT, pred, 4))
    assert r["pixel_accuracy"] == 1.0 and r["mean_iou"] == 1.0 and r["benchmark_score"] == 1.0


def test_nothing_labelled_gives_nan_not_an_error():
    r = metrics.scores(metrics.confusion_matrix(np.zeros((2, 2)), np.ones((2, 2)), 4))
    assert math.isnan(r["pixel_accuracy"]) and math.isnan(r["mean_iou"])


def test_shapes_must_agree():
    with pytest.raises(ValueError):
        metrics.confusion_matrix(GT, PRED[:2], 4)


def test_report_lists_defined_classes_by_name():
    text = metrics.format_report(metrics.scores(EXPECTED_C), ["other", "wall", "sky", "tree"])
    assert "wall" in text and "sky" in text and "tree" not in text
    assert "55.56%" in text  # pixel accuracy 5/9
