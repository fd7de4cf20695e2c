"""The faster formulations of the head's layers compute the reference's function: checked
against numpy written from the definitions, and their gradients against TensorFlow's own ops."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import FCN
import network
import TensorflowUtils as utils
import vgg_weights


def numpy_conv2d_transpose_same(x, kernel, bias, stride):
    """The transposed convolution by its definition: input pixel (i, j) adds kernel tap (t, u)
    times its value to output pixel (stride*i + t - pad, stride*j + u - pad), with the padding
    TensorFlow's SAME gives an output of stride x the input (pad = (k - stride) // 2).
    kernel is [k, k, out, in], as tf.nn.conv2d_transpose takes it."""
    n, h, w, _ = x.shape
    k, _, channels_out, _ = kernel.shape
    pad = (k - stride) // 2
    out = np.zeros((n, stride * h + k, stride * w + k, channels_out))
    for i in range(h):
        for j in range(w):
            # [n, in] x [k, k, out, in] -> [n, k, k, out]
            contribution = np.einsum("nc,tuoc->ntuo", x[:, i, j, :], kernel)
            out[:, stride * i:stride * i + k, stride * j:stride * j + k, :] += contribution
    return out[:, pad:pad + stride * h, pad:pad + stride * w, :] + bias


def numpy_conv2d_same(x, kernel, bias):
    """Stride-1 SAME correlation by its definition; kernel [k, k, in, out], k odd."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    half = k // 2
    padded = np.pad(x, [(0, 0), (half, half), (half, half), (0, 0)])
    out = np.zeros((n, h, w, kernel.shape[3]))
    for t in range(k):
        for u in range(k):
            out += np.einsum("nhwc,co->nhwo", padded[:, t:t + h, u:u + w, :], kernel[t, u])
    return out + bias


def _run(build, arrays, grad_of=None):
    """Evaluate build(*constants of arrays) (and, with grad_of, the gradients of sum(output * g)
    for a fixed random g of shape grad_of) in a fresh graph."""
    with tf.Graph().as_default():
        tensors = [tf.constant(a) for a in arrays]
        out = build(*tensors)
        fetches = [out]
        if grad_of is not None:
            weights = tf.constant(np.random.RandomState(9).randn(*grad_of).astype(np.float32))
            fetches.append(tf.gradients(tf.reduce_sum(out * weights), tensors))
        with tf.Session() as sess:
            return sess.run(fetches)


@pytest.mark.parametrize("stride,shape", [(8, (2, 3, 4, 5)), (2, (1, 5, 3, 4)), (4, (2, 2, 2, 3))])
def test_the_interleaved_phase_groups_are_the_transposed_convolution(stride, shape):
    rng = np.random.RandomState(stride)
    n, h, w, channels_in = shape
    channels_out = 3
    x = rng.randn(*shape).astype(np.float32)
    kernel = rng.randn(2 * stride, 2 * stride, channels_out, channels_in).astype(np.float32)
    bias = rng.randn(channels_out).astype(np.float32)
    out_shape = (n, stride * h, stride * w, channels_out)

    expected = numpy_conv2d_transpose_same(x.astype(np.float64), kernel, bias, stride)
    got, grads = _run(lambda a, k, b: utils.interleave_phases(utils.phase_groups(a, k, b, stride)),
                      [x, kernel, bias], grad_of=out_shape)
    assert got.shape == out_shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

    # The gradients (those training uses) equal those of TensorFlow's own transposed convolution.
    reference, reference_grads = _run(
        lambda a, k, b: utils.conv2d_transpose_strided(a, k, b, out_shape, stride),
        [x, kernel, bias], grad_of=out_shape)
    np.testing.assert_allclose(reference, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    for name, g, r in zip(["x", "W", "b"], grads, reference_grads):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * np.abs(r).max(), err_msg=name)


def test_phase_groups_refuse_a_kernel_they_do_not_cover():
    with tf.Graph().as_default():
        x = tf.zeros([1, 2, 2, 4])
        with pytest.raises(ValueError, match="twice the stride"):
            utils.phase_groups(x, tf.zeros([4, 4, 3, 4]), tf.zeros([3]), stride=8)


def _size_unknown(x):
    """x, its height and width unknown to the graph (as predict builds it at any size)."""
    return tf.placeholder_with_default(x, [None, None, None, x.shape[3]])


