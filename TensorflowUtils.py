"""Graph helpers for the networks (tensorflow.compat.v1): variables, convolutions, the x8
upsampling computed phase by phase, the cross-entropy, and the --debug summaries.

Each helper computes what its TensorFlow counterpart does (the tests compare them with numpy and
with TensorFlow's own ops, values and gradients); some are rewritten for the CPU's speed, whose
measurements are in docs/performance.md.
"""
import numpy as np
import tensorflow.compat.v1 as tf


# ----------------------------------------------------------------------------------------------
# Variables and layers (graph code)
# ----------------------------------------------------------------------------------------------

def get_variable(weights, name):
    """A variable initialised from a numpy array (the pretrained VGG weights)."""
    init = tf.constant_initializer(weights)
    return tf.get_variable(name=name, initializer=init, shape=weights.shape, dtype=tf.float32)


def weight_variable(shape, stddev=0.02, name=None):
    """A new weight, truncated normal with stddev 0.02 as in the reference."""
    return tf.get_variable(name, shape=shape, dtype=tf.float32,
                           initializer=tf.truncated_normal_initializer(stddev=stddev))


def large_variable(array, name):
    """A variable initialised from a numpy array without copying it into the graph: its initial
    value comes from a Python function, run by the initializer. fc6's 411 MB as a constant would
    be copied into the GraphDef and written with it into TensorBoard's events file every run."""
    initial = tf.numpy_function(lambda: array, [], tf.float32, stateful=False,
                                name=name + "_initial")
    initial.set_shape(array.shape)
    return tf.get_variable(name, initializer=initial)


def zeros_variable(shape, name=None):
    return tf.get_variable(name, shape=shape, dtype=tf.float32,
                           initializer=tf.zeros_initializer())


def bias_variable(shape, name=None):
    """A new bias, zeros as in the reference."""
    return zeros_variable(shape, name=name)


def _as_compute_dtype(x, *params):
    """The float32 variables cast to the activations' dtype (bfloat16 under --precision=bf16):
    the variables, their gradients and Adam stay float32, the arithmetic follows x."""
    return [p if p.dtype.base_dtype == x.dtype.base_dtype else tf.cast(p, x.dtype) for p in params]


@tf.RegisterGradient("FCNBiasAddGradSummed")
def _bias_add_grad_summed(op, grad):
    """BiasAdd's gradient with the bias term as a reduce_sum, which accumulates bfloat16 in
    float32. TensorFlow's own BiasAddGrad kernel accumulates bfloat16 in bfloat16 on the CPU,
    which loses nearly all of a large sum: every bias of a bf16 run learned from a gradient off
    by orders of magnitude (docs/performance.md)."""
    if op.get_attr("data_format") != b"NHWC":
        raise ValueError("FCNBiasAddGradSummed handles NHWC only")
    rank = tf.rank(grad)
    return grad, tf.reduce_sum(grad, axis=tf.range(rank - 1))


def bias_add(x, bias):
    """tf.nn.bias_add, with the bias gradient summed accurately when x is a 16-bit float."""
    if x.dtype.base_dtype not in (tf.bfloat16, tf.float16):
        return tf.nn.bias_add(x, bias)
    with tf.get_default_graph().gradient_override_map({"BiasAdd": "FCNBiasAddGradSummed"}):
        return tf.nn.bias_add(x, bias)


def conv2d_basic(x, W, bias):
    W, bias = _as_compute_dtype(x, W, bias)
    conv = tf.nn.conv2d(x, W, strides=[1, 1, 1, 1], padding="SAME")
    return bias_add(conv, bias)


def conv2d_as_matmul(x, W, bias):
    """conv2d_basic's function (stride 1, SAME) as matrix products, for the head's layers: a
    few pixels with thousands of channels (fc6: a 7x7 kernel on 7x7 maps, 512 -> 4096), where
    the CPU's convolution kernels are slow and a GEMM is not (docs/performance.md).
    W keeps its [k, k, in, out] shape and variable (the same checkpoints).

    Where x's height and width are known when the graph is built (training, validate,
    visualize, predict --resize: network.fed_image_size), a k x k kernel is one product per tap
    over only the output pixels whose input under that tap lies inside x: with SAME padding
    the others multiply zeros (at 224x224, 43% of fc6's multiply-adds), and a tap that sees
    only padding is left out. Otherwise (predict at each image's size, the export) it is one
    product over the k x k patches of x."""
    W, bias = _as_compute_dtype(x, W, bias)
    k = W.shape.as_list()[0]
    height, width = x.shape.as_list()[1:3]
    if k == 1 or height is None or width is None:
        return _conv2d_over_patches(x, W, bias)
    return _conv2d_per_tap(x, W, bias, height, width)


