"""The networks: VGG-19's trunk, FCN-8s as the reference builds it and as the paper defines it, the
pixel loss, the training op, and Model, the graph every mode builds around them.

Reads no flags: every choice is an argument whose default is the reference's. FCN.py wires the
command line to it (and keeps the reference's API, whose arguments fall back to their flags).

Widths: the networks take VGG's channel counts and fc6's and fc7's from a vgg_weights.Widths,
VGG-19's by default; the weights, a checkpoint (checkpoint_widths) or the .mat
(vgg_weights.declared_widths) give them. The tests build the same topology, with the same
variable names, at narrow widths.
"""
import collections

import numpy as np
import tensorflow.compat.v1 as tf

import TensorflowUtils as utils
import datasets
import distribute
import tiles
import training_recipe
import vgg_weights
from datasets import ADE20K
from vgg_weights import VGG19_WIDTHS, Widths

NUM_CLASSES = ADE20K.num_classes
KEEP_PROBABILITY = 0.85  # dropout keep probability while training (the reference's value)
PAPER_KEEP_PROBABILITY = 0.5  # the paper's dropout on fc6 and fc7 while training
LEARNING_RATE = 1e-4  # the reference's Adam
# --precision: the dtype the layers compute in (variables and the optimizer are float32 in both).
COMPUTE_DTYPES = {"fp32": tf.float32, "bf16": tf.bfloat16}
# Deliberate (the reference): the head starts from conv5_3 before its ReLU and skips conv5_4,
# which is built but feeds nothing; the paper pools VGG's last ReLU.
HEAD_INPUT = "conv5_3"
CONV_T3_STRIDE = 8  # the reference's x8 upsampling to the input size (W_t3 is 16x16)
# --variant: the faithful port (its 44 variables under inference/), or FCN-8s as the paper and its
# Caffe code define it (its variables under paper/, named after the paper's layers).
REFERENCE, PAPER = "reference", "paper"
VARIANTS = (REFERENCE, PAPER)
VARIANT_SCOPES = {REFERENCE: "inference", PAPER: "paper"}
# The bias of each variant's coarse class scores: one entry per class.
CLASS_COUNT_VARIABLES = {REFERENCE: "inference/b8", PAPER: "paper/score_fr_b"}
# Each variant's fc6 kernel: its last axis is fc6's width.
FC6_VARIABLES = {REFERENCE: "inference/W6", PAPER: "paper/fc6_w"}

# What a network gives: prediction int64 [N,H,W,1], logits float32 [N,H,W,C], and the reference's
# logits as the four phase groups its x8 upsampling computes (utils.phase_groups; None for the
# paper), on which the loss and the argmax are computed without interleaving the logits.
Outputs = collections.namedtuple("Outputs", "prediction logits phase_groups")


# ---- VGG-19 ------------------------------------------------------------------------------------

def vgg_blocks(weights, x, blocks, debug=False, pool=None, widths=VGG19_WIDTHS):
    """VGG-19's blocks (numbers 1 to 5, in order) on x: each block's convolutions and ReLUs, then
    its 2x2 pool, but for block 5, which each network pools itself. Returns every layer's
    tensor (conv, relu, pool) by name.

    weights: 'conv1_1'... -> (kernel [h,w,in,out], bias); None builds the same variables
    without VGG's values (zeros, of the given widths), for a graph whose values all come from a
    checkpoint: then the .mat need not be read or embedded in the graph. pool: the 2x2 pooling,
    the reference's average pooling when None.
    """
    pool = utils.avg_pool_2x2 if pool is None else pool
    layers = vgg_weights.conv_layers(widths)
    net = {}
    current = x
    for block in blocks:
        for name, channels_in, channels_out in layers[block - 1]:
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
        if block < len(layers):
            # Deliberate (the reference): average pooling inside VGG; VGG and the paper use max.
            net["pool%d" % block] = current = pool(current)
    return net


def vgg_net(weights, image, debug=False, pool=None, widths=VGG19_WIDTHS):
    """VGG-19's trunk, its five blocks (vgg_blocks)."""
    return vgg_blocks(weights, image, range(1, 6), debug, pool, widths)


