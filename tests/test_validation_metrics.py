"""Validation metrics while training (--validation_images): the shared scoring loop on a fake
predictor worked by hand, the fixed subset, and the scalars a short training run writes."""
import os
import re

import imageio.v2 as imageio
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import BatchDatsetReader as reader
import evaluation
import network
import vgg_weights
from tests.make_vgg_mat import NARROW
from tests.project import SMALL, run_fcn


# ---- the shared loop, on a fake predictor (no session) ----------------------------------------

# Two records, 2x2 annotations, read at 4x4; 3 classes, 0 ignored (ADE20K's metric protocol).
TRUTH = {"a": [[0, 1], [2, 2]], "b": [[1, 1], [0, 2]]}
# What the fake predictor answers, as 2x2 blocks of the 4x4 input (so that resizing back to 2x2
# by nearest neighbour gives exactly these).
ANSWER = {"a": [[1, 1], [2, 0]], "b": [[1, 2], [2, 2]]}
LOSS = {"a": 0.5, "b": 1.5}
# Counted pixels (truth not 0): a: 1->1, 2->2, 2->0; b: 1->1, 1->2, 2->2 (b's 0 pixel ignored).
EXPECTED = np.array([[0, 0, 0],
                     [0, 2, 1],
                     [1, 0, 2]])


@pytest.fixture
def two_records(tmp_path):
    records = []
    for marker, name in enumerate(sorted(TRUTH)):
        image = np.full((2, 2, 3), 40 * (marker + 1), np.uint8)  # tells the predictor who it is
        imageio.imwrite(str(tmp_path / (name + ".png")), image)
        imageio.imwrite(str(tmp_path / (name + "_label.png")), np.array(TRUTH[name], np.uint8))
        records.append({"image": str(tmp_path / (name + ".png")),
                        "annotation": str(tmp_path / (name + "_label.png")), "filename": name})
    return records


