"""FCN-8s semantic segmentation on MIT Scene Parsing (ADE20K), VGG-19 based.

A faithful port of FCN.tensorflow to TensorFlow 2.x through tensorflow.compat.v1: the same graph,
the same variable names (a checkpoint of the original restores here), the same numerics.

    python FCN.py --mode=train --batch_size=10
    python FCN.py --mode=visualize
    python FCN.py --mode=validate
    python FCN.py --mode=predict --image=PATH

As a library (the reference's API): inference(image, keep_prob), pixel_loss, train, vgg_net.
One rule for their optional arguments: an argument left None takes its command-line flag's value
(the flag's default when no command line was parsed), as the reference read FLAGS.debug.
"""
import json
import os
import random
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter off; errors stay

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

import TensorflowUtils as utils  # noqa: E402
import checkpoints  # noqa: E402
import datasets  # noqa: E402
import tiles  # noqa: E402
from datasets import ADE20K  # noqa: E402
from guards import (FCNError, StopRequest, TrainLock, ensure_writable_dir,  # noqa: E402
                    temporary_name, write_json_atomically, writing)

FLAGS = tf.flags.FLAGS

# ---- what to run ----
tf.flags.DEFINE_string("mode", "train", "train, visualize, validate or predict")
tf.flags.DEFINE_bool("debug", False, "add activation, gradient and variable histograms (train)")
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
tf.flags.DEFINE_integer("seed", 0, "seed for Python, NumPy, TensorFlow and the batch order")
tf.flags.DEFINE_string("precision", "fp32", "fp32, or bf16: layers computed in bfloat16, variables, "
                       "optimizer and loss in float32 (checkpoints interchangeable)")
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


def _flag(name):
    """A flag's value, parsed or not: importing and building the graph never parses argv."""
    return FLAGS[name].value


# ==============================================================================================
# The network
# ==============================================================================================

def vgg_net(weights, image, debug=None):
    """The VGG-19 trunk. weights maps 'conv1_1'... to (kernel [h,w,in,out], bias); returns every
    layer's tensor (conv, relu, pool) by name.

    weights=None builds the same variables without VGG's values (zeros), for a graph whose values
    all come from a checkpoint: then the 0.5 GB .mat need not be read or embedded in the graph.
    """
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
            net["pool%d" % block] = current = utils.avg_pool_2x2(current)
    return net


def load_vgg(model_dir=None):
    """(weights, mean_pixel) of VGG-19 from model_dir (downloaded there when absent)."""
    model_dir = _flag("model_dir") if model_dir is None else model_dir
    mat = utils.get_model_data(model_dir, MODEL_URL)
    return utils.load_vgg19(mat, os.path.join(model_dir, utils.VGG19_FILE_NAME))


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
    return tf.nn.dropout(relu, rate=tf.cast(1.0 - keep_prob, relu.dtype))


