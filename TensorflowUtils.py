"""Helpers for FCN.py: MatConvNet VGG-19 loading, layer helpers, image saving, summaries.

The layer helpers are graph code for tensorflow.compat.v1; everything that is plain logic
(kernel layout, mean pixel, shape checks, the download) is a small function testable without a
session.
"""
import os

import numpy as np
import scipy.io

import imageio.v2 as imageio
import tensorflow.compat.v1 as tf

from datasets import VOID_COLOUR
from downloads import (check_file_in_place, download_first, remove_download, sources_from,
                       url_file_name)
from guards import FCNError, atomic_path, writing


# ----------------------------------------------------------------------------------------------
# MatConvNet VGG-19 weights
# ----------------------------------------------------------------------------------------------

# VGG-19's 16 convolutions block by block, (name, in channels, out channels), all 3x3; a 2x2
# pool follows each block. The network, the .mat reader, the test .mat and the FLOP count use it.
VGG19_BLOCKS = (
    (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
    (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
    (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256)),
    (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512)),
    (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), ("conv5_4", 512, 512)),
)
# (name, TensorFlow kernel shape [height, width, in, out]) of the 16, in order.
VGG19_CONV_SHAPES = tuple((name, (3, 3, cin, cout))
                          for block in VGG19_BLOCKS for name, cin, cout in block)
# VGG-19's fully connected layers, which MatConvNet stores as convolutions over pool5 (7x7x512)
# and over fc6's 4096 outputs: (name, TensorFlow kernel shape). Only --variant=paper reads them.
VGG19_FC_SHAPES = (("fc6", (7, 7, 512, 4096)), ("fc7", (1, 1, 4096, 4096)))
VGG19_FILE_NAME = "imagenet-vgg-verydeep-19.mat"
USE_VGG19 = "use " + VGG19_FILE_NAME  # what the errors about a wrong .mat advise
# Where VGG-19 comes from, {url: published MD5}, in the order tried: the reference's beta16 file,
# then MatConvNet's newer one (the 'layers'/'meta' layout, which load_vgg19 reads too), saved
# under the same name when the first fails. The one place these facts live.
VGG19_DOWNLOADS = {
    "http://www.vlfeat.org/matconvnet/models/beta16/" + VGG19_FILE_NAME:
        "8ee3263992981a1d26e73b3ca028a123",
    "https://www.vlfeat.org/matconvnet/models/" + VGG19_FILE_NAME:
        "106118b7cf60435e6d8e04f6a6dc3657",
}


def get_model_data(dir_path, model_url, timeout=60, checksums=VGG19_DOWNLOADS):
    """Returns the MatConvNet .mat at model_url as loaded by scipy.io.loadmat, downloading it into
    dir_path first when it is not there (the reference's name and behaviour).

    checksums ({url: md5}, VGG19_DOWNLOADS) gives model_url's MD5 and the URLs tried after it when
    its download fails or does not match; a URL it does not list is downloaded unchecked. A file
    already there is used, with a warning if it matches none of those MD5s.
    """
    if not os.path.isdir(dir_path):
        try:
            os.makedirs(dir_path, exist_ok=True)
        except OSError as e:
            raise FCNError("--model_dir %s does not exist and cannot be created (%s); "
                           "pass a writable folder" % (dir_path, e.strerror))
    sources = sources_from(model_url, checksums)
    path = os.path.join(dir_path, url_file_name(model_url))
    if os.path.exists(path):
        check_file_in_place(path, [md5 for _, md5 in sources], model_url)
        return load_mat(path)
    url = download_first(sources, path, timeout=timeout)
    # A download complete by its size can still be no .mat when no MD5 is known: a server's HTML
    # page, or a file truncated at the source. Left in place it would look complete, and every
    # later run would fail on it; removed, the next run downloads again. A file that was there
    # before is the user's, and only named.
    try:
        return load_mat(path, hint="it was just downloaded from %s and is removed: run again, or "
                                   "put %s there by hand" % (url, VGG19_FILE_NAME))
    except FCNError:
        remove_download(path)
        raise


def load_mat(path, variable_names=None, hint=None):
    """scipy.io.loadmat with the one-line error this project promises for a file that is not one.
    variable_names: read only these top-level variables (the rest of the file is skipped);
    hint: what the error tells the user to do (by default, delete the file)."""
    try:
        # struct_as_record=False gives objects with attributes; fields are looked up by name.
        return scipy.io.loadmat(path, struct_as_record=False, squeeze_me=False,
                                variable_names=variable_names)
    except Exception as e:  # scipy raises ValueError, MatReadError, TypeError... for a bad file
        hint = hint or ("delete it so that it is downloaded again, or put %s there by hand"
                        % VGG19_FILE_NAME)
        raise FCNError("%s cannot be read as a MATLAB .mat (%s: %s); %s"
                       % (path, type(e).__name__, str(e).splitlines()[0] if str(e) else "", hint))


