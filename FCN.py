"""FCN-8s semantic segmentation on MIT Scene Parsing (ADE20K), VGG-19 based.

A faithful port of FCN.tensorflow to TensorFlow 2.x through tensorflow.compat.v1: the same graph,
the same variable names (a checkpoint of the original restores here), the same numerics.

    python FCN.py --mode=train --batch_size=10
    python FCN.py --mode=visualize
    python FCN.py --mode=validate
    python FCN.py --mode=predict --image=PATH
    python FCN.py --mode=export                  (export_model.py: SavedModel, TFLite, ONNX)

Beside the default network, --variant=paper builds FCN-8s as the paper defines it (its own
variables and checkpoints); --distribute trains on several devices or machines (distribute.py).

As a library (the reference's API): inference(image, keep_prob), pixel_loss, train, vgg_net.
One rule for their optional arguments: an argument left None takes its command-line flag's value
(the flag's default when no command line was parsed), as the reference read FLAGS.debug.
"""
import contextlib
import math
import os
import random
import sys
import time
import warnings
import weakref

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter off; errors stay

import guards  # noqa: E402  (neither imports TensorFlow)
import quiet_tensorflow  # noqa: E402

if __name__ == "__main__":
    # The program: TensorFlow's import (seconds long) writes to fd 2 what no log level stops;
    # it is held back, and main() replays it with --verbose. Ctrl-C meanwhile: one line.
    with guards.ctrl_c_exits("FCN.py"):
        quiet_tensorflow.import_quietly("tensorflow.compat.v1")

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

import TensorflowUtils as utils  # noqa: E402
import checkpoints  # noqa: E402
import command_line  # noqa: E402
import datasets  # noqa: E402
import devices  # noqa: E402
import distribute  # noqa: E402
import predict_files  # noqa: E402
import run_settings  # noqa: E402
import tiles  # noqa: E402
from datasets import ADE20K  # noqa: E402
from guards import (FCNError, StopRequest, TrainLock, ensure_writable_dir,  # noqa: E402
                    error_summary, write_json_atomically, writing)

FLAGS = tf.flags.FLAGS

# ---- what to run ----
tf.flags.DEFINE_string("mode", "train", "train, visualize, validate, predict or export")
tf.flags.DEFINE_bool("debug", False, "add activation, gradient and variable histograms (train)")
tf.flags.DEFINE_bool("verbose", False, "show TensorFlow's own start-up messages, logs and "
                     "deprecation warnings (hidden by default)")
# ---- folders ----
tf.flags.DEFINE_string("logs_dir", "logs/", "checkpoints, summaries, settings and outputs")
tf.flags.DEFINE_string("data_dir", "",
                       "dataset folder (default: Data_zoo/MIT_SceneParsing/ for ade20k, "
                       "Data_zoo/PascalVOC/ for voc; ade20k and voc are downloaded into it when "
                       "missing); required for folder")
tf.flags.DEFINE_string("model_dir", "Model_zoo/",
                       "where %s is kept (downloaded when missing)" % utils.VGG19_FILE_NAME)
# ---- the data ----
tf.flags.DEFINE_string("dataset", ADE20K.name,
                       "ade20k (MIT Scene Parsing, the reference's), voc (PASCAL VOC 2012) or "
                       "folder (your own: images/, annotations/, classes.txt in --data_dir)")
tf.flags.DEFINE_integer("ignore_label", None,
                        "pixels with this label count in neither the loss nor the metrics "
                        "(default: 255 for voc and folder; for ade20k the loss trains on 0, "
                        "'other', and the metrics ignore it)")
tf.flags.DEFINE_string("init_from", "",
                       "train: start a new run from another model's weights (a checkpoint prefix "
                       "or its folder): every variable whose name and shape match")
# ---- training ----
tf.flags.DEFINE_integer("batch_size", 10, "images per step (the reference used 2)")
tf.flags.DEFINE_float("learning_rate", 1e-4, "Adam's learning rate")
tf.flags.DEFINE_integer("image_size", 224, "images are resized to this square size; "
                        "a multiple of 32 (predict without --resize keeps each image's size)")
tf.flags.DEFINE_string("interpolation", "nearest",
                       "how images are resized to --image_size: nearest (the reference's) or "
                       "bilinear; annotations are always resized by nearest neighbour")
tf.flags.DEFINE_integer("max_iterations", 100001,
                        "stop when the global step reaches this (the reference's MAX_ITERATION)")
tf.flags.DEFINE_integer("log_every", 10, "steps between log lines and training summaries")
tf.flags.DEFINE_integer("save_every", 500, "steps between checkpoints and validation losses")
tf.flags.DEFINE_integer("validation_images", 200,
                        "train: at every checkpoint, the pixel accuracy and mean IoU of this many "
                        "validation images (a fixed subset), scored as --mode=validate scores; "
                        "0: off")
tf.flags.DEFINE_integer("seed", 0, "seed for Python, NumPy, TensorFlow and the batch order")
tf.flags.DEFINE_string("precision", "fp32", "fp32, or bf16: layers computed in bfloat16, variables, "
                       "optimizer and loss in float32 (checkpoints interchangeable)")
tf.flags.DEFINE_string("variant", "reference",
                       "reference (the faithful port, its checkpoints) or paper (FCN-8s as the "
                       "paper defines it); the checkpoints of one do not fit the other")
# ---- several devices or machines ----
tf.flags.DEFINE_string("distribute", "none",
                       "train on: none (one device, the default), mirrored (this machine's GPUs, "
                       "or --devices) or multi_worker (the machines TF_CONFIG lists)")
tf.flags.DEFINE_string("devices", "", "mirrored: the devices, e.g. GPU:0,GPU:1 (default: every "
                       "visible GPU, else the CPU); CPU:0,CPU:1 splits the CPU, to try it out")
tf.flags.DEFINE_string("all_reduce", "auto",
                       "how the replicas' gradients are summed: auto, nccl (GPUs) or ring")
tf.flags.DEFINE_integer("worker_timeout", 600,
                        "multi_worker: seconds a step waits for the other workers before every "
                        "worker stops")
# ---- predict ----
tf.flags.DEFINE_string("image", "", "predict: an image file or a folder of images")
tf.flags.DEFINE_bool("resize", False, "predict at --image_size and resize the labels back, "
                     "instead of at each image's own size")
tf.flags.DEFINE_string("output_dir", "", "predict: where results go (default <logs_dir>/predictions)")
tf.flags.DEFINE_integer("tile_size", 512, "predict: images larger than this are predicted in "
                        "square tiles of this size (a multiple of 32), in memory bounded by it; "
                        "0: each image whole")
tf.flags.DEFINE_integer("tile_overlap", 256, "predict: pixels that neighbouring tiles share; each "
                        "keeps the labels of its half, away from its borders")
tf.flags.DEFINE_integer("max_size", 0, "predict: downscale an image whose longer side exceeds "
                        "this first, and its labels back up (0: off)")
# ---- export (export_model.py) ----
tf.flags.DEFINE_string("export_dir", "", "export: where the numbered versions go "
                       "(default <logs_dir>/export)")
tf.flags.DEFINE_string("export_format", "saved_model", "export: a comma-separated list of "
                       "saved_model, tflite, tflite_fp16, tflite_int8, onnx")
tf.flags.DEFINE_string("export_image_size", "", "export: HxW baked into the model's input "
                       "(default: any size)")

