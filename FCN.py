"""FCN-8s semantic segmentation on MIT Scene Parsing (ADE20K), VGG-19 based.

A faithful port of FCN.tensorflow to TensorFlow 2.x through tensorflow.compat.v1: the same graph,
the same variable names (a checkpoint of the original restores here), the same numerics.

    python FCN.py --mode=train --batch_size=10
    python FCN.py --mode=visualize
    python FCN.py --mode=validate
    python FCN.py --mode=predict --image=PATH
    python FCN.py --mode=export                  (export_model.py: SavedModel, TFLite, ONNX)

This file is the program: its flags, the settings built once from them (run_settings.Settings,
passed explicitly from then on; settings_checks.py checks them), and main. The modes live in
training.py, predicting.py and export_model.py, the networks in network.py.

It is also the reference's API: inference(image, keep_prob), vgg_net, pixel_loss, train, FLAGS,
NUM_OF_CLASSESS, main. One rule for their optional arguments, kept here only: an argument left
None takes its command-line flag's value (the flag's default when no command line was parsed),
as the reference read FLAGS.debug.
"""
import os
import random
import sys
import warnings

# TensorFlow's C++ log lines below ERROR are off; a program run also holds back its ERROR lines
# (oneDNN's "E0000 ... only on platforms with AVX-512"), which --verbose shows. A level set in
# the environment is kept.
LOG_LEVEL_SET = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402  (none of these imports TensorFlow)

import command_line  # noqa: E402
import guards  # noqa: E402
import quiet_tensorflow  # noqa: E402
import run_settings  # noqa: E402
from settings_checks import check_settings, with_defaults  # noqa: E402
import vgg_weights  # noqa: E402
from datasets import ADE20K  # noqa: E402
from guards import FCNError  # noqa: E402

# This program's flags only: TensorFlow's and absl's own (logging, testing) are not taken.
FLAGS = flags.FlagValues()
DEFINE_string, DEFINE_integer, DEFINE_float, DEFINE_bool = command_line.definers(FLAGS)

# ---- what to run ----
DEFINE_string("mode", "train", "What to run: train, visualize, validate, predict or export.")
DEFINE_bool("debug", False, "Train: add activation, gradient and variable histograms to "
            "TensorBoard.")
DEFINE_bool("verbose", False, "Show TensorFlow's own start-up messages, log lines and "
            "deprecation warnings, hidden by default.")
# ---- folders ----
DEFINE_string("logs_dir", "logs/", "The run's folder: checkpoints, summaries, settings, and what "
              "visualize and validate write.")
DEFINE_string("data_dir", "", "The dataset's folder. By default Data_zoo/MIT_SceneParsing/ for "
              "ade20k and Data_zoo/PascalVOC/ for voc, which are downloaded into it when "
              "missing; required for folder.")
DEFINE_string("model_dir", "Model_zoo/", "Where %s is kept; it is downloaded there when "
              "missing." % vgg_weights.VGG19_FILE_NAME)
# ---- the data ----
DEFINE_string("dataset", ADE20K.name, "ade20k (MIT Scene Parsing, the reference's), voc (PASCAL "
              "VOC 2012) or folder (your own: images/, annotations/ and classes.txt in "
              "--data_dir).")
DEFINE_integer("ignore_label", None, "Pixels with this label count in neither the loss nor the "
               "metrics. By default 255 for voc and folder; for ade20k the loss trains on 0 "
               "('other') and the metrics ignore it.")
DEFINE_string("init_from", "", "Train: start a new run from another model's weights, a "
              "checkpoint prefix or its folder. Every variable whose name and shape match is "
              "restored; the others start fresh.")
# ---- training ----
DEFINE_integer("batch_size", 10, "Images per step (the reference used 2).")
DEFINE_float("learning_rate", 1e-4, "The learning rate (of Adam, by default; the peak of "
             "--lr_schedule).")
DEFINE_integer("image_size", 224, "The square size images are resized to, a multiple of 32 "
               "(predict without --resize keeps each image's size).")
DEFINE_string("interpolation", "nearest", "How images are resized to --image_size: nearest (the "
              "reference's) or bilinear. Annotations are always resized by nearest neighbour.")
DEFINE_integer("max_iterations", 100001, "Training stops when the global step reaches this (the "
               "reference's MAX_ITERATION).")
DEFINE_integer("log_every", 10, "Steps between log lines and training summaries.")
DEFINE_integer("save_every", 500, "Steps between checkpoints and validation losses.")
DEFINE_integer("validation_images", 200, "Train: at every checkpoint, the pixel accuracy and "
               "mean IoU of this many validation images (a fixed subset), scored as "
               "--mode=validate scores; 0 turns it off.")
DEFINE_integer("seed", 0, "The seed of Python, NumPy, TensorFlow and the batch order.")
DEFINE_string("precision", "fp32", "fp32, or bf16: the layers computed in bfloat16, the "
              "variables, optimizer and loss in float32 (the checkpoints are the same).")
