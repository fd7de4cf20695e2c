"""Your own data: --dataset=voc and folder through every mode, the class count as a parameter, the
ignore label in the loss and the metrics, --init_from, and the refusals of bad input."""
import json
import os
import shutil

import imageio.v2 as imageio
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import checkpoints
import datasets
import FCN
import metrics
import network
from tests.make_dataset import FOLDER_CLASSES, IGNORE_LABEL, make_folder_dataset
from tests.make_vgg_mat import NARROW
from tests.make_voc import make_voc_dataset
from tests.project import SMALL, run_fcn

CLASS_LAYERS = ("inference/W8", "inference/b8", "inference/W_t1", "inference/W_t3",
                "inference/b_t3")


@pytest.fixture(scope="module")
def folder_data(module_tmp):
    return make_folder_dataset(str(module_tmp("mine")), n_train=6, n_val=3)


@pytest.fixture(scope="module")
def voc_data(module_tmp):
    root = str(module_tmp("voc"))
    make_voc_dataset(root, n_train=6, n_val=3)
    return root


def _trained(module_tmp, model_dir, dataset, data_dir):
    logs = str(module_tmp("logs-" + dataset))
    flags = ["--dataset=" + dataset, "--data_dir=" + data_dir, "--model_dir=" + model_dir,
             "--logs_dir=" + logs] + SMALL
    out = run_fcn("--mode=train", "--max_iterations=2", "--save_every=2", "--log_every=1",
                  *flags)
    return logs, flags, out


@pytest.fixture(scope="module")
def folder_run(module_tmp, model_dir, folder_data):
    return _trained(module_tmp, model_dir, "folder", folder_data)


@pytest.fixture(scope="module")
def voc_run(module_tmp, model_dir, voc_data):
    return _trained(module_tmp, model_dir, "voc", voc_data)


def _class_layer_shapes(logs):
    shapes = dict(tf.train.list_variables(tf.train.latest_checkpoint(logs)))
    return {name: shapes[name] for name in CLASS_LAYERS}


def _expected_class_layer_shapes(n, widths=NARROW):
    """The class layers' shapes for n classes (at VGG-19's widths: [1, 1, 4096, n],
    [4, 4, 512, n], [16, 16, n, 256]; the tests' runs are the narrow network)."""
    return {"inference/W8": [1, 1, widths.fc, n], "inference/b8": [n],
            "inference/W_t1": [4, 4, widths.blocks[3], n],
            "inference/W_t3": [16, 16, n, widths.blocks[2]], "inference/b_t3": [n]}


# ---- each dataset through every mode ------------------------------------------------------------

@pytest.mark.parametrize("run, count, names", [
    ("folder_run", 3, list(FOLDER_CLASSES)),
    ("voc_run", 21, ["background", "aeroplane", "bicycle"]),
])
def test_training_writes_checkpoints_of_the_datasets_class_count_and_its_classes(
        run, count, names, request):
    logs, _, out = request.getfixturevalue(run)
    assert "step 2 loss" in out
    assert _class_layer_shapes(logs) == _expected_class_layer_shapes(count)
    with open(os.path.join(logs, "classes.json")) as f:
        classes = json.load(f)
    assert classes["num_classes"] == count and classes["class_names"][:len(names)] == names
    assert classes["loss_ignore_label"] == classes["metric_ignore_label"] == 255
    assert len(classes["palette"]) == count and classes["palette"][0] == [0, 0, 0]
    # The VOC colour map: class 1 dark red, 2 dark green (the generated palette of folder).
    assert classes["palette"][1] == [128, 0, 0] and classes["palette"][2] == [0, 128, 0]


def test_validate_scores_every_class_and_ignores_only_255(folder_run, folder_data):
    logs, flags, _ = folder_run
    out = run_fcn("--mode=validate", *flags)
    assert "validated 3/3 images" in out
    with open(os.path.join(logs, "validation_metrics.json")) as f:
        result = json.load(f)
    confusion = np.array(result["confusion_matrix"])
    assert confusion.shape == (3, 3) and result["class_names"] == list(FOLDER_CLASSES)
    # Every pixel but the 255 band is scored, background included.
    labelled = 0
    folder = os.path.join(folder_data, "annotations", "validation")
    for name in os.listdir(folder):
        labels = imageio.imread(os.path.join(folder, name))
        labelled += int((labels != IGNORE_LABEL).sum())
    assert confusion.sum() == labelled
    assert result["per_class_iou"][0] is not None  # background is scored
    tp = np.diag(confusion).astype(float)
    assert result["pixel_accuracy"] == pytest.approx(tp.sum() / confusion.sum())