MODEL_URL = "http://www.vlfeat.org/matconvnet/models/beta16/" + utils.VGG19_FILE_NAME
NUM_OF_CLASSESS = ADE20K.num_classes  # the reference's name (and spelling) for the class count
KEEP_PROBABILITY = 0.85  # dropout keep probability while training (the reference's value)
# --precision: the dtype the layers compute in (variables and the optimizer are float32 in both).
COMPUTE_DTYPES = {"fp32": tf.float32, "bf16": tf.bfloat16}
# VGG-19's mean pixel (RGB) as MatConvNet publishes it; used when a checkpoint supplies every
# weight and the .mat is not at hand.
VGG19_MEAN_PIXEL = np.array([123.68, 116.779, 103.939])
# Deliberate (the reference): the head starts from conv5_3 before its ReLU and skips conv5_4,
# which is built but feeds nothing; the paper pools VGG's last ReLU.
HEAD_INPUT = "conv5_3"
CONV_T3_STRIDE = 8  # the reference's x8 upsampling to the input size (W_t3 is 16x16)
# inference's logits -> their phase groups, for pixel_loss: {graph: {logits' name: the groups'
# names}}, weakly keyed and holding only names, so that a graph's entries go with it. Not a
# graph collection of tuples: a Saver warns at every checkpoint that it cannot serialize one.
_PHASE_SCORES = weakref.WeakKeyDictionary()
# --variant: the faithful port (its 44 variables under inference/), or FCN-8s as the paper and its
# Caffe code define it (its variables under paper/, named after the paper's layers).
REFERENCE, PAPER = "reference", "paper"
VARIANTS = (REFERENCE, PAPER)
VARIANT_SCOPES = {REFERENCE: "inference", PAPER: "paper"}
# The bias of each variant's coarse class scores: one entry per class.
CLASS_COUNT_VARIABLES = {REFERENCE: checkpoints.CLASS_COUNT_VARIABLE, PAPER: "paper/score_fr_b"}
PAPER_KEEP_PROBABILITY = 0.5  # the paper's dropout on fc6 and fc7 while training


def _flag(name):
    """A flag's value, parsed or not: importing and building the graph never parses argv."""
    return FLAGS[name].value


# ==============================================================================================
# The network
# ==============================================================================================

def vgg_net(weights, image, debug=None, pool=None):
    """The VGG-19 trunk. weights maps 'conv1_1'... to (kernel [h,w,in,out], bias); returns every
    layer's tensor (conv, relu, pool) by name.

    weights=None builds the same variables without VGG's values (zeros), for a graph whose values
    all come from a checkpoint: then the 0.5 GB .mat need not be read or embedded in the graph.
    pool: the 2x2 pooling between blocks, the reference's average pooling when None.
    """
    pool = utils.avg_pool_2x2 if pool is None else pool
    debug = _flag("debug") if debug is None else debug
    net = {}
    current = image
    for block, convs in enumerate(utils.VGG19_BLOCKS, 1):
        for name, channels_in, channels_out in convs:
            if weights is None:
                kernel = utils.zeros_variable([3, 3, channels_in, channels_out], name=name + "_w")
                bias = utils.zeros_variable([channels_out], name=name + "_b")
            else:
                kernel = utils.get_variable(weights[name][0], name=name + "_w")
                bias = utils.get_variable(weights[name][1], name=name + "_b")
            net[name] = current = utils.conv2d_basic(current, kernel, bias)
            relu = "relu" + name[4:]
            net[relu] = current = tf.nn.relu(current, name=relu)
            if debug:
                utils.add_activation_summary(current)
        if block < len(utils.VGG19_BLOCKS):  # the head pools HEAD_INPUT itself
            # Deliberate (the reference): average pooling inside VGG; VGG and the paper use max.
            net["pool%d" % block] = current = pool(current)
    return net


def load_vgg(model_dir=None, variant=REFERENCE):
    """(weights, mean_pixel) of VGG-19 from model_dir (downloaded there when absent); for the
    paper variant the weights hold fc6 and fc7 too."""
    model_dir = _flag("model_dir") if model_dir is None else model_dir
    mat = utils.get_model_data(model_dir, MODEL_URL)
    path = os.path.join(model_dir, utils.VGG19_FILE_NAME)
    weights, mean_pixel = utils.load_vgg19(mat, path)
    if variant == PAPER:
        weights.update(utils.load_vgg19_fc(mat, path))
    return weights, mean_pixel


def pretrained_variable_names(variant):
    """The names of the variables a variant initialises from the .mat (VGG's convolutions, and
    for the paper fc6 and fc7): a checkpoint holding them all makes the .mat unnecessary."""
    scope = VARIANT_SCOPES[variant]
    layers = [name for name, _ in utils.VGG19_CONV_SHAPES]
    if variant == PAPER:
        layers += [name for name, _ in utils.VGG19_FC_SHAPES]
    return ["%s/%s_%s" % (scope, name, part) for name in layers for part in "wb"]


def mean_pixel_for_restore(model_dir):
    """The mean pixel when a checkpoint supplies the weights: from the .mat when it is there
    (only its normalization is read), else VGG-19's published one."""
    path = os.path.join(model_dir, utils.VGG19_FILE_NAME)
    mean_pixel = utils.read_mean_pixel(path) if os.path.exists(path) else None
    return VGG19_MEAN_PIXEL if mean_pixel is None else mean_pixel


def _fc_as_conv(x, shape, index, keep_prob, debug):
    """fc6 / fc7 as a convolution + ReLU + dropout: W<index>, b<index>, relu<index>.

    Deliberate (the reference): they start random; the paper converts VGG's pretrained fc weights.
    """
    W = utils.weight_variable(shape, name="W" + index)
    b = utils.bias_variable([shape[3]], name="b" + index)
    relu = tf.nn.relu(utils.conv2d_as_matmul(x, W, b), name="relu" + index)
    if debug:
        utils.add_activation_summary(relu)
    return _dropout(relu, keep_prob)


def _dropout(x, keep_prob, name=None):
    # keep_prob None: a graph that only predicts has no dropout, which at keep 1 would still
    # draw a random number for every activation.
    if keep_prob is None:
        return x
    return tf.nn.dropout(x, rate=tf.cast(1.0 - keep_prob, x.dtype), name=name)


def _pretrained_or_zeros(weights, name, shape):
    """(kernel, bias) variables name_w, name_b: from weights[name] (numpy), or zeros when
    weights is None (a checkpoint will supply them)."""
    if weights is None:
        return (utils.zeros_variable(list(shape), name=name + "_w"),
                utils.zeros_variable([shape[3]], name=name + "_b"))
    if name not in weights:
        raise ValueError("the paper variant needs VGG-19's %s in the weights: load them with "
                         "load_vgg(variant='paper')" % name)
    kernel, bias = weights[name]
    return utils.large_variable(kernel, name + "_w"), utils.get_variable(bias, name + "_b")


def _score(x, name, channels_in, num_classes):
    """A 1x1 convolution to class scores, zero-initialised as in the paper: name_w, name_b."""
    W = utils.zeros_variable([1, 1, channels_in, num_classes], name=name + "_w")
    b = utils.bias_variable([num_classes], name=name + "_b")
    return tf.identity(utils.conv2d_basic(x, W, b), name=name)


def _learned_upsample_x2(x, like, name, num_classes):
    """x scores upsampled x2 to the shape of the scores `like` by a 4x4 stride-2 transposed
    convolution without bias, initialised to bilinear interpolation and learned: name_w."""
    W = utils.get_variable(utils.bilinear_kernel(2, num_classes), name=name + "_w")
    return tf.identity(utils.conv2d_transpose_strided(x, W, None, output_shape=tf.shape(like)),
                       name=name)


