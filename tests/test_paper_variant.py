"""--variant=paper: FCN-8s as the paper defines it, beside the reference. Its new layers against
numpy, its fixed and learned upsamplings, its own variable names, the refusal of the other
variant's checkpoints in every mode, and (slow) that it learns the toy scene set."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import datasets
import FCN
import network
import TensorflowUtils as utils
import vgg_weights
from guards import FCNError
from tests.make_dataset import make_scene_dataset
from tests.make_vgg_mat import (MEAN_PIXEL, NARROW, layer_structs, vgg19_fc_weights,
                                vgg19_kernels, write_conv_layers_mat, write_vgg19_mat)
from tests.project import SMALL, run_fcn

HERE = os.path.dirname(os.path.abspath(__file__))
FIVE = datasets.class_info(datasets.FOLDER, ["c%d" % k for k in range(5)])


@pytest.fixture(scope="module")
def paper_vgg():
    """(weights with fc6 and fc7, mean pixel) of the synthetic VGG-19, from the generators."""
    weights = vgg19_kernels(seed=0)
    weights.update(vgg19_fc_weights(seed=0))
    return weights, MEAN_PIXEL


@pytest.fixture(scope="module")
def narrow_paper_vgg():
    """The same at the narrow widths."""
    weights = vgg19_kernels(seed=0, widths=NARROW)
    weights.update(vgg19_fc_weights(seed=0, density=1.0, widths=NARROW))
    return weights, MEAN_PIXEL


# ---- fc6 and fc7 from the .mat ------------------------------------------------------------------

def _matconvnet_cell(kernel_whio, bias):
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = kernel_whio, bias.reshape(-1, 1)
    return cell


def test_fc6_and_fc7_are_read_as_width_height_and_transposed(tmp_path):
    # Known values at a few places of MatConvNet's [width, height, in, out], zeros elsewhere;
    # in a .mat of the narrow widths (VGG-19's are [7, 7, 512, 4096] and [1, 1, 4096, 4096]).
    channels, outputs = NARROW.blocks[-1], NARROW.fc
    zero_convs = {name: (np.zeros(shape, np.float32), np.zeros(shape[3], np.float32))
                  for name, shape in vgg_weights.conv_shapes(NARROW)}
    layers = layer_structs(zero_convs)
    fc6 = np.zeros((7, 7, channels, outputs), np.float32)  # [x, y, in, out]
    places6 = [(0, 6, 0, 0), (1, 4, 10, 7), (6, 0, channels - 1, outputs - 1), (3, 2, 50, 33)]
    for i, place in enumerate(places6):
        fc6[place] = i + 1.5
    fc7 = np.zeros((1, 1, outputs, outputs), np.float32)
    fc7[0, 0, 5, 9], fc7[0, 0, outputs - 1, 0] = -2.0, 3.0
    bias6 = np.arange(outputs, dtype=np.float32)
    bias7 = -np.arange(outputs, dtype=np.float32)
    for layer in layers:
        if layer["name"] == "fc6":
            layer["weights"] = _matconvnet_cell(fc6, bias6)
        elif layer["name"] == "fc7":
            layer["weights"] = _matconvnet_cell(fc7, bias7)
    path = str(tmp_path / "known.mat")
    write_vgg19_mat(path, kernels=zero_convs, layers=layers, widths=NARROW)

    loaded = vgg_weights.load_vgg19_fc(vgg_weights.load_mat(path), path)
    kernel6, b6 = loaded["fc6"]
    assert kernel6.shape == (7, 7, channels, outputs) and kernel6.dtype == np.float32
    for i, (x, y, c, k) in enumerate(places6):
        assert kernel6[y, x, c, k] == i + 1.5  # TensorFlow's [height, width, in, out]
    assert np.count_nonzero(kernel6) == len(places6)
    kernel7, b7 = loaded["fc7"]
    assert kernel7[0, 0, 5, 9] == -2.0 and kernel7[0, 0, outputs - 1, 0] == 3.0
    assert np.count_nonzero(kernel7) == 2
    np.testing.assert_array_equal(b6, bias6)
    np.testing.assert_array_equal(b7, bias7)

    # fc6 on a 7x7 pool5 map as the network computes it: its centre output is VGG's fully
    # connected layer, sum over y, x of map[y, x] . fc6[x, y] read in MatConvNet's layout.
    pool5 = np.random.RandomState(0).standard_normal((1, 7, 7, channels)).astype(np.float32)
    expected = sum(pool5[0, y, x] @ fc6[x, y] for y in range(7) for x in range(7)) + bias6
    with tf.Graph().as_default(), tf.Session() as sess:
        got = sess.run(utils.conv2d_as_matmul(tf.constant(pool5), tf.constant(kernel6),
                                              tf.constant(b6)))[0, 3, 3]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_an_fc6_of_another_shape_is_refused_naming_the_layer(tmp_path):
    path = write_conv_layers_mat(str(tmp_path / "small_fc.mat"),
                                 {"fc6": (1, 1, 2, 2), "fc7": (1, 1, 2, 2)})
    with pytest.raises(FCNError, match=r"layer fc6 has kernel \(1, 1, 2, 2\).*expected "
                                       r"\(7, 7, 512, 4096\)"):
        vgg_weights.load_vgg19_fc(vgg_weights.load_mat(path), path)


# ---- the bilinear upsampling ---------------------------------------------------------------------

def test_bilinear_kernel_is_the_formula():
    # 1 - |t - (2f-1)/2| / f, worked by hand: f = 2 gives 1/4 3/4 3/4 1/4, f = 8 gives
    # 1/16 3/16 ... 15/16 15/16 ... 1/16.
    taps = {2: np.array([1, 3, 3, 1]) / 4.0,
            8: np.r_[np.arange(1, 16, 2), np.arange(15, 0, -2)] / 16.0}
    for factor, t in taps.items():
        kernel = utils.bilinear_kernel(factor, 3)
        assert kernel.shape == (2 * factor, 2 * factor, 3, 3)
        for c in range(3):
            np.testing.assert_allclose(kernel[:, :, c, c], np.outer(t, t), rtol=1e-6)
        off_diagonal = kernel * (1 - np.eye(3))[None, None]
        assert not off_diagonal.any()


def numpy_bilinear(x, factor):
    """x [h, w, c] upsampled by factor, half-pixel centres: output pixel y at (y + 0.5) / f - 0.5
    in the input. Returns (values, mask of the outputs whose two neighbours lie inside)."""
    def axis_weights(n):
        u = (np.arange(n * factor) + 0.5) / factor - 0.5
        q0 = np.floor(u).astype(int)
        a = u - q0
        inside = (q0 >= 0) & (q0 + 1 <= n - 1)
        m = np.zeros((n * factor, n))
        for y in np.flatnonzero(inside):
            m[y, q0[y]], m[y, q0[y] + 1] = 1 - a[y], a[y]
        return m, inside
    (mh, ih), (mw, iw) = axis_weights(x.shape[0]), axis_weights(x.shape[1])
    return np.einsum("yh,hwc,xw->yxc", mh, x, mw), ih[:, None] & iw[None, :]


@pytest.mark.parametrize("factor", [2, 8])
def test_the_upsamplings_interpolate_bilinearly(factor):
    x = np.random.RandomState(factor).standard_normal((2, 4, 5, 3)).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        fixed = sess.run(utils.bilinear_upsample(tf.constant(x), factor))
        learned_start = sess.run(utils.conv2d_transpose_strided(
            tf.constant(x), tf.constant(utils.bilinear_kernel(factor, 3)), None,
            output_shape=[2, 4 * factor, 5 * factor, 3], stride=factor))
    for n in range(2):
        expected, inside = numpy_bilinear(x[n], factor)
        np.testing.assert_allclose(fixed[n][inside], expected[inside], atol=1e-5)
        np.testing.assert_allclose(learned_start[n][inside], expected[inside], atol=1e-5)


# ---- the network --------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(64, 64), (96, 160)])
def test_the_fuses_have_the_shapes_of_their_skips(h, w):
    with tf.Graph().as_default() as graph:
        image = tf.placeholder(tf.float32, [None, None, None, 3])
        pred, logits = FCN.inference(image, 1.0, vgg=(None, MEAN_PIXEL), debug=False,
                                     num_classes=5, variant="paper")
        names = ["score_fr", "upscore2", "score_pool4", "fuse_pool4", "upscore_pool4",
                 "score_pool3", "fuse_pool3", "upscore8"]
        tensors = [graph.get_tensor_by_name("paper/%s:0" % name) for name in names]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = sess.run(tensors + [pred, logits], {image: np.zeros((2, h, w, 3))})
    shapes = dict(zip(names + ["pred", "logits"], (v.shape for v in values)))
    assert shapes == {
        "score_fr": (2, h // 32, w // 32, 5), "upscore2": (2, h // 16, w // 16, 5),
        "score_pool4": (2, h // 16, w // 16, 5), "fuse_pool4": (2, h // 16, w // 16, 5),
        "upscore_pool4": (2, h // 8, w // 8, 5), "score_pool3": (2, h // 8, w // 8, 5),
        "fuse_pool3": (2, h // 8, w // 8, 5), "upscore8": (2, h, w, 5),
        "pred": (2, h, w, 1), "logits": (2, h, w, 5)}


PAPER_LAYERS = ([name for name, _ in vgg_weights.VGG19_CONV_SHAPES]
                + ["fc6", "fc7", "score_fr", "score_pool4"])


def test_variable_names_follow_the_paper_and_none_is_the_references():
    with tf.Graph().as_default():
        image, _, keep = network.input_placeholders()
        FCN.inference(image, keep, vgg=(None, MEAN_PIXEL), debug=False, variant="paper")
        got = [v.op.name for v in tf.trainable_variables()]
    expected = (["paper/%s_%s" % (layer, part) for layer in PAPER_LAYERS for part in "wb"]
                + ["paper/upscore2_w", "paper/score_pool3_w", "paper/score_pool3_b",
                   "paper/upscore_pool4_w"])
    assert sorted(got) == sorted(expected)
    with open(os.path.join(HERE, "data", "original_variables.json")) as f:
        reference = {name for name, _ in json.load(f)}
    assert len(reference) == 44 and not reference & set(got)
    assert not any("upscore8" in name for name in got)  # the x8 is no variable


def test_x8_stays_fixed_while_the_x2_layers_learn(narrow_paper_vgg):
    rng = np.random.RandomState(3)
    images = rng.uniform(0, 255, (2, 64, 64, 3))
    labels = rng.randint(0, 5, (2, 64, 64, 1))
    with tf.Graph().as_default() as graph:
        tf.set_random_seed(0)
        model = network.Model(narrow_paper_vgg, True, classes=FIVE, variant="paper",
                              widths=NARROW)
        assert model.training_keep_probability == 0.5
        variables = {v.op.name: v for v in tf.global_variables()}
        upscore2, upscore_pool4 = variables["paper/upscore2_w"], variables["paper/upscore_pool4_w"]
        fuse_pool3 = graph.get_tensor_by_name("paper/fuse_pool3:0")
        probe = {fuse_pool3: rng.standard_normal((2, 8, 8, 5)), model.keep_probability: 1.0,
                 model.image: images}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            x2_before = sess.run([upscore2, upscore_pool4])
            x8_before = sess.run(model.logits, probe)
            for _ in range(3):
                sess.run(model.train_op, {model.image: images, model.annotation: labels,
                                          model.keep_probability: 0.5})
            x2_after = sess.run([upscore2, upscore_pool4])
            x8_after = sess.run(model.logits, probe)
    np.testing.assert_allclose(x2_before[0], utils.bilinear_kernel(2, 5))  # starts bilinear
    for before, after in zip(x2_before, x2_after):
        assert np.abs(after - before).max() > 1e-6
    # The logits as a function of fuse_pool3 (the x8 upsampling) did not change.
    np.testing.assert_array_equal(x8_before, x8_after)
    np.testing.assert_allclose(x8_before[0, 8:56, 8:56],
                               numpy_bilinear(probe[fuse_pool3][0], 8)[0][8:56, 8:56],
                               atol=1e-5)


def test_bf16_gives_logits_within_5_percent_of_fp32(paper_vgg):
    images = np.random.RandomState(0).uniform(0, 255, (2, 64, 96, 3))
    score_layers = ("score_fr_w", "score_pool4_w", "score_pool3_w")
    results = {}
    for precision in ("fp32", "bf16"):
        with tf.Graph().as_default() as graph:
            image, _, _ = network.input_placeholders()
            _, logits = FCN.inference(image, 1.0, vgg=paper_vgg, debug=False,
                                      precision=precision, num_classes=5, variant="paper")
            dtypes = {v.dtype.base_dtype for v in tf.global_variables()}
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                # The score layers start at zero; give them the same random values in both.
                rng = np.random.RandomState(1)
                for name in score_layers:
                    var = [v for v in tf.global_variables() if v.op.name == "paper/" + name][0]
                    var.load(rng.standard_normal(var.shape.as_list()) * 0.01, sess)
                results[precision] = sess.run(logits, {image: images})
        assert dtypes == {tf.float32}, graph
    fp32, bf16 = results["fp32"], results["bf16"]
    assert bf16.dtype == np.float32 and np.abs(fp32).max() > 0
    relative = np.abs(bf16 - fp32).max() / np.abs(fp32).max()
    print("paper bf16 vs fp32 logits: max |diff| / max |fp32| = %.4f" % relative)
    assert 0 < relative < 0.05


# ---- checkpoints of the other variant ------------------------------------------------------------

def _fake_checkpoint(folder, names):
    """A readable model.ckpt-7 holding small variables of these names (a variant's names, and
    its class-count bias of 151 entries): what the checks read, without the 140M parameters."""
    os.makedirs(folder, exist_ok=True)
    with tf.Graph().as_default():
        for name in names:
            tf.get_variable(name, shape=[151], initializer=tf.zeros_initializer())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, os.path.join(folder, "model.ckpt"), global_step=7,
                                  write_meta_graph=False)
    return os.path.join(folder, "model.ckpt-7")


REFERENCE_NAMES = ("inference/conv1_1_b", "inference/b8")
PAPER_NAMES = ("paper/conv1_1_b", "paper/score_fr_b")


def test_checkpoint_variant_is_read_from_its_variables(tmp_path):
    assert network.checkpoint_variant(_fake_checkpoint(str(tmp_path / "r"), REFERENCE_NAMES)) \
        == "reference"
    assert network.checkpoint_variant(_fake_checkpoint(str(tmp_path / "p"), PAPER_NAMES)) == "paper"


def _one_error_line(out):
    lines = [line for line in out.splitlines() if line.startswith("FCN.py: error:")]
    assert len(lines) == 1 and "Traceback" not in out, out[-2000:]
    return lines[0]


@pytest.mark.parametrize("mode", ["train", "visualize", "validate", "predict"])
def test_a_paper_checkpoint_is_refused_by_the_reference(mode, tmp_path, dirs, scene_data):
    logs = str(tmp_path / "logs")
    checkpoint = _fake_checkpoint(logs, PAPER_NAMES)
    extra = ["--image=" + os.path.join(scene_data, "ADEChallengeData2016", "images",
                                       "validation")] if mode == "predict" else []
    out = run_fcn("--mode=" + mode, "--logs_dir=" + logs, *dirs, *SMALL, *extra, expect=2)
    assert ("checkpoint %s is of the paper network, not of --variant=reference; pass "
            "--variant=paper" % checkpoint) in _one_error_line(out)


@pytest.mark.parametrize("mode", ["train", "validate"])
def test_a_reference_checkpoint_is_refused_by_the_paper(mode, tmp_path, dirs):
    logs = str(tmp_path / "logs")
    checkpoint = _fake_checkpoint(logs, REFERENCE_NAMES)
    out = run_fcn("--mode=" + mode, "--variant=paper", "--logs_dir=" + logs, *dirs, *SMALL,
                  expect=2)
    assert ("checkpoint %s is of the reference network, not of --variant=paper; pass "
            "--variant=reference" % checkpoint) in _one_error_line(out)


def test_init_from_the_other_variant_is_refused(tmp_path, dirs):
    checkpoint = _fake_checkpoint(str(tmp_path / "reference"), REFERENCE_NAMES)
    out = run_fcn("--mode=train", "--variant=paper", "--init_from=" + checkpoint,
                  "--logs_dir=" + str(tmp_path / "logs"), *dirs, *SMALL, expect=2)
    assert ("--init_from %s is of the reference network, not of --variant=paper; --init_from "
            "works within one network" % checkpoint) in _one_error_line(out)
    assert not os.path.exists(str(tmp_path / "logs" / "settings.json"))


def test_a_wrong_variant_flag_is_refused():
    settings = FCN.current_settings().replace(variant="fcn32s")
    with pytest.raises(FCNError, match=r"--variant=fcn32s: use reference or paper"):
        FCN.check_settings(settings)


# ---- learning, end to end ------------------------------------------------------------------------

STEPS = 120  # as tests/test_learning.py, on the same toy set, so that the figures compare


@pytest.fixture(scope="module")
def toy_data(module_tmp):
    data = str(module_tmp("toy"))
    make_scene_dataset(data, n_train=60, n_val=12, seed=5)
    return data


@pytest.mark.slow
def test_the_paper_variant_learns_the_toy_scenes(toy_data, full_paper_model_dir, tmp_path):
    logs = str(tmp_path / "logs")
    common = ["--variant=paper", "--data_dir=" + toy_data, "--model_dir=" + full_paper_model_dir,
              "--logs_dir=" + logs, "--image_size=64", "--batch_size=4"]
    out = run_fcn("--mode=train", "--max_iterations=%d" % STEPS, "--log_every=20",
                  "--save_every=%d" % STEPS, *common)
    assert "Loaded fc6      kernel (7, 7, 512, 4096)" in out
    losses = [float(x) for x in re.findall(r"step \d+ loss ([0-9.]+)", out)]
    run_fcn("--mode=validate", *common)
    with open(os.path.join(logs, "validation_metrics.json")) as f:
        result = json.load(f)
    confusion = np.array(result["confusion_matrix"])
    baseline = confusion.sum(axis=1).max() / confusion.sum()
    print("paper variant, %d steps: validation pixel accuracy %.4f, mean IoU %.4f (always the "
          "most frequent class: %.4f); losses %s"
          % (STEPS, result["pixel_accuracy"], result["mean_iou"], baseline, losses))
    assert baseline < 0.5
    assert result["pixel_accuracy"] > baseline + 0.3, (result["pixel_accuracy"], baseline)
    assert losses[-1] < losses[0] / 3, losses
    with open(os.path.join(logs, "settings.json")) as f:
        assert json.load(f)["variant"] == "paper"
    with open(os.path.join(logs, "classes.json")) as f:
        assert json.load(f)["variant"] == "paper"
    # The real checkpoint it wrote is refused by the reference.
    out = run_fcn("--mode=validate", "--variant=reference", *common[1:], expect=2)
    assert "is of the paper network, not of --variant=reference" in _one_error_line(out)
