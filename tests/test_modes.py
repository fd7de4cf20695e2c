"""The modes through the command line: train and resume, validate, visualize, predict, refusals."""
import glob
import json
import os
import re
import shutil

import imageio.v2 as imageio
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import checkpoints
import FCN
import network
import vgg_weights
from tests.project import SMALL, run_fcn


def test_train_writes_checkpoints_events_and_settings(trained):
    logs, out = trained
    assert "step 3 loss" in out and "images/s" in out and "eta" in out
    assert os.path.exists(os.path.join(logs, "model.ckpt-2.index"))
    assert os.path.exists(os.path.join(logs, "model.ckpt-3.index"))
    assert tf.train.latest_checkpoint(logs).endswith("model.ckpt-3")
    assert glob.glob(os.path.join(logs, "train", "events.out.tfevents.*"))
    assert glob.glob(os.path.join(logs, "validation", "events.out.tfevents.*"))
    with open(os.path.join(logs, "settings.json")) as f:
        settings = json.load(f)
    assert settings["batch_size"] == 2 and settings["image_size"] == 64
    assert not os.path.exists(os.path.join(logs, "train.lock"))


def test_train_again_continues_from_the_saved_step(trained, dirs, copy_of):
    logs = copy_of(trained[0])
    out = run_fcn("--mode=train", "--logs_dir=" + logs, "--max_iterations=5", "--log_every=1",
                  *(SMALL + dirs))
    assert "(step 3)" in out
    assert "step 4 loss" in out and "step 5 loss" in out and "step 1 loss" not in out
    assert tf.train.latest_checkpoint(logs).endswith("model.ckpt-5")
    assert int(tf.train.load_variable(logs, "global_step")) == 5


def test_train_at_max_iterations_does_nothing(trained, dirs, copy_of):
    out = run_fcn("--mode=train", "--logs_dir=" + copy_of(trained[0]), "--max_iterations=3",
                  *(SMALL + dirs))
    assert "already reached --max_iterations=3" in out


def test_a_checkpoint_without_global_step_restores_with_the_step_of_its_name(dirs, model_dir,
                                                                            tmp_path):
    logs = str(tmp_path / "logs")
    os.makedirs(logs)
    weights, mean_pixel, widths = vgg_weights.load_vgg(model_dir)
    # The original implementation's graph: the network and Adam, no global_step.
    with tf.Graph().as_default():
        image, annotation, _ = network.input_placeholders()
        _, logits, _ = network.fcn8s(image, 1.0, (weights, mean_pixel), widths=widths)
        FCN.train(FCN.pixel_loss(logits, annotation), tf.trainable_variables(), 1e-4, False)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            w8 = sess.run([v for v in tf.global_variables() if v.op.name == "inference/W8"][0])
            tf.train.Saver().save(sess, os.path.join(logs, "model.ckpt"), global_step=7)
    assert "global_step" not in dict(tf.train.list_variables(os.path.join(logs, "model.ckpt-7")))
    out = run_fcn("--mode=train", "--logs_dir=" + logs, "--max_iterations=8", "--log_every=1",
                  *(SMALL + dirs))
    assert "model.ckpt-7 (step 7)" in out and "step 8 loss" in out
    assert int(tf.train.load_variable(logs, "global_step")) == 8
    # Trained on from the restored weights, not from a fresh initialisation.
    w8_after = tf.train.load_variable(logs, "inference/W8")
    assert np.abs(w8_after - w8).max() < 0.01 < np.abs(w8).max()


def _labelled_pixels(data_dir):
    folder = os.path.join(data_dir, "ADEChallengeData2016", "annotations", "validation")
    return sum(int((imageio.imread(p) > 0).sum()) for p in glob.glob(os.path.join(folder, "*")))


def test_validate_writes_the_benchmark_metrics(trained, dirs, scene_data, copy_of):
    logs = copy_of(trained[0])
    out = run_fcn("--mode=validate", "--logs_dir=" + logs, *(SMALL + dirs))
    assert "validated 5/5 images" in out and "mean IoU" in out
    with open(os.path.join(logs, "validation_metrics.json")) as f:
        result = json.load(f)
    for key in ("num_images", "pixel_accuracy", "mean_accuracy", "mean_iou",
                "frequency_weighted_iou", "benchmark_score", "loss", "per_class_iou",
                "class_names", "confusion_matrix", "checkpoint", "skipped"):
        assert key in result, key
    assert result["num_images"] == 5 and result["skipped"] == []
    assert result["checkpoint"]["step"] == 3
    assert result["class_names"][1] == "wall" and len(result["per_class_iou"]) == 151
    confusion = np.array(result["confusion_matrix"])
    assert confusion.shape == (151, 151)
    # Scored at the annotations' own sizes, over the pixels labelled other than 0.
    assert confusion.sum() == _labelled_pixels(scene_data)
    assert confusion[0].sum() == 0
    # The metrics, recomputed here from the matrix.
    tp = np.diag(confusion)[1:].astype(float)
    rows, cols = confusion.sum(1)[1:], confusion.sum(0)[1:]
    union = rows + cols - tp
    iou = tp[union > 0] / union[union > 0]
    assert result["pixel_accuracy"] == pytest.approx(tp.sum() / confusion.sum())
    assert result["mean_iou"] == pytest.approx(iou.mean())
    assert result["mean_accuracy"] == pytest.approx((tp[rows > 0] / rows[rows > 0]).mean())
    assert result["benchmark_score"] == pytest.approx((tp.sum() / confusion.sum() + iou.mean()) / 2)
    assert np.isfinite(result["loss"]) and result["loss"] > 0
    # Training scored its last checkpoint on a subset that is here the whole split (the default
    # 200 images > 5): the same figures, through TensorBoard's float32.
    scalars = {}
    folder = os.path.join(logs, "validation")
    for name in os.listdir(folder):
        for event in tf.train.summary_iterator(os.path.join(folder, name)):
            if event.step == 3:
                scalars.update((v.tag, v.simple_value) for v in event.summary.value)
    assert scalars["pixel_accuracy"] == pytest.approx(result["pixel_accuracy"], abs=1e-6)
    assert scalars["mean_iou"] == pytest.approx(result["mean_iou"], abs=1e-6)


