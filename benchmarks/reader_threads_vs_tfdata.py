"""Threads or tf.data for BatchDatsetReader: images per second of each, on the same decoding.

Generates 200 JPEGs of ADE20K size (sides 512..683) with their PNG annotations in a temporary
folder, then reads them resized to 224 in batches of 10, for two epochs:
- with BatchDatset (daemon worker threads, bounded prefetch), for 1, 2 and 4 workers;
- with tf.data: the same load_pair through tf.numpy_function, num_parallel_calls=AUTOTUNE,
  deterministic order, batch, prefetch.

    python benchmarks/reader_threads_vs_tfdata.py
"""
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import BatchDatsetReader as reader  # noqa: E402
import image_files  # noqa: E402
import read_MITSceneParsingData as scene  # noqa: E402
from tests.make_dataset import make_scene_dataset  # noqa: E402

N_IMAGES, BATCH, SIZE, EPOCHS = 200, 10, 224, 2


def time_threads(records, workers):
    options = {"resize": True, "resize_size": SIZE, "workers": workers}
    started = time.perf_counter()
    with reader.BatchDatset(records, options) as batches:
        for _ in range(EPOCHS * len(records) // BATCH):
            batches.next_batch(BATCH)
    return EPOCHS * len(records) / (time.perf_counter() - started)


def time_tfdata(records):
    import tensorflow as tf

    def load(index):
        options = reader.check_options({"resize": True, "resize_size": SIZE})
        _, image, label = reader.load_readable(records, np.arange(len(records)), int(index),
                                               options, image_files.UnreadableRecords(len(records)))
        return image, label

    def load_tf(index):
        image, label = tf.numpy_function(load, [index], [tf.uint8, tf.int32])
        image.set_shape([SIZE, SIZE, 3])
        label.set_shape([SIZE, SIZE, 1])
        return image, label

    started = time.perf_counter()
    dataset = (tf.data.Dataset.range(len(records)).repeat(EPOCHS)
               .map(load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(BATCH, drop_remainder=True).prefetch(4))
    for _ in dataset:
        pass
    return EPOCHS * len(records) / (time.perf_counter() - started)


def main():
    with tempfile.TemporaryDirectory() as root:
        make_scene_dataset(root, n_train=N_IMAGES, n_val=1, size_range=(512, 683))
        records = scene.scan_split(os.path.join(root, scene.DATASET_FOLDER), "training")
        time_threads(records[:20], 2)  # warm the page cache and imports
        for workers in (1, 2, 4):
            print("threads, %d workers: %6.1f images/s" % (workers, time_threads(records, workers)))
        print("tf.data (AUTOTUNE):  %6.1f images/s" % time_tfdata(records))


if __name__ == "__main__":
    main()