def _conv2d_over_patches(x, W, bias):
    k, _, channels_in, channels_out = W.shape.as_list()
    shape = tf.shape(x)
    if k > 1:
        x = tf.image.extract_patches(x, sizes=[1, k, k, 1], strides=[1, 1, 1, 1],
                                     rates=[1, 1, 1, 1], padding="SAME")
    # W's row-major reshape to [k*k*in, out] orders its rows as the patches order their values.
    y = tf.matmul(tf.reshape(x, [-1, k * k * channels_in]), tf.reshape(W, [-1, channels_out]))
    y = bias_add(y, bias)
    return tf.reshape(y, tf.stack([shape[0], shape[1], shape[2], channels_out]))


def _conv2d_per_tap(x, W, bias, height, width):
    k, _, channels_in, channels_out = W.shape.as_list()
    n = tf.shape(x)[0]
    before = (k - 1) // 2  # SAME padding's rows (and columns) before the input, stride 1
    # One unstack, not W[row, col] per tap: each strided slice's gradient is a dense copy of the
    # whole kernel (fc6's is 411 MB, 49 of them alive at once), the unstack's one stacked one.
    taps = tf.unstack(tf.reshape(W, [k * k, channels_in, channels_out]))
    terms = []
    for row in range(k):
        rows = tap_window(row - before, height)
        for col in range(k):
            cols = tap_window(col - before, width)
            if rows is None or cols is None:
                continue  # this tap sees only padding
            (out_row, in_row, n_rows), (out_col, in_col, n_cols) = rows, cols
            window = x[:, in_row:in_row + n_rows, in_col:in_col + n_cols, :]
            product = tf.matmul(tf.reshape(window, [-1, channels_in]), taps[row * k + col])
            product = tf.reshape(product, tf.stack([n, n_rows, n_cols, channels_out]))
            terms.append(tf.pad(product, [[0, 0], [out_row, height - out_row - n_rows],
                                          [out_col, width - out_col - n_cols], [0, 0]]))
    return bias_add(tf.add_n(terms), bias)


def tap_window(offset, size):
    """(first output index, first input index, length) of the outputs that a kernel tap at
    `offset` (input index = output index + offset) reads from inside a side of `size`, or None
    when it reads only padding."""
    first_out = max(0, -offset)
    length = min(size, size - offset) - first_out
    return (first_out, first_out + offset, length) if length > 0 else None


def conv2d_transpose_strided(x, W, b, output_shape, stride=2):
    """Learned upsampling: W is [k, k, out_channels, in_channels], as tf.nn.conv2d_transpose wants.
    b None: no bias (the paper's upsampling layers have none)."""
    if b is None:
        W, = _as_compute_dtype(x, W)
    else:
        W, b = _as_compute_dtype(x, W, b)
    conv = tf.nn.conv2d_transpose(x, W, output_shape, strides=[1, stride, stride, 1],
                                  padding="SAME")
    return conv if b is None else bias_add(conv, b)


def bilinear_kernel(factor, channels):
    """The [2f, 2f, channels, channels] kernel (f = factor) with which a stride-f transposed
    convolution, SAME padding, interpolates each channel bilinearly (half-pixel centres: output
    pixel y sits at (y + 0.5) / f - 0.5 in the input); zero between different channels. Each
    axis weighs tap t by 1 - |t - (2f - 1) / 2| / f, the distance in input pixels."""
    taps = 1.0 - np.abs(np.arange(2 * factor) - (2 * factor - 1) / 2.0) / factor
    kernel = np.zeros((2 * factor, 2 * factor, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(taps, taps)[:, :, None]
    return kernel


def bilinear_upsample(x, factor):
    """x [N,H,W,C] -> [N, f*H, f*W, C] interpolated bilinearly with the fixed bilinear_kernel
    (a constant: nothing to train). Each channel is upsampled on its own: the channels go into
    the batch axis, so that the kernel is [2f, 2f, 1, 1], not C x C mostly zeros."""
    channels = x.shape.as_list()[3]
    shape = tf.shape(x)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    planes = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), tf.stack([n * c, h, w, 1]))
    kernel = tf.constant(bilinear_kernel(factor, 1), dtype=x.dtype)
    # As phase convolutions (phase_groups), which give each pixel the same bits whatever the
    # map's size, so that predict's tiles equal one pass (tiled_network.py);
    # tf.nn.conv2d_transpose's differ in the last bits from one size to another.
    upsampled = interleave_phases(phase_groups(planes, kernel, tf.zeros([1], x.dtype), factor))
    upsampled = tf.transpose(tf.reshape(upsampled, tf.stack([n, c, factor * h, factor * w])),
                             [0, 2, 3, 1])
    upsampled.set_shape([None, None, None, channels])
    return upsampled