def paper_fcn8s(processed_image, keep_prob, weights, num_classes, debug):
    """FCN-8s as the paper (Long, Shelhamer and Darrell) and its Caffe code define it, on VGG-19,
    its variables under paper/ named after the paper's layers. processed_image: the input less
    the mean pixel, in the compute dtype. weights: VGG-19's convolutions and fc6, fc7 (numpy),
    or None when a checkpoint supplies them. Returns the float32 logits at the input size."""
    with tf.variable_scope(VARIANT_SCOPES[PAPER]):
        net = vgg_net(weights, processed_image, debug=debug, pool=utils.max_pool_2x2)
        # SAME padding on inputs of multiples of 32 (as the reference), not the paper's 100-pixel
        # padding and crops: every map is then exactly 1/2^k of the input, so the skips align
        # without offsets, predict's padding to 32 keeps working, and the pretrained fc6 sees at
        # its centre what VGG's classifier saw.
        pool5 = utils.max_pool_2x2(net["relu5_4"])
        fc = pool5
        for name, shape in utils.VGG19_FC_SHAPES:
            W, b = _pretrained_or_zeros(weights, name, shape)
            fc = tf.nn.relu(utils.conv2d_as_matmul(fc, W, b), name="relu" + name[2:])
            if debug:
                utils.add_activation_summary(fc)
            fc = _dropout(fc, keep_prob, name="drop" + name[2:])
        score_fr = _score(fc, "score_fr", 4096, num_classes)
        score_pool4 = _score(net["pool4"], "score_pool4", 512, num_classes)
        upscore2 = _learned_upsample_x2(score_fr, score_pool4, "upscore2", num_classes)
        fuse_pool4 = tf.add(upscore2, score_pool4, name="fuse_pool4")
        score_pool3 = _score(net["pool3"], "score_pool3", 256, num_classes)
        upscore_pool4 = _learned_upsample_x2(fuse_pool4, score_pool3, "upscore_pool4",
                                             num_classes)
        fuse_pool3 = tf.add(upscore_pool4, score_pool3, name="fuse_pool3")
        # x8 to the input size, fixed bilinear (a constant kernel): nothing to learn.
        upscore8 = tf.identity(utils.bilinear_upsample(fuse_pool3, 8), name="upscore8")
        return tf.cast(upscore8, tf.float32)


def inference(image, keep_prob, vgg=None, debug=None, precision=None,
              num_classes=NUM_OF_CLASSESS, variant=None):
    """FCN-8s. image: float [N,H,W,3], RGB 0..255, H and W multiples of 32 (N, H, W may be None).

    vgg: (weights, mean_pixel) from load_vgg(); loaded from --model_dir when None.
    precision: 'fp32', or 'bf16' to compute the layers in bfloat16 while the variables stay
    float32 (the same checkpoints); the logits are float32 either way.
    num_classes: ADE20K's 151 by default; only W8, b8, W_t1, W_t3 and b_t3 depend on it.
    variant: 'reference' (the faithful port) or 'paper' (paper_fcn8s; weights must then hold fc6
    and fc7, as load_vgg(variant='paper') gives them).
    keep_prob: fc6's and fc7's dropout keep probability (a tensor or a number); None for a graph
    that only predicts: no dropout ops at all (the same values as keep 1).
    Returns (annotation_pred [N,H,W,1] int64, logits [N,H,W,num_classes]).
    """
    debug = _flag("debug") if debug is None else debug
    precision = _flag("precision") if precision is None else precision
    variant = _flag("variant") if variant is None else variant
    if variant not in VARIANTS:
        raise ValueError("variant is one of %s, not %r" % (VARIANTS, variant))
    print("setting up vgg initialized conv layers ...")
    weights, mean_pixel = load_vgg(variant=variant) if vgg is None else vgg
    # The skips add maps of 1/16 and 1/8 of the input size, and conv_t3 gives 8x its input:
    # any other size would fail later with a shape error that does not say why.
    size_check = tf.debugging.assert_equal(
        tf.math.floormod(tf.shape(image)[1:3], 32), 0,
        message="FCN.inference needs an image height and width that are multiples of 32")
    with tf.control_dependencies([size_check]):
        processed_image = utils.process_image(image, mean_pixel.astype(np.float32))
    processed_image = tf.cast(processed_image, COMPUTE_DTYPES[precision])
    if variant == PAPER:
        logits = paper_fcn8s(processed_image, keep_prob, weights, num_classes, debug)
        pred = tf.argmax(logits, axis=3, name=VARIANT_SCOPES[PAPER] + "/prediction")
        return tf.expand_dims(pred, axis=3), logits

    with tf.variable_scope("inference"):
        image_net = vgg_net(weights, processed_image, debug=debug)
        pool5 = utils.max_pool_2x2(image_net[HEAD_INPUT])

        relu_dropout6 = _fc_as_conv(pool5, [7, 7, 512, 4096], "6", keep_prob, debug)
        relu_dropout7 = _fc_as_conv(relu_dropout6, [1, 1, 4096, 4096], "7", keep_prob, debug)

        W8 = utils.weight_variable([1, 1, 4096, num_classes], name="W8")
        b8 = utils.bias_variable([num_classes], name="b8")
        conv8 = utils.conv2d_basic(relu_dropout7, W8, b8)  # the coarse heat map, 1/32 scale

        # Upsample x2 and fuse with pool4. Deliberate (the reference): the upsampled map goes
        # back to 512 channels and is added to raw pool4; the paper adds a 1x1 score of pool4.
        pool4 = image_net["pool4"]
        W_t1 = utils.weight_variable([4, 4, 512, num_classes], name="W_t1")
        b_t1 = utils.bias_variable([512], name="b_t1")
        conv_t1 = utils.conv2d_transpose_strided(conv8, W_t1, b_t1, output_shape=tf.shape(pool4))
        fuse_1 = tf.add(conv_t1, pool4, name="fuse_1")

        # Upsample x2 and fuse with raw pool3, the same deliberate difference.
        pool3 = image_net["pool3"]
        W_t2 = utils.weight_variable([4, 4, 256, 512], name="W_t2")
        b_t2 = utils.bias_variable([256], name="b_t2")
        conv_t2 = utils.conv2d_transpose_strided(fuse_1, W_t2, b_t2, output_shape=tf.shape(pool3))
        fuse_2 = tf.add(conv_t2, pool3, name="fuse_2")

        # Upsample x8 to the input size: the per-pixel class scores.
        W_t3 = utils.weight_variable([16, 16, num_classes, 256], name="W_t3")
        b_t3 = utils.bias_variable([num_classes], name="b_t3")
        # conv2d_transpose_strided(fuse_2, W_t3, b_t3, [N, H, W, classes], stride=8), computed
        # faster as four dense 2x2 convolutions interleaved by a transpose (H, W are
        # multiples of 32, so the output is exactly 8x fuse_2): utils.upsample_by_phases.
        # The softmax, the loss and the argmax in float32 whatever the precision.
        groups = [tf.cast(group, tf.float32)
                  for group in utils.phase_groups(fuse_2, W_t3, b_t3, stride=CONV_T3_STRIDE)]
        conv_t3 = utils.interleave_phases(groups)
        # The argmax and the loss (pixel_loss) per phase group: the same values, without
        # moving every pixel's class scores through the interleave.
        _PHASE_SCORES.setdefault(conv_t3.graph, {})[conv_t3.name] = [g.name for g in groups]
        annotation_pred = utils.interleave_phases(
            [tf.expand_dims(tf.argmax(group, axis=-1), -1) for group in groups])
        annotation_pred = tf.squeeze(annotation_pred, axis=[3], name="prediction")

    return tf.expand_dims(annotation_pred, axis=3), conv_t3


def phase_scores(logits):
    """The phase groups that inference interleaved into logits (utils.phase_groups), or None
    when logits did not come from it (the paper variant, or any other tensor)."""
    names = _PHASE_SCORES.get(logits.graph, {}).get(logits.name)
    return None if names is None else [logits.graph.get_tensor_by_name(n) for n in names]


def train(loss_val, var_list, learning_rate=None, debug=None, global_step=None):
    """The Adam update of var_list (the reference's training op; learning rate from the flag).
    global_step, when given, is incremented by each update."""
    learning_rate = _flag("learning_rate") if learning_rate is None else learning_rate
    debug = _flag("debug") if debug is None else debug
    optimizer = tf.train.AdamOptimizer(learning_rate)
    grads = optimizer.compute_gradients(loss_val, var_list=var_list)
    if debug:
        for grad, var in grads:
            utils.add_gradient_summary(grad, var)
    return optimizer.apply_gradients(grads, global_step=global_step)


