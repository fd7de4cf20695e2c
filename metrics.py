"""Segmentation metrics, all from one confusion matrix.

The ignore convention (the same as the loss's): a pixel whose ground truth equals ignore_label
counts nowhere; ignore_label None scores every pixel. With ADE20K's default, label 0 ("other"),
this is the MIT Scene Parsing benchmark's protocol: intersections and unions are summed over the
whole validation set before dividing, and a prediction of 0 on a labelled pixel is a miss for the
true class and nobody's false positive.
"""
import numpy as np

from datasets import ADE20K


def confusion_matrix(ground_truth, prediction, num_classes,
                     ignore_label=ADE20K.metric_ignore_label):
    """C[t, p] = the number of pixels of true class t predicted as p, over pixels whose ground truth
    is not ignore_label. Rows are ground truth, columns prediction; both arrays of equal shape."""
    ground_truth = np.asarray(ground_truth).reshape(-1).astype(np.int64)
    prediction = np.asarray(prediction).reshape(-1).astype(np.int64)
    if ground_truth.shape != prediction.shape:
        raise ValueError("ground truth has %d pixels, prediction %d"
                         % (ground_truth.size, prediction.size))
    if ignore_label is not None:
        keep = ground_truth != ignore_label
        ground_truth, prediction = ground_truth[keep], prediction[keep]
    return np.bincount(num_classes * ground_truth + prediction,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(confusion, ignore_label=ADE20K.metric_ignore_label):
    """Every metric of the benchmark from a confusion matrix (every class but ignore_label scored).

    Returns a dict: pixel_accuracy, mean_accuracy, mean_iou, mean_iou_all_classes,
    frequency_weighted_iou, benchmark_score, per_class_iou (a list, None where a class has an
    empty union and at ignore_label) and per_class_accuracy (None where a class has no pixel
    and at ignore_label).

    Two conventions of mean IoU: mean_iou averages the classes with a non-empty union (they
    occur in the labels or the predictions; mmsegmentation's, and this project's); CSAIL's
    ADE20K eval.py averages every scored class, an empty union counting 0 (mean_iou_all_classes).
    They agree when every class occurs, as in ADE20K's validation set.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    scored = np.arange(confusion.shape[0]) != ignore_label
    true_positive = np.diag(confusion)
    gt_pixels = confusion.sum(axis=1)           # row k: pixels labelled k
    predicted_pixels = confusion.sum(axis=0)    # column k: pixels predicted k (labelled ones only)
    union = gt_pixels + predicted_pixels - true_positive
    labelled = confusion.sum()

    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        class_accuracy = np.where(gt_pixels > 0, true_positive / gt_pixels, np.nan)
    iou[~scored] = np.nan
    class_accuracy[~scored] = np.nan

    all_classes_iou = np.nan_to_num(iou[scored])
    present_iou = iou[~np.isnan(iou)]
    present_acc = class_accuracy[~np.isnan(class_accuracy)]
    pixel_accuracy = true_positive[scored].sum() / labelled if labelled else float("nan")
    mean_iou = present_iou.mean() if present_iou.size else float("nan")
    frequency = gt_pixels / labelled if labelled else np.zeros_like(gt_pixels)
    fw_iou = np.nansum(frequency * np.where(scored, iou, np.nan)) if labelled else float("nan")
    return {
        "pixel_accuracy": float(pixel_accuracy),
        "mean_accuracy": float(present_acc.mean()) if present_acc.size else float("nan"),
        "mean_iou": float(mean_iou),
        "mean_iou_all_classes": (float(all_classes_iou.mean()) if labelled and scored.any()
                                 else float("nan")),
        "frequency_weighted_iou": float(fw_iou),
        "benchmark_score": float((pixel_accuracy + mean_iou) / 2.0),
        "per_class_iou": [None if np.isnan(v) else float(v) for v in iou],
        "per_class_accuracy": [None if np.isnan(v) else float(v) for v in class_accuracy],
    }


def format_report(result, class_names):
    """The printed summary and per-class IoU table (classes with a defined IoU, by name)."""
    lines = ["pixel accuracy          %6.2f%%" % (100 * result["pixel_accuracy"]),
             "mean accuracy           %6.2f%%" % (100 * result["mean_accuracy"]),
             "mean IoU                %6.2f%%  (the classes present; every class, as "
             "CSAIL's eval.py: %.2f%%)" % (100 * result["mean_iou"],
                                          100 * result["mean_iou_all_classes"]),
             "frequency-weighted IoU  %6.2f%%" % (100 * result["frequency_weighted_iou"]),
             "benchmark score         %6.2f%%  ((pixel accuracy + mean IoU) / 2)"
             % (100 * result["benchmark_score"]),
             "", "class  IoU      name"]
    for k, value in enumerate(result["per_class_iou"]):
        if value is not None:
            lines.append("%5d  %6.2f%%  %s" % (k, 100 * value, class_names[k]))
    return "\n".join(lines)
