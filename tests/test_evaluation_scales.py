"""Evaluation as the benchmarks measure it: each image at scales of its own size and mirrored, its
probabilities averaged (multi_scale.py, predicting.Passes); the confusion matrix as files and a
picture (confusion_report.py); and validate, visualize and predict with --eval_scales."""
import csv
import json
import os
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import confusion_report
import datasets
import multi_scale
import network
import predicting
import tiled_network
from guards import FCNError
from tests.make_dataset import make_scene_dataset
from tests.make_vgg_mat import MEAN_PIXEL, NARROW, vgg19_kernels
from tests.project import FCN_PY, SMALL, own_peak, run_fcn


# ---- the pieces, without a network ---------------------------------------------------------------

@pytest.mark.parametrize("text, scales", [("", None), ("1", (1.0,)), ("0.5, 1.5", (0.5, 1.5)),
                                          ("0.5,0.75,1.0,1.25,1.5,1.75",
                                           (0.5, 0.75, 1.0, 1.25, 1.5, 1.75))])
def test_parse_scales(text, scales):
    assert multi_scale.parse_scales(text) == scales


@pytest.mark.parametrize("text", ["x", "0", "-1", "1,,x", "5"])
def test_a_bad_scale_list_is_one_line(text):
    with pytest.raises(FCNError, match=r"--eval_scales=%s: use a comma-separated list" % text):
        multi_scale.parse_scales(text)


@pytest.mark.parametrize("text, twice", [("1.0,1", "1"), ("0.5,1.0,0.50", "0.5")])
def test_a_scale_given_twice_is_refused(text, twice):
    with pytest.raises(FCNError, match=r"--eval_scales=%s: each scale once, please \(%s is "
                       r"given twice\)" % (text, twice)):
        multi_scale.parse_scales(text)


def test_resize_bilinear_is_tensorflows_half_pixel_bilinear():
    array = np.random.RandomState(0).standard_normal((7, 10, 3)).astype(np.float32)
    for height, width in ((15, 21), (3, 4), (7, 10), (11, 5)):
        with tf.Graph().as_default(), tf.Session() as sess:
            expected = sess.run(tf.raw_ops.ResizeBilinear(
                images=array[None], size=(height, width), half_pixel_centers=True))[0]
        np.testing.assert_allclose(multi_scale.resize_bilinear(array, height, width), expected,
                                   atol=1e-5)


@pytest.mark.parametrize("source, target", [((23, 17), (50, 31)), ((50, 31), (23, 17)),
                                            ((40, 9), (40, 9)), ((9, 5), (60, 44))])
def test_a_source_in_bands_of_rows_resizes_as_tensorflow_and_to_the_same_values_as_whole(
        source, target):
    """Bands of 1 to 13 rows, fed top to bottom; each output row takes its two source rows from
    whichever bands hold them."""
    rng = np.random.RandomState(sum(source))
    array = rng.standard_normal(source + (3,)).astype(np.float32)
    heights = rng.randint(1, 14, source[0])
    starts = [0] + list(np.cumsum(heights)[np.cumsum(heights) < source[0]])
    bands = [(start, array[start:start + height]) for start, height in zip(starts, heights)]
    banded = np.ones(target + (3,), np.float32)  # added into
    multi_scale.add_resized_bands(iter(bands), source, banded)
    with tf.Graph().as_default(), tf.Session() as sess:
        expected = sess.run(tf.raw_ops.ResizeBilinear(
            images=array[None], size=target, half_pixel_centers=True))[0]
    np.testing.assert_allclose(banded - 1, expected, atol=1e-5)
    whole = np.ones(target + (3,), np.float32)
    multi_scale.resize_bilinear(array, *target, add_to=whole)
    np.testing.assert_array_equal(banded, whole)


def test_bands_that_stop_short_of_the_source_are_refused():
    with pytest.raises(ValueError, match="before the source's last row, 10"):
        multi_scale.add_resized_bands(iter([(0, np.zeros((6, 4, 2), np.float32))]), (10, 4),
                                      np.zeros((20, 8, 2), np.float32))