def widths_of(weights, fc=VGG19_WIDTHS.fc):
    """The Widths of VGG weights (a block's width is its first convolution's outputs); fc from
    the weights' fc6 when they hold it, else the given one."""
    blocks = tuple(int(weights[block[0][0]][0].shape[3]) for block in vgg_weights.conv_layers())
    if "fc6" in weights:
        fc = int(weights["fc6"][0].shape[3])
    return Widths(blocks=blocks, fc=fc)


def resolved_widths(weights, widths):
    """widths, or when None those of the weights (widths_of), VGG-19's without weights."""
    if widths is not None:
        return widths
    return VGG19_WIDTHS if weights is None else widths_of(weights)


def checkpoint_widths(checkpoint, variant):
    """The Widths of the variant's network in a checkpoint, read from its variables' shapes."""
    shapes = dict(tf.train.list_variables(checkpoint))
    scope = VARIANT_SCOPES[variant]
    blocks = tuple(int(shapes["%s/%s_w" % (scope, block[0][0])][3])
                   for block in vgg_weights.conv_layers())
    return Widths(blocks=blocks, fc=int(shapes[FC6_VARIABLES[variant]][3]))


def checkpoint_variant(checkpoint):
    """The network a checkpoint is of: 'paper' when it holds variables under paper/, else
    'reference' (the original implementation's checkpoints, which record no variant, too)."""
    prefix = VARIANT_SCOPES[PAPER] + "/"
    names = [name for name, _ in tf.train.list_variables(checkpoint)]
    return PAPER if any(name.startswith(prefix) for name in names) else REFERENCE


def pretrained_variable_names(variant):
    """The names of the variables a variant initialises from the .mat (VGG's convolutions, and
    for the paper fc6 and fc7): a checkpoint holding them all makes the .mat unnecessary."""
    scope = VARIANT_SCOPES[variant]
    layers = [name for name, _ in vgg_weights.VGG19_CONV_SHAPES]
    if variant == PAPER:
        layers += [name for name, _ in vgg_weights.VGG19_FC_SHAPES]
    return ["%s/%s_%s" % (scope, name, part) for name in layers for part in "wb"]


# ---- the stages --------------------------------------------------------------------------------
# After VGG's blocks 1 to 4, each network is four more stages, each a function of maps at one or
# more scales, built inside the network's variable scope: pool5 (block 5 and its pool, 1/32),
# scores (fc6, fc7 and the coarse class scores, 1/32), fuses (the x2 upsamplings fused with
# pool4 and pool3, 1/8) and upsample (x8 to the input size, the labels). fcn8s composes them;
# predict runs each over a large image in tiles (tiled_network.py).
Stages = collections.namedtuple("Stages", "scope pool pool5 scores fuses upsample")


def _dropout(x, keep_prob, name=None):
    # keep_prob None: a graph that only predicts has no dropout, which at keep 1 would still
    # draw a random number for every activation.
    if keep_prob is None:
        return x
    return tf.nn.dropout(x, rate=tf.cast(1.0 - keep_prob, x.dtype), name=name)


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


def _reference_pool5(pool4, weights, debug, widths):
    # Deliberate (the reference): pool5 of conv5_3 before its ReLU; conv5_4 feeds nothing.
    return utils.max_pool_2x2(vgg_blocks(weights, pool4, (5,), debug, widths=widths)[HEAD_INPUT])


def _reference_scores(pool5, keep_prob, weights, num_classes, debug, widths):
    relu_dropout6 = _fc_as_conv(pool5, [7, 7, widths.blocks[4], widths.fc], "6", keep_prob, debug)
    relu_dropout7 = _fc_as_conv(relu_dropout6, [1, 1, widths.fc, widths.fc], "7", keep_prob,
                                debug)
    W8 = utils.weight_variable([1, 1, widths.fc, num_classes], name="W8")
    b8 = utils.bias_variable([num_classes], name="b8")
    return utils.conv2d_basic(relu_dropout7, W8, b8)  # the coarse heat map, 1/32 scale