def inference(image, keep_prob, vgg=None, debug=None, precision=None,
              num_classes=NUM_OF_CLASSESS):
    """FCN-8s. image: float [N,H,W,3], RGB 0..255, H and W multiples of 32 (N, H, W may be None).

    vgg: (weights, mean_pixel) from load_vgg(); loaded from --model_dir when None.
    precision: 'fp32', or 'bf16' to compute the layers in bfloat16 while the variables stay
    float32 (the same checkpoints); the logits are float32 either way.
    num_classes: ADE20K's 151 by default; only W8, b8, W_t1, W_t3 and b_t3 depend on it.
    Returns (annotation_pred [N,H,W,1] int64, logits [N,H,W,num_classes]).
    """
    debug = _flag("debug") if debug is None else debug
    precision = _flag("precision") if precision is None else precision
    print("setting up vgg initialized conv layers ...")
    weights, mean_pixel = load_vgg() if vgg is None else vgg
    # The skips add maps of 1/16 and 1/8 of the input size, and conv_t3 gives 8x its input:
    # any other size would fail later with a shape error that does not say why.
    size_check = tf.debugging.assert_equal(
        tf.math.floormod(tf.shape(image)[1:3], 32), 0,
        message="FCN.inference needs an image height and width that are multiples of 32")
    with tf.control_dependencies([size_check]):
        processed_image = utils.process_image(image, mean_pixel.astype(np.float32))
    processed_image = tf.cast(processed_image, COMPUTE_DTYPES[precision])

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
        # multiples of 32, so the output is exactly 8x fuse_2).
        conv_t3 = utils.upsample_by_phases(fuse_2, W_t3, b_t3, stride=8)

        # The softmax, the loss and the argmax in float32 whatever the precision.
        conv_t3 = tf.cast(conv_t3, tf.float32)
        annotation_pred = tf.argmax(conv_t3, axis=3, name="prediction")

    return tf.expand_dims(annotation_pred, axis=3), conv_t3


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

    ignore_label None: over every pixel, the reference's op. Otherwise over the pixels whose
    label is not ignore_label; the ignored ones get exactly zero gradient (their cross-entropy
    is multiplied by 0). axis: None for one mean, [1, 2] for each image's mean.
    """
    labels = tf.squeeze(annotation, axis=[3])
    if ignore_label is None:
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            logits=logits, labels=labels, name="entropy"), axis=axis)
    labels, weights = counted_pixels(labels, ignore_label)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(logits=logits, labels=labels,
                                                            name="entropy")
    return (tf.reduce_sum(losses * weights, axis=axis)
            / tf.maximum(tf.reduce_sum(weights, axis=axis), 1.0))


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
                 classes=None):
        """classes: the datasets.ClassInfo (class count, ignore label, colours); ADE20K's when
        None."""
        classes = classes or datasets.class_info(ADE20K, ["class %d" % k for k in
                                                          range(ADE20K.num_classes)])
        self.image, self.annotation, self.keep_probability = input_placeholders()
        self.pred_annotation, self.logits = inference(self.image, self.keep_probability,
                                                      vgg=vgg, debug=debug, precision=precision,
                                                      num_classes=classes.num_classes)
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
            self.loss_summary = tf.summary.scalar("entropy", self.loss)
            palette = tf.constant(utils.full_palette(classes.palette))  # 255 has a colour too
            colour = lambda labels: tf.gather(palette, tf.squeeze(tf.cast(labels, tf.int32), 3))
            tf.summary.image("input_image", tf.cast(self.image, tf.uint8), max_outputs=2)
            tf.summary.image("ground_truth", colour(self.annotation), max_outputs=2)
            tf.summary.image("pred_annotation", colour(self.pred_annotation), max_outputs=2)
            self.train_summary = tf.summary.merge_all()
        self.saveable = tf.global_variables()


def build_model(settings, training, classes, vgg_from_checkpoint):
    """(graph, model). vgg_from_checkpoint: a checkpoint will supply the VGG values, so the .mat
    is not loaded (only its mean pixel read, when it is there)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(settings["seed"])
        if vgg_from_checkpoint:
            vgg = (None, mean_pixel_for_restore(settings["model_dir"]))
        else:
            vgg = load_vgg(settings["model_dir"])
        model = Model(vgg, training, debug=settings["debug"] and training,
                      learning_rate=settings["learning_rate"], precision=settings["precision"],
                      classes=classes)
    return graph, model


def session_config():
    return tf.ConfigProto()


# ==============================================================================================
# The modes
# ==============================================================================================

MODES = ("train", "visualize", "validate", "predict")
INTERPOLATIONS = ("nearest", "bilinear")
SETTINGS_NAME = "settings.json"


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
    for name, choices in (("precision", tuple(COMPUTE_DTYPES)), ("interpolation", INTERPOLATIONS)):
        if settings[name] not in choices:
            raise FCNError("--%s=%s: use %s" % (name, settings[name], " or ".join(choices)))
    if not settings["learning_rate"] > 0:
        raise FCNError("--learning_rate=%g: it must be positive" % settings["learning_rate"])
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


def check_class_count(checkpoint, classes, settings):
    """FCNError with both counts when the checkpoint's model has another number of classes."""
    count = checkpoints.class_count(checkpoint)
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


