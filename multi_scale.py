"""Each image at several scales of its own size, and mirrored: the class probabilities of every
pass averaged at the image's own size, then the most probable class taken, as the benchmarks'
reports do (--eval_scales, --eval_flip). No TensorFlow here: the network's passes are functions
passed in.

One pass at the image's own size without a flip is predict's own path, the labels of each tile
taken inside it. Otherwise the running sum of the probabilities, float32 at the image's size for
every class, is the one thing held at the image's size: each pass's probabilities come in bands
of rows and are resized into it as they come (docs/evaluation.md gives the memory).
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from guards import FCNError
from image_files import resize_image

TEMPORARY_BYTES = 16 << 20  # the resize's row temporaries, each about this size at most


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


def resize_bilinear(array, height, width, add_to=None):
    """array [h, w, ...] float resized to [height, width, ...] bilinearly (pixel centres
    aligned), rows then columns; added into add_to (float32 [height, width, ...]) when given,
    else returned. Done a few output rows at a time, so that its temporaries stay small."""
    out = (np.zeros((height, width) + array.shape[2:], np.float32) if add_to is None
           else add_to)
    add_resized_bands([(0, array)], array.shape[:2], out)
    return out


def add_resized_bands(bands, source_size, add_to):
    """Adds into add_to (float32 [height, width, ...]) the source image of source_size
    (h, w) resized to its size as resize_bilinear resizes it, to the same values, the source
    given as bands of rows, top to bottom: (first row, array [rows, w, ...]). A band is let go
    once no output row still needs it."""
    height, width = add_to.shape[:2]
    row_first, row_second, row_weight = bilinear_weights(source_size[0], height)
    col_first, col_second, col_weight = bilinear_weights(source_size[1], width)
    row_shape = (-1,) + (1,) * (add_to.ndim - 1)
    col_weight = col_weight.reshape((1, -1) + (1,) * (add_to.ndim - 2))
    held, done = [], 0  # held: (first row, band) of the source; done: output rows added
    # Output rows at a time: each temporary a few MB, whatever the width (the arithmetic of a
    # row is the same however many are done at once, and on whichever thread).
    row_bytes = 4 * max(source_size[1], width) * int(np.prod(add_to.shape[2:]))
    at_once = max(1, TEMPORARY_BYTES // row_bytes)

    def source_rows(indices):
        if len(held) == 1:
            return held[0][1][indices - held[0][0]]
        rows = np.empty((len(indices),) + held[0][1].shape[1:], held[0][1].dtype)
        for first, part in held:
            inside = (indices >= first) & (indices < first + len(part))
            rows[inside] = part[indices[inside] - first]
        return rows

    def add_rows(start, end):
        rows = slice(start, end)
        weight = row_weight[rows].reshape(row_shape)
        resampled = (source_rows(row_first[rows]) * (1 - weight)
                     + source_rows(row_second[rows]) * weight)
        add_to[rows] += (resampled[:, col_first] * (1 - col_weight)
                         + resampled[:, col_second] * col_weight)

    # Disjoint output rows on every core: NumPy lets go of the GIL in its loops.
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for first, part in bands:
            held.append((first, part))
            # The output rows whose source rows have all arrived.
            ready = height if first + len(part) >= source_size[0] else int(
                np.searchsorted(row_second, first + len(part)))
            starts = range(done, ready, at_once)
            list(pool.map(add_rows, starts, [min(s + at_once, ready) for s in starts]))
            done = ready
            if done < height:
                held = [(f, p) for f, p in held if f + len(p) > row_first[done]]
            else:
                held = []
    if done < height:
        raise ValueError("the bands end before the source's last row, %d" % source_size[0])


def averaged_labels(image, scales, flip, num_classes, probability_bands_of, labels_of):
    """The uint8 [h, w] labels of image uint8 [h, w, 3] at scales (factors of its size) and,
    with flip, mirrored too: the argmax of the mean of every pass's class probabilities at the
    image's size. probability_bands_of(image) yields the float32 probabilities of an image of
    any size [h', w'] as bands of rows, top to bottom: (first row, [rows, w', num_classes]);
    labels_of(image) -> uint8 [h, w]: the one pass when scales is (1.0,) and there is no flip.
    Held at the image's size: the running sum alone; each pass's bands are added as they come.
    """
    if tuple(scales) == (1.0,) and not flip:
        return labels_of(image)
    height, width = image.shape[:2]
    total = np.zeros((height, width, num_classes), np.float32)
    for scale in scales:
        size = scaled_size(height, width, scale)
        scaled = image if size == (height, width) else resize_image(image, size[0], size[1],
                                                                    "bilinear")
        for mirrored in ((False, True) if flip else (False,)):
            bands = probability_bands_of(scaled[:, ::-1] if mirrored else scaled)
            if mirrored:
                bands = ((start, band[:, ::-1]) for start, band in bands)
            if size != (height, width):
                add_resized_bands(bands, size, total)
            else:
                for start, band in bands:
                    total[start:start + len(band)] += band
    return np.argmax(total, axis=-1).astype(np.uint8)