def _reference_fuses(conv8, pool4, pool3, num_classes, widths):
    # Upsample x2 and fuse with pool4. Deliberate (the reference): the upsampled map goes back
    # to pool4's channels and is added to raw pool4; the paper adds a 1x1 score of it.
    pool3_width, pool4_width = widths.blocks[2], widths.blocks[3]
    W_t1 = utils.weight_variable([4, 4, pool4_width, num_classes], name="W_t1")
    b_t1 = utils.bias_variable([pool4_width], name="b_t1")
    conv_t1 = utils.conv2d_transpose_strided(conv8, W_t1, b_t1, output_shape=tf.shape(pool4))
    fuse_1 = tf.add(conv_t1, pool4, name="fuse_1")
    # Upsample x2 and fuse with raw pool3, the same deliberate difference.
    W_t2 = utils.weight_variable([4, 4, pool3_width, pool4_width], name="W_t2")
    b_t2 = utils.bias_variable([pool3_width], name="b_t2")
    conv_t2 = utils.conv2d_transpose_strided(fuse_1, W_t2, b_t2, output_shape=tf.shape(pool3))
    return tf.add(conv_t2, pool3, name="fuse_2")


def _reference_upsample(fuse_2, num_classes, widths):
    """x8 to the input size: the per-pixel class scores. The transposed convolution (16x16,
    stride 8) computed as four dense 2x2 convolutions whose outputs interleave (H, W are
    multiples of 32, so the output is exactly 8x fuse_2): utils.phase_groups. The softmax, the
    loss and the argmax in float32 whatever the precision."""
    W_t3 = utils.weight_variable([16, 16, num_classes, widths.blocks[2]], name="W_t3")
    b_t3 = utils.bias_variable([num_classes], name="b_t3")
    groups = [tf.cast(group, tf.float32)
              for group in utils.phase_groups(fuse_2, W_t3, b_t3, stride=CONV_T3_STRIDE)]
    conv_t3 = utils.interleave_phases(groups)
    # The argmax per phase group: the same labels, without moving every pixel's class scores
    # through the interleave.
    annotation_pred = utils.interleave_phases(
        [tf.expand_dims(tf.argmax(group, axis=-1), -1) for group in groups])
    annotation_pred = tf.squeeze(annotation_pred, axis=[3], name="prediction")
    return Outputs(tf.expand_dims(annotation_pred, axis=3), conv_t3, groups)


def _pretrained_or_zeros(weights, name, shape):
    """(kernel, bias) variables name_w, name_b: from weights[name] (numpy), or zeros when
    weights is None (a checkpoint will supply them)."""
    if weights is None:
        return (utils.zeros_variable(list(shape), name=name + "_w"),
                utils.zeros_variable([shape[3]], name=name + "_b"))
    if name not in weights:
        raise ValueError("the paper variant needs VGG-19's %s in the weights: load them with "
                         "vgg_weights.load_vgg(model_dir, with_fc=True)" % name)
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


def _paper_pool5(pool4, weights, debug, widths):
    net = vgg_blocks(weights, pool4, (5,), debug, pool=utils.max_pool_2x2, widths=widths)
    return utils.max_pool_2x2(net["relu5_4"])


def _paper_scores(pool5, keep_prob, weights, num_classes, debug, widths):
    fc = pool5
    for name, shape in vgg_weights.fc_shapes(widths):
        W, b = _pretrained_or_zeros(weights, name, shape)
        fc = tf.nn.relu(utils.conv2d_as_matmul(fc, W, b), name="relu" + name[2:])
        if debug:
            utils.add_activation_summary(fc)
        fc = _dropout(fc, keep_prob, name="drop" + name[2:])
    return _score(fc, "score_fr", widths.fc, num_classes)


def _paper_fuses(score_fr, pool4, pool3, num_classes, widths):
    score_pool4 = _score(pool4, "score_pool4", widths.blocks[3], num_classes)
    upscore2 = _learned_upsample_x2(score_fr, score_pool4, "upscore2", num_classes)
    fuse_pool4 = tf.add(upscore2, score_pool4, name="fuse_pool4")
    score_pool3 = _score(pool3, "score_pool3", widths.blocks[2], num_classes)
    upscore_pool4 = _learned_upsample_x2(fuse_pool4, score_pool3, "upscore_pool4", num_classes)
    return tf.add(upscore_pool4, score_pool3, name="fuse_pool3")