def _unwrap(value):
    """Strips the 1x1 object/cell arrays that loadmat wraps around every struct field and cell."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    return value


def _field(struct, name):
    value = getattr(struct, name, None)
    return None if value is None else _unwrap(value)


def _string(value):
    value = _unwrap(value)
    if isinstance(value, np.ndarray):
        value = "".join(value.reshape(-1).tolist()) if value.size else ""
    return str(value)


def matconvnet_kernel_to_tf(kernel):
    """MatConvNet stores a kernel as [width, height, in, out]; TensorFlow wants
    [height, width, in, out]. The reference swaps the first two axes; so does this port."""
    return np.transpose(np.asarray(kernel), (1, 0, 2, 3))


def mean_pixel_from_average_image(average_image):
    """The per-channel mean pixel (RGB) from MatConvNet's normalization.averageImage, which is a
    full 224x224x3 image in the beta16 file and a 1x1x3 (or plain 3) vector in newer ones."""
    average_image = np.asarray(average_image, dtype=np.float64)
    if average_image.size == 3:
        return average_image.reshape(3)
    if average_image.ndim == 3 and average_image.shape[2] == 3:
        return average_image.mean(axis=(0, 1))
    raise ValueError("averageImage has shape %s, expected HxWx3 or 3 values"
                     % (average_image.shape,))


def _layers_by_name(mat, path):
    if "layers" not in mat:
        raise FCNError("%s is not a MatConvNet model (no 'layers' in it); delete it and run again "
                       "to download %s" % (path, VGG19_FILE_NAME))
    layers = {}
    for entry in np.asarray(mat["layers"]).reshape(-1):
        layer = _unwrap(entry)
        name = _field(layer, "name")
        if name is not None:
            layers[_string(name)] = layer
    return layers


def _normalization(mat):
    """beta16 keeps 'normalization' at the top level; newer files keep it under 'meta'."""
    if "normalization" in mat:
        return _unwrap(mat["normalization"])
    if "meta" in mat:
        return _field(_unwrap(mat["meta"]), "normalization")
    return None


def _kernel_and_bias(layers, name, tf_shape, path):
    """Layer name's (kernel [h,w,in,out], bias [out]) in float32, its shape checked against
    tf_shape; one line printed. FCNError naming what is wrong for a file that is not VGG-19."""
    layer = layers.get(name)
    if layer is None:
        raise FCNError("%s is not VGG-19: it has no layer %s (is it VGG-16 or another model?); "
                       "%s" % (path, name, USE_VGG19))
    params = getattr(layer, "weights", None)
    params = [] if params is None else np.asarray(params, dtype=object).reshape(-1)
    if len(params) != 2:
        raise FCNError("%s is not VGG-19: layer %s has %d weight arrays, expected a kernel and "
                       "a bias; %s" % (path, name, len(params), USE_VGG19))
    kernel, bias = np.asarray(params[0]), np.asarray(params[1])
    # MatConvNet's [width, height, in, out] of a square kernel has the same shape as TF's.
    if kernel.shape != tf_shape or bias.size != tf_shape[3]:
        raise FCNError("%s is not VGG-19: layer %s has kernel %s and bias %s, expected %s and "
                       "(%d,); %s" % (path, name, kernel.shape, bias.shape, tf_shape,
                                      tf_shape[3], USE_VGG19))
    print("Loaded %-8s kernel %-18s bias %s" % (name, tf_shape, (tf_shape[3],)))
    return (matconvnet_kernel_to_tf(kernel).astype(np.float32),
            bias.reshape(-1).astype(np.float32))


def load_vgg19(mat, path="the .mat"):
    """Reads VGG-19's 16 convolutions and the mean pixel out of a loaded MatConvNet .mat.

    Returns (weights, mean_pixel): weights maps 'conv1_1'... to (kernel [h,w,in,out], bias [out]),
    both float32. Layers are found by their name field, not position, and every kernel's shape is
    checked; a file that is not VGG-19 raises FCNError naming what is wrong.
    """
    layers = _layers_by_name(mat, path)
    weights = {name: _kernel_and_bias(layers, name, tf_shape, path)
               for name, tf_shape in VGG19_CONV_SHAPES}
    mean_pixel = mean_pixel_of(mat, path)
    if mean_pixel is None:
        raise FCNError("%s has no normalization.averageImage, so the mean pixel is unknown; %s"
                       % (path, USE_VGG19))
    print("Mean pixel (RGB): %s" % np.array2string(mean_pixel, precision=3))
    return weights, mean_pixel


def load_vgg19_fc(mat, path="the .mat"):
    """VGG-19's fc6 and fc7 from a loaded MatConvNet .mat, as load_vgg19 reads the convolutions:
    {'fc6': (kernel [7,7,512,4096], bias), 'fc7': (kernel [1,1,4096,4096], bias)}, transposed
    from MatConvNet's [width, height, in, out] and shape-checked, one line printed each."""
    layers = _layers_by_name(mat, path)
    return {name: _kernel_and_bias(layers, name, tf_shape, path)
            for name, tf_shape in VGG19_FC_SHAPES}