@pytest.mark.parametrize("block, stripes", [(2, None), (3, "rows"), (3, "columns")])
def test_probabilities_resized_down_and_back_put_each_label_back_in_place(block, stripes):
    """A label map of block x block squares, which a resize by 1/block takes exactly (each
    block to one pixel); its one-hot probabilities resized down and back up give every pixel
    its own label again, at the borders too, on an odd size as well as an even one. (At 3,
    where an upsampled pixel weighs its own cell 2/3 on each axis, four cells meeting at a
    corner can outweigh it: stripes along one axis at a time.)"""
    rng = np.random.RandomState(block)
    coarse = rng.randint(0, 4, (5, 7))
    if stripes == "rows":
        coarse[:] = coarse[:, :1]
    elif stripes == "columns":
        coarse[:] = coarse[:1]
    labels = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)  # 10x14 or 15x21
    one_hot = np.eye(4, dtype=np.float32)[labels]
    small = multi_scale.resize_bilinear(one_hot, *coarse.shape)
    np.testing.assert_allclose(small, np.eye(4)[coarse], atol=1e-6)
    back = multi_scale.resize_bilinear(small, *labels.shape)
    np.testing.assert_array_equal(np.argmax(back, axis=-1), labels)


def test_averaged_labels_call_the_passes_asked_for_and_average_them():
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, 0] = 255  # a bright left column tells a pass whether it sees the mirror image
    seen = []
    # Each pass's probabilities, the same at every pixel: (size, mirrored) -> 3 classes.
    answers = {((20, 30), False): [0.1, 0.6, 0.3], ((20, 30), True): [0.1, 0.1, 0.8],
               ((10, 15), False): [0.5, 0.3, 0.2], ((10, 15), True): [0.5, 0.3, 0.2]}

    def probabilities_of(x):
        mirrored = x[:, -1].mean() > x[:, 0].mean()
        seen.append((x.shape[:2], mirrored))
        whole = np.tile(np.float32(answers[x.shape[:2], mirrored]), x.shape[:2] + (1,))
        # In bands of 7 rows, as the network gives them
        return ((start, whole[start:start + 7]) for start in range(0, x.shape[0], 7))

    # Averaged over the four passes: class 1 (0.6 + 0.1 + 0.3 + 0.3) < class 2 (0.3 + 0.8 +
    # 0.2 + 0.2); over the two straight ones class 1 (0.9) wins.
    labels = multi_scale.averaged_labels(image, (0.5, 1.0), True, 3, probabilities_of, None)
    assert seen == [((10, 15), False), ((10, 15), True), ((20, 30), False), ((20, 30), True)]
    assert labels.shape == (20, 30) and (labels == 2).all()
    labels = multi_scale.averaged_labels(image, (0.5, 1.0), False, 3, probabilities_of, None)
    assert (labels == 1).all()
    # One pass at the image's size, not mirrored: the labels' own function, nothing averaged.
    labels = multi_scale.averaged_labels(image, (1.0,), False, 3, None, lambda x: "labels")
    assert labels == "labels"


# ---- on the narrow network -----------------------------------------------------------------------

def _passes(variable_values, scales, flip, tile_size=64):
    """A predicting.Passes over the narrow reference network whose variables hold
    variable_values(name, shape) (in a graph that predicts at any size)."""
    classes = datasets.class_info(datasets.FOLDER, ["c%d" % k for k in range(4)])
    graph = tf.Graph()
    with graph.as_default():
        weights = vgg19_kernels(seed=0, widths=NARROW)
        model = network.Model((weights, MEAN_PIXEL), False, classes=classes, widths=NARROW)
        tiled = tiled_network.TiledNetwork(MEAN_PIXEL, "reference", "fp32", 4, NARROW)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
        for variable in tf.global_variables():
            value = variable_values(variable.op.name, variable.shape.as_list())
            if value is not None:
                variable.load(value, sess)
    settings = _settings(scales, flip, tile_size)
    passes = predicting.Passes(sess, model, tiled, settings)
    passes.mean_pixel = MEAN_PIXEL
    return sess, passes


def _whole(bands):
    """The map the (first row, band) bands cover, top to bottom."""
    return np.concatenate([band for _, band in bands])


def _settings(scales, flip, tile_size):
    import FCN
    return FCN.current_settings().replace(eval_scales=scales, eval_flip=flip,
                                          tile_size=tile_size)


def _random_head(name, shape):
    if "conv" in name:
        return None
    return np.random.RandomState(abs(hash(name)) % 1000).standard_normal(shape) * 0.3


def photo(h, w, seed):
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 255, (h // 16 + 2, w // 16 + 2, 3)).astype(np.uint8)
    from PIL import Image
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))


