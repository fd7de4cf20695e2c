"""The settings of a run checked before anything is built or written: every value that cannot
work refused with one line naming the flag and what to use instead. No TensorFlow here, so that
FCN.py answers a bad command line before importing it."""
import math

import augment
import class_weights
import datasets
import distribute
import multi_scale
import tiles
from guards import FCNError
from optimizers import OPTIMIZERS

MODES = ("train", "visualize", "validate", "predict", "export")
MAX_SEED = 2 ** 32 - 1  # numpy.random.seed's largest
# The memory of a training step grows with its pixel count (docs/performance.md): beyond this bound
# even one image per step fits no machine in use.
MAX_IMAGE_SIZE = 4096
INTERPOLATIONS = ("nearest", "bilinear")
PRECISIONS = ("fp32", "bf16")
VARIANTS = ("reference", "paper")
LR_SCHEDULES = ("constant", "poly")
# --augment's largest scale: beyond it one scaled training image outgrows the reader's memory.
MAX_SCALE_FACTOR = 4.0


def check_settings(settings):
    """Refuses settings that cannot work, with the one-line error the command line prints."""
    if settings.mode not in MODES:
        raise FCNError("--mode=%s is not a mode; use one of %s" % (settings.mode, ", ".join(MODES)))
    for name in ("batch_size", "max_iterations", "log_every", "save_every"):
        if getattr(settings, name) < 1:
            raise FCNError("--%s=%d: it must be at least 1" % (name, getattr(settings, name)))
    if settings.image_size < tiles.ALIGN or settings.image_size % tiles.ALIGN:
        raise FCNError("--image_size=%d: it must be a positive multiple of %d (the network "
                       "downsamples by %d), e.g. 224"
                       % (settings.image_size, tiles.ALIGN, tiles.ALIGN))
    if settings.image_size > MAX_IMAGE_SIZE:
        raise FCNError("--image_size=%d: at most %d; memory grows with the pixel count, and one "
                       "training image of %dx%d already needs tens of GiB (docs/performance.md); "
                       "e.g. 224 (the default) or 512"
                       % (settings.image_size, MAX_IMAGE_SIZE, MAX_IMAGE_SIZE, MAX_IMAGE_SIZE))
    if not 0 <= settings.seed <= MAX_SEED:
        raise FCNError("--seed=%d: it must be between 0 and %d (NumPy's seed range)"
                       % (settings.seed, MAX_SEED))
    for name, choices in (("precision", PRECISIONS), ("interpolation", INTERPOLATIONS),
                          ("variant", VARIANTS), ("lr_schedule", LR_SCHEDULES),
                          ("optimizer", tuple(OPTIMIZERS))):
        if getattr(settings, name) not in choices:
            raise FCNError("--%s=%s: use %s" % (name, getattr(settings, name),
                                                " or ".join(choices)))
    if not (settings.learning_rate > 0 and math.isfinite(settings.learning_rate)):
        raise FCNError("--learning_rate=%g: it must be a positive finite number, e.g. 1e-4"
                       % settings.learning_rate)
    if settings.validation_images < 0:
        raise FCNError("--validation_images=%d: it must be 0 (off) or more"
                       % settings.validation_images)
    check_recipe_settings(settings)
    if settings.mode == "predict":
        check_predict_settings(settings)
    multi_scale.parse_scales(settings.eval_scales)
    if settings.eval_flip and not settings.eval_scales:
        raise FCNError("--eval_flip goes with --eval_scales (e.g. --eval_scales=1.0 for each "
                       "image at its own size, mirrored too)")
    if settings.dataset not in datasets.DATASETS:
        raise FCNError("--dataset=%s: use one of %s"
                       % (settings.dataset, ", ".join(datasets.DATASETS)))
    if settings.dataset == datasets.FOLDER.name and not settings.data_dir:
        raise FCNError("--dataset=folder needs --data_dir=PATH, the folder holding images/, "
                       "annotations/ and classes.txt")
    datasets.ignore_labels(datasets.DATASETS[settings.dataset], settings.ignore_label)
    if settings.init_from and settings.mode != "train":
        raise FCNError("--init_from is for --mode=train (a new run from another model's "
                       "weights); the other modes read --logs_dir's checkpoint")
    distribute.check_settings(settings)


def check_recipe_settings(settings):
    augment.parse_parts(settings.augment)
    low, high = settings.min_scale_factor, settings.max_scale_factor
    if not 0 < low <= high <= MAX_SCALE_FACTOR:
        raise FCNError("--min_scale_factor=%g, --max_scale_factor=%g: they must be positive, "
                       "the first at most the second, the second at most %g, e.g. 0.5 and 2.0"
                       % (low, high, MAX_SCALE_FACTOR))
    if settings.warmup_steps < 0:
        raise FCNError("--warmup_steps=%d: it must be 0 (off) or more" % settings.warmup_steps)
    if not 0 <= settings.momentum < 1:
        raise FCNError("--momentum=%g: it must be at least 0 and below 1, e.g. 0.9"
                       % settings.momentum)
    if not (settings.weight_decay >= 0 and math.isfinite(settings.weight_decay)):
        raise FCNError("--weight_decay=%g: it must be 0 (off) or a positive number, e.g. 5e-4"
                       % settings.weight_decay)
    if not 0 < settings.hard_pixel_fraction <= 1:
        raise FCNError("--hard_pixel_fraction=%g: it must be above 0 and at most 1, e.g. 0.25"
                       % settings.hard_pixel_fraction)
    class_weights.check_setting(settings.class_weights)


def check_predict_settings(settings):
    if not settings.image:
        raise FCNError("--mode=predict needs --image=PATH (an image file or a folder)")
    if settings.tile_overlap is not None:
        raise FCNError("--tile_overlap is no longer used: predict's tiles now carry exactly the "
                       "context each stage of the network needs, so the labels equal a "
                       "whole-image pass; --tile_size alone sets the tiles (and the memory)")
    problem = tiles.tiling_problem(settings.tile_size)
    if problem:
        raise FCNError(problem)
    if settings.max_size < 0:
        raise FCNError("--max_size=%d: it must be 0 (off) or a positive size in pixels"
                       % settings.max_size)


def with_defaults(settings):
    """settings with the dataset's own --data_dir when none was given."""
    if settings.data_dir:
        return settings
    return settings.replace(data_dir=datasets.DATASETS[settings.dataset].default_data_dir)
