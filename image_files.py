"""Reading one image or annotation file: decoding it, converting it to RGB or to class indices,
checking it, resizing it; and checking a split's files before training. No TensorFlow here.

Images are read with imageio (its Pillow backend) and resized with Pillow: images by nearest
neighbour as the reference did (or bilinear), annotations always by nearest neighbour (a label is
never interpolated). Grayscale becomes 3 channels, alpha is dropped, other modes (CMYK, palette,
16-bit) are converted to 8-bit RGB; a palette annotation is read as its indices.

Bad data: an annotation value outside the classes (other than the ignore label), or an image and
annotation of different sizes, raise FCNError naming the file(s). A file that cannot be decoded
raises UnreadableFile, which the batch reader turns into a warning and a skipped record, up to
MAX_UNREADABLE_FRACTION of a split (UnreadableRecords).
"""
import os
import threading

import numpy as np
from PIL import Image  # imageio's own backend; here for resizing and for reading headers

import imageio.v3 as iio

import datasets
from datasets import ADE20K
from guards import FCNError

NUM_CLASSES = ADE20K.num_classes  # the default class count of the checks
# What the reader decodes (and predict accepts); a dataset's images may be any of them.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_UNREADABLE_FRACTION = 0.01
# Modes imageio gives as arrays that to_rgb handles; Pillow converts any other mode to RGB.
_ARRAY_MODES = ("1", "L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L")
# What a broken or truncated file raises in imageio and Pillow.
_UNREADABLE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
# What opening a file (not decoding it) raises when it is absent or may not be read.
_NOT_OPENABLE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def unreadable_message(path, size, reason):
    """The one line naming an unreadable file and what is wrong with it.

    size: its length in bytes, None when it is missing or cannot be opened; reason: what the
    decoder said (its mentions of the path are dropped: the line names the file once).
    """
    if size is None:
        problem = "missing or not readable"
    elif size == 0:
        problem = "empty (0 bytes)"
    else:
        reason = str(reason)
        for mention in (repr(path), "'%s'" % path, path):
            reason = reason.replace(mention, "")
        reason = " ".join(reason.split())
        problem = "not a decodable image (%s)" % (reason.strip(" :") or "no reason given")
    return "%s is unreadable: %s" % (path, problem)


def _decoder_reason(path, error):
    """Pillow's own words about path when it fails to decode it too (imageio's are often only
    "`pillow` can not handle the given uri"), else the first line of error."""
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as e:  # any failure is the reason wanted here
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class UnreadableFile(Exception):
    """A file that cannot be decoded: skipped with a warning, not a stop. Its message is
    unreadable_message's."""

    def __init__(self, path, error):
        try:
            openable = os.path.isfile(path) and not isinstance(error, _NOT_OPENABLE_ERRORS)
            size = os.path.getsize(path) if openable else None
        except OSError:
            size = None
        reason = _decoder_reason(path, error) if size else None
        super().__init__(unreadable_message(path, size, reason))
        self.path = path


# ----------------------------------------------------------------------------------------------
# Pixels (pure)
# ----------------------------------------------------------------------------------------------