def test_flip_averaging_is_the_mean_of_the_two_passes_softmax():
    sess, passes = _passes(_random_head, "1.0", True)
    image = photo(96, 150, 1)
    with sess:
        straight = _whole(passes.probability_bands(image))
        mirrored = _whole(passes.probability_bands(image[:, ::-1]))[:, ::-1]
        expected = np.argmax((straight + mirrored) / 2, axis=-1)
        got = passes.own_size_labels(image)
    np.testing.assert_allclose(straight.sum(axis=-1), 1.0, atol=1e-5)  # softmax
    assert (np.argmax(straight, -1) != np.argmax(mirrored, -1)).any()  # the flip matters here
    np.testing.assert_array_equal(got, expected)


def test_a_network_that_ignores_its_input_labels_alike_at_every_scale_and_flip():
    # Every weight 0 but the last bias: the logits are b_t3 at every pixel of every pass.
    def constant(name, shape):
        if name.endswith("b_t3"):
            return np.array([0.0, 0.5, 2.0, 1.0])
        return np.zeros(shape)

    sess, passes = _passes(constant, "0.5,1.0,1.5", True)
    with sess:
        labels = passes.own_size_labels(photo(75, 100, 2))
    assert labels.shape == (75, 100) and (labels == 2).all()


def test_one_scale_without_flip_is_predicts_own_path_on_an_image_larger_than_a_tile():
    sess, passes = _passes(_random_head, "1.0", False, tile_size=32)
    image = photo(200, 170, 3)
    with sess:
        got = passes.own_size_labels(image)
        padded = np.full((224, 192, 3), MEAN_PIXEL, np.float32)
        padded[:200, :170] = image
        whole = sess.run(passes.model.pred_annotation,
                         {passes.model.image: padded[None]})[0, :200, :170, 0]
    assert len(np.unique(whole)) > 1
    np.testing.assert_array_equal(got, whole)


# ---- the confusion files -------------------------------------------------------------------------

# test_metrics.py's hand-worked matrix: 0 ignored; 1 and 2 confused once each way.
MATRIX = np.array([[0, 0, 0, 0], [1, 2, 1, 0], [1, 1, 3, 0], [0, 0, 0, 0]])
NAMES = ["other", "wall", "building;edifice", "sky"]


def test_the_most_confused_by_hand():
    # Class 1: row 1 + 1 off the diagonal, column 1: 1 -> 3; class 2: 2 + 1 = 3; 0 ignored.
    np.testing.assert_array_equal(confusion_report.off_diagonal_mass(MATRIX, 0), [0, 3, 3, 0])
    assert confusion_report.most_confused_classes(MATRIX, 20, 0) == [1, 2]
    assert confusion_report.most_confused_pairs(MATRIX, 10, 0) == [(1, 2, 1, 0.25),
                                                                   (2, 1, 1, 0.2)]


def test_the_confusion_files_hold_the_matrix_with_its_names(tmp_path):
    paths, pairs = confusion_report.write_report(str(tmp_path), MATRIX, NAMES, 0)
    assert [os.path.basename(p) for p in paths] == ["confusion.npy", "confusion.csv",
                                                     "confusion.png"]
    np.testing.assert_array_equal(np.load(paths[0]), MATRIX)
    with open(paths[1], newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ground truth \\ prediction"] + NAMES
    assert rows[2] == ["wall", "1", "2", "1", "0"]
    assert rows[3][0] == "building;edifice"
    picture = imageio.imread(paths[2])
    n = 2  # classes 1 and 2
    assert picture.shape == (40 + n * confusion_report.CELL + 50,
                             confusion_report.NAME_WIDTH + n * confusion_report.CELL
                             + confusion_report.SCALE_WIDTH + 10, 3)
    assert "wall" in pairs and "25.0% of wall" in pairs


# ---- the modes ---------------------------------------------------------------------------------

def test_validate_at_scales_with_flip_writes_the_matrix_the_protocol_and_per_class_accuracy(
        trained, dirs, copy_of):
    logs = copy_of(trained[0])
    out = run_fcn("--mode=validate", "--logs_dir=" + logs, "--eval_scales=0.75,1.0",
                  "--eval_flip", "--tile_size=64", *(SMALL + dirs))
    assert "the most confused pairs" in out and "validated 5/5" in out
    with open(os.path.join(logs, "validation_metrics.json")) as f:
        result = json.load(f)
    assert result["protocol"] == {"size": "each image's own size", "scales": [0.75, 1.0],
                                  "flip": True, "ignore_label": 0}
    assert result["loss"] is None and len(result["per_class_accuracy"]) == 151
    confusion = np.load(os.path.join(logs, "confusion.npy"))
    np.testing.assert_array_equal(confusion, result["confusion_matrix"])
    assert os.path.exists(os.path.join(logs, "confusion.png"))
    # Scored at the annotations' own size: every labelled pixel once.
    assert confusion.sum() == sum(int((imageio.imread(p) > 0).sum()) for p in _annotations(dirs))


def _annotations(dirs):
    folder = os.path.join(dirs[0].split("=", 1)[1], "ADEChallengeData2016", "annotations",
                          "validation")
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))]