def counted_pixels(labels, ignore_label):
    """The one ignore convention of the loss (metrics.confusion_matrix applies the same): a pixel
    counts unless its label equals ignore_label. Returns (labels with the ignored pixels set to
    class 0, so that the cross-entropy is defined there, and their float32 weights 0 or 1)."""
    counted = tf.not_equal(labels, ignore_label)
    return tf.where(counted, labels, tf.zeros_like(labels)), tf.cast(counted, tf.float32)


def pixel_loss(logits, annotation, ignore_label=None, axis=None):
    """Mean softmax cross-entropy over the pixels; annotation is int [N,H,W,1].

    ignore_label None: over every pixel, as the reference. Otherwise over the pixels whose
    label is not ignore_label; the ignored ones get exactly zero gradient (their cross-entropy
    is multiplied by 0). axis: None for one mean, [1, 2] for each image's mean.
    """
    labels = tf.squeeze(annotation, axis=[3])
    groups = phase_scores(logits)
    if groups is None:
        pairs, pixel_axes = [(logits, labels)], axis
    else:  # the same pixels in inference's phase order: [N, H/8, W/8, 4, 4] each
        pairs = list(zip(groups, utils.phase_order(labels, CONV_T3_STRIDE)))
        pixel_axes = None if axis is None else [1, 2, 3, 4]
    with tf.name_scope("entropy"):
        if ignore_label is None:
            summed = [tf.reduce_sum(utils.sparse_cross_entropy(scores, group_labels),
                                    axis=pixel_axes) for scores, group_labels in pairs]
            counted = tf.cast(tf.size(labels) if axis is None
                              else tf.shape(labels)[1] * tf.shape(labels)[2], tf.float32)
        else:
            summed, weight_sums = [], []
            for scores, group_labels in pairs:
                group_labels, weights = counted_pixels(group_labels, ignore_label)
                losses = utils.sparse_cross_entropy(scores, group_labels)
                summed.append(tf.reduce_sum(losses * weights, axis=pixel_axes))
                weight_sums.append(tf.reduce_sum(weights, axis=pixel_axes))
            counted = tf.maximum(tf.add_n(weight_sums), 1.0)
        return tf.add_n(summed) / counted


def input_placeholders(image_size=None):
    """(image float [N,H,W,3], annotation int32 [N,H,W,1], keep_probability): the reference's
    placeholders, with its names. H and W are image_size, or unknown when None."""
    image = tf.placeholder(tf.float32, shape=[None, image_size, image_size, 3],
                           name="input_image")
    annotation = tf.placeholder(tf.int32, shape=[None, image_size, image_size, 1],
                                name="annotation")
    keep_probability = tf.placeholder(tf.float32, name="keep_probabilty")  # sic, the reference's
    return image, annotation, keep_probability


class Model:
    """The graph every mode builds: placeholders, the network, its loss (and for training the
    global step, the Adam update and the summaries)."""

    def __init__(self, vgg, training, debug=False, learning_rate=1e-4, precision="fp32",
                 classes=None, variant=REFERENCE, strategy=None, image_size=None):
        """classes: the datasets.ClassInfo (class count, ignore label, colours); ADE20K's when
        None. variant: 'reference' or 'paper' (see inference). strategy: a tf.distribute
        strategy (--distribute) to build the network once per replica, each on its equal part
        of the batch fed; None: one device, as the reference. image_size: the side of every
        image fed (the placeholders' H and W, as the reference's), or None for any size."""
        classes = classes or datasets.class_info(ADE20K, ["class %d" % k for k in
                                                          range(ADE20K.num_classes)])
        # What training feeds keep_probability: each network's own dropout.
        self.training_keep_probability = (PAPER_KEEP_PROBABILITY if variant == PAPER
                                          else KEEP_PROBABILITY)
        if strategy is not None:
            with strategy.scope():
                self._build_replicated(strategy, vgg, training, debug, learning_rate, precision,
                                       classes, variant, image_size)
            return
        self.image, self.annotation, self.keep_probability = input_placeholders(image_size)
        # A graph that does not train has no dropout; callers may still feed keep_probability,
        # which nothing then reads.
        self.pred_annotation, self.logits = inference(self.image,
                                                      self.keep_probability if training else None,
                                                      vgg=vgg, debug=debug, precision=precision,
                                                      num_classes=classes.num_classes,
                                                      variant=variant)
        self.network_variables = tf.trainable_variables()
        self.loss = pixel_loss(self.logits, self.annotation, classes.loss_ignore_label)
        # Each image's mean cross-entropy (validate weighs every image once, whatever its batch).
        self.image_losses = pixel_loss(self.logits, self.annotation, classes.loss_ignore_label,
                                       axis=[1, 2])
        self.global_step = None
        if training:
            self.global_step = tf.train.get_or_create_global_step()
            trainable = tf.trainable_variables()
            self.train_op = train(self.loss, trainable, learning_rate=learning_rate,
                                  debug=debug, global_step=self.global_step)
            if debug:
                for var in trainable:
                    utils.add_variable_summary(var)
            self._add_summaries(classes)
        self.saveable = tf.global_variables()

    def _add_summaries(self, classes):
        """The loss, and the images with their ground truth and prediction in colour."""
        self.loss_summary = tf.summary.scalar("entropy", self.loss)
        palette = tf.constant(utils.full_palette(classes.palette))  # 255 has a colour too
        colour = lambda labels: tf.gather(palette, tf.squeeze(tf.cast(labels, tf.int32), 3))
        tf.summary.image("input_image", tf.cast(self.image, tf.uint8), max_outputs=2)
        tf.summary.image("ground_truth", colour(self.annotation), max_outputs=2)
        tf.summary.image("pred_annotation", colour(self.pred_annotation), max_outputs=2)
        self.train_summary = tf.summary.merge_all()

    def _build_replicated(self, strategy, vgg, training, debug, learning_rate, precision,
                          classes, variant, image_size):
        """The same attributes over the replicas of strategy: the placeholders take this worker's
        images; pred_annotation, logits and image_losses are its replicas' joined in batch order,
        loss the mean over every replica of every worker; stop_votes sums the stop_vote fed on
        each worker (Ctrl-C or SIGTERM there), so that all workers stop after the same step."""
        self.image, self.annotation, self.keep_probability = input_placeholders(image_size)
        self.stop_vote = tf.placeholder_with_default(0.0, [], name="stop_vote")
        self.global_step = tf.train.get_or_create_global_step() if training else None

        def replica(image, annotation, keep_probability, stop_vote):
            image = distribute.local_slice(tf, image, strategy)
            annotation = distribute.local_slice(tf, annotation, strategy)
            pred, logits = inference(image, keep_probability if training else None, vgg=vgg,
                                     debug=debug, precision=precision,
                                     num_classes=classes.num_classes, variant=variant)
            loss = pixel_loss(logits, annotation, classes.loss_ignore_label)
            outputs = [pred, logits, loss, tf.identity(stop_vote),
                       pixel_loss(logits, annotation, classes.loss_ignore_label, axis=[1, 2])]
            if training:
                # The replicas' gradients are summed, not averaged: each replica's loss is
                # divided by their number, so that the update is one device's on the whole
                # batch (Adam hides a missing division, plain gradient descent would not).
                outputs.append(train(loss / strategy.num_replicas_in_sync,
                                     tf.trainable_variables(), learning_rate=learning_rate,
                                     debug=debug, global_step=self.global_step))
            return outputs

        outputs = strategy.run(replica, args=(self.image, self.annotation, self.keep_probability,
                                              self.stop_vote))
        joined = [tf.concat(strategy.experimental_local_results(v), axis=0)
                  for v in (outputs[0], outputs[1], outputs[4])]
        self.pred_annotation, self.logits, self.image_losses = joined
        self.loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, outputs[2], axis=None)
        self.stop_votes = strategy.reduce(tf.distribute.ReduceOp.SUM, outputs[3], axis=None)
        self.network_variables = tf.trainable_variables()
        # The weights' bits summed, computed where they are (fetching 600 MB through a worker's
        # session would cost its memory twice over): identical weights give the same sum.
        self.weights_checksum = tf.add_n([tf.reduce_sum(tf.cast(tf.bitcast(
            tf.convert_to_tensor(v), tf.int32), tf.int64)) for v in self.network_variables])
        if training:
            self.train_op = strategy.group(outputs[5])
            if debug:
                for var in self.network_variables:
                    utils.add_variable_summary(var)
            self._add_summaries(classes)
        self.saveable = tf.global_variables()