DEFINE_string("variant", "reference", "reference (the faithful port, its checkpoints) or paper "
              "(FCN-8s as the paper defines it); the checkpoints of one do not fit the other.")
# ---- the training recipe (docs/recipes.md) ----
DEFINE_string("augment", "", "Train: augment each training pair: all, or a comma-separated list "
              "of scale (the shorter side scaled to --image_size times a random factor, then "
              "a random square crop), flip and photometric. Off by default: each image "
              "resized to --image_size squared, as the reference did.")
DEFINE_float("min_scale_factor", 0.5, "With --augment=scale: the smallest factor of the "
             "random scale.")
DEFINE_float("max_scale_factor", 2.0, "With --augment=scale: the largest factor of the random "
             "scale.")
DEFINE_string("lr_schedule", "constant", "constant (the reference's) or poly: the learning "
              "rate times (1 - step / --max_iterations) ** 0.9.")
DEFINE_integer("warmup_steps", 0, "Ramp the learning rate linearly from 0 over this many "
               "steps.")
DEFINE_string("optimizer", "adam", "adam (the reference's) or sgd (with --momentum).")
DEFINE_float("momentum", 0.9, "With --optimizer=sgd: the momentum.")
DEFINE_float("weight_decay", 0.0, "An L2 penalty, weight_decay / 2 times the sum of the squared "
             "weights (not the biases), added to the loss; 5e-4 in the FCN paper.")
DEFINE_string("class_weights", "none", "none, median_frequency (each class weighted by the "
              "median class frequency over its own, over the training labels) or a JSON file "
              "holding a list of one weight per class.")
DEFINE_float("hard_pixel_fraction", 1.0, "The loss averages only this fraction of each batch's "
             "pixels, those of the highest loss; 1.0 (the default) averages them all.")
# ---- several devices or machines ----
DEFINE_string("distribute", "none", "Train on none (one device, the default), mirrored (this "
              "machine's GPUs, or --devices) or multi_worker (the machines TF_CONFIG lists).")
DEFINE_string("devices", "", "Mirrored: the devices, e.g. GPU:0,GPU:1; by default every visible "
              "GPU, else the CPU. CPU:0,CPU:1 splits the CPU, to try it out.")
DEFINE_string("all_reduce", "auto", "How the replicas' gradients are summed: auto, nccl (GPUs) "
              "or ring.")
DEFINE_integer("worker_timeout", 600, "Multi_worker: the seconds a step waits for the other "
               "workers before every worker stops.")
# ---- predict ----
DEFINE_string("image", "", "Predict: an image file or a folder of images.")
DEFINE_bool("resize", False, "Predict at --image_size and resize the labels back, instead of at "
            "each image's own size.")
DEFINE_string("output_dir", "", "Where visualize, validate and predict write: by default "
              "--logs_dir, and <logs_dir>/predictions for predict. With it, --logs_dir may be "
              "read-only.")
DEFINE_integer("tile_size", 512, "Predict: each image goes through the network stage by stage, "
               "in tiles of this side (a multiple of 32; the deeper stages' are larger) that "
               "bound the memory, and the labels equal one pass over the whole image. 0: each "
               "image in one pass, in memory that grows with the image.")
DEFINE_integer("tile_overlap", None, "No longer used: predict's tiles carry exactly the context "
               "each stage needs. Refused when given.")
DEFINE_integer("max_size", 0, "Predict: an image whose longer side exceeds this is downscaled "
               "to it first, and its labels resized back; 0 turns it off.")
# ---- evaluation ----
DEFINE_string("eval_scales", "", "Visualize, validate and predict: run each image at these "
              "scale factors of its own size, e.g. 1.0 (each image at its size) or "
              "0.5,0.75,1.0,1.25,1.5,1.75, and average the class probabilities at its size. By "
              "default visualize and validate resize each image to --image_size squared, as the "
              "reference did, and predict runs it at its own size.")
DEFINE_bool("eval_flip", False, "With --eval_scales: also run each image mirrored, and average "
            "its probabilities in.")
# ---- export (export_model.py) ----
DEFINE_string("export_dir", "", "Export: where the numbered versions go; by default "
              "<logs_dir>/export.")
DEFINE_string("export_format", "saved_model", "Export: a comma-separated list of saved_model, "
              "tflite, tflite_fp16, tflite_int8 and onnx.")
DEFINE_string("export_image_size", "", "Export: HxW baked into the model's input; by default any "
              "size.")

PROGRAM = "FCN.py"


# ---- the settings ------------------------------------------------------------------------------

def parse_command_line(argv):
    """The Settings that argv (argv[0] the program) asks for, read strictly (command_line.parse):
    FLAGS take the values, so that the reference API's arguments left None read them."""
    command_line.parse(argv, FLAGS, PROGRAM, defined_in=os.path.abspath(__file__))
    return current_settings()


def given_on_command_line():
    """The names of the flags the parsed command line gave."""
    return {name for name in FLAGS if FLAGS[name].present}


def current_settings():
    """The Settings of FLAGS' values (their defaults when no command line was parsed)."""
    return run_settings.Settings(**{name: FLAGS[name].value
                                    for name in run_settings.field_names()})