# Maps smaller than the kernel (taps that see only padding), oblong maps, one row; with the
# size known to the graph (one product per tap) and unknown (one product over patches).
@pytest.mark.parametrize("size_known", [True, False])
@pytest.mark.parametrize("k,shape", [(7, (2, 7, 7, 6)), (3, (1, 4, 6, 5)), (1, (2, 3, 3, 8)),
                                     (7, (1, 2, 2, 4)), (7, (1, 14, 9, 3)), (5, (2, 1, 3, 2))])
def test_conv2d_as_matmul_is_the_same_convolution(k, shape, size_known):
    rng = np.random.RandomState(k)
    x = rng.randn(*shape).astype(np.float32)
    kernel = rng.randn(k, k, shape[3], 4).astype(np.float32)
    bias = rng.randn(4).astype(np.float32)
    out_shape = shape[:3] + (4,)

    expected = numpy_conv2d_same(x.astype(np.float64), kernel, bias)
    got, grads = _run(lambda a, w, b: utils.conv2d_as_matmul(a if size_known else _size_unknown(a),
                                                             w, b),
                      [x, kernel, bias], grad_of=out_shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    _, reference_grads = _run(utils.conv2d_basic, [x, kernel, bias], grad_of=out_shape)
    for name, g, r in zip(["x", "W", "b"], grads, reference_grads):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * np.abs(r).max(), err_msg=name)


def test_tap_window_is_the_outputs_a_tap_reads_inside_the_map():
    # A side of 2, a 7x7 kernel's offsets -3..3 (input = output + offset): output 1 reads
    # input 0 at offset -1; outputs 0, 1 read inputs 0, 1 at 0; output 0 reads input 1 at 1.
    assert utils.tap_window(-1, 2) == (1, 0, 1)
    assert utils.tap_window(0, 2) == (0, 0, 2)
    assert utils.tap_window(1, 2) == (0, 1, 1)
    for offset in (-3, -2, 2, 3):
        assert utils.tap_window(offset, 2) is None
    assert utils.tap_window(-3, 7) == (3, 0, 4) and utils.tap_window(3, 7) == (0, 3, 4)


@pytest.mark.parametrize("side,products", [(2, 9), (7, 49), (None, 1)])
def test_conv2d_as_matmul_multiplies_only_the_taps_that_reach_the_map(side, products):
    # 7x7 kernel: on a 2x2 map only offsets -1..1 reach it (3 x 3 taps); on 7x7 every tap
    # does; a map of unknown size is one product over patches.
    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [None, side, side, 3])
        utils.conv2d_as_matmul(x, tf.zeros([7, 7, 3, 4]), tf.zeros([4]))
    assert [op.type for op in graph.get_operations()].count("MatMul") == products


