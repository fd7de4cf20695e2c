"""A small, learnable PASCAL VOC 2012 segmentation set in the exact VOCdevkit layout, for the tests.

    <root>/VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg ...
    <root>/VOCdevkit/VOC2012/SegmentationClass/2007_000032.png ...
    <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt, val.txt, trainval.txt

Names look like the real ones ('<year>_<six digits>', each list sorted, train and val disjoint,
trainval.txt their sorted union). Each image shows one to three rectangles and ellipses of classes
1..20 on a class-0 background; every class has its own colour, so that a network could learn it.
Annotations are palette ('P') PNGs as VOC's are: the pixel values are the class indices, the
palette is the VOC colour map (so a viewer shows VOC's colours), and a band UNLABELLED_BAND pixels
either side of every object's outline is 255, the ignore label, as VOC marks its boundaries.
As in the real JPEGImages, a few more images have no segmentation and are in no list.

    python -m tests.make_voc <root> [n_train] [n_val]      (from the project folder)
"""
import collections
import colorsys
import os
import shutil
import sys

import numpy as np
from PIL import Image

from datasets import label_palette
from tests.make_dataset import random_shape

VOC_FOLDER = os.path.join("VOCdevkit", "VOC2012")
IGNORE_LABEL = 255
UNLABELLED_BAND = 2  # pixels of 255 on each side of an outline: a band about 4 pixels wide
UNSEGMENTED = 2  # JPEGs without a segmentation
BACKGROUND_COLOUR = (110, 110, 100)

VocSet = collections.namedtuple("VocSet", [
    "voc_dir",   # <root>/VOCdevkit/VOC2012
    "train",     # the names of train.txt, in order
    "val",       # the names of val.txt, in order
    "labels",    # {name: uint8 [h, w]}: what each annotation holds
])


def class_colour(label):
    """The RGB colour of a class: background grey, classes 1..20 spread round the hue circle."""
    if label == 0:
        return BACKGROUND_COLOUR
    red, green, blue = colorsys.hsv_to_rgb((label - 1) / 20.0, 0.8, 0.9)
    return int(red * 255), int(green * 255), int(blue * 255)


def voc_names(count, rng):
    """count distinct names like the real ones ('2008_001234'), in random order."""
    names = set()
    while len(names) < count:
        names.add("%d_%06d" % (rng.integers(2007, 2012), rng.integers(1, 8000)))
    return [str(name) for name in rng.permutation(sorted(names))]


def grow(mask, radius):
    """mask dilated by a square of side 2 * radius + 1."""
    height, width = mask.shape
    padded = np.pad(mask, radius)
    grown = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            grown |= padded[dy:dy + height, dx:dx + width]
    return grown


def draw_scene(height, width, rng):
    """(rgb uint8 [h, w, 3], label uint8 [h, w]) of one image: later objects cover earlier ones;
    each object's outline gets its 255 band after it is drawn, as VOC outlines what is visible."""
    rows, cols = np.mgrid[0:height, 0:width]
    owner = np.zeros((height, width), np.uint8)  # the class whose colour a pixel has
    label = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(1, 4)):
        cls = int(rng.integers(1, 21))
        inside = random_shape(rows, cols, rng)
        owner[inside] = cls
        label[inside] = cls
        label[grow(inside, UNLABELLED_BAND) & grow(~inside, UNLABELLED_BAND)] = IGNORE_LABEL
    image = np.zeros((height, width, 3), np.float64)
    for cls in np.unique(owner):
        image[owner == cls] = class_colour(int(cls))
    image *= 0.85 + 0.15 * rng.random((height, width, 1))  # some texture, the same for all
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_annotation(path, label):
    """label as a palette PNG: the values are the indices, the palette the VOC colour map of all
    256 values (255 is (224, 224, 192), VOC's colour of the boundaries)."""
    picture = Image.fromarray(label)
    picture.putpalette(label_palette(256).tobytes())
    assert picture.mode == "P"
    picture.save(path)


def _write_list(path, names):
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.writelines(name + "\n" for name in names)


def make_voc_dataset(root, n_train=6, n_val=4, seed=0, size_range=(60, 100)):
    """Writes <root>/VOCdevkit/VOC2012 with n_train + n_val segmented images (and UNSEGMENTED
    JPEGs in no list); returns a VocSet."""
    rng = np.random.default_rng(seed)
    voc_dir = os.path.join(root, VOC_FOLDER)
    list_dir = os.path.join(voc_dir, "ImageSets", "Segmentation")
    for folder in ("JPEGImages", "SegmentationClass", list_dir):
        os.makedirs(os.path.join(voc_dir, folder), exist_ok=True)
    names = voc_names(n_train + n_val + UNSEGMENTED, rng)
    train, val = sorted(names[:n_train]), sorted(names[n_train:n_train + n_val])
    labels = {}
    for name in names:
        height, width = (int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(2))
        image, label = draw_scene(height, width, rng)
        Image.fromarray(image).save(os.path.join(voc_dir, "JPEGImages", name + ".jpg"),
                                    quality=95)
        if name in train or name in val:
            write_annotation(os.path.join(voc_dir, "SegmentationClass", name + ".png"), label)
            labels[name] = label
    for split, split_names in (("train", train), ("val", val), ("trainval", sorted(train + val))):
        _write_list(os.path.join(list_dir, split + ".txt"), split_names)
    return VocSet(voc_dir, train, val, labels)


def make_voc_tar(root, tar_path):
    """Writes <root>/VOCdevkit/VOC2012 into an uncompressed tar as VOCtrainval_11-May-2012.tar
    holds it: every member under VOCdevkit/VOC2012, folders included. Returns tar_path."""
    base = tar_path[:-len(".tar")] if tar_path.endswith(".tar") else tar_path
    written = shutil.make_archive(base, "tar", root_dir=root, base_dir=VOC_FOLDER)
    if os.path.abspath(written) != os.path.abspath(tar_path):
        os.replace(written, tar_path)
    return tar_path


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[2:4]]
    print(make_voc_dataset(sys.argv[1], *counts).voc_dir)
