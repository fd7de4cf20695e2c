"""The training pairs' augmentation (--augment): a random scale of the shorter side and a random
crop, a horizontal flip, and photometric distortion, as mmsegmentation's ADE20K and VOC recipes
apply them. numpy and Pillow, run in the batch reader's threads; no TensorFlow here.

Every draw comes from a generator seeded by (seed, epoch, position in the epoch's order), so a
resumed run, and each worker's part of a batch under --distribute, sees exactly the pairs a run
that was never stopped sees.
"""
import collections

import numpy as np
from PIL import Image

from guards import FCNError
from image_files import resize_image, resize_label

PARTS = ("scale", "flip", "photometric")
# A crop is drawn again, up to CROP_TRIES times in all, while one class covers this share of its
# labelled pixels or more (mmsegmentation's cat_max_ratio).
CAT_MAX_RATIO = 0.75
CROP_TRIES = 10
# mmsegmentation's PhotoMetricDistortion, each part with probability 0.5: brightness moved by up
# to 32 levels, contrast and saturation multiplied by 0.5 to 1.5, hue turned by up to 18 of
# OpenCV's 180 steps (36 degrees).
BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA_DEGREES = 36
STREAM = 7  # the generator's fourth seed word: not the epoch order's 0 nor the random batch's 1
# What padding is labelled: no dataset's class, and ignored by the loss and the metrics (for
# ADE20K too, whose loss trains on every label by default).
PAD_LABEL = 255

Augmentation = collections.namedtuple("Augmentation", [
    "parts",         # the parts of PARTS to apply
    "size",          # the side of the square the pair ends at (--image_size)
    "min_scale",     # the scale factor of the shorter side, drawn from [min_scale, max_scale]
    "max_scale",
    "mean_pixel",    # what the image is padded with, after the distortion (rounded to uint8)
    "pad_label",     # what the label is padded with: a value the loss and the metrics ignore
    "interpolation",  # how the image is resized when there is no random scale (the reference's)
])


def parse_parts(text):
    """'scale,flip' -> ('scale', 'flip'); 'all' -> PARTS; '' -> () (off)."""
    if text.strip() == "all":
        return PARTS
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        raise FCNError("--augment=%s: %s is not a part; use all, or a comma-separated list of "
                       "%s" % (text, unknown[0], ", ".join(PARTS)))
    return tuple(part for part in PARTS if part in parts)


def augmentation_of(parts_text, size, min_scale, max_scale, mean_pixel, loss_ignore_label,
                    interpolation):
    """The Augmentation --augment=parts_text asks for, or None when it is off."""
    parts = parse_parts(parts_text)
    if not parts:
        return None
    return Augmentation(parts, size, min_scale, max_scale, np.asarray(mean_pixel, np.float64),
                        pad_label(loss_ignore_label), interpolation)


def pad_label(loss_ignore_label):
    """What padding is labelled: the loss's ignore label when it has one, else PAD_LABEL."""
    return PAD_LABEL if loss_ignore_label is None else loss_ignore_label


def generator(seed, epoch, position):
    """The draws of the pair at position of epoch's order."""
    return np.random.default_rng([seed, epoch, position, STREAM])


def scaled_size(height, width, short_side):
    """(h, w) with the shorter side short_side and the aspect ratio kept."""
    if height <= width:
        return short_side, max(1, int(round(width * short_side / height)))
    return max(1, int(round(height * short_side / width))), short_side


def crop_box(height, width, size, rng):
    """(top, left) of a size x size window (or the whole side where shorter) drawn uniformly."""
    return (int(rng.integers(0, max(height - size, 0) + 1)),
            int(rng.integers(0, max(width - size, 0) + 1)))


def too_uniform(label, pad_label, max_ratio=CAT_MAX_RATIO):
    """Whether one class covers max_ratio or more of a crop's labelled pixels (or there is at
    most one class): mmsegmentation draws such a crop again."""
    counts = np.bincount(label[label != pad_label].reshape(-1).astype(np.intp))
    counts = counts[counts > 0]
    return len(counts) < 2 or counts.max() / counts.sum() >= max_ratio