def build_model(settings, training, classes, vgg_from_checkpoint, strategy=None):
    """(graph, model). vgg_from_checkpoint: a checkpoint will supply the VGG values, so the .mat
    is not loaded (only its mean pixel read, when it is there). strategy: see Model."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(settings["seed"])
        if vgg_from_checkpoint:
            vgg = (None, mean_pixel_for_restore(settings["model_dir"]))
        else:
            vgg = load_vgg(settings["model_dir"], settings["variant"])
        model = Model(vgg, training, debug=settings["debug"] and training,
                      learning_rate=settings["learning_rate"], precision=settings["precision"],
                      classes=classes, variant=settings["variant"], strategy=strategy,
                      image_size=fed_image_size(settings))
    return graph, model


def fed_image_size(settings):
    """The side of every image the mode feeds, resized to it: --image_size for train,
    visualize, validate and predict --resize; None where each image (or tile) keeps its own
    size, predict and the export. A known size lets fc6 skip the taps on padding
    (TensorflowUtils.conv2d_as_matmul)."""
    fixed = settings["mode"] in ("train", "visualize", "validate") or (
        settings["mode"] == "predict" and settings["resize"])
    return settings["image_size"] if fixed else None


def session_config():
    return tf.ConfigProto()


# ==============================================================================================
# The modes
# ==============================================================================================

MODES = ("train", "visualize", "validate", "predict", "export")
MAX_SEED = 2 ** 32 - 1  # numpy.random.seed's largest
# The memory of a training step grows with its pixel count (README, Flags, gives the measured
# figures): beyond this bound even one image per step fits no machine in use.
MAX_IMAGE_SIZE = 4096
MAX_IMAGE_SIZE_REASON = ("memory grows with the pixel count, and one training image of "
                         "4096x4096 already needs about 90 GiB; e.g. 224 (the default) or 512")
INTERPOLATIONS = ("nearest", "bilinear")
# What training writes of its validation subset at each checkpoint (metrics.scores' keys).
VALIDATION_SCALARS = ("pixel_accuracy", "mean_iou")


def check_settings(settings):
    """Refuses settings that cannot work, with the one-line error the command line prints."""
    if settings["mode"] not in MODES:
        raise FCNError("--mode=%s is not a mode; use one of %s"
                       % (settings["mode"], ", ".join(MODES)))
    for name in ("batch_size", "max_iterations", "log_every", "save_every"):
        if settings[name] < 1:
            raise FCNError("--%s=%d: it must be at least 1" % (name, settings[name]))
    if settings["image_size"] < 32 or settings["image_size"] % 32:
        raise FCNError("--image_size=%d: it must be a positive multiple of 32 (the "
                       "network downsamples by 32), e.g. 224" % settings["image_size"])
    if settings["image_size"] > MAX_IMAGE_SIZE:
        raise FCNError("--image_size=%d: at most %d; %s"
                       % (settings["image_size"], MAX_IMAGE_SIZE, MAX_IMAGE_SIZE_REASON))
    if not 0 <= settings["seed"] <= MAX_SEED:
        raise FCNError("--seed=%d: it must be between 0 and %d (NumPy's seed range)"
                       % (settings["seed"], MAX_SEED))
    for name, choices in (("precision", tuple(COMPUTE_DTYPES)), ("interpolation", INTERPOLATIONS),
                          ("variant", VARIANTS)):
        if settings[name] not in choices:
            raise FCNError("--%s=%s: use %s" % (name, settings[name], " or ".join(choices)))
    if not (settings["learning_rate"] > 0 and math.isfinite(settings["learning_rate"])):
        raise FCNError("--learning_rate=%g: it must be a positive finite number, e.g. 1e-4"
                       % settings["learning_rate"])
    if settings["validation_images"] < 0:
        raise FCNError("--validation_images=%d: it must be 0 (off) or more"
                       % settings["validation_images"])
    if settings["mode"] == "predict" and not settings["image"]:
        raise FCNError("--mode=predict needs --image=PATH (an image file or a folder)")
    if settings["mode"] == "predict":
        check_predict_settings(settings)
    if settings["dataset"] not in datasets.DATASETS:
        raise FCNError("--dataset=%s: use one of %s"
                       % (settings["dataset"], ", ".join(datasets.DATASETS)))
    if settings["dataset"] == datasets.FOLDER.name and not settings["data_dir"]:
        raise FCNError("--dataset=folder needs --data_dir=PATH, the folder holding images/, "
                       "annotations/ and classes.txt")
    datasets.ignore_labels(datasets.DATASETS[settings["dataset"]], settings["ignore_label"])
    if settings["init_from"] and settings["mode"] != "train":
        raise FCNError("--init_from is for --mode=train (a new run from another model's "
                       "weights); the other modes read --logs_dir's checkpoint")


def with_defaults(settings):
    """settings with the dataset's own --data_dir when none was given."""
    if settings["data_dir"]:
        return settings
    return dict(settings, data_dir=datasets.DATASETS[settings["dataset"]].default_data_dir)


SLOW_CPU_ETA = 86400  # seconds: a CPU-only training run expected to take longer is warned about


def format_duration(seconds):
    seconds = int(max(seconds, 0))
    if seconds >= 86400:
        return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)
    return "%dh%02dm%02ds" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


# ---- the data and its classes ------------------------------------------------------------------

def _dataset(settings):
    return datasets.DATASETS[settings["dataset"]]


def dataset_classes(settings):
    """The ClassInfo of the chosen dataset (its class names read from --data_dir)."""
    dataset = _dataset(settings)
    names = datasets.reader_module(dataset).read_class_names(settings["data_dir"])
    return datasets.class_info(dataset, names, settings["ignore_label"])


def checkpoint_variant(checkpoint):
    """The network a checkpoint is of: 'paper' when it holds variables under paper/, else
    'reference' (the original implementation's checkpoints, which record no variant, too)."""
    prefix = VARIANT_SCOPES[PAPER] + "/"
    names = [name for name, _ in tf.train.list_variables(checkpoint)]
    return PAPER if any(name.startswith(prefix) for name in names) else REFERENCE


def check_variant(checkpoint, settings, what="checkpoint"):
    """FCNError when the checkpoint is of the other network than --variant; what names it in
    the message ('checkpoint' or '--init_from')."""
    found = checkpoint_variant(checkpoint)
    if found == settings["variant"]:
        return
    if what == "--init_from":
        advice = ("--init_from works within one network: pass --variant=%s, or a checkpoint "
                  "of the %s network" % (found, settings["variant"]))
    else:
        advice = ("pass --variant=%s (the network it was trained with), or point --logs_dir at "
                  "a checkpoint of the %s network" % (found, settings["variant"]))
    raise FCNError("%s %s is of the %s network, not of --variant=%s; %s"
                   % (what, checkpoint, found, settings["variant"], advice))