def test_voc_validates_visualizes_and_predicts(voc_run, voc_data, tmp_path):
    logs, flags, _ = voc_run
    run_fcn("--mode=validate", *flags)
    with open(os.path.join(logs, "validation_metrics.json")) as f:
        assert len(json.load(f)["per_class_iou"]) == 21
    run_fcn("--mode=visualize", *flags)
    gt = imageio.imread(os.path.join(logs, "gt_c0.png"))
    assert gt.shape == (64, 64, 3)
    # predict needs no dataset: the classes come from classes.json beside the checkpoint.
    image = os.path.join(voc_data, "VOCdevkit", "VOC2012", "JPEGImages",
                         sorted(os.listdir(os.path.join(voc_data, "VOCdevkit", "VOC2012",
                                                        "JPEGImages")))[0])
    run_fcn("--mode=predict", "--logs_dir=" + logs, "--image=" + image,
            "--output_dir=" + str(tmp_path), "--data_dir=" + str(tmp_path / "none"), *SMALL)
    stem = os.path.splitext(os.path.basename(image))[0]
    labels = imageio.imread(str(tmp_path / (stem + "_pred.png")))
    assert labels.shape == imageio.imread(image).shape[:2] and labels.max() < 21


def test_folder_visualizes_and_predicts_with_its_own_names(folder_run, folder_data, tmp_path):
    logs, flags, _ = folder_run
    run_fcn("--mode=visualize", *flags)
    panel = imageio.imread(os.path.join(logs, "panel_0.png"))
    assert panel.shape[1] == 3 * 256
    images = os.path.join(folder_data, "images", "validation")
    run_fcn("--mode=predict", "--logs_dir=" + logs, "--image=" + images,
            "--output_dir=" + str(tmp_path), *SMALL)
    for name in os.listdir(images):
        labels = imageio.imread(str(tmp_path / (os.path.splitext(name)[0] + "_pred.png")))
        assert labels.max() < 3


# ---- the masked loss and the metrics of each protocol -------------------------------------------

def _numpy_masked_cross_entropy(logits, labels, ignore):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    keep = labels != ignore
    picked = np.take_along_axis(log_softmax, np.where(keep, labels, 0)[..., None], -1)[..., 0]
    return -picked[keep].mean()


def test_the_masked_loss_is_the_cross_entropy_of_the_counted_pixels_only():
    rng = np.random.RandomState(0)
    logits = rng.normal(0, 3, (2, 4, 5, 3)).astype(np.float32)
    labels = rng.randint(0, 3, (2, 4, 5, 1))
    labels[0, 1:3, 1:4] = 255
    labels[1, 0, :] = 255
    with tf.Graph().as_default():
        logits_t = tf.constant(logits)
        loss = FCN.pixel_loss(logits_t, tf.constant(labels, tf.int32), ignore_label=255)
        gradient = tf.gradients(loss, logits_t)[0]
        plain = FCN.pixel_loss(logits_t, tf.constant(np.minimum(labels, 2), tf.int32))
        with tf.Session() as sess:
            got, grad, got_plain = sess.run([loss, gradient, plain])
    assert got == pytest.approx(_numpy_masked_cross_entropy(logits, labels[..., 0], 255),
                                rel=1e-5)
    ignored = labels[..., 0] == 255
    assert np.all(grad[ignored] == 0.0)
    assert np.all(np.abs(grad[~ignored]).sum(axis=-1) > 0)
    # Without an ignore label, the reference's mean over every pixel.
    assert got_plain == pytest.approx(
        _numpy_masked_cross_entropy(logits, np.minimum(labels[..., 0], 2), -1), rel=1e-5)


