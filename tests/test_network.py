"""The FCN-8s graph: shapes, variable names of the original implementation, checkpoints,
learning."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import FCN
import network
import vgg_weights
from tests.make_vgg_mat import NARROW

HERE = os.path.dirname(os.path.abspath(__file__))


def build(vgg, debug=False, with_train_op=True, widths=None):
    """A fresh graph: placeholders with N, H, W unknown, the network, its loss and Adam;
    through the reference's API (FCN.inference) at VGG-19's widths, else at these widths."""
    graph = tf.Graph()
    with graph.as_default():
        image, annotation, keep_prob = network.input_placeholders()
        if widths is None:
            pred, logits = FCN.inference(image, keep_prob, vgg=vgg, debug=debug)
        else:
            pred, logits, _ = network.fcn8s(image, keep_prob, vgg, debug=debug, widths=widths)
        loss = FCN.pixel_loss(logits, annotation)
        train_op = None
        if with_train_op:
            train_op = FCN.train(loss, tf.trainable_variables(), learning_rate=1e-4, debug=debug)
    return graph, dict(image=image, annotation=annotation, keep_prob=keep_prob, pred=pred,
                       logits=logits, loss=loss, train_op=train_op)


@pytest.fixture(scope="module")
def net(vgg):
    graph, t = build(vgg)
    with graph.as_default():
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
    yield graph, t, sess
    sess.close()


@pytest.mark.parametrize("n,h,w", [(2, 64, 64), (1, 96, 160), (3, 64, 64)])
def test_logits_and_prediction_shapes(net, n, h, w):
    graph, t, sess = net
    images = np.random.RandomState(0).uniform(0, 255, (n, h, w, 3))
    pred, logits = sess.run([t["pred"], t["logits"]],
                            {t["image"]: images, t["keep_prob"]: 1.0})
    assert logits.shape == (n, h, w, FCN.NUM_OF_CLASSESS)
    assert pred.shape == (n, h, w, 1)
    np.testing.assert_array_equal(pred[..., 0], np.argmax(logits, axis=3))


def test_static_shapes_keep_the_class_axis(net):
    _, t, _ = net
    assert t["logits"].shape.as_list() == [None, None, None, FCN.NUM_OF_CLASSESS]
    assert t["pred"].shape.as_list() == [None, None, None, 1]


def test_variable_names_and_shapes_equal_the_original_implementation(net):
    graph, _, _ = net
    with open(os.path.join(HERE, "data", "original_variables.json")) as f:
        expected = [(name, shape) for name, shape in json.load(f)]
    got = [(v.op.name, v.shape.as_list()) for v in graph.get_collection("trainable_variables")]
    assert got == expected


def test_adam_slot_names_are_those_tf1_wrote(net):
    graph, _, _ = net
    names = {v.op.name for v in graph.get_collection("variables")}
    assert {"beta1_power", "beta2_power", "inference/W_t3/Adam", "inference/W_t3/Adam_1",
            "inference/conv1_1_w/Adam"} <= names
    # conv5_4 is built but feeds nothing, so it has no gradient and Adam gives it no slots:
    # 44 variables, 2 x 42 slots and the two beta powers.
    assert "inference/conv5_4_w/Adam" not in names
    assert len(names) == 44 + 2 * 42 + 2


def test_dropout_is_identity_at_keep_prob_1_and_random_below(net):
    _, t, sess = net
    images = np.random.RandomState(1).uniform(0, 255, (1, 64, 64, 3))
    a, b = (sess.run(t["logits"], {t["image"]: images, t["keep_prob"]: 1.0}) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    c, d = (sess.run(t["logits"], {t["image"]: images, t["keep_prob"]: 0.5}) for _ in range(2))
    assert not np.allclose(c, d)


def test_mean_pixel_is_subtracted_before_the_first_convolution(narrow_vgg):
    weights, mean_pixel, widths = narrow_vgg
    with tf.Graph().as_default():
        image = tf.placeholder(tf.float32, [1, 32, 32, 3])
        network.fcn8s(image, 1.0, (weights, mean_pixel), widths=widths)
        conv1_1 = tf.get_default_graph().get_tensor_by_name("inference/Conv2D:0")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            # An image equal to the mean pixel everywhere is all zeros after the subtraction.
            flat = np.broadcast_to(mean_pixel.astype(np.float32), (1, 32, 32, 3))
            out = sess.run(conv1_1, {image: flat})
    np.testing.assert_allclose(out, 0.0, atol=1e-3)


def test_a_checkpoint_restores_into_a_fresh_graph(narrow_vgg, tmp_path):
    ckpt = str(tmp_path / "model.ckpt")
    rng = np.random.RandomState(2)
    images = rng.uniform(0, 255, (1, 64, 64, 3))
    labels = rng.randint(0, FCN.NUM_OF_CLASSESS, (1, 64, 64, 1))
    vgg, widths = narrow_vgg[:2], narrow_vgg[2]

    graph, t = build(vgg, widths=widths)
    with graph.as_default(), tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        feed = {t["image"]: images, t["annotation"]: labels, t["keep_prob"]: 1.0}
        sess.run(t["train_op"], feed)  # so that Adam's slots and beta powers are not initial
        names = [v.op.name for v in tf.global_variables()]
        saved = dict(zip(names, sess.run(tf.global_variables())))
        logits_before = sess.run(t["logits"], feed)
        tf.train.Saver().save(sess, ckpt)

    names_in_file = {name for name, _ in tf.train.list_variables(ckpt)}
    assert names_in_file == set(saved)

    graph2, t2 = build(vgg, widths=widths)
    with graph2.as_default(), tf.Session() as sess:
        # Re-initialise to different values first, so that only the restore can make them equal.
        sess.run(tf.global_variables_initializer())
        tf.train.Saver().restore(sess, ckpt)
        variables = tf.global_variables()
        for v, value in zip(variables, sess.run(variables)):
            np.testing.assert_array_equal(value, saved[v.op.name], err_msg=v.op.name)
        logits_after = sess.run(t2["logits"], {t2["image"]: images, t2["keep_prob"]: 1.0})
    np.testing.assert_array_equal(logits_before, logits_after)


def test_a_few_adam_steps_on_one_batch_lower_the_loss(narrow_vgg):
    # The narrow network fits one batch more slowly than the full one did in 6 steps.
    steps = 20
    rng = np.random.RandomState(4)
    images = rng.uniform(0, 255, (2, 64, 64, 3))
    labels = np.zeros((2, 64, 64, 1), np.int32)
    labels[:, 16:48, 16:48] = 3
    graph, t = build(narrow_vgg[:2], widths=narrow_vgg[2])
    with graph.as_default(), tf.Session() as sess:
        tf.set_random_seed(0)
        sess.run(tf.global_variables_initializer())
        feed = {t["image"]: images, t["annotation"]: labels, t["keep_prob"]: 1.0}
        losses = [sess.run([t["loss"], t["train_op"]], feed)[0] for _ in range(steps)]
        final = sess.run(t["loss"], feed)
    assert np.all(np.isfinite(losses))
    assert final < 0.5 * losses[0], losses + [final]


def test_debug_adds_the_reference_summaries(vgg):
    graph, _ = build(vgg, debug=True)
    names = [op.name for op in graph.get_operations()
             if op.type in ("HistogramSummary", "ScalarSummary")]
    assert any("relu1_1/activation" in n for n in names)
    assert any("relu6/activation" in n for n in names)
    assert any("relu5_4/sparsity" in n for n in names)
    assert any("W_t3/gradient" in n for n in names)
    assert any(n.startswith("inference/conv1_1_w") and "gradient" in n for n in names)


def test_no_summaries_without_debug(net):
    graph, _, _ = net
    assert not [op for op in graph.get_operations() if op.type.endswith("Summary")]


@pytest.mark.parametrize("mode,resize,fixed", [("train", False, True), ("validate", False, True),
                                              ("predict", True, True), ("predict", False, False)])
def test_a_mode_that_feeds_resized_images_fixes_their_size_and_fc6_skips_padding(
        mode, resize, fixed):
    # As the reference's placeholders: [None, 96, 96, 3] where every image fed is resized to
    # --image_size; predict keeps each image's size. fc6 over patches only at unknown sizes.
    settings = FCN.current_settings().replace(mode=mode, resize=resize, image_size=96)
    with tf.Graph().as_default() as graph:
        model = network.Model((None, vgg_weights.VGG19_MEAN_PIXEL), mode == "train",
                              image_size=network.fed_image_size(settings))
    side = 96 if fixed else None
    assert model.image.shape.as_list() == [None, side, side, 3]
    assert model.annotation.shape.as_list() == [None, side, side, 1]
    op_types = {op.type for op in graph.get_operations()}
    assert ("ExtractImagePatches" in op_types) == (not fixed)


def test_a_checkpoints_widths_are_read_from_its_variables(trained):
    assert network.checkpoint_widths(tf.train.latest_checkpoint(trained[0]),
                                     network.REFERENCE) == NARROW


def test_the_widths_of_weights_are_their_kernels_and_fc6(narrow_vgg):
    weights, _, widths = narrow_vgg
    assert network.widths_of(weights) == (widths.blocks, 4096)  # fc6 not among them: the default
    with_fc = dict(weights, fc6=(np.zeros((7, 7, 64, 64), np.float32), np.zeros(64, np.float32)))
    assert network.widths_of(with_fc) == NARROW


def test_importing_fcn_parses_nothing_and_builds_nothing():
    code = ("import FCN, tensorflow.compat.v1 as tf; "
            "print(FCN.FLAGS.is_parsed(), len(tf.get_default_graph().get_operations()))")
    out = subprocess.run([sys.executable, "-c", code, "--mode=bogus"], cwd=os.path.dirname(HERE),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["False", "0"]
