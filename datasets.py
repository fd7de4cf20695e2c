"""Each dataset's facts, one record per dataset: the rest of the code asks the record, never a
literal. No TensorFlow here.
"""
import collections
import importlib

Dataset = collections.namedtuple("Dataset", [
    "name",                  # the --dataset value
    "num_classes",           # labels 0..num_classes-1
    "loss_ignore_label",     # label left out of the loss by default (None: every label trains)
    "metric_ignore_label",   # label left out of the metrics by default (None: every label counts)
    "module",                # the flat module that reads it: read_dataset(), read_class_names()
])

ADE20K = Dataset(
    name="ade20k",
    num_classes=151,  # 150 ADE20K classes and 0, "other"
    # Deliberate (the reference): the loss trains on "other"; the benchmark's metrics ignore it.
    loss_ignore_label=None,
    metric_ignore_label=0,
    module="read_MITSceneParsingData",
)

DATASETS = {dataset.name: dataset for dataset in (ADE20K,)}


def reader_module(dataset):
    """The module that lists the dataset's records and names its classes (imported on demand, so
    that asking a dataset's facts reads no files and imports no image code)."""
    return importlib.import_module(dataset.module)