def _paper_upsample(fuse_pool3, num_classes, widths):
    # x8 to the input size, fixed bilinear (a constant kernel): nothing to learn.
    upscore8 = tf.identity(utils.bilinear_upsample(fuse_pool3, 8), name="upscore8")
    logits = tf.cast(upscore8, tf.float32)
    pred = tf.argmax(logits, axis=3, name="prediction")
    return Outputs(tf.expand_dims(pred, axis=3), logits, None)


# FCN-8s as the reference builds it, its 44 variables under inference/.
REFERENCE_STAGES = Stages(VARIANT_SCOPES[REFERENCE], utils.avg_pool_2x2, _reference_pool5,
                          _reference_scores, _reference_fuses, _reference_upsample)
# FCN-8s as the paper (Long, Shelhamer and Darrell) and its Caffe code define it, on VGG-19, its
# 44 variables under paper/ named after the paper's layers. SAME padding on inputs of multiples
# of 32 (as the reference), not the paper's 100-pixel padding and crops: every map is then
# exactly 1/2^k of the input, so the skips align without offsets, predict's padding to 32 keeps
# working, and the pretrained fc6 sees at its centre what VGG's classifier saw.
PAPER_STAGES = Stages(VARIANT_SCOPES[PAPER], utils.max_pool_2x2, _paper_pool5, _paper_scores,
                      _paper_fuses, _paper_upsample)
STAGES = {REFERENCE: REFERENCE_STAGES, PAPER: PAPER_STAGES}


# ---- either network ----------------------------------------------------------------------------

def fcn8s(image, keep_prob, vgg, debug=False, precision="fp32", num_classes=NUM_CLASSES,
          variant=REFERENCE, widths=None):
    """FCN-8s. image: float [N,H,W,3], RGB 0..255, H and W multiples of 32 (N, H, W may be None).

    vgg: (weights, mean_pixel), weights None when a checkpoint will supply every value.
    precision: 'fp32', or 'bf16' to compute the layers in bfloat16 while the variables stay
    float32 (the same checkpoints); the logits are float32 either way.
    num_classes: only the class layers depend on it.
    variant: 'reference' (the faithful port) or 'paper' (PAPER_STAGES; the weights must then hold
    fc6 and fc7).
    keep_prob: fc6's and fc7's dropout keep probability (a tensor or a number); None for a graph
    that only predicts: no dropout ops at all (the same values as keep 1).
    widths: VGG's and fc's widths; None: those of the weights (widths_of), VGG-19's without.
    Returns its Outputs.
    """
    if variant not in VARIANTS:
        raise ValueError("variant is one of %s, not %r" % (VARIANTS, variant))
    weights, mean_pixel = vgg
    widths = resolved_widths(weights, widths)
    print("setting up vgg initialized conv layers ...")
    # The skips add maps of 1/16 and 1/8 of the input size, and conv_t3 gives 8x its input:
    # any other size would fail later with a shape error that does not say why.
    size_check = tf.debugging.assert_equal(
        tf.math.floormod(tf.shape(image)[1:3], tiles.ALIGN), 0,
        message="FCN.inference needs an image height and width that are multiples of 32")
    with tf.control_dependencies([size_check]):
        processed_image = utils.process_image(image, mean_pixel.astype(np.float32))
    processed_image = tf.cast(processed_image, COMPUTE_DTYPES[precision])
    stages = STAGES[variant]
    with tf.variable_scope(stages.scope):
        trunk = vgg_blocks(weights, processed_image, (1, 2, 3, 4), debug, stages.pool, widths)
        pool5 = stages.pool5(trunk["pool4"], weights, debug, widths)
        scores = stages.scores(pool5, keep_prob, weights, num_classes, debug, widths)
        fuse = stages.fuses(scores, trunk["pool4"], trunk["pool3"], num_classes, widths)
        return stages.upsample(fuse, num_classes, widths)


# ---- the loss and the training op --------------------------------------------------------------

def counted_pixels(labels, ignore_label):
    """The one ignore convention of the loss (metrics.confusion_matrix applies the same): a pixel
    counts unless its label equals ignore_label. Returns (labels with the ignored pixels set to
    class 0, so that the cross-entropy is defined there, and their float32 weights 0 or 1)."""
    counted = tf.not_equal(labels, ignore_label)
    return tf.where(counted, labels, tf.zeros_like(labels)), tf.cast(counted, tf.float32)