def phase_groups(x, W, b, stride):
    """conv2d_transpose_strided(x, W, b, [N, stride*H, stride*W, C], stride) for a kernel of
    side 2*stride (the head's 16x16 stride-8 conv_t3), as four dense 2x2 convolutions over the
    same W, faster on the CPU; interleave_phases puts their outputs in place. Returns four
    tensors [N, H, W, half, half, C] (half = stride / 2), the groups (g_row, g_col) = (0, 0),
    (0, 1), (1, 0), (1, 1), whose element [n, i, j, r', r'_col] is the output pixel
    [n, stride*i + half*g_row + r', stride*j + half*g_col + r'_col]. A per-pixel computation
    (the argmax, the loss) can be done on them before or without the interleave (phase_order
    arranges labels the same way).

    Why it is equal. With SAME padding the transposed convolution puts input pixel q's kernel
    tap t at output row y = stride*q + t - stride/2. Write y = stride*i + r (r the phase) and
    r = half*g + r' (g in {0, 1}): the taps reaching y come from the two input rows
    q = i - 1 + g + d (d in {0, 1}), tap t = stride*(1 - d) + half*(1 - g) + r'. So for each
    (g_row, g_col) the outputs of its half x half phases are one 2x2 convolution of x, padded
    one row before for g = 0 or after for g = 1, with a kernel that is a block permutation of W
    (every tap used exactly once).
    """
    W, b = _as_compute_dtype(x, W, b)
    side, _, channels_out, channels_in = W.shape.as_list()
    if side != 2 * stride or stride % 2:
        raise ValueError("phase_groups needs an even stride and a kernel of twice the "
                         "stride, not %dx%d with stride %d" % (side, side, stride))
    half = stride // 2
    # W's rows t = stride*a + half*b + r' with a = 1 - d, b = 1 - g; the same for columns.
    blocks = tf.reshape(W, [2, 2, half, 2, 2, half, channels_out, channels_in])
    # One axis at a time: OpenVINO cannot read a ReverseV2 of several axes.
    for axis in (0, 1, 3, 4):
        blocks = tf.reverse(blocks, axis=[axis])  # d, g, r', d_col, g_col, r'_col, out, in
    phase_bias = tf.tile(b, [half * half])
    shape = tf.shape(x)
    groups = []
    # unstack, then 6-D transposes: one 8-D transpose of W, or slicing each group out (whose
    # gradients are zero-filled copies), measured slower (docs/performance.md).
    for g_row, row_blocks in enumerate(tf.unstack(blocks, axis=1)):
        for g_col, block in enumerate(tf.unstack(row_blocks, axis=3)):
            # block: d, r', d_col, r'_col, out, in -> kernel: d, d_col, in, (r', r'_col, out)
            kernel = tf.reshape(tf.transpose(block, [0, 2, 5, 1, 3, 4]),
                                [2, 2, channels_in, half * half * channels_out])
            # A pad per group rather than one pad and four slices: a slice's gradient is a
            # zero-filled copy, a pad's is a slice; and a VALID convolution keeps the gradients
            # on oneDNN, where explicit padding sends them to Eigen (far slower for bf16).
            padded = tf.pad(x, [[0, 0], [1 - g_row, g_row], [1 - g_col, g_col], [0, 0]])
            scores = bias_add(tf.nn.conv2d(padded, kernel, strides=1, padding="VALID"),
                              phase_bias)
            groups.append(tf.reshape(scores, tf.stack([shape[0], shape[1], shape[2], half,
                                                       half, channels_out])))
    return groups