def numpy_cross_entropy(logits, labels):
    """-log softmax(logits)[label] per pixel and its gradient softmax - one_hot, in float64
    from the definitions (log-sum-exp shifted by the maximum)."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=-1))
    picked = np.take_along_axis(shifted, labels[..., None], axis=-1)[..., 0]
    softmax = np.exp(shifted - log_sum[..., None])
    one_hot = np.eye(logits.shape[-1])[labels]
    return log_sum - picked, softmax - one_hot


def test_sparse_cross_entropy_is_the_softmax_cross_entropy():
    rng = np.random.RandomState(5)
    logits = (4 * rng.randn(2, 3, 4, 7)).astype(np.float32)
    # Pixels where the label's softmax underflows float32 (its logit 200 below another):
    # -log of it would be infinite; the loss is 200 (and 300).
    logits[0, 0, 0] = 0.0
    logits[0, 0, 0, 3] = 200.0
    logits[1, 2, 3] = np.linspace(-150, 150, 7)
    labels = rng.randint(0, 7, (2, 3, 4)).astype(np.int32)
    labels[0, 0, 0] = 1
    labels[1, 2, 3] = 0
    upstream = rng.rand(2, 3, 4).astype(np.float32)
    with tf.Graph().as_default():
        logits_t = tf.constant(logits)
        losses = utils.sparse_cross_entropy(logits_t, tf.constant(labels))
        grad = tf.gradients(losses, logits_t, grad_ys=tf.constant(upstream))[0]
        with tf.Session() as sess:
            got_losses, got_grad = sess.run([losses, grad])
    expected_losses, expected_softmax_grad = numpy_cross_entropy(logits, labels)
    assert got_losses.shape == (2, 3, 4) and np.all(np.isfinite(got_losses))
    assert got_losses[0, 0, 0] >= 200 and got_losses[1, 2, 3] >= 300
    np.testing.assert_allclose(got_losses, expected_losses, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_grad, expected_softmax_grad * upstream[..., None],
                               rtol=1e-5, atol=1e-6)


def test_bf16_bias_gradient_is_summed_in_float32():
    # 64x64x8 values near 1: a bfloat16 accumulator stops growing near 256 (its spacing there
    # is 2), where the true sum is 32,768. TensorFlow's BiasAddGrad does that on the CPU.
    rng = np.random.RandomState(3)
    upstream = (1.0 + 0.1 * rng.randn(8, 64, 64, 2)).astype(np.float32)
    with tf.Graph().as_default():
        bias = tf.constant(np.zeros(2, np.float32))
        x = tf.zeros([8, 64, 64, 2], tf.bfloat16)
        out = utils.bias_add(x, tf.cast(bias, tf.bfloat16))
        grad = tf.gradients(out, bias, grad_ys=tf.cast(upstream, tf.bfloat16))[0]
        with tf.Session() as sess:
            got = sess.run(grad)
    expected = upstream.astype(np.float64).sum(axis=(0, 1, 2))
    # bfloat16 keeps 8 significant bits: the sum itself can be off by 2^-8 of its value.
    np.testing.assert_allclose(got, expected, rtol=2 ** -7)


def test_inference_refuses_a_size_that_is_not_a_multiple_of_32(narrow_vgg):
    with tf.Graph().as_default():
        image, _, _ = network.input_placeholders()
        pred, _, _ = network.fcn8s(image, 1.0, narrow_vgg[:2], widths=narrow_vgg[2])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of 32"):
                sess.run(pred, {image: np.zeros((1, 64, 80, 3))})


def test_the_head_computes_what_the_reference_builds(vgg):
    """In the graph FCN.inference builds, fc6 and conv_t3 give what the reference's ops
    (tf.nn.conv2d with W6, tf.nn.conv2d_transpose with W_t3) give on the same tensors."""
    images = np.random.RandomState(5).uniform(0, 255, (2, 64, 96, 3))
    with tf.Graph().as_default() as graph:
        image, _, _ = network.input_placeholders()
        _, logits = FCN.inference(image, 1.0, vgg=vgg, debug=False)
        tensor = lambda name: graph.get_tensor_by_name("inference/%s:0" % name)
        fuse_2 = tensor("fuse_2")
        pool5, = [op.outputs[0] for op in graph.get_operations() if op.type == "MaxPool"]
        with tf.variable_scope("inference", reuse=True):
            W6, b6, W_t3, b_t3 = (tf.get_variable(n) for n in ("W6", "b6", "W_t3", "b_t3"))
        shape = tf.shape(image)
        reference_logits = tf.nn.bias_add(tf.nn.conv2d_transpose(
            fuse_2, W_t3, tf.stack([shape[0], shape[1], shape[2], FCN.NUM_OF_CLASSESS]),
            strides=8, padding="SAME"), b_t3)
        reference_relu6 = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(pool5, W6, 1, "SAME"), b6))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            got, expected, relu6, expected_relu6 = sess.run(
                [logits, reference_logits, tensor("relu6"), reference_relu6], {image: images})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(relu6, expected_relu6, rtol=1e-4,
                               atol=1e-4 * np.abs(expected_relu6).max())


def test_phase_order_puts_each_label_where_phase_groups_put_its_pixel():
    stride, half = 8, 4
    labels = np.random.RandomState(2).randint(0, 1000, (2, 16, 24)).astype(np.int32)
    with tf.Graph().as_default():
        groups = utils.phase_order(tf.constant(labels), stride)
        back = utils.interleave_phases([tf.expand_dims(group, -1) for group in groups])
        with tf.Session() as sess:
            got, got_back = sess.run([groups, back])
    for index, (g_row, g_col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        assert got[index].shape == (2, 2, 3, half, half)
        for n, i, j, r, c in np.ndindex(*got[index].shape):
            assert got[index][n, i, j, r, c] == labels[n, stride * i + half * g_row + r,
                                                       stride * j + half * g_col + c]
    np.testing.assert_array_equal(got_back[..., 0], labels)


@pytest.mark.parametrize("ignore_label,axis", [(None, None), (255, None), (255, [1, 2])])
def test_the_networks_loss_and_prediction_are_those_of_its_logits(narrow_vgg, ignore_label,
                                                                   axis):
    # The reference network's loss and argmax work on conv_t3's phase groups: they must equal
    # the cross-entropy and argmax of the interleaved logits, values and gradients.
    rng = np.random.RandomState(6)
    images = rng.uniform(0, 255, (2, 64, 96, 3))
    annotation = rng.randint(0, FCN.NUM_OF_CLASSESS, (2, 64, 96, 1)).astype(np.int32)
    if ignore_label is not None:
        annotation[0, :20] = ignore_label
    with tf.Graph().as_default():
        image, annotation_t, _ = network.input_placeholders()
        pred, logits, groups = network.fcn8s(image, 1.0, narrow_vgg[:2], widths=narrow_vgg[2])
        loss = network.pixel_loss(logits, annotation_t, ignore_label, axis, phase_groups=groups)
        # Without the phase groups: the loss of the interleaved tensor itself.
        plain = FCN.pixel_loss(logits, annotation_t, ignore_label, axis)
        with tf.variable_scope("inference", reuse=True):
            head = [tf.get_variable(name) for name in ("W_t3", "b_t3", "W8")]
        grads, plain_grads = (tf.gradients(tf.reduce_sum(l), head) for l in (loss, plain))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            got = sess.run([pred, logits, loss, grads, plain_grads],
                           {image: images, annotation_t: annotation})
    got_pred, got_logits, got_loss, got_grads, expected_grads = got
    np.testing.assert_array_equal(got_pred[..., 0], got_logits.argmax(axis=3))
    labels = annotation[..., 0]
    counted = np.ones(labels.shape) if ignore_label is None else labels != ignore_label
    losses, _ = numpy_cross_entropy(got_logits, np.where(counted, labels, 0))
    pixel_axes = None if axis is None else tuple(axis)
    expected = (losses * counted).sum(axis=pixel_axes) / counted.sum(axis=pixel_axes)
    np.testing.assert_allclose(got_loss, expected, rtol=1e-5)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-4,
                                   atol=1e-5 * np.abs(expected_grad).max())


def test_the_reference_network_gives_its_phase_groups():
    # The groups come with the network's outputs (the paper's network has none): a loss built
    # from them is asked for by name, never found from the logits.
    with tf.Graph().as_default():
        image, _, _ = network.input_placeholders()
        vgg = (None, vgg_weights.VGG19_MEAN_PIXEL)
        groups = network.fcn8s(image, None, vgg).phase_groups
        assert [group.shape.as_list() for group in groups] == [[None, None, None, 4, 4, 151]] * 4
    with tf.Graph().as_default():
        image, _, _ = network.input_placeholders()
        assert network.fcn8s(image, None, vgg, variant=network.PAPER).phase_groups is None


def _random_op_count(graph):
    return sum(op.type == "RandomUniform" for op in graph.get_operations())


@pytest.mark.parametrize("variant", [network.REFERENCE, network.PAPER])
def test_a_graph_that_only_predicts_has_no_dropout_and_the_same_values(narrow_vgg, variant):
    # The same weights in a graph with dropout fed keep 1 and in one built with keep_prob None.
    weights, mean_pixel, widths = narrow_vgg
    if variant == network.PAPER:
        rng = np.random.RandomState(8)
        weights = dict(weights, **{name: ((rng.standard_normal(shape) * 0.01).astype(np.float32),
                                          np.zeros(shape[3], np.float32))
                                   for name, shape in vgg_weights.fc_shapes(widths)})
    images = np.random.RandomState(7).uniform(0, 255, (2, 64, 64, 3))
    results, values = [], None
    for keep in ("placeholder", None):
        with tf.Graph().as_default() as graph:
            image, _, keep_prob = network.input_placeholders()
            pred, logits, _ = network.fcn8s(image, keep_prob if keep else None,
                                            (weights, mean_pixel), variant=variant,
                                            widths=widths)
            random_ops = _random_op_count(graph)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                if values is None:
                    values = sess.run(tf.trainable_variables())
                else:
                    for variable, value in zip(tf.trainable_variables(), values):
                        variable.load(value, sess)
                results.append((random_ops, sess.run([pred, logits],
                                                     {image: images, keep_prob: 1.0})))
    (with_dropout, (pred_a, logits_a)), (without, (pred_b, logits_b)) = results
    assert (with_dropout, without) == (2, 0)  # fc6's and fc7's dropout, then none
    np.testing.assert_array_equal(logits_b, logits_a)
    np.testing.assert_array_equal(pred_b, pred_a)


def test_only_a_training_model_draws_dropout(vgg):
    for training, expected in ((True, 2), (False, 0)):
        with tf.Graph().as_default() as graph:
            network.Model(vgg, training, image_size=64)
            assert _random_op_count(graph) == expected