def _readers(settings, records, classes, shuffle=True, drop_remainder=True):
    import BatchDatsetReader as dataset
    return dataset.BatchDatset(records, {"resize": True, "resize_size": settings["image_size"],
                                         "interpolation": settings["interpolation"],
                                         "num_classes": classes.num_classes,
                                         "extra_label": classes.extra_label,
                                         "seed": settings["seed"], "shuffle": shuffle,
                                         "drop_remainder": drop_remainder})


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
                                     extra_label=classes.extra_label)
        print("Checked %d training and %d validation pairs in %.1f s"
              % (len(train_records), len(valid_records), time.time() - started))
    return train_records, valid_records


# ---- train -------------------------------------------------------------------------------------

SETTINGS_HISTORY_NAME = "settings_history.json"


def settings_history(path):
    """The list of earlier runs' settings in the history file at path; [] when there is none.
    A file that is not such a list is kept aside (renamed), never overwritten."""
    try:
        with open(path, encoding="utf-8") as f:
            history = json.load(f)
        if isinstance(history, list):
            return history
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        pass
    kept = temporary_name(path).replace(".part-", ".unreadable-")
    print("Warning: %s is not a list of settings; kept as %s, a new history begun" % (path, kept))
    os.replace(path, kept)
    return []


def record_settings(logs_dir, settings):
    """Writes settings to <logs_dir>/settings.json, this run's, and appends them to
    settings_history.json, every run's since the first, oldest first (both atomically)."""
    history_path = os.path.join(logs_dir, SETTINGS_HISTORY_NAME)
    with writing(history_path):
        history = settings_history(history_path) + [settings]
        write_json_atomically(history_path, history)
    path = os.path.join(logs_dir, SETTINGS_NAME)
    with writing(path):
        write_json_atomically(path, settings)


