"""--mode=visualize, validate and predict: the newest checkpoint of --logs_dir restored into a graph
that only predicts, run on validation images (visualize, validate) or on any image (predict)."""
import os
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

import BatchDatsetReader
import checkpoints
import datasets
import evaluation
import image_files
import metrics
import model_checks
import network
import pictures
import predict_files
import tiles
import vgg_weights
from guards import FCNError, ensure_writable_dir, error_summary, write_json_atomically, writing

METRICS_NAME = "validation_metrics.json"


# ---- shared by the modes (and training's validation subset) -------------------------------------

def batch_reader(settings, records, classes, shuffle=True, drop_remainder=True, shard=(0, 1)):
    """A BatchDatset of records resized to --image_size as the settings say. shard: (this
    worker's rank, the number of workers) under --distribute=multi_worker."""
    return BatchDatsetReader.BatchDatset(records, {
        "resize": True, "resize_size": settings.image_size,
        "interpolation": settings.interpolation, "num_classes": classes.num_classes,
        "extra_label": classes.extra_label, "dataset": settings.dataset, "seed": settings.seed,
        "shuffle": shuffle, "drop_remainder": drop_remainder, "shard": shard})


def dataset_records(settings):
    """(training, validation) records of the settings' dataset."""
    reader = datasets.reader_module(datasets.DATASETS[settings.dataset])
    return reader.read_dataset(settings.data_dir)


def dataset_classes(settings):
    """The ClassInfo of the settings' dataset (its class names read from --data_dir)."""
    return datasets.classes_of(settings.dataset, settings.data_dir, settings.ignore_label)


def restored_session(settings, classes):
    """(model, session, checkpoint path, step) restored from the newest checkpoint in logs_dir;
    FCNError when there is none (the reference silently ran an untrained network)."""
    checkpoint = checkpoints.checkpoint_to_use(settings.logs_dir)
    model_checks.check_class_count(checkpoint, classes, settings)
    graph, model = network.build_model(settings, False, classes, weights_from=checkpoint)
    with graph.as_default():
        sess = tf.Session(config=network.session_config(), graph=graph)
        sess.run(tf.global_variables_initializer())
        checkpoints.restore(sess, checkpoint, model.saveable)
    return model, sess, checkpoint, checkpoints.saved_step(checkpoint)


def predicted_labels(sess, model, images):
    """The labels [N,H,W,1] of images [N,H,W,3] (H, W multiples of 32)."""
    return sess.run(model.pred_annotation, feed_dict={model.image: images,
                                                      model.keep_probability: 1.0})


# ---- visualize ---------------------------------------------------------------------------------

def run_visualize(settings):
    classes = dataset_classes(settings)
    _, valid_records = dataset_records(settings)
    model, sess, _, _ = restored_session(settings, classes)
    names, palette = classes.class_names, classes.palette
    logs_dir = settings.logs_dir
    with sess, batch_reader(settings, valid_records, classes) as reader:
        images, annotations = reader.get_random_batch(settings.batch_size)
        pred = predicted_labels(sess, model, images)
        for k in range(len(images)):
            gt, p = annotations[k, :, :, 0].astype(np.uint8), pred[k, :, :, 0].astype(np.uint8)
            pictures.save_image(images[k], logs_dir, "inp_%d" % k)
            pictures.save_image(gt, logs_dir, "gt_%d" % k)
            pictures.save_image(p, logs_dir, "pred_%d" % k)
            pictures.save_image(pictures.colorize(gt, palette), logs_dir, "gt_c%d" % k)
            pictures.save_image(pictures.colorize(p, palette), logs_dir, "pred_c%d" % k)
            pictures.save_image(pictures.side_by_side_panel(images[k], gt, p, names, palette),
                                logs_dir, "panel_%d" % k)
            print("Saved image: %d (%s)" % (k, reader.last_batch_records[k]["filename"]))


# ---- validate ----------------------------------------------------------------------------------

def score_records(settings, sess, model, records, classes, progress=None):
    """evaluation.score of the model over records, each resized to --image_size: what
    --mode=validate reports, and what training reports of its validation subset."""

    def predict(images, annotations):
        return sess.run([model.pred_annotation, model.image_losses],
                        feed_dict={model.image: images, model.annotation: annotations,
                                   model.keep_probability: 1.0})

    with batch_reader(settings, records, classes, shuffle=False, drop_remainder=False) as reader:
        return evaluation.score(reader, predict, classes.num_classes,
                                classes.metric_ignore_label, settings.batch_size, progress)


