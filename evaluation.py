"""Scoring a model on records: the one loop that runs a predictor over a reader's records and
accumulates the benchmark's confusion matrix (metrics.py), shared by --mode=validate and the
checkpoints of training; and the fixed validation subset that training scores. No TensorFlow here:
the predictor is a function, so the loop is testable without a session.
"""
import numpy as np

import image_files
import metrics

# The subset training scores is drawn from its own constant seed, not --seed: the same images at
# every checkpoint, across resumes, and in runs of different seeds, so that their curves compare.
SUBSET_SEED = 2016


def validation_subset(records, count):
    """The first count records of the permutation np.random.default_rng(SUBSET_SEED) draws of
    len(records), in that order (all of them, permuted, when count >= len(records); none for 0)."""
    order = np.random.default_rng(SUBSET_SEED).permutation(len(records))
    return [records[int(index)] for index in order[:max(count, 0)]]


def score(reader, predict, num_classes, ignore_label, batch_size, progress=None):
    """Runs predict over every record of reader once and scores it as the benchmark does.

    reader: a BatchDatsetReader.BatchDatset with shuffle and drop_remainder off (every record
    once, in order; images at the reader's size). predict(images, annotations) -> (labels
    [B,H,W] or [B,H,W,1], each image's loss [B] or None). Each prediction is resized back (nearest
    neighbour) to its annotation's own size, read again from the file, and counted there in the
    confusion matrix (pixels labelled ignore_label count nowhere). progress(done, total), when
    given, is called after each batch.

    Returns {'confusion': int64 [num_classes, num_classes], 'num_images', 'loss' (the mean of
    the images' losses, None without them), 'scored' (the file names scored; unreadable records
    are skipped)}.
    """
    total = len(reader)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    loss_sum, seen, with_losses = 0.0, set(), True
    while True:
        images, annotations = reader.next_batch(batch_size)
        batch_records = reader.last_batch_records
        labels, losses = predict(images, annotations)
        labels = np.asarray(labels)
        with_losses = with_losses and losses is not None
        for k, record in enumerate(batch_records):
            if record["filename"] in seen:  # never twice, whatever the reader hands back
                continue
            seen.add(record["filename"])
            loss_sum += float(losses[k]) if with_losses else 0.0
            truth = image_files.read_annotation(record["annotation"])
            predicted = labels[k].reshape(labels.shape[1:3])
            scored = image_files.resize_label(predicted, *truth.shape)
            confusion += metrics.confusion_matrix(truth, scored, num_classes, ignore_label)
        if progress is not None:
            progress(len(seen), total)
        if reader.batch_offset >= total or reader.epochs_completed > 0:
            break
    return {"confusion": confusion, "num_images": len(seen),
            "loss": loss_sum / max(len(seen), 1) if with_losses else None, "scored": seen}
