"""FCN-8s semantic segmentation on MIT Scene Parsing (ADE20K), VGG-19 based.

A faithful port of FCN.tensorflow to TensorFlow 2.x through tensorflow.compat.v1: the same graph,
the same variable names (a checkpoint of the original restores here), the same numerics.

    python FCN.py --mode=train --batch_size=10
    python FCN.py --mode=visualize
    python FCN.py --mode=validate
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf

import TensorflowUtils as utils

FLAGS = tf.flags.FLAGS

# ---- data and folders ----
tf.flags.DEFINE_string("logs_dir", "logs/", "where checkpoints, summaries and outputs go")
tf.flags.DEFINE_string("data_dir", "Data_zoo/MIT_SceneParsing/", "the dataset folder")
tf.flags.DEFINE_string("model_dir", "Model_zoo/", "where imagenet-vgg-verydeep-19.mat is kept")
# ---- training ----
tf.flags.DEFINE_integer("batch_size", 10, "images per step (the reference used 2)")
tf.flags.DEFINE_float("learning_rate", 1e-4, "Adam's learning rate")
# ---- what to run ----
tf.flags.DEFINE_bool("debug", False, "add activation, gradient and variable histograms")
tf.flags.DEFINE_string("mode", "train", "train, visualize or validate")

MODEL_URL = "http://www.vlfeat.org/matconvnet/models/beta16/imagenet-vgg-verydeep-19.mat"

NUM_OF_CLASSESS = 151  # 150 ADE20K classes and 0, "other" (the reference's spelling)
IMAGE_SIZE = 224

# VGG-19 up to conv5_4, in order. Pooling after blocks 1-4 only: the head pools conv5_3 itself.
VGG_LAYERS = (
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4",
    "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "conv4_4", "relu4_4",
    "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "conv5_4", "relu5_4",
)


def _flag(name):
    """A flag's value, parsed or not: importing and building the graph never parses argv."""
    return FLAGS[name].value


def vgg_net(weights, image, debug=None):
    """The VGG-19 trunk. weights maps 'conv1_1'... to (kernel [h,w,in,out], bias); returns every
    layer's tensor (conv, relu, pool) by name."""
    debug = _flag("debug") if debug is None else debug
    net = {}
    current = image
    for name in VGG_LAYERS:
        kind = name[:4]
        if kind == "conv":
            kernel, bias = weights[name]
            kernel = utils.get_variable(kernel, name=name + "_w")
            bias = utils.get_variable(bias, name=name + "_b")
            current = utils.conv2d_basic(current, kernel, bias)
        elif kind == "relu":
            current = tf.nn.relu(current, name=name)
            if debug:
                utils.add_activation_summary(current)
        elif kind == "pool":
            # Deliberate (the reference): average pooling inside VGG; VGG and the paper use max.
            current = utils.avg_pool_2x2(current)
        net[name] = current
    return net


def load_vgg(model_dir=None):
    """(weights, mean_pixel) of VGG-19 from model_dir (downloaded there when absent)."""
    model_dir = _flag("model_dir") if model_dir is None else model_dir
    path = os.path.join(model_dir, os.path.basename(MODEL_URL))
    mat = utils.get_model_data(model_dir, MODEL_URL)
    return utils.load_vgg19(mat, path)


def _fc_as_conv(x, shape, index, keep_prob, debug):
    """fc6 / fc7 as a convolution + ReLU + dropout: W<index>, b<index>, relu<index>.

    Deliberate (the reference): they start random; the paper converts VGG's pretrained fc weights.
    """
    W = utils.weight_variable(shape, name="W" + index)
    b = utils.bias_variable([shape[3]], name="b" + index)
    relu = tf.nn.relu(utils.conv2d_basic(x, W, b), name="relu" + index)
    if debug:
        utils.add_activation_summary(relu)
    return tf.nn.dropout(relu, rate=1.0 - keep_prob)


def inference(image, keep_prob, vgg=None, debug=None):
    """FCN-8s. image: float [N,H,W,3], RGB 0..255, H and W multiples of 32 (N, H, W may be None).

    vgg: (weights, mean_pixel) from load_vgg(); loaded from --model_dir when None.
    Returns (annotation_pred [N,H,W,1] int64, logits [N,H,W,NUM_OF_CLASSESS]).
    """
    debug = _flag("debug") if debug is None else debug
    print("setting up vgg initialized conv layers ...")
    weights, mean_pixel = load_vgg() if vgg is None else vgg
    processed_image = utils.process_image(image, mean_pixel.astype(np.float32))

    with tf.variable_scope("inference"):
        image_net = vgg_net(weights, processed_image, debug=debug)
        # Deliberate (the reference): the head starts from conv5_3 before its ReLU and skips
        # conv5_4; the paper pools VGG's last ReLU.
        conv_final_layer = image_net["conv5_3"]
        pool5 = utils.max_pool_2x2(conv_final_layer)

        relu_dropout6 = _fc_as_conv(pool5, [7, 7, 512, 4096], "6", keep_prob, debug)
        relu_dropout7 = _fc_as_conv(relu_dropout6, [1, 1, 4096, 4096], "7", keep_prob, debug)

        W8 = utils.weight_variable([1, 1, 4096, NUM_OF_CLASSESS], name="W8")
        b8 = utils.bias_variable([NUM_OF_CLASSESS], name="b8")
        conv8 = utils.conv2d_basic(relu_dropout7, W8, b8)  # the coarse heat map, 1/32 scale

        # Upsample x2 and fuse with pool4. Deliberate (the reference): the upsampled map goes
        # back to 512 channels and is added to raw pool4; the paper adds a 1x1 score of pool4.
        pool4 = image_net["pool4"]
        W_t1 = utils.weight_variable([4, 4, 512, NUM_OF_CLASSESS], name="W_t1")
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
        shape = tf.shape(image)
        deconv_shape3 = tf.stack([shape[0], shape[1], shape[2], NUM_OF_CLASSESS])
        W_t3 = utils.weight_variable([16, 16, NUM_OF_CLASSESS, 256], name="W_t3")
        b_t3 = utils.bias_variable([NUM_OF_CLASSESS], name="b_t3")
        conv_t3 = utils.conv2d_transpose_strided(fuse_2, W_t3, b_t3, output_shape=deconv_shape3,
                                                 stride=8)

        annotation_pred = tf.argmax(conv_t3, axis=3, name="prediction")

    return tf.expand_dims(annotation_pred, axis=3), conv_t3


def train(loss_val, var_list, learning_rate=None, debug=None):
    """The Adam update of var_list (the reference's training op; learning rate from the flag)."""
    learning_rate = _flag("learning_rate") if learning_rate is None else learning_rate
    debug = _flag("debug") if debug is None else debug
    optimizer = tf.train.AdamOptimizer(learning_rate)
    grads = optimizer.compute_gradients(loss_val, var_list=var_list)
    if debug:
        for grad, var in grads:
            utils.add_gradient_summary(grad, var)
    return optimizer.apply_gradients(grads)


def pixel_loss(logits, annotation):
    """Mean softmax cross-entropy over all pixels; annotation is int [N,H,W,1]."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        logits=logits, labels=tf.squeeze(annotation, axis=[3]), name="entropy"))