def _fake_predict(images, annotations):
    names = [sorted(TRUTH)[int(image[0, 0, 0]) // 40 - 1] for image in images]
    labels = np.stack([np.kron(np.array(ANSWER[n]), np.ones((2, 2), int)) for n in names])
    return labels[..., np.newaxis], np.array([LOSS[n] for n in names])


@pytest.mark.parametrize("batch_size", [1, 2])
def test_the_shared_scoring_loop_by_hand(two_records, batch_size):
    options = {"resize": True, "resize_size": 4, "num_classes": 3, "shuffle": False,
               "drop_remainder": False}
    seen = []
    with reader.BatchDatset(two_records, options) as batches:
        result = evaluation.score(batches, _fake_predict, 3, 0, batch_size,
                                  progress=lambda done, total: seen.append((done, total)))
    np.testing.assert_array_equal(result["confusion"], EXPECTED)
    assert result["num_images"] == 2 and result["scored"] == {"a", "b"}
    assert result["loss"] == pytest.approx(1.0)
    assert seen[-1] == (2, 2) and len(seen) == 2 // batch_size


def test_the_shared_scoring_loop_respects_another_ignore_label(two_records):
    # Ignoring 2 instead: counted a: 0->1, 1->1; b: 1->1, 1->2, 0->2.
    options = {"resize": True, "resize_size": 4, "num_classes": 3, "shuffle": False,
               "drop_remainder": False}
    with reader.BatchDatset(two_records, options) as batches:
        result = evaluation.score(batches, _fake_predict, 3, 2, 2)
    np.testing.assert_array_equal(result["confusion"], [[0, 1, 1], [0, 2, 1], [0, 0, 0]])


def test_the_subset_is_fixed_by_its_own_seed():
    records = [{"filename": "r%02d" % k} for k in range(40)]
    np.random.seed(1)
    first = evaluation.validation_subset(records, 7)
    np.random.seed(2)  # the global generator (--seed) plays no part
    assert evaluation.validation_subset(records, 7) == first
    assert len({r["filename"] for r in first}) == 7
    # The first N of one permutation: a larger subset starts with the smaller one.
    assert evaluation.validation_subset(records, 12)[:7] == first
    assert evaluation.validation_subset(records, 0) == []
    everything = evaluation.validation_subset(records, 500)
    assert sorted(r["filename"] for r in everything) == [r["filename"] for r in records]
    assert first != records[:7]  # drawn, not the first files of the folder


# ---- a short training run -----------------------------------------------------------------------

def _validation_scalars(logs):
    """{step: {tag: value}} of the events in logs/validation."""
    folder = os.path.join(logs, "validation")
    found = {}
    for name in os.listdir(folder):
        for event in tf.train.summary_iterator(os.path.join(folder, name)):
            for value in event.summary.value:
                found.setdefault(event.step, {})[value.tag] = value.simple_value
    return found


def mean_iou_ceiling(class_pixels, pixel_accuracy):
    """The largest mean IoU any prediction can have on labels of these per-class pixel counts
    (the confusion matrix's row totals) at this pixel accuracy: IoU_k <= TP_k / n_k, the TPs
    sum to pixel_accuracy x the pixels, each TP_k <= n_k, and the mean is over at least the
    classes present; the sum of TP_k / n_k is largest with the smallest classes filled first."""
    counts = sorted(n for n in class_pixels if n > 0)
    left, total = pixel_accuracy * sum(counts), 0.0
    for n in counts:
        taken = min(n, left)
        total, left = total + taken / n, left - taken
    return total / len(counts)


def test_the_mean_iou_ceiling_by_hand():
    # Rows of 1, 3 and 6 pixels: 40% accuracy (4 pixels) fills the 1 and the 3: (1 + 1 + 0) / 3.
    assert mean_iou_ceiling([6, 0, 1, 3], 0.4) == pytest.approx(2 / 3)
    assert mean_iou_ceiling([6, 1, 3], 0.0) == 0.0 and mean_iou_ceiling([6, 1, 3], 1.0) == 1.0
    # 50%: the 1 and the 3 full, and 1 of the 6 pixels.
    assert mean_iou_ceiling([6, 1, 3], 0.5) == pytest.approx((1 + 1 + 1 / 6) / 3)


def validation_subset(scene_data, count):
    """The records of the documented subset: the first count of default_rng(SUBSET_SEED)'s
    permutation of the validation split."""
    import read_MITSceneParsingData as scene
    _, valid_records = scene.read_dataset(scene_data)
    order = np.random.default_rng(evaluation.SUBSET_SEED).permutation(len(valid_records))
    return [valid_records[int(k)] for k in order[:count]]


@pytest.fixture(scope="module")
def scored_run(module_tmp, dirs):
    logs = str(module_tmp("logs-scored"))
    out = run_fcn("--mode=train", "--logs_dir=" + logs, "--max_iterations=4", "--save_every=2",
                  "--log_every=2", "--validation_images=3", *(SMALL + dirs))
    return logs, out


def test_each_checkpoint_writes_pixel_accuracy_and_mean_iou(scored_run, scene_data):
    logs, out = scored_run
    scalars = _validation_scalars(logs)
    # The subset's labelled pixels per class (ADE20K's protocol: 0 ignored), the confusion
    # matrix's row totals, whatever the network predicted.
    labels = np.concatenate([np.asarray(Image.open(r["annotation"])).ravel()
                             for r in validation_subset(scene_data, 3)])
    class_pixels = np.bincount(labels[labels != 0], minlength=151)
    for step in (2, 4):
        # The one-batch loss keeps its tag (the graph names it "entropy_2": "entropy" is taken).
        loss_tag, = set(scalars[step]) - {"pixel_accuracy", "mean_iou"}
        assert loss_tag.startswith("entropy") and len(scalars[step]) == 3, scalars
        accuracy, mean_iou = scalars[step]["pixel_accuracy"], scalars[step]["mean_iou"]
        assert 0.0 <= accuracy <= 1.0
        assert 0.0 <= mean_iou <= mean_iou_ceiling(class_pixels, accuracy) + 1e-6
        assert (mean_iou > 0) == (accuracy > 0)  # a class with a true pixel has IoU > 0
        line = re.search(r"step %d validation loss ([\d.]+) pixel accuracy ([\d.]+)%% mean IoU "
                         r"([\d.]+)%% \(3 images, [\d.]+ s\) saved" % step, out)
        assert line, out[-3000:]
        assert float(line.group(1)) == pytest.approx(scalars[step][loss_tag], abs=1e-5)
        assert float(line.group(2)) == pytest.approx(100 * scalars[step]["pixel_accuracy"],
                                                     abs=0.005)


def _numpy_scores(truths, predictions, num_classes, ignore):
    """Pixel accuracy and mean IoU summed over the images, written out plainly."""
    correct = labelled = 0
    intersection, union = np.zeros(num_classes), np.zeros(num_classes)
    for truth, prediction in zip(truths, predictions):
        counted = truth != ignore
        correct += int((truth == prediction)[counted].sum())
        labelled += int(counted.sum())
        for c in range(num_classes):
            if c == ignore:
                continue
            is_truth, is_pred = (truth == c) & counted, (prediction == c) & counted
            intersection[c] += (is_truth & is_pred).sum()
            union[c] += (is_truth | is_pred).sum()
    return correct / labelled, float(np.mean(intersection[union > 0] / union[union > 0]))


def test_the_scalars_are_those_of_the_checkpoint_on_the_subset_computed_here(scored_run,
                                                                            scene_data):
    import datasets
    logs, _ = scored_run
    subset = validation_subset(scene_data, 3)
    classes = datasets.class_info(datasets.ADE20K, ["c%d" % k for k in range(151)])
    with tf.Graph().as_default():
        model = network.Model((None, vgg_weights.VGG19_MEAN_PIXEL), training=False,
                              classes=classes, widths=NARROW)
        with tf.Session() as sess:
            tf.train.Saver(model.saveable).restore(sess, os.path.join(logs, "model.ckpt-4"))
            truths, predictions = [], []
            for record in subset:
                image = np.asarray(Image.open(record["image"]).convert("RGB"))
                small = np.asarray(Image.fromarray(image).resize((64, 64), Image.NEAREST))
                labels = sess.run(model.pred_annotation,
                                  {model.image: small[None].astype(np.float32),
                                   model.keep_probability: 1.0})[0, :, :, 0]
                truth = np.asarray(Image.open(record["annotation"]))
                back = Image.fromarray(labels.astype(np.uint8)).resize(truth.shape[::-1],
                                                                       Image.NEAREST)
                truths.append(truth)
                predictions.append(np.asarray(back))
    pixel_accuracy, mean_iou = _numpy_scores(truths, predictions, 151, 0)
    scalars = _validation_scalars(logs)[4]
    assert scalars["pixel_accuracy"] == pytest.approx(pixel_accuracy, abs=1e-6)
    assert scalars["mean_iou"] == pytest.approx(mean_iou, abs=1e-6)


def test_validation_images_0_writes_no_scores(tmp_path, dirs):
    logs = str(tmp_path / "logs")
    out = run_fcn("--mode=train", "--logs_dir=" + logs, "--max_iterations=2", "--save_every=2",
                  "--log_every=2", "--validation_images=0", *(SMALL + dirs))
    scalars = _validation_scalars(logs)
    assert len(scalars[2]) == 1 and next(iter(scalars[2])).startswith("entropy")
    assert "step 2 validation loss" in out and "pixel accuracy" not in out


def test_a_negative_validation_images_is_refused(tmp_path, dirs):
    out = run_fcn("--logs_dir=" + str(tmp_path), "--validation_images=-1", *dirs, expect=2)
    assert "--validation_images=-1: it must be 0 (off) or more" in out
    assert "Traceback" not in out