def pad_to(array, size, fill):
    """array [h, w, ...] (h, w <= size) padded at the bottom and right to size x size."""
    out = np.empty((size, size) + array.shape[2:], array.dtype)
    out[...] = fill
    out[:array.shape[0], :array.shape[1]] = array
    return out


def scale_and_crop(image, label, augmentation, rng):
    """The shorter side scaled to size x a factor drawn from [min_scale, max_scale] (the image
    bilinear, the label nearest), then a crop of at most size x size (smaller where the scaled
    pair is; pad_pair makes it square); drawn again while too uniform, CROP_TRIES times in
    all."""
    size = augmentation.size
    factor = rng.uniform(augmentation.min_scale, augmentation.max_scale)
    height, width = scaled_size(label.shape[0], label.shape[1], max(1, int(round(size * factor))))
    image = resize_image(image, height, width, "bilinear")
    label = resize_label(label, height, width)
    for _ in range(CROP_TRIES):
        top, left = crop_box(height, width, size, rng)
        crop = label[top:top + size, left:left + size]
        if not too_uniform(crop, augmentation.pad_label):
            break
    return image[top:top + size, left:left + size], crop


def pad_pair(image, label, augmentation):
    """The pair padded at the bottom and right to size x size: the image with the mean pixel,
    the label with pad_label. Last, as mmsegmentation pads: the padding is neither flipped nor
    distorted."""
    size = augmentation.size
    return (pad_to(image, size, np.round(augmentation.mean_pixel).astype(np.uint8)),
            pad_to(label, size, augmentation.pad_label))


def photometric(image, rng):
    """mmsegmentation's PhotoMetricDistortion on uint8 RGB: brightness, then contrast first or
    last at random, saturation and hue in HSV, each part with probability 0.5. Every draw is
    made, applied or not, so that the parts that apply do not change what the others draw."""
    brightness = rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA) if rng.random() < 0.5 else None
    contrast_first = rng.random() < 0.5
    contrast = rng.uniform(*CONTRAST_RANGE) if rng.random() < 0.5 else None
    saturation = rng.uniform(*SATURATION_RANGE) if rng.random() < 0.5 else None
    hue = rng.uniform(-HUE_DELTA_DEGREES, HUE_DELTA_DEGREES) if rng.random() < 0.5 else None
    image = image.astype(np.float32)
    if brightness is not None:
        image = np.clip(image + brightness, 0, 255)
    if contrast is not None and contrast_first:
        image = np.clip(image * contrast, 0, 255)
    if saturation is not None or hue is not None:
        hsv = np.asarray(Image.fromarray(np.round(image).astype(np.uint8)).convert("HSV"),
                         np.float32)
        if saturation is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
        if hue is not None:  # Pillow's hue circle: 255 steps for 360 degrees, 255 being 0
            hsv[..., 0] = (hsv[..., 0] + hue * 255 / 360) % 255
        image = np.asarray(Image.fromarray(np.round(hsv).astype(np.uint8), "HSV")
                           .convert("RGB"), np.float32)
    if contrast is not None and not contrast_first:
        image = np.clip(image * contrast, 0, 255)
    return np.round(image).astype(np.uint8)


def augment_pair(image, label, augmentation, rng):
    """(image uint8 [size, size, 3], label int32 [size, size, 1]) of one decoded pair (label
    [h, w] or [h, w, 1]) augmented as augmentation says, every draw from rng."""
    label = label.reshape(label.shape[:2])
    size = augmentation.size
    if "scale" in augmentation.parts:
        image, label = scale_and_crop(image, label, augmentation, rng)
    else:  # the reference's square resize
        image = resize_image(image, size, size, augmentation.interpolation)
        label = resize_label(label, size, size)
    if "flip" in augmentation.parts and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    if "photometric" in augmentation.parts:
        image = photometric(image, rng)
    if "scale" in augmentation.parts:
        image, label = pad_pair(image, label, augmentation)
    return (np.ascontiguousarray(image),
            np.ascontiguousarray(label).astype(np.int32)[:, :, np.newaxis])
