"""Each image at several scales of its own size, and mirrored: the class probabilities of every
pass averaged at the image's own size, then the most probable class taken, as the benchmarks'
reports do (--eval_scales, --eval_flip). No TensorFlow here: the network's passes are functions
passed in.

One pass at the image's own size without a flip is predict's own path, the labels of each tile
taken inside it. Otherwise the running sum of the probabilities, float32 at the image's size for
every class, is held beside one pass's probabilities at a time (docs/evaluation.md gives the
memory).
"""
import numpy as np

from guards import FCNError
from image_files import resize_image


def parse_scales(text):
    """'0.5,1,1.5' -> (0.5, 1.0, 1.5); '' -> None (the reference's square resize)."""
    if not text.strip():
        return None
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        scales = ()
    if not scales or not all(0 < s <= 4 for s in scales):
        raise FCNError("--eval_scales=%s: use a comma-separated list of scale factors of each "
                       "image's own size, each above 0 and at most 4, e.g. 1.0 or "
                       "0.5,0.75,1.0,1.25,1.5,1.75" % text)
    if len(set(scales)) < len(scales):  # a scale given twice would be run and counted twice
        raise FCNError("--eval_scales=%s: each scale once, please (%g is given twice)"
                       % (text, next(s for s in scales if scales.count(s) > 1)))
    return scales


def scaled_size(height, width, scale):
    """The size of an image at scale of its own, at least 1 pixel a side."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def bilinear_weights(source, target):
    """(first, second, weight of the second) of each of `target` positions resampling `source`
    ones bilinearly with pixel centres aligned (position y samples source coordinate
    (y + 0.5) * source / target - 0.5, clamped to the edge)."""
    position = (np.arange(target) + 0.5) * source / target - 0.5
    position = np.clip(position, 0, source - 1)
    first = np.floor(position).astype(np.intp)
    second = np.minimum(first + 1, source - 1)
    return first, second, (position - first).astype(np.float32)


def resize_bilinear(array, height, width, add_to=None, band=16):
    """array [h, w, ...] float resized to [height, width, ...] bilinearly (pixel centres
    aligned), rows then columns; added into add_to (float32 [height, width, ...]) when given,
    else returned. Done `band` output rows at a time, so that its temporaries stay small."""
    row_first, row_second, row_weight = bilinear_weights(array.shape[0], height)
    col_first, col_second, col_weight = bilinear_weights(array.shape[1], width)
    row_shape, col_shape = (-1,) + (1,) * (array.ndim - 1), (1, -1) + (1,) * (array.ndim - 2)
    col_weight = col_weight.reshape(col_shape)
    out = np.zeros((height, width) + array.shape[2:], np.float32) if add_to is None else add_to
    for start in range(0, height, band):
        rows = slice(start, start + band)
        weight = row_weight[rows].reshape(row_shape)
        resampled = array[row_first[rows]] * (1 - weight) + array[row_second[rows]] * weight
        out[rows] += (resampled[:, col_first] * (1 - col_weight)
                      + resampled[:, col_second] * col_weight)
    return out


def averaged_labels(image, scales, flip, probabilities_of, labels_of):
    """The uint8 [h, w] labels of image uint8 [h, w, 3] at scales (factors of its size) and,
    with flip, mirrored too: the argmax of the mean of every pass's class probabilities at the
    image's size. probabilities_of(image) -> float32 [h', w', classes] of an image of any size;
    labels_of(image) -> uint8 [h, w]: the one pass when scales is (1.0,) and there is no flip."""
    if tuple(scales) == (1.0,) and not flip:
        return labels_of(image)
    height, width = image.shape[:2]
    total = None  # float32 [height, width, classes], once the first pass gives the classes
    for scale in scales:
        size = scaled_size(height, width, scale)
        scaled = image if size == (height, width) else resize_image(image, size[0], size[1],
                                                                    "bilinear")
        for mirrored in ((False, True) if flip else (False,)):
            probabilities = probabilities_of(scaled[:, ::-1] if mirrored else scaled)
            if mirrored:
                probabilities = probabilities[:, ::-1]
            if total is None:
                total = np.zeros((height, width, probabilities.shape[-1]), np.float32)
            if size != (height, width):
                resize_bilinear(probabilities, height, width, add_to=total)
            else:
                total += probabilities
            del probabilities
    return np.argmax(total, axis=-1).astype(np.uint8)