def interleave_phases(groups):
    """phase_groups' four [N, H, W, half, half, C] tensors (any dtype) -> [N, 2*half*H,
    2*half*W, C], each element at its output pixel."""
    shape = tf.shape(groups[0])
    half, channels = groups[0].shape.as_list()[4:]
    stride = 2 * half
    # Output row stride*i + half*g + r' and column stride*j + half*g_col + r'_col. One
    # transpose (6-D, with n*h and (r'_col, C) merged) does it, faster than concat + transpose
    # + depth_to_space. The groups are stacked as 4-D maps: TFLite packs no 7-D tensors.
    flat = [tf.reshape(group, tf.stack([shape[0], shape[1], shape[2], half * half * channels]))
            for group in groups]
    phases = tf.reshape(tf.stack(flat, axis=3),  # n*h, w, g, g_col, r', (r'_col, C)
                        tf.stack([shape[0] * shape[1], shape[2], 2, 2, half, half * channels]))
    phases = tf.transpose(phases, [0, 2, 4, 1, 3, 5])  # n*h, g, r', w, g_col, (r'_col, C)
    return tf.reshape(phases, tf.stack([shape[0], stride * shape[1], stride * shape[2],
                                        channels]))


def phase_order(labels, stride):
    """labels [N, stride*H, stride*W] as phase_groups orders the pixels: four [N, H, W, half,
    half], so that labels and scores meet pixel by pixel without interleaving the scores."""
    shape = tf.shape(labels)
    half = stride // 2
    h, w = shape[1] // stride, shape[2] // stride
    # row stride*i + half*g + r' -> [n, i, g, r', j, g_col, r'_col]
    #                            -> [g, g_col, n, i, j, r', r'_col]
    grouped = tf.transpose(tf.reshape(labels, tf.stack([shape[0], h, 2, half, w, 2, half])),
                           [2, 5, 0, 1, 4, 3, 6])
    return [group for row in tf.unstack(grouped, num=2) for group in tf.unstack(row, num=2)]


def max_pool_2x2(x):
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="SAME")


def avg_pool_2x2(x):
    return tf.nn.avg_pool2d(x, ksize=2, strides=2, padding="SAME")


def process_image(image, mean_pixel):
    """The network's input: the RGB image (0..255) less VGG's mean pixel."""
    return image - mean_pixel


def sparse_cross_entropy(logits, labels, name=None):
    """tf.nn.sparse_softmax_cross_entropy_with_logits(logits=logits, labels=labels): each
    pixel's -log softmax(logits)[label], float32 [...] for logits [..., C] and int labels [...]
    in [0, C), with its gradient softmax - one_hot(label).

    The same function and gradient built from one softmax (oneDNN's kernel on the CPU), faster
    over the full-size logits than TensorFlow's fused kernel (docs/performance.md). The loss
    is taken as max(logits) - log(max(softmax)) - logits[label]: equal to
    -log(softmax[label]) but finite where that softmax underflows (max(softmax) >= 1/C).
    """
    @tf.custom_gradient
    def cross_entropy(logits, labels):  # [P, C], [P]
        probabilities = tf.nn.softmax(logits)
        picked = tf.gather(logits, labels[:, None], batch_dims=1)[:, 0]
        losses = (tf.reduce_max(logits, axis=1)
                  - tf.math.log(tf.reduce_max(probabilities, axis=1)) - picked)

        def gradient(upstream):
            one_hot = tf.one_hot(labels, tf.shape(logits)[1], dtype=probabilities.dtype)
            return (probabilities - one_hot) * upstream[:, None], None
        return losses, gradient

    with tf.name_scope(name, "sparse_cross_entropy", [logits, labels]):
        # As rows of classes: oneDNN's softmax takes at most 5 dimensions.
        losses = cross_entropy(tf.reshape(logits, tf.stack([-1, tf.shape(logits)[-1]])),
                               tf.reshape(labels, [-1]))
        return tf.reshape(losses, tf.shape(labels))


# ----------------------------------------------------------------------------------------------
# Summaries (--debug)
# ----------------------------------------------------------------------------------------------

def add_activation_summary(var):
    if var is not None:
        name = var.op.name
        var = tf.cast(var, tf.float32)  # summaries want float32 (bf16 activations too)
        tf.summary.histogram(name + "/activation", var)
        tf.summary.scalar(name + "/sparsity", tf.nn.zero_fraction(var))


def add_gradient_summary(grad, var):
    if grad is not None:
        tf.summary.histogram(var.op.name + "/gradient", grad)


def add_variable_summary(var):
    tf.summary.histogram(var.op.name, var)
