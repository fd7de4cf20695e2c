"""Each dataset's facts, one record per dataset: the rest of the code asks the record, never a
literal. Also the class information a trained model carries (names, colours, ignore labels),
written beside its checkpoints as classes.json. No TensorFlow here.
"""
import collections
import importlib
import json
import os

import numpy as np

from guards import FCNError

Dataset = collections.namedtuple("Dataset", [
    "name",                  # the --dataset value
    "num_classes",           # labels 0..num_classes-1; None: counted from the data (classes.txt)
    "loss_ignore_label",     # label left out of the loss by default (None: every label trains)
    "metric_ignore_label",   # label left out of the metrics by default (None: every label counts)
    "module",                # the flat module that reads it: read_dataset(), read_class_names()
    "default_data_dir",      # --data_dir when the flag is not given
    "downloaded",            # True: this project downloads it (a damaged file is fetched again
                             # by deleting it); False: the user's own files, nothing to fetch
])

ADE20K = Dataset(
    name="ade20k",
    num_classes=151,  # 150 ADE20K classes and 0, "other"
    # Deliberate (the reference): the loss trains on "other"; the benchmark's metrics ignore it.
    loss_ignore_label=None,
    metric_ignore_label=0,
    module="read_MITSceneParsingData",
    default_data_dir=os.path.join("Data_zoo", "MIT_SceneParsing"),
    downloaded=True,
)

VOC = Dataset(
    name="voc",
    num_classes=21,  # background and 20 object classes
    # 255 marks object boundaries and "difficult" regions; the FCN paper scores all 21 classes.
    loss_ignore_label=255,
    metric_ignore_label=255,
    module="read_PascalVOCData",
    default_data_dir=os.path.join("Data_zoo", "PascalVOC"),
    downloaded=True,
)

FOLDER = Dataset(
    name="folder",
    num_classes=None,  # the lines of <data_dir>/classes.txt
    loss_ignore_label=255,
    metric_ignore_label=255,
    module="read_FolderData",
    default_data_dir=None,  # the user's folder: --data_dir is required
    downloaded=False,
)

DATASETS = {dataset.name: dataset for dataset in (ADE20K, VOC, FOLDER)}

# The colour of a label no class has (VOC's "void" 255 and any other ignore value).
VOID_COLOUR = (224, 224, 192)

# ADE20K's official colours of classes 1..150, as the dataset's authors' visualisation draws them
# (color150.mat); class 0, "other", is black.
ADE20K_COLOURS = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)


def reader_module(dataset):
    """The module that lists the dataset's records and names its classes (imported on demand, so
    that asking a dataset's facts reads no files and imports no image code)."""
    return importlib.import_module(dataset.module)


def bad_file_advice(dataset):
    """What to do about unreadable files of a dataset, by where its files came from: deleting a
    downloaded dataset fetches it again; deleting the user's own data would lose it."""
    if dataset.downloaded:
        return ("the download is damaged: delete the dataset folder (--data_dir) so that it is "
                "downloaded again")
    return ("these are your own files: fix each file named, or remove it together with its pair "
            "(the image or annotation of the same name)")


def label_palette(num_classes):
    """num_classes distinct RGB colours, class 0 black: the PASCAL VOC colour map.

    The algorithm: the bits of the class index are dealt out in turn to red, green and blue, from
    each channel's most significant bit down (index bit 0 -> red bit 7, bit 1 -> green bit 7,
    bit 2 -> blue bit 7, bit 3 -> red bit 6, ...). It is a bijection of 0..2^24-1, so the colours
    are distinct, and neighbouring indices differ in their brightest bits.
    """
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        value, rgb = index, [0, 0, 0]
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= (value & 1) << bit
                value >>= 1
        palette[index] = rgb
    return palette