def pixel_loss(logits, annotation, ignore_label=None, axis=None, phase_groups=None):
    """Mean softmax cross-entropy over the pixels; annotation is int [N,H,W,1].

    ignore_label None: over every pixel, as the reference. Otherwise over the pixels whose
    label is not ignore_label; the ignored ones get exactly zero gradient (their cross-entropy
    is multiplied by 0). axis: None for one mean, [1, 2] for each image's mean. phase_groups:
    the logits as the reference network's phase groups (its Outputs): the same loss, computed
    on them with the labels put in their order, without interleaving the logits.
    """
    labels = tf.squeeze(annotation, axis=[3])
    if phase_groups is None:
        pairs, pixel_axes = [(logits, labels)], axis
    else:  # the same pixels in the phase order: [N, H/8, W/8, 4, 4] each
        pairs = list(zip(phase_groups, utils.phase_order(labels, CONV_T3_STRIDE)))
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


def recipe_pixel_loss(logits, annotation, ignore_label=None, class_weights=None,
                      hard_pixel_fraction=1.0, phase_groups=None):
    """The mean cross-entropy of the recipe: each counted pixel's (label not ignore_label) weighted
    by its class's weight (class_weights, one per class; 1 when None), over the hard_pixel_fraction
    of the counted pixels with the highest cross-entropy (all of them at 1.0), normalised by the
    sum of the weights of the pixels averaged. Annotation int [N,H,W,1]; phase_groups as for
    pixel_loss."""
    labels = tf.squeeze(annotation, axis=[3])
    if phase_groups is None:
        pairs = [(logits, labels)]
    else:
        pairs = list(zip(phase_groups, utils.phase_order(labels, CONV_T3_STRIDE)))
    with tf.name_scope("entropy"):
        losses, weights, counteds = [], [], []
        for scores, group_labels in pairs:
            if ignore_label is None:
                counted = tf.ones_like(group_labels, tf.float32)
            else:
                group_labels, counted = counted_pixels(group_labels, ignore_label)
            weight = counted
            if class_weights is not None:
                weight = counted * tf.gather(tf.constant(class_weights, tf.float32),
                                             group_labels)
            losses.append(tf.reshape(utils.sparse_cross_entropy(scores, group_labels), [-1]))
            weights.append(tf.reshape(weight, [-1]))
            counteds.append(tf.reshape(counted, [-1]))
        losses, weights, counted = (tf.concat(part, axis=0)
                                    for part in (losses, weights, counteds))
        if hard_pixel_fraction < 1.0:
            # The hardest pixels among the counted ones (an ignored pixel ranks below any).
            k = tf.cast(tf.maximum(tf.math.ceil(hard_pixel_fraction * tf.reduce_sum(counted)),
                                   1.0), tf.int32)
            _, hardest = tf.math.top_k(tf.where(counted > 0, losses, -tf.ones_like(losses)), k)
            losses, weights = tf.gather(losses, hardest), tf.gather(weights, hardest)
        return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1e-12)


def training_op(loss, var_list, learning_rate=LEARNING_RATE, debug=False, global_step=None,
                recipe=training_recipe.REFERENCE_RECIPE):
    """The update of var_list by Adam (the reference's training op), or by the recipe's
    optimizer. learning_rate: a number or a tensor. global_step, when given, is incremented by
    each update."""
    optimizer = training_recipe.optimizer_of(recipe, learning_rate)
    grads = optimizer.compute_gradients(loss, var_list=var_list)
    if debug:
        for grad, var in grads:
            utils.add_gradient_summary(grad, var)
    return optimizer.apply_gradients(grads, global_step=global_step)