def test_visualize_writes_the_reference_files_and_panels(trained, dirs, copy_of):
    logs = copy_of(trained[0])
    run_fcn("--mode=visualize", "--logs_dir=" + logs, *(SMALL + dirs))
    for k in range(2):
        for name, shape in (("inp_%d", (64, 64, 3)), ("gt_%d", (64, 64)), ("pred_%d", (64, 64)),
                            ("gt_c%d", (64, 64, 3)), ("pred_c%d", (64, 64, 3))):
            assert imageio.imread(os.path.join(logs, name % k + ".png")).shape == shape, name
        panel = imageio.imread(os.path.join(logs, "panel_%d.png" % k))
        assert panel.shape[1] == 3 * 256 and panel.shape[0] > 256
    assert imageio.imread(os.path.join(logs, "gt_0.png")).max() <= 150


def test_predict_keeps_each_image_size(trained, dirs, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    rng = np.random.RandomState(0)
    imageio.imwrite(str(folder / "wide.jpg"), rng.randint(0, 255, (50, 90, 3)).astype(np.uint8))
    imageio.imwrite(str(folder / "gray.png"), rng.randint(0, 255, (70, 33)).astype(np.uint8))
    out_dir = tmp_path / "out"
    run_fcn("--mode=predict", "--logs_dir=" + trained[0], "--image=" + str(folder),
            "--output_dir=" + str(out_dir), *(SMALL + dirs))
    labels = imageio.imread(str(out_dir / "wide_pred.png"))
    assert labels.shape == (50, 90)
    # The overlay: the image half and half with the classes' colours, above a legend.
    with open(os.path.join(trained[0], "classes.json")) as f:
        palette = np.array(json.load(f)["palette"], np.float64)
    image = imageio.imread(str(folder / "wide.jpg")).astype(np.float64)
    overlay = imageio.imread(str(out_dir / "wide_pred_c.png"))
    assert overlay.shape[0] > 50 and overlay.shape[1] >= 90
    np.testing.assert_array_equal(overlay[:50, :90], np.rint((image + palette[labels]) / 2))
    assert imageio.imread(str(out_dir / "gray_pred.png")).shape == (70, 33)
    run_fcn("--mode=predict", "--logs_dir=" + trained[0], "--resize",
            "--image=" + str(folder / "wide.jpg"), "--output_dir=" + str(out_dir / "r"),
            *(SMALL + dirs))
    assert imageio.imread(str(out_dir / "r" / "wide_pred.png")).shape == (50, 90)


@pytest.mark.parametrize("mode", ["visualize", "validate", "predict"])
def test_modes_without_a_checkpoint_refuse_with_exit_2(mode, dirs, tmp_path, scene_data):
    images = os.path.join(scene_data, "ADEChallengeData2016", "images", "validation")
    out = run_fcn("--mode=" + mode, "--logs_dir=" + str(tmp_path), "--image=" + images,
                  *(SMALL + dirs), expect=2)
    assert "no checkpoint in --logs_dir" in out and "Traceback" not in out


@pytest.mark.parametrize("flag, message", [
    ("--mode=bogus", "--mode=bogus is not a mode"),
    ("--batch_size=0", "--batch_size=0: it must be at least 1"),
    ("--image_size=100", "--image_size=100: it must be a positive multiple of 32"),
])
def test_bad_flags_refuse_with_exit_2(flag, message, dirs, tmp_path):
    out = run_fcn("--logs_dir=" + str(tmp_path), *(dirs + [flag]), expect=2)
    assert message in out and "Traceback" not in out


def test_palette_is_distinct_with_class_0_black():
    import datasets
    palette = datasets.label_palette(151)
    assert palette.shape == (151, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == 151
    assert tuple(palette[0]) == (0, 0, 0)
    # The documented bit-dealing: index 1 -> red's top bit, 2 -> green's, 4 -> blue's, 8 -> red 6.
    assert [tuple(palette[i]) for i in (1, 2, 4, 8)] == [(128, 0, 0), (0, 128, 0), (0, 0, 128),
                                                          (64, 0, 0)]


def test_step_from_checkpoint_name():
    assert checkpoints.step_from_checkpoint_name(os.path.join("logs", "model.ckpt-500")) == 500
    assert checkpoints.step_from_checkpoint_name("model.ckpt") == 0


# ---- a trained model's folder, read as a shared model folder is ---------------------------------

def _listing(folder):
    """{relative path: (size, mtime)} of every file below folder."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            found[os.path.relpath(path, folder)] = (os.path.getsize(path),
                                                    os.stat(path).st_mtime_ns)
    return found


def test_the_modes_that_use_a_model_write_nothing_into_its_folder(trained, dirs, copy_of,
                                                                  tmp_path, scene_data):
    logs = copy_of(trained[0])
    before = _listing(logs)
    images = os.path.join(scene_data, "ADEChallengeData2016", "images", "validation")
    out = str(tmp_path / "out")
    run_fcn("--mode=predict", "--logs_dir=" + logs, "--image=" + images, "--output_dir=" + out,
            *(SMALL + dirs))
    run_fcn("--mode=validate", "--logs_dir=" + logs, "--output_dir=" + out, *(SMALL + dirs))
    run_fcn("--mode=visualize", "--logs_dir=" + logs, "--output_dir=" + out, *(SMALL + dirs))
    run_fcn("--mode=export", "--logs_dir=" + logs, "--export_dir=" + out, *(SMALL + dirs))
    assert _listing(logs) == before
    assert os.path.exists(os.path.join(out, "validation_metrics.json"))
    assert os.path.exists(os.path.join(out, "panel_0.png"))
    assert os.path.isdir(os.path.join(out, "3"))  # the export's version folder


def test_a_read_only_model_folder_predicts(trained, dirs, tmp_path, scene_data):
    import subprocess as sp
    from tests.project import mounted_tmpfs
    with mounted_tmpfs(str(tmp_path / "ro"), "64m") as mount:
        logs = os.path.join(mount, "logs")
        shutil.copytree(trained[0], logs)
        if sp.run(["mount", "-o", "remount,ro", mount]).returncode != 0:
            pytest.skip("cannot remount the tmpfs read-only here")
        try:
            image = os.path.join(scene_data, "ADEChallengeData2016", "images", "validation",
                                 "ADE_val_00000001.jpg")
            out = run_fcn("--mode=predict", "--logs_dir=" + logs, "--image=" + image,
                          "--output_dir=" + str(tmp_path / "out"), *(SMALL + dirs))
            assert " -> " in out
        finally:
            sp.run(["mount", "-o", "remount,rw", mount])


def test_a_mistyped_logs_dir_is_refused_before_anything_is_created(dirs, tmp_path, scene_data):
    logs = str(tmp_path / "logz")
    images = os.path.join(scene_data, "ADEChallengeData2016", "images", "validation")
    out = run_fcn("--mode=predict", "--logs_dir=" + logs, "--image=" + images, *(SMALL + dirs),
                  expect=2)
    assert "FCN.py: error: --logs_dir %s does not exist" % logs in out
    assert not os.path.exists(logs)


def test_the_other_modes_take_how_the_model_was_trained_from_its_settings(trained, copy_of,
                                                                          model_dir, tmp_path,
                                                                          monkeypatch):
    logs = copy_of(trained[0])
    # From another working folder, without --data_dir or --image_size: the run's own (64, and
    # its data), not the defaults (224, and a download into ./Data_zoo).
    monkeypatch.chdir(tmp_path)
    out = run_fcn("--mode=validate", "--logs_dir=" + logs, "--model_dir=" + model_dir,
                  "--batch_size=2")
    assert re.search(r"From .*settings\.json \(how the model was trained\): dataset=ade20k, "
                     r"data_dir=\S+, image_size=64, interpolation=nearest, variant=reference",
                     out), out[:2000]
    with open(os.path.join(logs, "validation_metrics.json")) as f:
        assert json.load(f)["image_size"] == 64
    assert not os.path.exists(tmp_path / "Data_zoo")
    # A flag given that differs is used, with a warning.
    out = run_fcn("--mode=validate", "--logs_dir=" + logs, "--model_dir=" + model_dir,
                  "--batch_size=2", "--image_size=96")
    assert ("Warning: --image_size=96 differs from the 64 the model was trained with "
            "(settings.json); using 96") in out
    with open(os.path.join(logs, "validation_metrics.json")) as f:
        assert json.load(f)["image_size"] == 96


def test_a_batch_larger_than_the_data_is_refused_before_settings_are_written(dirs, tmp_path):
    logs = str(tmp_path / "logs")
    out = run_fcn("--mode=train", "--logs_dir=" + logs, "--image_size=64", "--batch_size=1000",
                  *dirs, expect=2)
    assert ("FCN.py: error: --batch_size=1000 is larger than the 8 training records of"
            in out)
    assert not os.path.exists(os.path.join(logs, "settings.json"))
    assert "Loaded conv1_1" not in out  # refused before VGG-19 was read