def dataset_palette(dataset, num_classes):
    """The colours of a dataset's classes: ADE20K's official ones, the VOC colour map otherwise."""
    if dataset == ADE20K.name:
        return np.array([(0, 0, 0)] + list(ADE20K_COLOURS), dtype=np.uint8)
    return label_palette(num_classes)


def full_palette(palette):
    """The palette as a table of all 256 label values: values no class has (the ignore label,
    VOC's 255) get VOID_COLOUR."""
    table = np.tile(np.array(VOID_COLOUR, np.uint8), (256, 1))
    table[:len(palette)] = np.asarray(palette, np.uint8)[:256]
    return table


# ----------------------------------------------------------------------------------------------
# What a model knows of its classes
# ----------------------------------------------------------------------------------------------

class ClassInfo(collections.namedtuple("ClassInfo", [
        "dataset",               # the dataset it was trained on
        "class_names",           # one name per class; the class count is their number
        "palette",               # uint8 [num_classes, 3]
        "loss_ignore_label",     # the label the loss leaves out (None: none)
        "metric_ignore_label",   # the label the metrics leave out (None: none)
        ])):
    """What a model knows of its classes."""
    __slots__ = ()

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def extra_label(self):
        """The label value beyond the classes that annotations may hold: the ignore label when
        it is not a class itself (255 for VOC); None otherwise."""
        for label in (self.loss_ignore_label, self.metric_ignore_label):
            if label is not None and label >= self.num_classes:
                return label
        return None


CLASSES_NAME = "classes.json"


def ignore_labels(dataset, ignore_label=None):
    """(loss, metric) ignore labels: --ignore_label for both when given, else the dataset's."""
    if ignore_label is None:
        return dataset.loss_ignore_label, dataset.metric_ignore_label
    if not 0 <= ignore_label <= 255:
        raise FCNError("--ignore_label=%d: annotations are 8-bit, use a value from 0 to 255"
                       % ignore_label)
    return ignore_label, ignore_label


def classes_of(dataset_name, data_dir, ignore_label=None):
    """The ClassInfo of a dataset, its class names read from data_dir."""
    dataset = DATASETS[dataset_name]
    return class_info(dataset, reader_module(dataset).read_class_names(data_dir), ignore_label)


def class_info(dataset, class_names, ignore_label=None):
    """The ClassInfo of a model trained on dataset with these class names."""
    loss_ignore, metric_ignore = ignore_labels(dataset, ignore_label)
    return ClassInfo(dataset.name, list(class_names),
                     dataset_palette(dataset.name, len(class_names)), loss_ignore, metric_ignore)


def info_to_json(info):
    return {"dataset": info.dataset, "num_classes": info.num_classes,
            "class_names": list(info.class_names), "palette": np.asarray(info.palette).tolist(),
            "loss_ignore_label": info.loss_ignore_label,
            "metric_ignore_label": info.metric_ignore_label}


def info_from_json(content, path):
    """The ClassInfo in a classes.json; FCNError naming the file when it is not one."""
    try:
        names = [str(name) for name in content["class_names"]]
        palette = np.asarray(content["palette"], dtype=np.uint8).reshape(len(names), 3)
        info = ClassInfo(str(content["dataset"]), names, palette,
                         content["loss_ignore_label"], content["metric_ignore_label"])
    except (KeyError, TypeError, ValueError) as e:
        raise FCNError("%s is not a class list of this project (%s: %s); delete it, and pass "
                       "--dataset (and --data_dir) so that the classes are known"
                       % (path, type(e).__name__, e))
    if not names:
        raise FCNError("%s names no class; delete it, and pass --dataset" % path)
    return info


def stored_classes(logs_dir):
    """The ClassInfo training wrote beside the checkpoints in logs_dir, or None (an older or the
    original implementation's logs folder)."""
    path = os.path.join(logs_dir, CLASSES_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError) as e:
        raise FCNError("%s cannot be read (%s); delete it, and pass --dataset so that the "
                       "classes are known" % (path, e))
    return info_from_json(content, path)