def check_class_count(checkpoint, classes, settings):
    """FCNError when the checkpoint is of the other --variant (check_variant), or with both
    counts when its model has another number of classes."""
    check_variant(checkpoint, settings)
    count = checkpoints.class_count(checkpoint, CLASS_COUNT_VARIABLES[settings["variant"]])
    if count is None or count == classes.num_classes:
        return
    if settings["mode"] == "train":
        advice = ("train in an empty --logs_dir with --init_from=%s to fine-tune it on this "
                  "dataset" % checkpoint)
    else:
        advice = "pass the --dataset (and --data_dir) it was trained on"
    raise FCNError("checkpoint %s has %d classes but --dataset=%s (%s) has %d; %s"
                   % (checkpoint, count, settings["dataset"], settings["data_dir"],
                      classes.num_classes, advice))


def _readers(settings, records, classes, shuffle=True, drop_remainder=True, shard=(0, 1)):
    """shard: (this worker's rank, the number of workers) under --distribute=multi_worker."""
    import BatchDatsetReader as dataset
    return dataset.BatchDatset(records, {"resize": True, "resize_size": settings["image_size"],
                                         "interpolation": settings["interpolation"],
                                         "num_classes": classes.num_classes,
                                         "extra_label": classes.extra_label,
                                         "dataset": settings["dataset"],
                                         "seed": settings["seed"], "shuffle": shuffle,
                                         "drop_remainder": drop_remainder, "shard": shard})


def _read_records(settings, classes=None):
    """(training, validation) records of the dataset; with classes, every pair is checked first
    (sizes, and the values of the first annotations against the class count)."""
    import BatchDatsetReader as dataset
    reader = datasets.reader_module(_dataset(settings))
    train_records, valid_records = reader.read_dataset(settings["data_dir"])
    if classes is not None:
        started = time.time()
        for records in (train_records, valid_records):
            dataset.validate_records(records, num_classes=classes.num_classes,
                                     extra_label=classes.extra_label,
                                     dataset=settings["dataset"])
        print("Checked %d training and %d validation pairs in %.1f s"
              % (len(train_records), len(valid_records), time.time() - started))
    return train_records, valid_records


# ---- train -------------------------------------------------------------------------------------

def run_train(settings):
    import evaluation
    logs_dir = settings["logs_dir"]
    cluster = distributed_cluster(settings)
    chief = cluster is None or cluster.is_chief
    # Only the chief writes into --logs_dir (storage every worker sees) and holds its lock.
    with TrainLock(logs_dir) if chief else contextlib.nullcontext():
        classes = dataset_classes(settings)
        train_records, valid_records = _read_records(settings, classes)
        if chief:
            checkpoints.remove_partial_saves(logs_dir)
        checkpoint = checkpoints.latest_checkpoint(logs_dir, refuse_unreadable=True)
        init_from = None
        if checkpoint is not None:
            check_class_count(checkpoint, classes, settings)
            if settings["init_from"]:
                print("--init_from ignored: %s resumes from its own checkpoint %s"
                      % (logs_dir, checkpoint))
        elif settings["init_from"]:
            init_from = checkpoints.resolve_init_from(settings["init_from"])
            check_variant(init_from, settings, "--init_from")
        if chief:
            # What this run is, beside the checkpoints it produces, once its checks have passed.
            run_settings.record(logs_dir, dict(settings, tensorflow=tf.__version__,
                                               started=time.strftime("%Y-%m-%d %H:%M:%S")))
            classes_path = os.path.join(logs_dir, datasets.CLASSES_NAME)
            with writing(classes_path):
                write_json_atomically(classes_path, dict(datasets.info_to_json(classes),
                                                         variant=settings["variant"]))
        vgg_names = pretrained_variable_names(settings["variant"])
        vgg_from_checkpoint = checkpoint is not None or (
            init_from is not None and checkpoints.holds_variables(init_from, vgg_names))
        graph, model = build_model(settings, True, classes, vgg_from_checkpoint,
                                   strategy=cluster and cluster.strategy)
        with graph.as_default(), _train_session(cluster) as sess:
            # Under multi_worker the initialisers are a broadcast from the chief that every
            # worker joins; only then does each restore the same checkpoint.
            run_with_workers(sess, cluster, tf.global_variables_initializer(), {},
                             checkpoint, starting=True)
            step = 0
            if checkpoint is not None:
                step = checkpoints.restore(sess, checkpoint, model.saveable, model.global_step)
            elif init_from is not None:
                checkpoints.restore_matching(sess, init_from, model.network_variables)
            else:
                print("No checkpoint in %s: starting from VGG-19" % logs_dir)
            saver = checkpoints.make_saver(model.saveable, logs_dir) if chief else None
            shard = (0, 1) if cluster is None else (cluster.rank, cluster.num_workers)
            with _readers(settings, train_records, classes, shard=shard) as train_reader, \
                    _readers(settings, valid_records, classes, shard=shard) as valid_reader, \
                    StopRequest() as stop:
                writers = []
                if chief:
                    writers = [tf.summary.FileWriter(os.path.join(logs_dir, "train"), sess.graph),
                               tf.summary.FileWriter(os.path.join(logs_dir, "validation"))]
                # The subset is scored on one device; under --distribute its batches would have
                # to split among replicas and workers, so it is off there (README, Flags).
                subset = (evaluation.validation_subset(valid_records, settings["validation_images"])
                          if cluster is None else [])
                score_subset = None if not subset else (
                    lambda at_step: score_validation_subset(settings, sess, model, subset,
                                                            classes, writers[1], at_step))
                try:
                    _train_loop(settings, sess, model, saver, step, checkpoint, train_reader,
                                valid_reader, (writers or [None, None]), stop, cluster,
                                score_subset)
                finally:
                    for writer in writers:
                        writer.close()


def distributed_cluster(settings):
    """The distribute.Cluster of --distribute (its strategy, this worker's part), or None for
    --distribute=none, one device as the reference trained."""
    distribute.check_settings(settings)
    if settings["distribute"] == "none":
        return None
    tf.get_logger().setLevel("WARNING")  # the strategy's INFO lines on every all-reduce built
    cluster = distribute.Cluster(tf, settings, len(devices.gpu_names(tf)))
    print(cluster.describe())
    return cluster


def _train_session(cluster):
    return tf.Session(config=session_config()) if cluster is None else cluster.session(tf)


def run_with_workers(sess, cluster, fetches, feed_dict, last_checkpoint, starting=False):
    """sess.run; under --distribute, Cluster.run: a lost worker stops this one."""
    if cluster is None:
        return sess.run(fetches, feed_dict=feed_dict)
    return cluster.run(tf, sess, fetches, feed_dict, last_checkpoint, starting)


def score_validation_subset(settings, sess, model, subset, classes, writer, step):
    """At a checkpoint: the subset's pixel accuracy and mean IoU, scored as --mode=validate
    scores, written to writer (TensorBoard's validation folder) at step; returns the words for
    the checkpoint's log line."""
    import metrics
    started = time.time()
    scored = score_records(settings, sess, model, subset, classes)
    result = metrics.scores(scored["confusion"], classes.metric_ignore_label)
    writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=name, simple_value=result[name])
                                         for name in VALIDATION_SCALARS]), step)
    writer.flush()
    return (" pixel accuracy %.2f%% mean IoU %.2f%% (%d images, %.1f s)"
            % (100 * result["pixel_accuracy"], 100 * result["mean_iou"], scored["num_images"],
               time.time() - started))


