"""Batches of (image, annotation) for training and scoring, streamed from disk.

    reader = BatchDatset(records, {'resize': True, 'resize_size': 224, 'seed': 0})
    images, annotations = reader.next_batch(10)   # uint8 [10,224,224,3], int32 [10,224,224,1]

The reference's surface (next_batch, get_random_batch, reset_batch_offset, epochs_completed), but
the reference decoded all 20,210 training pairs before the first step (minutes of start-up,
gigabytes of RAM). Here background worker threads decode and resize ahead of the model into a
bounded queue of batches: next_batch returns at once when the queue is warm, and memory is
bounded by the prefetch depth whatever the number of records. There are no `images` /
`annotations` attributes; `records` is the list of records the reader was built on.

Threads rather than tf.data: Pillow releases the GIL while it decodes and resizes, so plain
threads scale with the cores, and measured faster than tf.data running the same decoding
(benchmarks/reader_threads_vs_tfdata.py; docs/performance.md).

Order: each epoch visits the records in the permutation
np.random.default_rng([seed, epoch, 0]).permutation(n) (or in record order with
{'shuffle': False}), so a run with the same seed repeats exactly, whatever the number of workers:
batches are assembled in order. A batch never straddles two epochs: as in the reference, the
records left over at the end of an epoch are skipped (with {'drop_remainder': False} the last
batch of an epoch is short instead, which the validate mode wants: every record once, in order).
get_random_batch draws from its own generator, np.random.default_rng([seed, 0, 1]), and does not
disturb the epoch order.

Decoding, checking and resizing one pair is image_files.py's. An unreadable file is skipped with
a warning naming it (the next record of the epoch takes its place, so batches stay full; with
{'drop_remainder': False}, the mode that visits every record once, its batch is one shorter
instead, so that no record is counted twice); when more than 1% of the reader's records turn out
unreadable, FCNError, with the advice that fits where the dataset came from ({'dataset': name}).
Errors raised in a worker surface in the caller's thread, from next_batch or get_random_batch.
"""
import collections
import concurrent.futures
import os
import queue
import threading
import weakref

import numpy as np

import augment
import datasets
from datasets import ADE20K
from guards import FCNError
from image_files import NUM_CLASSES, RESIZE_FILTERS, UnreadableFile, UnreadableRecords, load_pair

DEFAULT_SEED = 0
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
DEFAULT_PREFETCH = 4  # batches decoded ahead
_BATCHES_IN_FLIGHT = 2  # batches whose decoding is queued for the workers, beyond the prefetch

DEFAULT_OPTIONS = {"resize": False, "resize_size": None, "interpolation": "nearest",
                   "num_classes": NUM_CLASSES, "extra_label": None,
                   "dataset": ADE20K.name, "shuffle": True, "seed": DEFAULT_SEED,
                   "drop_remainder": True, "workers": DEFAULT_WORKERS,
                   "prefetch": DEFAULT_PREFETCH, "shard": (0, 1), "augment": None}


def stack_batch(pairs, records):
    """(images [B,...], annotations [B,...]) from a list of (image, annotation); images of
    different sizes (resize off) are an FCNError that says so."""
    shapes = [image.shape for image, _ in pairs]
    if len(set(shapes)) > 1:
        odd = next(i for i, shape in enumerate(shapes) if shape != shapes[0])
        raise FCNError("a batch holds images of different sizes (%s is %dx%d, %s is %dx%d) and "
                       "resizing is off; pass image_options {'resize': True, 'resize_size': S} "
                       "or use batch size 1"
                       % (records[0]["image"], shapes[0][0], shapes[0][1], records[odd]["image"],
                          shapes[odd][0], shapes[odd][1]))
    return (np.stack([image for image, _ in pairs]),
            np.stack([label for _, label in pairs]))


# ----------------------------------------------------------------------------------------------
# Order and bookkeeping (pure)
# ----------------------------------------------------------------------------------------------