def test_voc_protocol_by_hand():
    # 3 classes, 255 ignored; class 0 (background) is scored like the others.
    gt = np.array([[0, 0, 1, 255],
                   [2, 2, 1, 255]])
    pred = np.array([[0, 1, 1, 2],
                     [2, 0, 1, 0]])
    # Counted pixels: gt 0 -> preds 0, 1; gt 1 -> 1, 1; gt 2 -> 2, 0.
    expected = np.array([[1, 1, 0],
                         [0, 2, 0],
                         [1, 0, 1]])
    confusion = metrics.confusion_matrix(gt, pred, 3, ignore_label=255)
    np.testing.assert_array_equal(confusion, expected)
    r = metrics.scores(confusion, ignore_label=255)
    # IoU 0: 1 / (2 + 2 - 1); IoU 1: 2 / (2 + 3 - 2); IoU 2: 1 / (2 + 1 - 1).
    assert r["per_class_iou"] == [pytest.approx(1 / 3), pytest.approx(2 / 3),
                                  pytest.approx(1 / 2)]
    assert r["pixel_accuracy"] == pytest.approx(4 / 6)
    assert r["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_ade20k_protocol_with_ignore_label_0_by_hand():
    gt = np.array([[0, 1, 1, 2]])
    pred = np.array([[1, 1, 0, 2]])
    confusion = metrics.confusion_matrix(gt, pred, 3, ignore_label=0)
    np.testing.assert_array_equal(confusion, [[0, 0, 0], [1, 1, 0], [0, 0, 1]])
    r = metrics.scores(confusion, ignore_label=0)
    assert r["per_class_iou"] == [None, pytest.approx(1 / 2), pytest.approx(1.0)]


def test_ignore_label_defaults_and_the_flag():
    assert datasets.ignore_labels(datasets.ADE20K) == (None, 0)
    assert datasets.ignore_labels(datasets.ADE20K, 0) == (0, 0)
    assert datasets.ignore_labels(datasets.VOC) == (255, 255)
    assert datasets.ignore_labels(datasets.FOLDER, 9) == (9, 9)
    info = datasets.class_info(datasets.VOC, ["c%d" % k for k in range(21)])
    assert info.num_classes == 21 and info.extra_label == 255
    assert datasets.class_info(datasets.ADE20K, ["c"] * 151).extra_label is None


def test_ade20k_palette_is_the_official_one():
    palette = datasets.dataset_palette("ade20k", 151)
    # color150.mat's first rows (wall, building, sky) and class 0 black.
    assert palette.shape == (151, 3)
    assert [tuple(palette[k]) for k in range(4)] == [(0, 0, 0), (120, 120, 120),
                                                     (180, 120, 120), (6, 230, 230)]


# ---- --init_from ---------------------------------------------------------------------------------

def _save_source(narrow_vgg, path, original):
    """A 151-class checkpoint of the narrow network with random head weights: this project's
    (Model, global_step) or the original implementation's (the network and Adam, no
    global_step)."""
    weights, mean_pixel, widths = narrow_vgg
    with tf.Graph().as_default():
        tf.set_random_seed(3)
        if original:
            image, annotation, _ = network.input_placeholders()
            _, logits, _ = network.fcn8s(image, 1.0, (weights, mean_pixel), widths=widths)
            FCN.train(FCN.pixel_loss(logits, annotation), tf.trainable_variables(), 1e-4, False)
        else:
            network.Model((weights, mean_pixel), training=True, widths=widths)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = {v.op.name: value for v, value in
                      zip(tf.trainable_variables(), sess.run(tf.trainable_variables()))}
            tf.train.Saver().save(sess, path, global_step=40)
    return path + "-40", values


@pytest.mark.parametrize("original", [False, True])
def test_init_from_restores_every_layer_but_the_class_layers(narrow_vgg, tmp_path, original):
    source, values = _save_source(narrow_vgg, str(tmp_path / "model.ckpt"), original)
    classes = datasets.class_info(datasets.FOLDER, ["a", "b", "c"])
    with tf.Graph().as_default():
        model = network.Model((None, narrow_vgg[1]), training=True, classes=classes,
                              widths=NARROW)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            restored = checkpoints.restore_matching(sess, source, model.network_variables)
            after = dict(zip([v.op.name for v in model.network_variables],
                             sess.run(model.network_variables)))
            assert sess.run(model.global_step) == 0
    assert set(restored) == set(values) - set(CLASS_LAYERS)
    for name in restored:
        np.testing.assert_array_equal(after[name], values[name], err_msg=name)
    # Fresh, as a new network: truncated normal of stddev 0.02, zero biases.
    assert after["inference/W8"].shape == (1, 1, NARROW.fc, 3)
    assert 0.015 < after["inference/W8"].std() < 0.025
    assert not after["inference/b8"].any()


def test_init_from_on_the_command_line_needs_no_vgg_file(narrow_vgg, folder_data, tmp_path):
    source, values = _save_source(narrow_vgg, str(tmp_path / "ade" / "model.ckpt"),
                                  original=False)
    empty_model_dir = tmp_path / "no_vgg"
    empty_model_dir.mkdir()
    logs = str(tmp_path / "logs")
    out = run_fcn("--mode=train", "--dataset=folder", "--data_dir=" + folder_data,
                  "--model_dir=" + str(empty_model_dir), "--logs_dir=" + logs,
                  "--init_from=" + str(tmp_path / "ade"), "--max_iterations=1", "--log_every=1",
                  *SMALL)
    assert "restored    inference/W6" in out and "initialised inference/W8" in out
    assert "step 1 loss" in out and os.listdir(str(empty_model_dir)) == []
    assert int(tf.train.load_variable(logs, "global_step")) == 1
    assert _class_layer_shapes(logs) == _expected_class_layer_shapes(3)


# ---- bad input: exit 2 and one line --------------------------------------------------------------

def _one_line_error(out):
    errors = [line for line in out.splitlines() if line.startswith("FCN.py: error:")]
    assert len(errors) == 1 and "Traceback" not in out, out[-2000:]
    return errors[0]


def _copy(folder_data, tmp_path):
    copy = str(tmp_path / "data")
    shutil.copytree(folder_data, copy)
    return copy


def _train_refused(data_dir, model_dir, tmp_path, *extra):
    return _one_line_error(run_fcn("--mode=train", "--dataset=folder", "--data_dir=" + data_dir,
                                   "--model_dir=" + model_dir,
                                   "--logs_dir=" + str(tmp_path / "logs"), *(SMALL + list(extra)),
                                   expect=2))


def test_a_label_beyond_the_classes_is_refused_naming_the_file(folder_data, model_dir, tmp_path):
    data = _copy(folder_data, tmp_path)
    path = os.path.join(data, "annotations", "training", "training_0000.png")
    labels = imageio.imread(path)
    labels[0, 0] = 7
    imageio.imwrite(path, labels)
    error = _train_refused(data, model_dir, tmp_path)
    assert "annotation %s holds the value 7, outside the classes 0..2 (3 classes" % path in error


@pytest.mark.parametrize("content", [None, "", "\n\n"])
def test_a_missing_or_empty_classes_txt_is_refused(folder_data, model_dir, tmp_path, content):
    data = _copy(folder_data, tmp_path)
    path = os.path.join(data, "classes.txt")
    os.remove(path)
    if content is not None:
        with open(path, "w") as f:
            f.write(content)
    error = _train_refused(data, model_dir, tmp_path)
    assert path in error and ("needs" in error if content is None else "is empty" in error)


def test_an_rgb_annotation_is_refused(folder_data, model_dir, tmp_path):
    data = _copy(folder_data, tmp_path)
    path = os.path.join(data, "annotations", "training", "training_0000.png")
    labels = imageio.imread(path)
    imageio.imwrite(path, np.stack([labels, labels // 2, labels], axis=-1))
    error = _train_refused(data, model_dir, tmp_path)
    assert "annotation %s is a colour image" % path in error


FOLDER_ADVICE = "these are your own files: fix each file named, or remove it together with its pair"


@pytest.mark.parametrize("kind, name", [("images", "training_0001.jpg"),
                                        ("annotations", "training_0000.png")])
def test_an_empty_file_of_your_own_is_named_with_the_advice_to_fix_it(
        folder_data, model_dir, tmp_path, kind, name):
    data = _copy(folder_data, tmp_path)
    path = os.path.join(data, kind, "training", name)
    open(path, "wb").close()
    error = _train_refused(data, model_dir, tmp_path)
    assert "(first: %s is unreadable: empty (0 bytes))" % path in error
    assert FOLDER_ADVICE in error and "downloaded again" not in error
    assert "can not handle" not in error


def test_an_empty_file_of_a_downloaded_dataset_gets_the_advice_to_download_it_again(
        scene_data, model_dir, tmp_path):
    data = str(tmp_path / "ade")
    shutil.copytree(scene_data, data)
    path = os.path.join(data, "ADEChallengeData2016", "images", "training",
                        "ADE_train_00000002.jpg")
    open(path, "wb").close()
    error = _one_line_error(run_fcn("--mode=train", "--data_dir=" + data,
                                    "--model_dir=" + model_dir,
                                    "--logs_dir=" + str(tmp_path / "logs"), *SMALL, expect=2))
    assert "(first: %s is unreadable: empty (0 bytes))" % path in error
    assert "delete the dataset folder (--data_dir) so that it is downloaded again" in error
    assert FOLDER_ADVICE not in error


@pytest.mark.parametrize("mode", ["train", "validate"])
def test_a_checkpoint_of_another_class_count_is_refused(voc_run, folder_data, model_dir,
                                                        tmp_path, mode):
    logs = str(tmp_path / "logs")
    shutil.copytree(voc_run[0], logs)
    error = _one_line_error(run_fcn(
        "--mode=" + mode, "--dataset=folder", "--data_dir=" + folder_data,
        "--model_dir=" + model_dir, "--logs_dir=" + logs, *SMALL, expect=2))
    assert "has 21 classes but --dataset=folder (%s) has 3" % folder_data in error
    assert ("--init_from" in error) == (mode == "train")