def answer_before_tensorflow(argv):
    """--help, and a command line that cannot work, answered before TensorFlow's import (seconds
    long): the help printed, or the one-line error and exit code 2. Returns the settings."""
    try:
        settings = parse_command_line(argv)
        check_settings(settings)
        return settings
    except command_line.HelpRequest as e:
        print_help(e.args[0])
        sys.exit(0)
    except FCNError as e:
        sys.stderr.write("%s: error: %s\n" % (PROGRAM, e))
        sys.exit(2)
    finally:
        FLAGS.unparse_flags()  # main parses them again


def print_help(text):
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # `python FCN.py --help | head`: the reader has what it wanted.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    if not answer_before_tensorflow(sys.argv).verbose and not LOG_LEVEL_SET:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # TensorFlow's import writes to fd 2 what no log level stops: held back, and replayed with
    # --verbose. Ctrl-C meanwhile: one line.
    with guards.ctrl_c_exits(PROGRAM):
        quiet_tensorflow.import_quietly("tensorflow.compat.v1")

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

import devices  # noqa: E402
import export_model  # noqa: E402
import network  # noqa: E402
import predicting  # noqa: E402
import training  # noqa: E402


# ---- the reference's API -------------------------------------------------------------------------

NUM_OF_CLASSESS = network.NUM_CLASSES  # the reference's name (and spelling) for the class count


def _or_flag(value, name):
    """The rule of this API: an argument left None takes its flag's value."""
    return FLAGS[name].value if value is None else value


def vgg_net(weights, image, debug=None, pool=None):
    """network.vgg_net: VGG-19's trunk from weights {'conv1_1': (kernel, bias), ...}."""
    return network.vgg_net(weights, image, debug=_or_flag(debug, "debug"), pool=pool)


def inference(image, keep_prob, vgg=None, debug=None, precision=None,
              num_classes=NUM_OF_CLASSESS, variant=None):
    """network.fcn8s: (annotation_pred [N,H,W,1] int64, logits [N,H,W,num_classes]) of image
    (float [N,H,W,3], RGB 0..255, H and W multiples of 32). vgg: (weights, mean_pixel), loaded
    from --model_dir when None."""
    variant = _or_flag(variant, "variant")
    widths = None
    if vgg is None:
        weights, mean_pixel, widths = vgg_weights.load_vgg(
            FLAGS.model_dir, with_fc=variant == network.PAPER)
        vgg = (weights, mean_pixel)
    outputs = network.fcn8s(image, keep_prob, vgg, debug=_or_flag(debug, "debug"),
                            precision=_or_flag(precision, "precision"), num_classes=num_classes,
                            variant=variant, widths=widths)
    return outputs.prediction, outputs.logits


def pixel_loss(logits, annotation, ignore_label=None, axis=None):
    """network.pixel_loss: the mean softmax cross-entropy of logits against annotation."""
    return network.pixel_loss(logits, annotation, ignore_label, axis)


def train(loss_val, var_list, learning_rate=None, debug=None, global_step=None):
    """network.training_op: the Adam update of var_list (learning rate from the flag)."""
    return network.training_op(loss_val, var_list, _or_flag(learning_rate, "learning_rate"),
                               _or_flag(debug, "debug"), global_step)


# ---- the program ---------------------------------------------------------------------------------

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


def run(settings):
    """Runs one mode with the given Settings."""
    check_settings(settings)
    settings = with_defaults(settings)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    with quiet_tensorflow.held_stderr():  # the first look for GPUs writes "failed call to cuInit"
        gpus = devices.gpu_names(tf)
    if settings.verbose:
        quiet_tensorflow.replay_held()
    print(devices.device_line(gpus))
    warning = devices.bf16_warning(settings.precision, gpus, devices.cpu_flags())
    if warning:
        print(warning)
    print("Settings: " + ", ".join("%s=%s" % item for item in sorted(settings.as_dict().items())))
    modes = {"train": training.run_train, "visualize": predicting.run_visualize,
             "validate": predicting.run_validate, "predict": predicting.run_predict,
             "export": export_model.run_export}
    return modes[settings.mode](settings)


def main(argv=None):
    """python FCN.py --flag=value ...: argv (sys.argv when None, argv[0] the program) parsed,
    one mode run. A user's mistake is one line on stderr and exit code 2; Ctrl-C outside the
    training loop (which saves a checkpoint first) one line and exit code 130."""
    with guards.ctrl_c_exits(PROGRAM):
        try:
            settings = parse_command_line(sys.argv if argv is None else argv)
            show_tensorflow_messages(settings.verbose)
            if settings.mode != "train":  # how the model in --logs_dir was trained
                settings, lines = run_settings.with_recorded(settings, given_on_command_line())
                for line in lines:
                    print(line)
            run(settings)
        except command_line.HelpRequest as e:
            print_help(e.args[0])
        except FCNError as e:
            sys.stderr.write("%s: error: %s\n" % (PROGRAM, e))
            sys.exit(2)


if __name__ == "__main__":
    main()