def _train_loop(settings, sess, model, saver, step, last_checkpoint, train_reader, valid_reader,
                writers, stop, cluster=None, score_subset=None):
    logs_dir, batch_size = settings["logs_dir"], settings["batch_size"]
    max_iterations = settings["max_iterations"]
    train_writer, valid_writer = writers
    if step >= max_iterations:
        print("Step %d already reached --max_iterations=%d; nothing to do (raise "
              "--max_iterations to train on)" % (step, max_iterations))
        return
    print("Training from step %d to %d, batch %d, %dx%d"
          % (step, max_iterations, batch_size, settings["image_size"], settings["image_size"]))
    replicas = "" if cluster is None else " on %d replicas" % cluster.replicas
    window_start, window_steps = time.time(), 0
    gpus, slow_warned = devices.gpu_names(tf), False
    while step < max_iterations:
        images, annotations = train_reader.next_batch(batch_size)
        feed = {model.image: images, model.annotation: annotations,
                model.keep_probability: model.training_keep_probability}
        log_now = (step + 1) % settings["log_every"] == 0
        fetches = [model.train_op, model.loss] + ([model.train_summary] if log_now else [])
        if cluster is not None:
            # A signal here is this worker's vote; every worker stops once the votes summed
            # with a step say so, after that same step.
            feed[model.stop_vote] = 0.0 if stop.signal_name is None else 1.0
            fetches.append(model.stop_votes)
        results = run_with_workers(sess, cluster, fetches, feed, last_checkpoint)
        loss = float(results[1])
        step += 1
        window_steps += 1
        if not np.isfinite(loss):
            raise FCNError(
                "the training loss is %s at step %d; stopped without saving, the last good "
                "checkpoint is %s; try a lower --learning_rate" % (loss, step, last_checkpoint))
        if log_now:
            if train_writer is not None:
                train_writer.add_summary(results[2], step)
            elapsed = time.time() - window_start
            rate = window_steps * batch_size / elapsed if elapsed > 0 else float("nan")
            eta = (max_iterations - step) * elapsed / window_steps
            print("%s step %d loss %.5f images/s %.2f%s eta %s"
                  % (time.strftime("%Y-%m-%d %H:%M:%S"), step, loss, rate, replicas,
                     format_duration(eta)))
            warning = None if slow_warned else slow_cpu_warning(eta, gpus)
            if warning:
                print(warning)
                slow_warned = True
            sys.stdout.flush()
            window_start, window_steps = time.time(), 0
        if step % settings["save_every"] == 0 or step == max_iterations:
            valid_images, valid_annotations = valid_reader.next_batch(batch_size)
            valid_loss, summary = run_with_workers(
                sess, cluster, [model.loss, model.loss_summary],
                {model.image: valid_images, model.annotation: valid_annotations,
                 model.keep_probability: 1.0}, last_checkpoint)
            if saver is None:  # a worker other than the chief
                last_checkpoint = checkpoints.step_prefix(logs_dir, step)
                print("%s step %d validation loss %.5f (the chief saves %s)"
                      % (time.strftime("%Y-%m-%d %H:%M:%S"), step, valid_loss, last_checkpoint))
            else:
                valid_writer.add_summary(summary, step)
                last_checkpoint = checkpoints.save(sess, saver, logs_dir, step)
                # Scored after the save: a stop while scoring finds the checkpoint already written.
                subset_scores = "" if score_subset is None else score_subset(step)
                print("%s step %d validation loss %.5f%s saved %s"
                      % (time.strftime("%Y-%m-%d %H:%M:%S"), step, valid_loss, subset_scores,
                         last_checkpoint))
        signal_name = stop.signal_name
        if cluster is not None:
            signal_name = None if results[-1] == 0 else (
                stop.signal_name or "a Ctrl-C or SIGTERM on another worker")
        if signal_name is not None:
            if saver is None:
                print("Stopped by %s at step %d; the chief saves the checkpoint"
                      % (signal_name, step))
                break
            if not (step % settings["save_every"] == 0 or step == max_iterations):
                last_checkpoint = checkpoints.save(sess, saver, logs_dir, step)
            print("Stopped by %s at step %d; checkpoint saved to %s"
                  % (signal_name, step, last_checkpoint))
            break
    else:
        print("Reached --max_iterations=%d; last checkpoint %s" % (max_iterations, last_checkpoint))
    if cluster is not None:
        print("Weights checksum: %016x" % (int(sess.run(model.weights_checksum)) % (1 << 64)))


def _restored_session(settings, classes):
    """(graph, model, session, checkpoint path, step) restored from the newest checkpoint in
    logs_dir; FCNError when there is none (the reference silently ran an untrained network)."""
    checkpoint = checkpoints.checkpoint_to_use(settings["logs_dir"])
    check_class_count(checkpoint, classes, settings)
    graph, model = build_model(settings, False, classes, vgg_from_checkpoint=True)
    with graph.as_default():
        sess = tf.Session(config=session_config(), graph=graph)
        sess.run(tf.global_variables_initializer())
        checkpoints.restore(sess, checkpoint, model.saveable)
    return graph, model, sess, checkpoint, checkpoints.saved_step(checkpoint)


def _predict(sess, model, images):
    return sess.run(model.pred_annotation, feed_dict={model.image: images,
                                                      model.keep_probability: 1.0})


def run_visualize(settings):
    classes = dataset_classes(settings)
    _, valid_records = _read_records(settings)
    graph, model, sess, _, _ = _restored_session(settings, classes)
    names, palette = classes.class_names, classes.palette
    logs_dir = settings["logs_dir"]
    with sess, _readers(settings, valid_records, classes) as reader:
        images, annotations = reader.get_random_batch(settings["batch_size"])
        pred = _predict(sess, model, images)
        for k in range(len(images)):
            gt, p = annotations[k, :, :, 0].astype(np.uint8), pred[k, :, :, 0].astype(np.uint8)
            utils.save_image(images[k], logs_dir, "inp_%d" % k)
            utils.save_image(gt, logs_dir, "gt_%d" % k)
            utils.save_image(p, logs_dir, "pred_%d" % k)
            utils.save_image(utils.colorize(gt, palette), logs_dir, "gt_c%d" % k)
            utils.save_image(utils.colorize(p, palette), logs_dir, "pred_c%d" % k)
            utils.save_image(utils.side_by_side_panel(images[k], gt, p, names, palette),
                             logs_dir, "panel_%d" % k)
            print("Saved image: %d (%s)" % (k, reader.last_batch_records[k]["filename"]))


def score_records(settings, sess, model, records, classes, progress=None):
    """evaluation.score of the model over records, each resized to --image_size: what
    --mode=validate reports, and what training reports of its validation subset."""
    import evaluation

    def predict(images, annotations):
        return sess.run([model.pred_annotation, model.image_losses],
                        feed_dict={model.image: images, model.annotation: annotations,
                                   model.keep_probability: 1.0})

    with _readers(settings, records, classes, shuffle=False, drop_remainder=False) as reader:
        return evaluation.score(reader, predict, classes.num_classes,
                                classes.metric_ignore_label, settings["batch_size"], progress)


def run_validate(settings):
    import metrics
    classes = dataset_classes(settings)
    _, valid_records = _read_records(settings)
    graph, model, sess, checkpoint, step = _restored_session(settings, classes)
    ignore = classes.metric_ignore_label
    started = time.time()

    def progress(done, total):
        print("\rvalidated %d/%d images, %.2f images/s"
              % (done, total, done / max(time.time() - started, 1e-9)), end="")
        sys.stdout.flush()

    with sess:
        scored = score_records(settings, sess, model, valid_records, classes, progress)
    print()
    confusion, seen = scored["confusion"], scored["scored"]
    skipped = sorted(r["image"] for r in valid_records if r["filename"] not in seen)
    result = metrics.scores(confusion, ignore)
    result.update({"num_images": scored["num_images"], "loss": scored["loss"],
                   "dataset": classes.dataset, "ignore_label": ignore,
                   "class_names": classes.class_names, "confusion_matrix": confusion.tolist(),
                   "checkpoint": {"path": checkpoint, "step": step}, "skipped": skipped,
                   "image_size": settings["image_size"]})
    print(metrics.format_report(result, classes.class_names))
    print("mean cross-entropy at %dx%d: %.5f" % (settings["image_size"], settings["image_size"],
                                                 result["loss"]))
    path = os.path.join(settings["logs_dir"], "validation_metrics.json")
    with writing(path):
        write_json_atomically(path, result)
    print("Wrote %s" % path)
    return result