# ---- the graph of a mode -----------------------------------------------------------------------

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
    global step, the Adam update and the summaries), on one device or on the replicas of a
    tf.distribute strategy, by the same function (a replica's)."""

    def __init__(self, vgg, training, debug=False, learning_rate=LEARNING_RATE, precision="fp32",
                 classes=None, variant=REFERENCE, strategy=None, image_size=None, widths=None,
                 recipe=training_recipe.REFERENCE_RECIPE):
        """vgg: (weights, mean_pixel), see fcn8s. classes: the datasets.ClassInfo (class count,
        ignore label, colours); ADE20K's when None. variant: 'reference' or 'paper'. strategy:
        a tf.distribute strategy (--distribute) to build the network once per replica, each on
        its equal part of the batch fed; None: one device, as the reference. image_size: the
        side of every image fed (the placeholders' H and W, as the reference's), or None for any
        size. widths: see fcn8s. recipe: how training trains (the optimizer, the learning rate's
        schedule, the loss's weights; Recipe)."""
        classes = classes or datasets.class_info(ADE20K, ["class %d" % k for k in
                                                          range(ADE20K.num_classes)])
        # What training feeds keep_probability: each network's own dropout.
        self.training_keep_probability = (PAPER_KEEP_PROBABILITY if variant == PAPER
                                          else KEEP_PROBABILITY)
        replicas = 1 if strategy is None else strategy.num_replicas_in_sync

        rates = []  # the rate tensor each replica's update reads

        def replica(image, annotation, keep_probability):
            """One replica's network, losses and (training) its share of the update. A graph
            that does not train has no dropout; callers may still feed keep_probability, which
            nothing then reads."""
            if strategy is not None:
                image = distribute.local_slice(tf, image, strategy)
                annotation = distribute.local_slice(tf, annotation, strategy)
            outputs = fcn8s(image, keep_probability if training else None, vgg, debug=debug,
                            precision=precision, num_classes=classes.num_classes,
                            variant=variant, widths=self.widths)
            ignore = classes.loss_ignore_label
            # Training's loss also ignores augmentation's padding, which is never a class.
            loss_ignore = recipe.pad_label if training and ignore is None else ignore
            if training and (recipe.class_weights is not None
                             or recipe.hard_pixel_fraction < 1.0):
                loss = recipe_pixel_loss(outputs.logits, annotation, loss_ignore,
                                         recipe.class_weights, recipe.hard_pixel_fraction,
                                         phase_groups=outputs.phase_groups)
            else:
                loss = pixel_loss(outputs.logits, annotation, loss_ignore,
                                  phase_groups=outputs.phase_groups)
            # Each image's mean cross-entropy (validate weighs every image once, whatever its
            # batch).
            image_losses = pixel_loss(outputs.logits, annotation, ignore, axis=[1, 2],
                                      phase_groups=outputs.phase_groups)
            update = None
            if training:
                objective = training_recipe.with_weight_decay(loss, tf.trainable_variables(),
                                                              recipe.weight_decay)
                step = tf.train.get_or_create_global_step()
                # The replicas' gradients are summed, not averaged: each replica's objective is
                # divided by their number, so that the update is one device's on the whole
                # batch (Adam hides a missing division, plain gradient descent would not).
                rates.append(training_recipe.rate_in_force(learning_rate, recipe, step))
                update = training_op(
                    objective if replicas == 1 else objective / replicas,
                    tf.trainable_variables(), debug=debug, global_step=step, recipe=recipe,
                    learning_rate=rates[-1])
            return outputs.prediction, outputs.logits, loss, image_losses, update

        self.widths = resolved_widths(vgg[0], widths)
        self.image, self.annotation, self.keep_probability = input_placeholders(image_size)
        self.stop_vote = self.stop_votes = self.weights_checksum = None
        if strategy is None:
            (self.pred_annotation, self.logits, self.loss, self.image_losses,
             self.train_op) = replica(self.image, self.annotation, self.keep_probability)
        else:
            with strategy.scope():
                self._build_replicated(strategy, replica, training)
        self.network_variables = tf.trainable_variables()
        self.global_step = tf.train.get_global_step() if training else None
        self.mean_pixel = vgg[1]
        # The rate in force for the log and TensorBoard (None: constant, the reference's). On
        # one device, the tensor the update reads: fetched with it, it is that step's rate.
        self.learning_rate = None
        if training and not training_recipe.constant_rate(recipe):
            self.learning_rate = (rates[0] if strategy is None else
                                  training_recipe.learning_rate_at(self.global_step,
                                                                   learning_rate, recipe))
        # Each pixel's class probabilities, for the multi-scale average (multi_scale.py).
        self.probabilities = None if training else tf.nn.softmax(self.logits)
        if training:
            if debug:
                for var in self.network_variables:
                    utils.add_variable_summary(var)
            self._add_summaries(classes)
        self.saveable = tf.global_variables()

    def _build_replicated(self, strategy, replica, training):
        """The replicas of strategy: the placeholders take this worker's images;
        pred_annotation, logits and image_losses are its replicas' joined in batch order, loss
        the mean over every replica of every worker; stop_votes sums the stop_vote fed on each
        worker (Ctrl-C or SIGTERM there), so that all workers stop after the same step."""
        self.stop_vote = tf.placeholder_with_default(0.0, [], name="stop_vote")
        if training:
            tf.train.get_or_create_global_step()  # outside the replicas, which share it

        def replica_with_vote(image, annotation, keep_probability, stop_vote):
            return replica(image, annotation, keep_probability) + (tf.identity(stop_vote),)

        pred, logits, loss, image_losses, update, vote = strategy.run(
            replica_with_vote, args=(self.image, self.annotation, self.keep_probability,
                                     self.stop_vote))
        self.pred_annotation, self.logits, self.image_losses = [
            tf.concat(strategy.experimental_local_results(v), axis=0)
            for v in (pred, logits, image_losses)]
        self.loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)
        self.stop_votes = strategy.reduce(tf.distribute.ReduceOp.SUM, vote, axis=None)
        self.train_op = strategy.group(update) if training else None
        # The weights' bits summed, computed where they are (fetching them through a worker's
        # session would hold them twice in its memory): identical weights give the same sum.
        self.weights_checksum = tf.add_n([tf.reduce_sum(tf.cast(tf.bitcast(
            tf.convert_to_tensor(v), tf.int32), tf.int64)) for v in tf.trainable_variables()])

    def _add_summaries(self, classes):
        """The loss, and the images with their ground truth and prediction in colour."""
        self.loss_summary = tf.summary.scalar("entropy", self.loss)
        if self.learning_rate is not None:
            tf.summary.scalar("learning_rate", self.learning_rate)
        palette = tf.constant(datasets.full_palette(classes.palette))  # 255 has a colour too
        colour = lambda labels: tf.gather(palette, tf.squeeze(tf.cast(labels, tf.int32), 3))
        tf.summary.image("input_image", tf.cast(self.image, tf.uint8), max_outputs=2)
        tf.summary.image("ground_truth", colour(self.annotation), max_outputs=2)
        tf.summary.image("pred_annotation", colour(self.pred_annotation), max_outputs=2)
        self.train_summary = tf.summary.merge_all()