def epoch_order(n, seed, epoch, shuffle=True):
    """The order in which epoch visits n records: a permutation drawn from
    np.random.default_rng([seed, epoch, 0]), or 0..n-1 without shuffle."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def shard_positions(start, end, index, count):
    """The positions of part index of count equal parts of the batch start..end: with several
    workers each reads its own part of every batch of the same order."""
    size = (end - start) // count
    return range(start + index * size, start + (index + 1) * size)


def batch_plan(n, batch_size, epoch=0, offset=0, drop_remainder=True):
    """Yields (epoch, start, end) of the batches from position offset of epoch on, forever.

    A batch never straddles two epochs: when fewer than batch_size records are left, they are
    skipped (drop_remainder) or make a short last batch.
    """
    if n <= 0 or batch_size <= 0:
        raise ValueError("need records and a positive batch size")
    if drop_remainder and batch_size > n:
        raise ValueError("batch size %d is larger than the %d records" % (batch_size, n))
    while True:
        if offset + batch_size <= n:
            yield epoch, offset, offset + batch_size
            offset += batch_size
            continue
        if not drop_remainder and offset < n:
            yield epoch, offset, n
        epoch, offset = epoch + 1, 0


def position_after(n, batch_size, steps):
    """(epoch, offset) of the batch plan (drop_remainder) after steps batches from the start: a
    resumed run takes up the order where the run it continues stopped."""
    per_epoch = n // batch_size
    return steps // per_epoch, (steps % per_epoch) * batch_size


def load_readable(records, order, position, options, unreadable, replace=True, epoch=0):
    """(record index, image, annotation) for the record at position of epoch's order, loaded as
    the reader's options say, or, when that one is unreadable, for the next readable one after
    it (wrapping round); without replace, None instead (so that a pass over every record once
    counts none twice). With the augment option, the pair is augmented with the draws of
    (seed, epoch, position), whichever record fills that position."""
    augmentation = options["augment"]
    for step in range(len(order) if replace else 1):
        index = int(order[(position + step) % len(order)])
        if index in unreadable:
            continue
        try:
            image, label = load_pair(records[index],
                                     None if augmentation else options["resize_size"],
                                     options["num_classes"], options["interpolation"],
                                     options["extra_label"])
        except UnreadableFile as e:
            unreadable.add(index, e)
            continue
        if augmentation:
            image, label = augment.augment_pair(
                image, label, augmentation, augment.generator(options["seed"], epoch, position))
        return index, image, label
    if not replace:
        return None
    raise FCNError("none of the %d records is readable" % len(order))


# ----------------------------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------------------------

class _DaemonPool:
    """A minimal thread pool of daemon threads (concurrent.futures' threads are joined at exit):
    tasks run first in, first out; a cancelled future is skipped."""

    def __init__(self, workers):
        self._tasks = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name="BatchDatset-worker-%d" % i,
                                          daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def _work(self):
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, function, args = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args))
                except BaseException as e:  # handed to whoever waits on the future
                    future.set_exception(e)

    def submit(self, function, *args):
        future = concurrent.futures.Future()
        self._tasks.put((future, function, args))
        return future

    def close(self):
        for _ in self._threads:
            self._tasks.put(None)


class _Failure:
    def __init__(self, error):
        self.error = error


class _Pipeline:
    """One producer thread that walks the batch plan, hands the records to the pool and puts the
    batches, assembled in order, into a bounded queue."""

    def __init__(self, pool, records, options, unreadable, batch_size, epoch, offset):
        self.batch_size = batch_size
        self._pool, self._records, self._options = pool, records, options
        self._unreadable = unreadable
        self._plan = batch_plan(len(records), batch_size, epoch, offset,
                                options["drop_remainder"])
        self.queue = queue.Queue(maxsize=options["prefetch"])
        self._stop = threading.Event()
        self._futures = collections.deque()
        self._orders = {}
        self.thread = threading.Thread(target=self._produce, name="BatchDatset-producer",
                                       daemon=True)
        self.thread.start()

    def _order(self, epoch):
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(len(self._records), self._options["seed"], epoch,
                                               self._options["shuffle"])}
        return self._orders[epoch]

    def _produce(self):
        try:
            for epoch, start, end in self._plan:
                order = self._order(epoch)
                # With drop_remainder off (every record once) an unreadable record leaves its
                # batch one shorter; otherwise the next record takes its place.
                futures = [self._pool.submit(load_readable, self._records, order, position,
                                             self._options, self._unreadable,
                                             self._options["drop_remainder"], epoch)
                           for position in shard_positions(start, end,
                                                           *self._options["shard"])]
                self._futures.append(((epoch, start, end), futures))
                while len(self._futures) >= _BATCHES_IN_FLIGHT:
                    if not self._finish(*self._futures.popleft()):
                        return
        except BaseException as e:  # surfaces in the caller's thread
            self._put(_Failure(e))

    def _finish(self, where, futures):
        if self._stop.is_set():
            return False
        loaded = [item for item in (future.result() for future in futures) if item is not None]
        if not loaded:  # every record of a short batch unreadable
            return True
        records = [self._records[index] for index, _, _ in loaded]
        images, annotations = stack_batch([(image, label) for _, image, label in loaded], records)
        return self._put((where, images, annotations, records))

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        while True:
            try:
                return self.queue.get(timeout=0.2)
            except queue.Empty:
                if not self.thread.is_alive():
                    raise RuntimeError("the batch reader's producer thread stopped without a "
                                       "batch or an error")

    def close(self):
        self._stop.set()
        for _, futures in list(self._futures):
            for future in futures:
                future.cancel()


class _Resources:
    """What the threads use; kept apart from BatchDatset so that a reader nobody holds any more
    is collected, and its threads stopped, even without close()."""

    def __init__(self, workers):
        self.pool = _DaemonPool(workers)
        self.pipeline = None

    def stop_pipeline(self):
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None

    def close(self):
        self.stop_pipeline()
        self.pool.close()


# ----------------------------------------------------------------------------------------------
# The reader
# ----------------------------------------------------------------------------------------------

def check_options(image_options):
    """image_options completed with the defaults; FCNError for an unknown or invalid one."""
    options = dict(DEFAULT_OPTIONS)
    for key, value in (image_options or {}).items():
        if key == "color":  # the reference's docstring named it; it never did anything
            continue
        if key not in options:
            raise FCNError("unknown image option %r; known: %s"
                           % (key, ", ".join(sorted(DEFAULT_OPTIONS))))
        options[key] = value
    if options["resize"]:
        size = options["resize_size"]
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size <= 0:
            raise FCNError("image option resize_size is %r; with resize True it must be a "
                           "positive number of pixels" % (size,))
        options["resize_size"] = int(size)
    else:
        options["resize_size"] = None
    if options["dataset"] not in datasets.DATASETS:
        raise FCNError("image option dataset is %r; use %s"
                       % (options["dataset"], " or ".join(datasets.DATASETS)))
    if options["interpolation"] not in RESIZE_FILTERS:
        raise FCNError("image option interpolation is %r; use %s"
                       % (options["interpolation"], " or ".join(RESIZE_FILTERS)))
    for key in ("workers", "prefetch"):
        if not isinstance(options[key], int) or options[key] < 1:
            raise FCNError("image option %s is %r; it must be a whole number of at least 1"
                           % (key, options[key]))
    options["seed"] = int(options["seed"])
    if options["augment"] is not None and not isinstance(options["augment"],
                                                         augment.Augmentation):
        raise FCNError("image option augment is %r; it must be None or an "
                       "augment.Augmentation" % (options["augment"],))
    index, count = options["shard"]
    if not 0 <= index < count:
        raise FCNError("image option shard is %r; it must be (index, count) with "
                       "0 <= index < count" % (options["shard"],))
    return options


class BatchDatset:
    """Batches of one split; see the module's docstring. Use as a context manager, or close()."""

    def __init__(self, records_list, image_options=None):
        """records_list: records {'image': path, 'annotation': path, 'filename': stem};
        image_options: resize (False), resize_size, interpolation ('nearest'), num_classes
        (151) and extra_label (None: the ignore label beyond the classes that annotations may
        hold), dataset ('ade20k': whose advice the unreadable-files error gives), shuffle
        (True), seed (0), drop_remainder (True), workers, prefetch (batches, 4),
        shard ((0, 1): with (index, count) next_batch(n) returns part index of count equal
        parts of the batch of n that one reader would return), augment (None, or an
        augment.Augmentation: each training pair augmented, at that size, instead of
        resized)."""
        self.records = list(records_list)
        if not self.records:
            raise FCNError("a batch reader needs records, and this split has none; check "
                           "--data_dir")
        self.image_options = check_options(image_options)
        self.batch_offset = 0
        self.epochs_completed = 0
        self.last_batch_records = []
        self._failure = None
        self._unreadable = UnreadableRecords(len(self.records),
                                             dataset=self.image_options["dataset"])
        self._random = np.random.default_rng([self.image_options["seed"], 0, 1])
        self._resources = _Resources(self.image_options["workers"])
        self._finalizer = weakref.finalize(self, self._resources.close)

    def __len__(self):
        return len(self.records)

    @property
    def prefetched(self):
        """How many batches are decoded and waiting (0 before the first next_batch)."""
        pipeline = self._resources.pipeline
        return 0 if pipeline is None else pipeline.queue.qsize()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Stops the threads; the reader is not usable afterwards."""
        self._finalizer()

    def _check_open(self):
        if not self._finalizer.alive:
            raise RuntimeError("the batch reader is closed")
        if self._failure is not None:
            raise self._failure

    def _check_batch_size(self, batch_size):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise FCNError("batch size %r: it must be a whole number of at least 1; check "
                           "--batch_size" % (batch_size,))
        if self.image_options["drop_remainder"] and batch_size > len(self.records):
            raise FCNError("batch size %d is larger than the %d records of this split; use a "
                           "smaller --batch_size" % (batch_size, len(self.records)))
        return int(batch_size)

    def next_batch(self, batch_size):
        """(images uint8 [B,S,S,3], annotations int32 [B,S,S,1]): the next batch of the epoch."""
        self._check_open()
        batch_size = self._check_batch_size(batch_size)
        resources = self._resources
        if resources.pipeline is None or resources.pipeline.batch_size != batch_size:
            resources.stop_pipeline()
            resources.pipeline = _Pipeline(resources.pool, self.records, self.image_options,
                                           self._unreadable, batch_size, self.epochs_completed,
                                           self.batch_offset)
        item = resources.pipeline.get()
        if isinstance(item, _Failure):
            self._failure = item.error
            resources.stop_pipeline()
            raise item.error
        (epoch, _, end), images, annotations, records = item
        if epoch > self.epochs_completed:
            print("****************** Epochs completed: %d ******************" % epoch)
        self.epochs_completed, self.batch_offset = epoch, end
        self.last_batch_records = records
        return images, annotations

    def random_batch_indexes(self, batch_size):
        """The indexes of batch_size records drawn at random (without repeats while batch_size
        <= the number of records) from the reader's own seeded generator."""
        batch_size = self._check_batch_size(batch_size)
        n = len(self.records)
        return [int(k) for k in self._random.choice(n, size=batch_size, replace=batch_size > n)]

    def get_random_batch(self, batch_size):
        """The batch of random_batch_indexes(batch_size); the epoch order is left as it is."""
        self._check_open()
        indexes = self.random_batch_indexes(batch_size)
        order = np.arange(len(self.records))
        futures = [self._resources.pool.submit(load_readable, self.records, order, int(index),
                                               self.image_options, self._unreadable)
                   for index in indexes]
        loaded = [future.result() for future in futures]
        records = [self.records[index] for index, _, _ in loaded]
        self.last_batch_records = records
        return stack_batch([(image, label) for _, image, label in loaded], records)

    def resume_after(self, steps, batch_size):
        """Goes to where a reader that was never stopped would be after steps batches of
        batch_size from the start (the plan that drops each epoch's remainder)."""
        self._check_open()
        if not self.image_options["drop_remainder"]:
            raise FCNError("a reader resumes by steps only with drop_remainder (each epoch a "
                           "whole number of batches)")
        self._resources.stop_pipeline()
        self.epochs_completed, self.batch_offset = position_after(
            len(self.records), self._check_batch_size(batch_size), steps)

    def reset_batch_offset(self, offset=0):
        """Goes back (or forward) to position offset of the current epoch's order."""
        self._check_open()
        self._resources.stop_pipeline()
        self.batch_offset = int(offset)