def mean_pixel_of(mat, path="the .mat"):
    """The mean pixel (RGB) of a loaded MatConvNet .mat, or None when it holds no averageImage."""
    normalization = _normalization(mat)
    average_image = None if normalization is None else _field(normalization, "averageImage")
    if average_image is None:
        return None
    try:
        return mean_pixel_from_average_image(average_image)
    except ValueError as e:
        raise FCNError("%s: %s; %s" % (path, e, USE_VGG19))


def read_mean_pixel(path):
    """The mean pixel of the .mat at path, reading only its normalization (not the 0.5 GB of
    weights); None when the file holds none."""
    return mean_pixel_of(load_mat(path, variable_names=("normalization", "meta")), path)


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
    float32. TensorFlow's own BiasAddGrad kernel accumulates bfloat16 in bfloat16 on the CPU:
    measured over a 10x224x224 map of values near 1.3 it returns about 1,400 for a true sum of
    150,000, so every bias of a bf16 run learned from a gradient off by orders of magnitude."""
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
    the CPU's convolution kernels are slow and a GEMM is not (the README has the figures).
    W keeps its [k, k, in, out] shape and variable (the same checkpoints).

    Where x's height and width are known when the graph is built (training, validate,
    visualize, predict --resize: FCN.fed_image_size), a k x k kernel is one product per tap
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
    upsampled = tf.nn.conv2d_transpose(planes, kernel, tf.stack([n * c, factor * h, factor * w, 1]),
                                       strides=[1, factor, factor, 1], padding="SAME")
    upsampled = tf.transpose(tf.reshape(upsampled, tf.stack([n, c, factor * h, factor * w])),
                             [0, 2, 3, 1])
    upsampled.set_shape([None, None, None, channels])
    return upsampled


def upsample_by_phases(x, W, b, stride):
    """conv2d_transpose_strided(x, W, b, output_shape=[N, stride*H, stride*W, C], stride) for a
    kernel of side 2*stride (the head's 16x16 stride-8 conv_t3), computed as four dense 2x2
    convolutions (phase_groups) and a transpose that interleaves their outputs
    (interleave_phases), over the same W: the same function and the same variable, faster on
    the CPU (the README has the figures)."""
    return interleave_phases(phase_groups(x, W, b, stride))


def phase_groups(x, W, b, stride):
    """upsample_by_phases before the interleave: four tensors [N, H, W, half, half, C]
    (half = stride / 2), the groups (g_row, g_col) = (0, 0), (0, 1), (1, 0), (1, 1), whose
    element [n, i, j, r', r'_col] is the output pixel [n, stride*i + half*g_row + r',
    stride*j + half*g_col + r'_col]. A per-pixel computation (the argmax, the loss) can be done
    on them before or without the interleave (phase_order arranges labels the same way).

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
        raise ValueError("upsample_by_phases needs an even stride and a kernel of twice the "
                         "stride, not %dx%d with stride %d" % (side, side, stride))
    half = stride // 2
    # W's rows t = stride*a + half*b + r' with a = 1 - d, b = 1 - g; the same for columns.
    blocks = tf.reverse(tf.reshape(W, [2, 2, half, 2, 2, half, channels_out, channels_in]),
                        axis=[0, 1, 3, 4])  # d, g, r', d_col, g_col, r'_col, out, in
    phase_bias = tf.tile(b, [half * half])
    shape = tf.shape(x)
    groups = []
    # unstack, then 6-D transposes: one 8-D transpose of W, or slicing each group out (whose
    # gradients are zero-filled copies), measured several times slower.
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

    The same function and gradient built from one softmax (oneDNN's kernel on the CPU), which
    the README measures several times faster over the full-size logits than TensorFlow's fused
    kernel. The loss is taken as max(logits) - log(max(softmax)) - logits[label]: equal to
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


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

def write_image_atomically(path, image):
    """Writes a PNG to path through a temporary name, so that no half-written image is left; a
    full disk (or another write error) is the one-line FCNError."""
    with writing(path), atomic_path(path) as part:
        imageio.imwrite(part, np.asarray(image), format="PNG")
    return path


def save_image(image, save_dir, name):
    """Writes image (HxW or HxWxC, values 0..255) to <save_dir>/<name>.png (the reference's name)."""
    return write_image_atomically(os.path.join(save_dir, name + ".png"),
                                  np.asarray(image).astype(np.uint8))


def full_palette(palette):
    """The palette as a table of all 256 label values: values no class has (the ignore label,
    VOC's 255) get VOID_COLOUR."""
    table = np.tile(np.array(VOID_COLOUR, np.uint8), (256, 1))
    table[:len(palette)] = np.asarray(palette, np.uint8)[:256]
    return table


def colorize(labels, palette):
    """Labels [H,W] or [H,W,1] (0..255) -> an RGB uint8 image with the palette's colours."""
    labels = np.asarray(labels)
    if labels.ndim == 3:
        labels = labels[..., 0]
    return full_palette(palette)[labels.astype(np.intp)]


def blend(image, colours, alpha=0.5):
    """The colour map laid over the image, alpha of the colours (both uint8 RGB, same size)."""
    mixed = (1 - alpha) * np.asarray(image, np.float32) + alpha * np.asarray(colours, np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def with_legend(picture, labels_present, class_names, palette):
    """picture (uint8 RGB) above a legend: a colour swatch, number and name per label present.
    The picture keeps its pixels; the canvas is at least one legend entry wide."""
    from PIL import Image, ImageDraw  # Pillow: installed with imageio, used only for the legend

    height, width = picture.shape[:2]
    entry_width, line_height = 160, 14
    canvas_width = max(width, entry_width)
    columns = max(1, canvas_width // entry_width)
    legend_rows = (len(labels_present) + columns - 1) // columns
    canvas = Image.new("RGB", (canvas_width, height + 4 + legend_rows * line_height), "white")
    canvas.paste(Image.fromarray(np.asarray(picture, np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    colours = full_palette(palette)
    for i, k in enumerate(labels_present):
        x = (i % columns) * entry_width + 2
        y = height + 4 + (i // columns) * line_height
        draw.rectangle([x, y + 1, x + 10, y + 11], fill=tuple(int(c) for c in colours[k]),
                       outline="black")
        name = class_names[k] if k < len(class_names) else "ignored"
        draw.text((x + 14, y), ("%d %s" % (k, name))[:24], fill="black")
    return np.asarray(canvas)


def labels_present(*label_maps):
    """The sorted label values that occur in any of the maps."""
    return sorted(set().union(*(np.unique(np.asarray(m)).tolist() for m in label_maps)))


def side_by_side_panel(image, ground_truth, prediction, class_names, palette,
                       min_tile_width=256):
    """input | ground truth | prediction in colour, above a legend of the classes present by name."""
    gt = np.asarray(ground_truth).reshape(np.asarray(ground_truth).shape[:2])
    pred = np.asarray(prediction).reshape(gt.shape)
    row = np.concatenate([np.asarray(image, np.uint8), colorize(gt, palette),
                          colorize(pred, palette)], axis=1)
    # Small inputs are enlarged (nearest neighbour, so labels stay crisp) to a readable size.
    zoom = max(1, -(-min_tile_width // gt.shape[1]))
    row = row.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return with_legend(row, labels_present(gt, pred), class_names, palette)


def largest_labels(labels, limit):
    """The label values covering the most pixels, at most limit of them, largest first."""
    counts = np.bincount(np.asarray(labels, np.intp).reshape(-1), minlength=256)
    present = np.flatnonzero(counts)
    return present[np.argsort(-counts[present], kind="stable")][:limit].tolist()


def prediction_overlay(image, labels, class_names, palette, legend_entries=12):
    """The predicted colours blended over the image, at its size, above a small legend of the
    classes covering the most pixels (an untrained model can scatter dozens of classes)."""
    return with_legend(blend(image, colorize(labels, palette)),
                       largest_labels(labels, legend_entries), class_names, palette)