def fed_image_size(settings):
    """The side of every image the mode feeds, resized to it: --image_size for train,
    visualize and validate (without --eval_scales) and predict --resize; None where each image
    (or tile) keeps its own size: predict, visualize and validate at --eval_scales, the
    export. A known size lets fc6 skip the taps on padding
    (TensorflowUtils.conv2d_as_matmul)."""
    fixed = settings.mode == "train" or (
        settings.mode in ("visualize", "validate") and not settings.eval_scales) or (
        settings.mode == "predict" and settings.resize)
    return settings.image_size if fixed else None


def build_model(settings, training, classes, weights_from=None, strategy=None,
                class_weights=None):
    """(graph, model) of the settings' network (variant, precision, learning rate, debug, seed)
    and, for training, its recipe (class_weights: the list --class_weights gives).

    weights_from: None to initialise from VGG-19's .mat in --model_dir; or a checkpoint that will
    supply the VGG values, whose widths the variables take: the .mat is then not loaded (only
    its mean pixel read, when it is there). strategy: see Model.
    """
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(settings.seed)
        if weights_from is None:
            weights, mean_pixel, widths = vgg_weights.load_vgg(settings.model_dir,
                                                               with_fc=settings.variant == PAPER)
        else:
            weights, mean_pixel = None, vgg_weights.mean_pixel_for_restore(settings.model_dir)
            widths = checkpoint_widths(weights_from, settings.variant)
        model = Model((weights, mean_pixel), training, debug=settings.debug and training,
                      learning_rate=settings.learning_rate, precision=settings.precision,
                      classes=classes, variant=settings.variant, strategy=strategy,
                      image_size=fed_image_size(settings), widths=widths,
                      recipe=training_recipe.recipe_of(settings, classes, class_weights))
    return graph, model


def session_config():
    return tf.ConfigProto()
