"""Your own data in a folder, laid out as ADE20K's challenge data (--dataset=folder):

    <data_dir>/classes.txt                           one class name per line; line k names class k
    <data_dir>/images/training/<stem>.jpg|.png       (any image format the reader decodes)
    <data_dir>/annotations/training/<stem>.png       one channel (or a palette) of class indices
    <data_dir>/images/validation/...  <data_dir>/annotations/validation/...

read_dataset(data_dir) returns (training_records, validation_records) as the ADE20K parser does,
each record {'image': path, 'annotation': path, 'filename': stem}, sorted. Nothing is downloaded
and nothing is cached: listing a folder is cheap, and a cache could miss files added later.
Pixels labelled 255 (the default --ignore_label) count in neither the loss nor the metrics.
"""
import os

from guards import FCNError
from read_MITSceneParsingData import SPLITS, scan_split

CLASSES_FILE = "classes.txt"


def parse_class_names(lines):
    """The class names of classes.txt's lines: one per line, surrounding blanks stripped, blank
    lines at the end ignored (a blank line inside would shift every later class, so it is an
    error: ValueError naming the line)."""
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    for number, name in enumerate(names, 1):
        if not name:
            raise ValueError("line %d is blank; every class 0..N-1 needs a name" % number)
    return names


def read_class_names(data_dir):
    """The class names of <data_dir>/classes.txt (class k on line k+1)."""
    path = os.path.join(data_dir, CLASSES_FILE)
    try:
        with open(path, "r", encoding="utf-8-sig") as f:
            names = parse_class_names(f)
    except FileNotFoundError:
        raise FCNError("--dataset=folder needs %s, one class name per line (line 1 names class "
                       "0, usually the background); write it" % path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FCNError("%s cannot be used (%s); write one class name per line, as UTF-8 text"
                       % (path, e))
    if not names:
        raise FCNError("%s is empty; write one class name per line (line 1 names class 0)"
                       % path)
    if len(names) > 255:
        raise FCNError("%s names %d classes; annotations are 8-bit PNGs, so at most 255 classes "
                       "(labels 0..254, 255 left for --ignore_label)" % (path, len(names)))
    return names


def read_dataset(data_dir):
    """(training_records, validation_records) of the folder; FCNError when a split is empty."""
    if not os.path.isdir(data_dir):
        raise FCNError("--data_dir %s does not exist; --dataset=folder reads your own data from "
                       "it (images/, annotations/, classes.txt: see the README)" % data_dir)
    splits = []
    for split in SPLITS:
        records = scan_split(data_dir, split)
        if not records:
            raise FCNError("no %s images with annotations in %s (expected images/%s/<stem>.jpg "
                           "or .png and annotations/%s/<stem>.png)"
                           % (split, data_dir, split, split))
        splits.append(records)
    print("%s: %d training and %d validation records" % (data_dir, len(splits[0]), len(splits[1])))
    return splits[0], splits[1]