def to_rgb(array):
    """An image array as imageio gives it -> uint8 [h, w, 3].

    [h, w] or [h, w, 1] (grayscale) is repeated on the last axis; [h, w, 2] (gray and alpha) and
    [h, w, 4] (RGBA) lose their alpha; bool becomes 0/255, 16-bit keeps its high byte, float is
    clipped to 0..255.
    """
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError("an image of shape %s is neither grayscale nor RGB(A)" % (array.shape,))
    channels = array.shape[2]
    if channels in (1, 2):
        return np.repeat(array[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def label_plane(array, path):
    """An annotation array -> [h, w] of class indices. A colour PNG whose channels are equal is
    taken as single-channel; one whose channels differ is an FCNError."""
    array = np.asarray(array)
    if array.ndim == 3:
        if array.shape[2] == 1 or all(np.array_equal(array[:, :, 0], array[:, :, c])
                                      for c in range(1, array.shape[2])):
            array = array[:, :, 0]
        else:
            raise FCNError("annotation %s is a colour image (%d channels); expected one channel "
                           "(or a palette) of class indices: convert its colours to class "
                           "numbers" % (path, array.shape[2]))
    if array.ndim != 2:
        raise FCNError("annotation %s has shape %s; expected one channel of class indices"
                       % (path, array.shape))
    return array


def check_sizes(image_shape, label_shape, image_path, annotation_path):
    """Raises FCNError when an image and its annotation differ in height or width."""
    if tuple(image_shape[:2]) != tuple(label_shape[:2]):
        raise FCNError("image %s is %dx%d but its annotation %s is %dx%d; they must be the same "
                       "size: fix or remove the pair"
                       % (image_path, image_shape[0], image_shape[1], annotation_path,
                          label_shape[0], label_shape[1]))


def check_values(label, annotation_path, num_classes=NUM_CLASSES, extra_label=None):
    """Raises FCNError when a label is outside 0..num_classes-1 and is not extra_label (the
    ignore label, e.g. 255), naming the file, the value and the class count: the reference fed
    such labels to the loss and got NaN."""
    if not label.size or (label.max() < num_classes and label.min() >= 0):
        return
    bad = (label < 0) | (label >= num_classes)
    if extra_label is not None:
        bad &= label != extra_label
    if bad.any():
        value = int(label[bad].reshape(-1)[0])
        ignored = "" if extra_label is None else "; ignore label %d" % extra_label
        raise FCNError("annotation %s holds the value %d, outside the classes 0..%d (%d classes%s);"
                       " fix or remove it, or check --dataset and --ignore_label"
                       % (annotation_path, value, num_classes - 1, num_classes, ignored))


def check_pair(image_shape, label, image_path, annotation_path, num_classes=NUM_CLASSES,
               extra_label=None):
    """check_sizes and check_values of one decoded pair."""
    check_sizes(image_shape, label.shape, image_path, annotation_path)
    check_values(label, annotation_path, num_classes, extra_label)


RESIZE_FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}


def resize_image(image, height, width, interpolation="nearest"):
    """uint8 [h, w, 3] resized to [height, width, 3] by Pillow, nearest (the reference's
    misc.imresize(interp='nearest')) or bilinear."""
    return np.asarray(Image.fromarray(image).resize((width, height),
                                                    RESIZE_FILTERS[interpolation]))


def resize_label(label, height, width):
    """Nearest-neighbour resize of [h, w] labels to [height, width]: only values of the source."""
    return np.asarray(Image.fromarray(label.astype(np.uint8)).resize((width, height),
                                                                      Image.NEAREST))


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def _read(path, rgb):
    """Decodes path with imageio's Pillow backend; modes to_rgb does not handle (CMYK, palette,
    32-bit...) are converted to RGB by Pillow when rgb, a palette is kept as indices otherwise."""
    try:
        with iio.imopen(path, "r", plugin="pillow") as file:
            mode = file.metadata(index=0, exclude_applied=False).get("mode")
            if mode == "P" and not rgb:
                return file.read(index=0, mode="P")
            if rgb and mode not in _ARRAY_MODES:
                return file.read(index=0, mode="RGB")
            return file.read(index=0)
    except _UNREADABLE_ERRORS as e:
        raise UnreadableFile(path, e) from None


def read_image(path):
    """The image at path as uint8 [h, w, 3] RGB."""
    return to_rgb(_read(path, rgb=True))


def read_annotation(path):
    """The annotation at path as [h, w] class indices (not yet checked)."""
    return label_plane(_read(path, rgb=False), path)


def load_pair(record, resize_size=None, num_classes=NUM_CLASSES, interpolation="nearest",
              extra_label=None):
    """(image uint8 [S,S,3], annotation int32 [S,S,1]) of one record, checked (labels 0..
    num_classes-1 or extra_label), then resized when resize_size is given (the image by
    interpolation). Raises UnreadableFile or FCNError."""
    image = read_image(record["image"])
    label = read_annotation(record["annotation"])
    check_pair(image.shape, label, record["image"], record["annotation"], num_classes,
               extra_label)
    if resize_size:
        image = resize_image(image, resize_size, resize_size, interpolation)
        label = resize_label(label, resize_size, resize_size)
    return image, label.astype(np.int32)[:, :, np.newaxis]


class UnreadableRecords:
    """The records found unreadable so far; more than max_fraction of n is an FCNError, whose
    advice is the dataset's (datasets.bad_file_advice: fetch again, or fix your own files)."""

    def __init__(self, n, max_fraction=MAX_UNREADABLE_FRACTION, dataset=ADE20K.name):
        self.n, self.max_fraction = n, max_fraction
        self.advice = datasets.bad_file_advice(datasets.DATASETS[dataset])
        self.reasons = {}
        self._lock = threading.Lock()

    def __contains__(self, index):
        return index in self.reasons

    def add(self, index, error):
        with self._lock:
            if index in self.reasons:
                return
            self.reasons[index] = str(error)
            count = len(self.reasons)
        print("Warning: %s; skipped" % error)
        if count > self.max_fraction * self.n:
            raise FCNError("%d of %d records are unreadable, more than %g%% (first: %s); %s"
                           % (count, self.n, 100 * self.max_fraction,
                              next(iter(self.reasons.values())), self.advice))


# ----------------------------------------------------------------------------------------------
# Checking a split before training
# ----------------------------------------------------------------------------------------------

def _header_size(path):
    """(height, width) from the file's header. Pillow directly (imageio's backend): it reads the
    header only, several times faster than imageio.v3.improps (docs/datasets.md)."""
    try:
        with Image.open(path) as image:
            return image.size[1], image.size[0]
    except _UNREADABLE_ERRORS as e:
        raise UnreadableFile(path, e) from None


def validate_records(records, max_check=100, num_classes=NUM_CLASSES, extra_label=None,
                     dataset=ADE20K.name):
    """Checks a split before training, so that bad data stops it before its first step.

    Every pair: image and annotation of the same size, from the file headers only (cheap: a
    header is read, not the pixels). The first max_check pairs (all with None, none with 0):
    the annotation is decoded and its values checked too; decoding every annotation of ADE20K's
    training split would take far longer, and the reader checks every annotation it decodes
    anyway (the error then comes from next_batch). Unreadable files are warned about and
    counted as the reader counts them (dataset: whose advice that error gives). Returns the
    number of unreadable records; raises FCNError on bad data.
    """
    unreadable = UnreadableRecords(len(records), dataset=dataset)
    limit = len(records) if max_check is None else max_check
    for index, record in enumerate(records):
        try:
            image_size = _header_size(record["image"])
            label = read_annotation(record["annotation"]) if index < limit else None
            label_size = _header_size(record["annotation"]) if label is None else label.shape
        except UnreadableFile as e:
            unreadable.add(index, e)
            continue
        check_sizes(image_size, label_size, record["image"], record["annotation"])
        if label is not None:
            check_values(label, record["annotation"], num_classes, extra_label)
    return len(unreadable.reasons)