def test_visualize_at_its_own_size_and_predict_at_scale_1_equal_predict(trained, dirs, copy_of,
                                                                       tmp_path):
    logs = copy_of(trained[0])
    run_fcn("--mode=visualize", "--logs_dir=" + logs, "--eval_scales=1.0", *(SMALL + dirs))
    annotation = imageio.imread(os.path.join(logs, "gt_0.png"))
    assert annotation.shape != (64, 64)  # the image's own size, not --image_size's
    images = os.path.dirname(_annotations(dirs)[0]).replace("annotations", "images")
    outputs = {}
    for label, flags in (("plain", []), ("scale1", ["--eval_scales=1.0"])):
        out_dir = str(tmp_path / label)
        run_fcn("--mode=predict", "--logs_dir=" + logs, "--image=" + images,
                "--output_dir=" + out_dir, "--tile_size=32", *(flags + SMALL + dirs))
        outputs[label] = {n: imageio.imread(os.path.join(out_dir, n))
                          for n in sorted(os.listdir(out_dir)) if n.endswith("_pred.png")}
    assert outputs["plain"].keys() == outputs["scale1"].keys() and outputs["plain"]
    for name in outputs["plain"]:
        np.testing.assert_array_equal(outputs["scale1"][name], outputs["plain"][name])


def test_eval_flip_without_scales_is_refused(dirs, tmp_path):
    out = run_fcn("--mode=validate", "--logs_dir=" + str(tmp_path), "--eval_flip", *dirs,
                  expect=2)
    assert "FCN.py: error: --eval_flip goes with --eval_scales" in out


@pytest.mark.slow
def test_validating_a_large_image_at_three_scales_with_flip_stays_within_the_bound(
        module_tmp, model_dir, tmp_path):
    """One validation image of 1500 to 2000 pixels a side, scales 0.5, 1.0 and 1.5 with flip,
    in a fresh process: its peak above one pass's within what docs/evaluation.md states, the
    running sum at the image's size and two bands of the largest scale's probabilities, each
    --tile_size rows of its width (4 bytes a class a pixel), and 1.5 GiB of working memory; a
    whole scale's probabilities held at once (2.25 times the sum) would not fit."""
    root = module_tmp("large")
    data = str(root / "data")
    make_scene_dataset(data, n_train=1, n_val=1, size_range=(1500, 2000), seed=4)
    logs = str(root / "logs")
    args = ["--data_dir=" + data, "--model_dir=" + model_dir, "--logs_dir=" + logs,
            "--image_size=64", "--batch_size=1", "--validation_images=0", "--tile_size=512"]
    run_fcn("--mode=train", "--max_iterations=1", "--save_every=1", *args)
    peaks = {}
    for label, flags in (("one pass", ["--eval_scales=1.0"]),
                         ("three scales, flip", ["--eval_scales=0.5,1.0,1.5", "--eval_flip"])):
        # From a small waiting process: started from this one, which has held a network, the
        # run's peak would be at least this process's.
        code, stderr, peaks[label] = own_peak([sys.executable, FCN_PY, "--mode=validate"]
                                              + args + flags)
        assert code == 0, stderr[-3000:]
    image = imageio.imread(_annotations(["--data_dir=" + data])[0])
    classes, tile_rows, widest = 151, 512, round(image.shape[1] * 1.5)
    bound = 4 * classes * (image.size + 2 * tile_rows * widest) + 1.5 * (1 << 30)
    assert 4 * classes * image.size * 1.5 ** 2 > bound - 4 * classes * image.size  # it tells
    assert peaks["three scales, flip"] - peaks["one pass"] <= bound, peaks