def run_validate(settings):
    classes = dataset_classes(settings)
    _, valid_records = dataset_records(settings)
    model, sess, checkpoint, step = restored_session(settings, classes)
    ignore = classes.metric_ignore_label
    started = time.time()

    def progress(done, total):
        print("\rvalidated %d/%d images, %.2f images/s"
              % (done, total, done / max(time.time() - started, 1e-9)), end="")
        sys.stdout.flush()

    with sess:
        scored = score_records(settings, sess, model, valid_records, classes, progress)
    print()
    confusion, seen = scored["confusion"], scored["scored"]
    skipped = sorted(r["image"] for r in valid_records if r["filename"] not in seen)
    result = metrics.scores(confusion, ignore)
    result.update({"num_images": scored["num_images"], "loss": scored["loss"],
                   "dataset": classes.dataset, "ignore_label": ignore,
                   "class_names": classes.class_names, "confusion_matrix": confusion.tolist(),
                   "checkpoint": {"path": checkpoint, "step": step}, "skipped": skipped,
                   "image_size": settings.image_size})
    print(metrics.format_report(result, classes.class_names))
    print("mean cross-entropy at %dx%d: %.5f" % (settings.image_size, settings.image_size,
                                                 result["loss"]))
    path = os.path.join(settings.logs_dir, METRICS_NAME)
    with writing(path):
        write_json_atomically(path, result)
    print("Wrote %s" % path)
    return result


# ---- predict -----------------------------------------------------------------------------------

def model_classes(settings):
    """The classes predict labels with: those training wrote beside the checkpoints; for a logs
    folder without them (older, or the original implementation's), the chosen dataset's."""
    return datasets.stored_classes(settings.logs_dir) or dataset_classes(settings)


def predict_labels(sess, model, image, settings, mean_pixel):
    """The uint8 [h, w] labels of image uint8 [h, w, 3]: downscaled first to --max_size, padded
    with the mean pixel to multiples of 32 and predicted in --tile_size tiles, or with --resize
    at --image_size; resized back to the image's size (nearest neighbour)."""
    h, w = image.shape[:2]
    if settings.resize:
        size = settings.image_size
        resized = image_files.resize_image(image, size, size, settings.interpolation)
        return image_files.resize_label(predicted_labels(sess, model, resized[None])[0, :, :, 0],
                                        h, w)
    small_h, small_w = tiles.downscaled_size(h, w, settings.max_size)
    if (small_h, small_w) != (h, w):
        image = image_files.resize_image(image, small_h, small_w, settings.interpolation)
    padded, _ = tiles.pad_to_multiple(image, tiles.ALIGN, mean_pixel)
    labels = tiles.predict_tiled(
        padded, settings.tile_size, settings.tile_overlap,
        lambda crop: predicted_labels(sess, model, crop[None])[0, :, :, 0].astype(np.uint8))
    labels = labels[:small_h, :small_w]
    if (small_h, small_w) != (h, w):
        labels = image_files.resize_label(labels, h, w)
    return labels


def run_predict(settings):
    paths = predict_files.list_images(settings.image)
    output_dir = settings.output_dir or os.path.join(settings.logs_dir, "predictions")
    ensure_writable_dir(output_dir, "output_dir")
    classes = model_classes(settings)
    model, sess, _, _ = restored_session(settings, classes)
    mean_pixel = vgg_weights.mean_pixel_for_restore(settings.model_dir)
    stems = predict_files.output_stems(paths)
    done, failures = 0, []
    with sess:
        for path in paths:
            # One image that cannot be read or predicted is skipped; a full disk (an FCNError
            # from the writes) stops the run.
            try:
                image = image_files.read_image(path)
                labels = predict_labels(sess, model, image, settings, mean_pixel)
            except image_files.UnreadableFile as e:
                failures.append(str(e))
                print("Warning: %s; skipped" % e)
                continue
            except (MemoryError, tf.errors.ResourceExhaustedError) as e:
                reason = "%s is too large to predict (%s)" % (
                    path, error_summary(e) if str(e) else type(e).__name__)
                failures.append(reason)
                print("Warning: %s; skipped: pass a smaller --tile_size or a --max_size"
                      % reason)
                continue
            stem = stems[path]
            pictures.save_image(labels, output_dir, stem + "_pred")
            pictures.save_image(pictures.prediction_overlay(image, labels, classes.class_names,
                                                            classes.palette),
                                output_dir, stem + "_pred_c")
            done += 1
            print("%s -> %s" % (path, os.path.join(output_dir, stem + "_pred.png")))
    if not done:
        raise FCNError("none of the %d images could be predicted (%s)"
                       % (len(paths), "; ".join(failures)))