def check_predict_settings(settings):
    """Refuses tile and size flags that cannot work."""
    problem = tiles.tiling_problem(settings["tile_size"], settings["tile_overlap"])
    if problem:
        raise FCNError(problem)
    if settings["max_size"] < 0:
        raise FCNError("--max_size=%d: it must be 0 (off) or a positive size in pixels"
                       % settings["max_size"])


def predict_classes(settings):
    """The classes predict labels with: those training wrote beside the checkpoints; for a logs
    folder without them (older, or the original implementation's), the chosen dataset's."""
    return datasets.stored_classes(settings["logs_dir"]) or dataset_classes(settings)


def predict_labels(sess, model, image, settings, mean_pixel):
    """The uint8 [h, w] labels of image uint8 [h, w, 3]: downscaled first to --max_size, padded
    with the mean pixel to multiples of 32 and predicted in --tile_size tiles, or with --resize
    at --image_size; resized back to the image's size (nearest neighbour)."""
    import BatchDatsetReader as dataset
    h, w = image.shape[:2]
    if settings["resize"]:
        size = settings["image_size"]
        resized = dataset.resize_image(image, size, size, settings["interpolation"])
        return dataset.resize_label(_predict(sess, model, resized[None])[0, :, :, 0], h, w)
    small_h, small_w = tiles.downscaled_size(h, w, settings["max_size"])
    if (small_h, small_w) != (h, w):
        image = dataset.resize_image(image, small_h, small_w, settings["interpolation"])
    padded, _ = tiles.pad_to_multiple(image, tiles.ALIGN, mean_pixel)
    labels = tiles.predict_tiled(
        padded, settings["tile_size"], settings["tile_overlap"],
        lambda crop: _predict(sess, model, crop[None])[0, :, :, 0].astype(np.uint8))
    labels = labels[:small_h, :small_w]
    if (small_h, small_w) != (h, w):
        labels = dataset.resize_label(labels, h, w)
    return labels


def run_predict(settings):
    import BatchDatsetReader as dataset
    paths = predict_files.list_images(settings["image"])
    output_dir = settings["output_dir"] or os.path.join(settings["logs_dir"], "predictions")
    ensure_writable_dir(output_dir, "output_dir")
    classes = predict_classes(settings)
    graph, model, sess, _, _ = _restored_session(settings, classes)
    mean_pixel = mean_pixel_for_restore(settings["model_dir"])
    stems = predict_files.output_stems(paths)
    done, failures = 0, []
    with sess:
        for path in paths:
            # One image that cannot be read or predicted is skipped; a full disk (an FCNError
            # from the writes) stops the run.
            try:
                image = dataset.read_image(path)
                labels = predict_labels(sess, model, image, settings, mean_pixel)
            except dataset.UnreadableFile as e:
                failures.append(str(e))
                print("Warning: %s; skipped" % e)
                continue
            except (MemoryError, tf.errors.ResourceExhaustedError) as e:
                reason = "%s is too large to predict (%s)" % (
                    path, error_summary(e) if str(e) else type(e).__name__)
                failures.append(reason)
                print("Warning: %s; skipped: pass a smaller --tile_size or a --max_size"
                      % reason)
                continue
            stem = stems[path]
            utils.save_image(labels, output_dir, stem + "_pred")
            utils.save_image(utils.prediction_overlay(image, labels, classes.class_names,
                                                      classes.palette),
                             output_dir, stem + "_pred_c")
            done += 1
            print("%s -> %s" % (path, os.path.join(output_dir, stem + "_pred.png")))
    if not done:
        raise FCNError("none of the %d images could be predicted (%s)"
                       % (len(paths), "; ".join(failures)))


# ---- the command line ---------------------------------------------------------------------------

PROGRAM = "FCN.py"


def project_flags():
    """{name: absl Flag} of every flag this file defines (and no other module's), in order."""
    module = FLAGS.find_module_defining_flag("mode")
    return {flag.name: flag for flag in FLAGS.flags_by_module_dict()[module]}


def current_settings():
    """{flag name: value} of every flag this file defines (and no other module's)."""
    return {name: flag.value for name, flag in project_flags().items()}


def parse_command_line(argv, flags=None):
    """The settings {flag name: value} that argv asks for, read strictly (command_line.parse)
    against this file's flags (flags: {name: absl Flag}, project_flags() when None)."""
    return command_line.parse(argv, project_flags() if flags is None else flags, PROGRAM,
                              defined_in=os.path.abspath(__file__))


def use_as_flags(settings):
    """FLAGS take the parsed values: a library function's argument left None reads its flag.
    absl's and TensorFlow's own flags keep their defaults."""
    for name, value in settings.items():
        FLAGS[name].value = value
    FLAGS.mark_as_parsed()


def show_tensorflow_messages(verbose):
    """--verbose: what TensorFlow wrote at start-up and its INFO logs; else only its errors
    (no "Restoring parameters from", no deprecation warnings)."""
    if verbose:
        quiet_tensorflow.replay_held()
        tf.logging.set_verbosity(tf.logging.INFO)
        return
    tf.logging.set_verbosity(tf.logging.ERROR)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


def bf16_warning(precision, gpus, cpu_flags):
    """The warning line for --precision=bf16 where bfloat16 is not native, else None."""
    if precision != "bf16" or devices.native_bf16(gpus, cpu_flags):
        return None
    return ("Warning: --precision=bf16 is emulated here (no GPU, and the CPU has none of %s): "
            "it is slower than fp32 on this machine; --precision=fp32 is the faster choice"
            % ", ".join(devices.NATIVE_BF16_CPU_FLAGS))


def slow_cpu_warning(eta_seconds, gpus):
    """The warning line for training on the CPU when the ETA is over a day, else None."""
    if gpus or not eta_seconds > SLOW_CPU_ETA:
        return None
    return ("Warning: training on the CPU only; at this pace the run needs about %s more. A GPU "
            "is far faster (README, Set-up), or lower --max_iterations or --image_size"
            % format_duration(eta_seconds))


def run(settings):
    """Runs one mode with the given settings (a dict like current_settings())."""
    check_settings(settings)
    settings = with_defaults(settings)
    random.seed(settings["seed"])
    np.random.seed(settings["seed"])
    with quiet_tensorflow.held_stderr():  # the first look for GPUs writes "failed call to cuInit"
        gpus = devices.gpu_names(tf)
    if settings["verbose"]:
        quiet_tensorflow.replay_held()
    print(devices.device_line(gpus))
    warning = bf16_warning(settings["precision"], gpus, devices.cpu_flags())
    if warning:
        print(warning)
    print("Settings: " + ", ".join("%s=%s" % item for item in sorted(settings.items())))
    ensure_writable_dir(settings["logs_dir"], "logs_dir")
    if settings["mode"] == "train":
        return run_train(settings)
    if settings["mode"] == "export":
        import export_model
        return export_model.run_export(settings, sys.modules[__name__])
    return {"visualize": run_visualize, "validate": run_validate,
            "predict": run_predict}[settings["mode"]](settings)


def main(argv=None):
    """python FCN.py --flag=value ...: argv (sys.argv when None, argv[0] the program) parsed,
    one mode run. A user's mistake is one line on stderr and exit code 2; Ctrl-C outside the
    training loop (which saves a checkpoint first) one line and exit code 130."""
    with guards.ctrl_c_exits(PROGRAM):
        try:
            settings = parse_command_line(sys.argv if argv is None else argv)
            use_as_flags(settings)
            show_tensorflow_messages(settings["verbose"])
            run(settings)
        except command_line.HelpRequest as e:
            try:
                print(e.args[0])
                sys.stdout.flush()
            except BrokenPipeError:
                # `python FCN.py --help | head`: the reader has what it wanted.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except FCNError as e:
            sys.stderr.write("%s: error: %s\n" % (PROGRAM, e))
            sys.exit(2)


if __name__ == "__main__":
    main()