def run_train(settings):
    logs_dir = settings["logs_dir"]
    with TrainLock(logs_dir):
        classes = dataset_classes(settings)
        train_records, valid_records = _read_records(settings, classes)
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
        # What this run is, beside the checkpoints it produces, once its checks have passed.
        record_settings(logs_dir, dict(settings, tensorflow=tf.__version__,
                                       started=time.strftime("%Y-%m-%d %H:%M:%S")))
        classes_path = os.path.join(logs_dir, datasets.CLASSES_NAME)
        with writing(classes_path):
            write_json_atomically(classes_path, datasets.info_to_json(classes))
        vgg_names = ["inference/%s_%s" % (name, part) for name, _ in utils.VGG19_CONV_SHAPES
                     for part in "wb"]
        vgg_from_checkpoint = checkpoint is not None or (
            init_from is not None and checkpoints.holds_variables(init_from, vgg_names))
        graph, model = build_model(settings, True, classes, vgg_from_checkpoint)
        with graph.as_default(), tf.Session(config=session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            step = 0
            if checkpoint is not None:
                step = checkpoints.restore(sess, checkpoint, model.saveable, model.global_step)
            elif init_from is not None:
                checkpoints.restore_matching(sess, init_from, model.network_variables)
            else:
                print("No checkpoint in %s: starting from VGG-19" % logs_dir)
            saver = checkpoints.make_saver(model.saveable, logs_dir)
            with _readers(settings, train_records, classes) as train_reader, \
                    _readers(settings, valid_records, classes) as valid_reader, \
                    StopRequest() as stop:
                train_writer = tf.summary.FileWriter(os.path.join(logs_dir, "train"), sess.graph)
                valid_writer = tf.summary.FileWriter(os.path.join(logs_dir, "validation"))
                try:
                    _train_loop(settings, sess, model, saver, step, checkpoint, train_reader,
                                valid_reader, train_writer, valid_writer, stop)
                finally:
                    train_writer.close()
                    valid_writer.close()


def _train_loop(settings, sess, model, saver, step, last_checkpoint, train_reader, valid_reader,
                train_writer, valid_writer, stop):
    logs_dir, batch_size = settings["logs_dir"], settings["batch_size"]
    max_iterations = settings["max_iterations"]
    if step >= max_iterations:
        print("Step %d already reached --max_iterations=%d; nothing to do (raise "
              "--max_iterations to train on)" % (step, max_iterations))
        return
    print("Training from step %d to %d, batch %d, %dx%d"
          % (step, max_iterations, batch_size, settings["image_size"], settings["image_size"]))
    window_start, window_steps = time.time(), 0
    while step < max_iterations:
        images, annotations = train_reader.next_batch(batch_size)
        feed = {model.image: images, model.annotation: annotations,
                model.keep_probability: KEEP_PROBABILITY}
        log_now = (step + 1) % settings["log_every"] == 0
        fetches = [model.train_op, model.loss] + ([model.train_summary] if log_now else [])
        results = sess.run(fetches, feed_dict=feed)
        loss = float(results[1])
        step += 1
        window_steps += 1
        if not np.isfinite(loss):
            raise FCNError(
                "the training loss is %s at step %d; stopped without saving, the last good "
                "checkpoint is %s; try a lower --learning_rate" % (loss, step, last_checkpoint))
        if log_now:
            train_writer.add_summary(results[2], step)
            elapsed = time.time() - window_start
            rate = window_steps * batch_size / elapsed if elapsed > 0 else float("nan")
            eta = (max_iterations - step) * elapsed / window_steps
            print("%s step %d loss %.5f images/s %.2f eta %s"
                  % (time.strftime("%Y-%m-%d %H:%M:%S"), step, loss, rate, format_duration(eta)))
            sys.stdout.flush()
            window_start, window_steps = time.time(), 0
        if step % settings["save_every"] == 0 or step == max_iterations:
            valid_images, valid_annotations = valid_reader.next_batch(batch_size)
            valid_loss, summary = sess.run(
                [model.loss, model.loss_summary],
                feed_dict={model.image: valid_images, model.annotation: valid_annotations,
                           model.keep_probability: 1.0})
            valid_writer.add_summary(summary, step)
            last_checkpoint = checkpoints.save(sess, saver, logs_dir, step)
            print("%s step %d validation loss %.5f saved %s"
                  % (time.strftime("%Y-%m-%d %H:%M:%S"), step, valid_loss, last_checkpoint))
        if stop.signal_name is not None:
            if not (step % settings["save_every"] == 0 or step == max_iterations):
                last_checkpoint = checkpoints.save(sess, saver, logs_dir, step)
            print("Stopped by %s at step %d; checkpoint saved to %s"
                  % (stop.signal_name, step, last_checkpoint))
            return
    print("Reached --max_iterations=%d; last checkpoint %s" % (max_iterations, last_checkpoint))


def _restored_session(settings, classes):
    """(graph, model, session, checkpoint path, step) restored from the newest checkpoint in
    logs_dir; FCNError when there is none (the reference silently ran an untrained network)."""
    checkpoint = checkpoints.latest_checkpoint(settings["logs_dir"], refuse_unreadable=True)
    if checkpoint is None:
        raise FCNError("no checkpoint in --logs_dir %s; train first (--mode=train) or "
                       "point --logs_dir at a folder with model.ckpt-* files"
                       % settings["logs_dir"])
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


def run_validate(settings):
    import BatchDatsetReader as dataset
    import metrics
    classes = dataset_classes(settings)
    _, valid_records = _read_records(settings)
    graph, model, sess, checkpoint, step = _restored_session(settings, classes)
    total, count = len(valid_records), classes.num_classes
    ignore = classes.metric_ignore_label
    confusion = np.zeros((count, count), dtype=np.int64)
    loss_sum, seen = 0.0, set()
    started = time.time()
    with sess, _readers(settings, valid_records, classes, shuffle=False,
                        drop_remainder=False) as reader:
        while True:
            images, annotations = reader.next_batch(settings["batch_size"])
            batch_records = reader.last_batch_records
            pred, losses = sess.run([model.pred_annotation, model.image_losses],
                                    feed_dict={model.image: images, model.annotation: annotations,
                                               model.keep_probability: 1.0})
            for k, record in enumerate(batch_records):
                # An unreadable record is replaced by the next one, which then comes twice.
                if record["filename"] in seen:
                    continue
                seen.add(record["filename"])
                loss_sum += float(losses[k])
                truth = dataset.read_annotation(record["annotation"])
                scored = dataset.resize_label(pred[k, :, :, 0], *truth.shape)
                confusion += metrics.confusion_matrix(truth, scored, count, ignore)
            elapsed = time.time() - started
            print("\rvalidated %d/%d images, %.2f images/s" % (len(seen), total,
                                                                len(seen) / elapsed), end="")
            sys.stdout.flush()
            if reader.batch_offset >= total:
                break
    print()
    skipped = sorted(r["image"] for r in valid_records if r["filename"] not in seen)
    result = metrics.scores(confusion, ignore)
    result.update({"num_images": len(seen), "loss": loss_sum / max(len(seen), 1),
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


def list_images(path):
    """The image files at --image path: the file itself, or the images in the folder (sorted)."""
    from BatchDatsetReader import IMAGE_EXTENSIONS
    if os.path.isdir(path):
        found = sorted(os.path.join(path, name) for name in os.listdir(path)
                       if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)
        if not found:
            raise FCNError("--image %s is a folder with no images (%s)"
                           % (path, ", ".join(IMAGE_EXTENSIONS)))
        return found
    if not os.path.exists(path):
        raise FCNError("--image %s does not exist; pass an image file or a folder" % path)
    return [path]


def pad_to_multiple(image, multiple, fill):
    """image [h,w,3] padded at the bottom and right to multiples of `multiple`, with the pixel
    fill (the mean pixel: zero once the network subtracts it). Returns (padded, (h, w))."""
    h, w = image.shape[:2]
    padded_h, padded_w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    padded = np.empty((padded_h, padded_w, 3), dtype=np.float32)
    padded[:] = np.asarray(fill, dtype=np.float32)
    padded[:h, :w] = image
    return padded, (h, w)


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


def output_stems(paths):
    """{path: the stem of its outputs}: the file's stem, or, for inputs that share a stem
    (same.jpg, same.png), the stem and the source's extension (same_jpg), so that no result
    overwrites another. Where that still collides (a file named same_jpg.png), a number is
    added."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    counts = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    # Unique stems first: their names never change.
    result = {p: stem for p, stem in zip(paths, stems) if counts[stem] == 1}
    taken = set(result.values())
    for path, stem in zip(paths, stems):
        if counts[stem] == 1:
            continue
        name = "%s_%s" % (stem, os.path.splitext(path)[1][1:])
        candidate, k = name, 2
        while candidate in taken:
            candidate, k = "%s_%d" % (name, k), k + 1
        taken.add(candidate)
        result[path] = candidate
    return {p: result[p] for p in paths}


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
    padded, _ = pad_to_multiple(image, 32, mean_pixel)
    labels = tiles.predict_tiled(
        padded, settings["tile_size"], settings["tile_overlap"],
        lambda crop: _predict(sess, model, crop[None])[0, :, :, 0].astype(np.uint8))
    labels = labels[:small_h, :small_w]
    if (small_h, small_w) != (h, w):
        labels = dataset.resize_label(labels, h, w)
    return labels


def run_predict(settings):
    import BatchDatsetReader as dataset
    paths = list_images(settings["image"])
    output_dir = settings["output_dir"] or os.path.join(settings["logs_dir"], "predictions")
    ensure_writable_dir(output_dir, "output_dir")
    classes = predict_classes(settings)
    graph, model, sess, _, _ = _restored_session(settings, classes)
    mean_pixel = mean_pixel_for_restore(settings["model_dir"])
    stems = output_stems(paths)
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
                    path, checkpoints.error_summary(e) if str(e) else type(e).__name__)
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

def current_settings():
    """{flag name: value} of every flag this file defines (and no other module's)."""
    module = FLAGS.find_module_defining_flag("mode")
    return {flag.name: flag.value for flag in FLAGS.flags_by_module_dict()[module]}


def run(settings):
    """Runs one mode with the given settings (a dict like current_settings())."""
    check_settings(settings)
    settings = with_defaults(settings)
    random.seed(settings["seed"])
    np.random.seed(settings["seed"])
    print("Settings: " + ", ".join("%s=%s" % item for item in sorted(settings.items())))
    ensure_writable_dir(settings["logs_dir"], "logs_dir")
    if settings["mode"] == "train":
        return run_train(settings)
    return {"visualize": run_visualize, "validate": run_validate,
            "predict": run_predict}[settings["mode"]](settings)


def main(argv=None):
    del argv  # flags are parsed by tf.app.run
    try:
        run(current_settings())
    except FCNError as e:
        sys.stderr.write("FCN.py: error: %s\n" % e)
        sys.exit(2)


if __name__ == "__main__":
    tf.app.run(main)
