"""--class_weights: one weight per class for the training loss, against class imbalance.

median_frequency is SegNet's rule (Badrinarayanan et al. 2017, after Eigen and Fergus): the
frequency of class c is its pixels over the pixels of the training images where c occurs, and
its weight the median of the frequencies over its own frequency. A class that never occurs gets
weight 0 (it has no pixel to weigh). The label histogram this needs is read once from the
training annotations, with a progress line, and cached in the dataset's folder
(label_histogram.json), keyed by the annotations' paths, sizes and modification times: a record
added, removed or changed computes it again. A FILE is a JSON list of one weight per class.
No TensorFlow here.
"""
import concurrent.futures
import hashlib
import json
import math
import os

import numpy as np

from guards import FCNError, write_json_atomically
from image_files import UnreadableFile, read_annotation
from progress import ProgressLine

NONE = "none"
MEDIAN_FREQUENCY = "median_frequency"
CACHE_NAME = "label_histogram.json"
CACHE_FORMAT = "FCN label histogram"
READ_THREADS = 4  # Pillow releases the GIL while it decodes


def check_setting(text):
    """FCNError unless text is none, median_frequency or an existing file."""
    if text in (NONE, MEDIAN_FREQUENCY) or os.path.isfile(text):
        return
    raise FCNError("--class_weights=%s: use none, median_frequency or a JSON file of one weight "
                   "per class (no such file)" % text)


def median_frequency(pixels, image_pixels):
    """SegNet's weights from pixels[c] (class c's pixels) and image_pixels[c] (the pixels of the
    images where c occurs): median(f) / f[c], f = pixels / image_pixels over the classes that
    occur; 0 for a class that does not."""
    pixels = np.asarray(pixels, np.float64)
    image_pixels = np.asarray(image_pixels, np.float64)
    present = pixels > 0
    if not present.any():
        raise FCNError("--class_weights=median_frequency: the training labels hold no class")
    frequency = np.zeros_like(pixels)
    frequency[present] = pixels[present] / image_pixels[present]
    weights = np.zeros_like(pixels)
    weights[present] = np.median(frequency[present]) / frequency[present]
    return weights


def image_histogram(label, num_classes):
    """(pixels of each class 0..num_classes-1, whether it occurs) of one label map; other
    values (ignored labels) are not counted."""
    counts = np.bincount(label.reshape(-1).astype(np.intp), minlength=256)[:num_classes]
    return counts, counts > 0


def label_histogram(annotation_paths, num_classes, out=None):
    """(pixels[c], image_pixels[c]) over the annotations at annotation_paths, with a progress
    line; an unreadable file is skipped with a warning (training skips it too)."""
    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    progress = ProgressLine("Label histogram", len(annotation_paths), "annotations", out=out,
                            delay=2.0)

    def read(path):
        try:
            return read_annotation(path)
        except UnreadableFile as e:
            print("Warning: %s; left out of the label histogram" % e)
            return None

    with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool:
        for done, label in enumerate(pool.map(read, annotation_paths), 1):
            if label is not None:
                counts, present = image_histogram(label, num_classes)
                pixels += counts
                image_pixels[present] += label.size
            progress.update(done)
    progress.end()
    return pixels, image_pixels


def annotations_key(annotation_paths):
    """A digest of the annotations' paths, sizes and modification times."""
    digest = hashlib.sha256()
    for path in annotation_paths:
        try:
            status = os.stat(path)
            digest.update(("%s\0%d\0%d\n" % (os.path.abspath(path), status.st_size,
                                             status.st_mtime_ns)).encode("utf-8"))
        except OSError:
            digest.update(("%s\0missing\n" % os.path.abspath(path)).encode("utf-8"))
    return digest.hexdigest()


def cached_histogram(annotation_paths, num_classes, cache_dir):
    """label_histogram, read from <cache_dir>/label_histogram.json when it was computed over
    the same annotations (same key and class count), else computed and written there (a folder
    that cannot be written only loses the cache)."""
    path = os.path.join(cache_dir, CACHE_NAME)
    key = annotations_key(annotation_paths)
    try:
        with open(path, encoding="utf-8") as f:
            cache = json.load(f)
        if (cache.get("format") == CACHE_FORMAT and cache.get("key") == key
                and cache.get("num_classes") == num_classes):
            return np.array(cache["pixels"], np.int64), np.array(cache["image_pixels"], np.int64)
        print("The training annotations changed since %s was written: counting them again"
              % path)
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    pixels, image_pixels = label_histogram(annotation_paths, num_classes)
    try:
        write_json_atomically(path, {"format": CACHE_FORMAT, "key": key,
                                     "num_classes": num_classes, "pixels": pixels.tolist(),
                                     "image_pixels": image_pixels.tolist()})
    except OSError as e:
        print("Warning: the label histogram could not be cached in %s (%s)" % (path, e))
    return pixels, image_pixels


def read_weights_file(path, num_classes):
    """The list of num_classes weights in the JSON file at path; FCNError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            weights = json.load(f)
    except (OSError, ValueError) as e:
        raise FCNError("--class_weights=%s cannot be read as JSON (%s)" % (path, e)) from None
    numbers = []
    if isinstance(weights, list):
        try:  # JSON's integers have no bound: 1e400 written out overflows a float
            numbers = [float(w) for w in weights
                       if isinstance(w, (int, float)) and not isinstance(w, bool)]
        except OverflowError:
            numbers = []
    if (not isinstance(weights, list) or len(weights) != num_classes
            or len(numbers) != num_classes
            or not all(math.isfinite(w) and w >= 0 for w in numbers)):
        raise FCNError("--class_weights=%s: it must hold a JSON list of %d weights, one per "
                       "class, each a number of at least 0" % (path, num_classes))
    if not any(numbers):
        raise FCNError("--class_weights=%s: every weight is 0" % path)
    return numbers


def class_weights(setting, records, num_classes, cache_dir):
    """The weights --class_weights=setting asks for (a list of num_classes floats), or None for
    none. records: the training records (their annotations are counted)."""
    if setting == NONE:
        return None
    if setting == MEDIAN_FREQUENCY:
        pixels, image_pixels = cached_histogram([r["annotation"] for r in records], num_classes,
                                                cache_dir)
        return median_frequency(pixels, image_pixels).tolist()
    return read_weights_file(setting, num_classes)
