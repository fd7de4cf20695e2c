"""--mode=visualize, validate and predict: the newest checkpoint of --logs_dir restored into a graph
that only predicts, run on validation images (visualize, validate) or on any image (predict).

Without --eval_scales, visualize and validate feed images resized to --image_size, as the
reference did, and predict runs each image at its own size. With it, all three run each image at
those scales of its own size (multi_scale.py), through predict's tiles (tiled_network.py).
"""
import os
import time

import numpy as np
import tensorflow.compat.v1 as tf

import BatchDatsetReader
import checkpoints
import confusion_report
import datasets
import evaluation
import image_files
import metrics
import model_checks
import multi_scale
import network
import pictures
import predict_files
import progress
import tiled_network
import tiles
import vgg_weights
from guards import FCNError, ensure_writable_dir, error_summary, write_json_atomically, writing

METRICS_NAME = "validation_metrics.json"


# ---- shared by the modes (and training's validation subset) -------------------------------------

def batch_reader(settings, records, classes, shuffle=True, drop_remainder=True, shard=(0, 1),
                 resize=True, augmentation=None):
    """A BatchDatset of records resized to --image_size as the settings say (or at their own
    sizes, one a batch). shard: (this worker's rank, the number of workers) under
    --distribute=multi_worker. augmentation: an augment.Augmentation for training's pairs."""
    return BatchDatsetReader.BatchDatset(records, {
        "resize": resize, "resize_size": settings.image_size if resize else None,
        "interpolation": settings.interpolation, "num_classes": classes.num_classes,
        "extra_label": classes.extra_label, "dataset": settings.dataset, "seed": settings.seed,
        "shuffle": shuffle, "drop_remainder": drop_remainder, "shard": shard,
        "augment": augmentation})


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
        # The restore initialises the variables it fills. Running every initializer first would
        # hold the weights twice at once (the initial values, and the file's, all read before
        # they are assigned), a peak that lasts. Only what the file lacks gets its initial value.
        checkpoints.restore(sess, checkpoint, model.saveable)
        left = {name.decode() for name in sess.run(tf.report_uninitialized_variables())}
        sess.run(tf.variables_initializer([v for v in tf.global_variables()
                                           if v.op.name in left]))
    return model, sess, checkpoint, checkpoints.saved_step(checkpoint)


def predicted_labels(sess, model, images):
    """The labels [N,H,W,1] of images [N,H,W,3] (H, W multiples of 32)."""
    return sess.run(model.pred_annotation, feed_dict={model.image: images,
                                                      model.keep_probability: 1.0})


def tiled_network_of(settings, model, num_classes):
    """The tiled_network.TiledNetwork on the model's variables, in the current graph."""
    return tiled_network.TiledNetwork(vgg_weights.mean_pixel_for_restore(settings.model_dir),
                                      settings.variant, settings.precision, num_classes,
                                      model.widths)


class Passes:
    """One image through the network at its own size: padded with the mean pixel to a multiple
    of 32, run stage by stage in tiles of --tile_size (whole with --tile_size=0, where the
    model's graph takes any size), cropped back."""

    def __init__(self, sess, model, tiled, settings):
        self.sess, self.model, self.tiled, self.settings = sess, model, tiled, settings
        self.mean_pixel = vgg_weights.mean_pixel_for_restore(settings.model_dir)
        self.whole = settings.tile_size == 0 and model.probabilities is not None
        self.progress = None  # progress(done, total) after each tile

    def _padded(self, image):
        return tiles.pad_to_multiple(image, tiles.ALIGN, self.mean_pixel)

    def _tiled_input(self, image):
        # The tiles are cut from the image as it is and padded one by one: a float32 copy of
        # the whole image would be held all through the stages, read by the first alone.
        return tiles.PaddedImage(image, tiles.ALIGN, self.mean_pixel), image.shape[:2]

    def labels(self, image):
        if self.whole:
            padded, (height, width) = self._padded(image)
            labels = predicted_labels(self.sess, self.model, padded[None])[0, :, :, 0]
            return labels[:height, :width].astype(np.uint8)
        padded, (height, width) = self._tiled_input(image)
        return self.tiled.labels(self.sess, padded, self.tile(), self.progress)[:height, :width]

    def probability_bands(self, image):
        """The float32 class probabilities of image [h, w, 3] at its own size, a band of rows at
        a time: yields (first row, band [rows, w, classes]) top to bottom, covering [0, h)."""
        if self.whole:
            padded, (height, width) = self._padded(image)
            out = self.sess.run(self.model.probabilities, {self.model.image: padded[None],
                                                           self.model.keep_probability: 1.0})
            yield 0, out[0, :height, :width]
            return
        padded, (height, width) = self._tiled_input(image)
        for start, band in self.tiled.probability_bands(self.sess, padded, self.tile(),
                                                        self.progress):
            yield start, band[:height - start, :width]  # bands start on the 32-pixel grid

    def tile(self):
        return self.settings.tile_size or tiles.ALIGN * 16  # 0 (whole) in a fixed-size graph

    def own_size_labels(self, image):
        """The labels of image at --eval_scales of its size (1.0 alone without them)."""
        scales = multi_scale.parse_scales(self.settings.eval_scales) or (1.0,)
        return multi_scale.averaged_labels(image, scales, self.settings.eval_flip,
                                           self.tiled.num_classes, self.probability_bands,
                                           self.labels)


def protocol(settings):
    """How validate scores: what validation_metrics.json records of it."""
    scales = multi_scale.parse_scales(settings.eval_scales)
    return {"size": ("each image's own size" if scales else
                     "%dx%d squared" % (settings.image_size, settings.image_size)),
            "scales": list(scales) if scales else None, "flip": settings.eval_flip}


# ---- visualize ---------------------------------------------------------------------------------

def output_dir_of(settings):
    """Where visualize and validate write: --output_dir, by default --logs_dir (the
    reference's); predict writes into <that>/predictions."""
    return settings.output_dir or settings.logs_dir


def run_visualize(settings):
    classes = dataset_classes(settings)
    _, valid_records = dataset_records(settings)
    model, sess, _, _ = restored_session(settings, classes)
    names, palette = classes.class_names, classes.palette
    folder = output_dir_of(settings)
    ensure_writable_dir(folder, "output_dir" if settings.output_dir else "logs_dir")
    own_size = bool(settings.eval_scales)
    if own_size:
        with sess.graph.as_default():
            passes = Passes(sess, model, tiled_network_of(settings, model, classes.num_classes),
                            settings)
    with sess, batch_reader(settings, valid_records, classes, resize=not own_size) as reader:
        if own_size:  # the same random records, each at its own size
            chosen = reader.random_batch_indexes(settings.batch_size)
            pairs = [image_files.load_pair(reader.records[k], None, classes.num_classes,
                                           extra_label=classes.extra_label) for k in chosen]
            images, annotations = [p[0] for p in pairs], [p[1] for p in pairs]
            predictions = [passes.own_size_labels(image) for image in images]
            chosen_records = [reader.records[k] for k in chosen]
        else:
            images, annotations = reader.get_random_batch(settings.batch_size)
            predictions = predicted_labels(sess, model, images)
            chosen_records = reader.last_batch_records
        for k in range(len(images)):
            gt = annotations[k][:, :, 0].astype(np.uint8)
            p = np.asarray(predictions[k]).reshape(gt.shape).astype(np.uint8)
            pictures.save_image(images[k], folder, "inp_%d" % k)
            pictures.save_image(gt, folder, "gt_%d" % k)
            pictures.save_image(p, folder, "pred_%d" % k)
            pictures.save_image(pictures.colorize(gt, palette), folder, "gt_c%d" % k)
            pictures.save_image(pictures.colorize(p, palette), folder, "pred_c%d" % k)
            pictures.save_image(pictures.side_by_side_panel(images[k], gt, p, names, palette),
                                folder, "panel_%d" % k)
            print("Saved image: %d (%s)" % (k, chosen_records[k]["filename"]))


# ---- validate ----------------------------------------------------------------------------------

def score_records(settings, sess, model, records, classes, progress_of=None, passes=None):
    """evaluation.score of the model over records: what --mode=validate reports, and what
    training reports of its validation subset. Each image resized to --image_size, or with
    --eval_scales at those scales of its own size through passes (a Passes), then without a
    loss."""
    if settings.eval_scales:
        def predict(images, annotations):
            return [passes.own_size_labels(images[0])], None
        options = dict(resize=False)
        batch = 1
    else:
        def predict(images, annotations):
            return sess.run([model.pred_annotation, model.image_losses],
                            feed_dict={model.image: images, model.annotation: annotations,
                                       model.keep_probability: 1.0})
        options, batch = {}, settings.batch_size
    with batch_reader(settings, records, classes, shuffle=False, drop_remainder=False,
                      **options) as reader:
        return evaluation.score(reader, predict, classes.num_classes,
                                classes.metric_ignore_label, batch, progress_of)


def run_validate(settings):
    classes = dataset_classes(settings)
    _, valid_records = dataset_records(settings)
    model, sess, checkpoint, step = restored_session(settings, classes)
    output_dir = output_dir_of(settings)
    ensure_writable_dir(output_dir, "output_dir" if settings.output_dir else "logs_dir")
    ignore = classes.metric_ignore_label
    passes = None
    if settings.eval_scales:
        with sess.graph.as_default():
            passes = Passes(sess, model, tiled_network_of(settings, model, classes.num_classes),
                            settings)
    line = progress.ProgressLine("validated", len(valid_records), "images")
    with sess:
        scored = score_records(settings, sess, model, valid_records, classes,
                               lambda done, total: line.update(done), passes)
    line.end()
    confusion, seen = scored["confusion"], scored["scored"]
    skipped = sorted(r["image"] for r in valid_records if r["filename"] not in seen)
    result = metrics.scores(confusion, ignore)
    result.update({"num_images": scored["num_images"], "loss": scored["loss"],
                   "dataset": classes.dataset, "ignore_label": ignore,
                   "class_names": classes.class_names, "confusion_matrix": confusion.tolist(),
                   "checkpoint": {"path": checkpoint, "step": step}, "skipped": skipped,
                   "image_size": settings.image_size,
                   "protocol": dict(protocol(settings), ignore_label=ignore)})
    print(metrics.format_report(result, classes.class_names))
    if result["loss"] is not None:
        print("mean cross-entropy at %dx%d: %.5f" % (settings.image_size, settings.image_size,
                                                     result["loss"]))
    path = os.path.join(output_dir, METRICS_NAME)
    with writing(path):
        write_json_atomically(path, result)
    files, pairs = confusion_report.write_report(output_dir, confusion, classes.class_names,
                                                 ignore)
    print(pairs)
    print("Wrote %s" % ", ".join([path] + files))
    return result


# ---- predict -----------------------------------------------------------------------------------

def model_classes(settings):
    """The classes predict labels with: those training wrote beside the checkpoints; for a logs
    folder without them (older, or the original implementation's), the chosen dataset's."""
    return datasets.stored_classes(settings.logs_dir) or dataset_classes(settings)


def predict_labels(passes, image, settings):
    """The uint8 [h, w] labels of image uint8 [h, w, 3]: downscaled first to --max_size, run at
    --eval_scales of that size (at the size itself without them) through passes (a Passes),
    or with --resize at --image_size; resized back to the image's size (nearest neighbour)."""
    h, w = image.shape[:2]
    if settings.resize:
        size = settings.image_size
        resized = image_files.resize_image(image, size, size, settings.interpolation)
        labels = predicted_labels(passes.sess, passes.model, resized[None])[0, :, :, 0]
        return image_files.resize_label(labels, h, w)
    small_h, small_w = tiles.downscaled_size(h, w, settings.max_size)
    if (small_h, small_w) != (h, w):
        image = image_files.resize_image(image, small_h, small_w, settings.interpolation)
    labels = passes.own_size_labels(image)
    if (small_h, small_w) != (h, w):
        labels = image_files.resize_label(labels, h, w)
    return labels


def run_predict(settings):
    paths = predict_files.list_images(settings.image)
    classes = model_classes(settings)
    model, sess, _, _ = restored_session(settings, classes)
    output_dir = settings.output_dir or os.path.join(settings.logs_dir, "predictions")
    ensure_writable_dir(output_dir, "output_dir")
    with sess.graph.as_default():
        passes = Passes(sess, model, tiled_network_of(settings, model, classes.num_classes),
                        settings)
    stems = predict_files.output_stems(paths)
    done, failures, started = 0, [], time.time()
    images = progress.ProgressLine("predicted", len(paths), "images")
    with sess:
        for number, path in enumerate(paths, 1):
            # One image that cannot be read or predicted is skipped; a full disk (an FCNError
            # from the writes) stops the run.
            tile_line = progress.ProgressLine("  %s:" % path, 0, "tiles", delay=2.0)

            def tile_progress(tiles_done, tiles_total):
                tile_line.total = tiles_total
                tile_line.update(tiles_done)

            passes.progress = tile_progress
            try:
                image = image_files.read_image(path)
                labels = predict_labels(passes, image, settings)
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
            finally:
                tile_line.end()
            stem = stems[path]
            pictures.save_image(labels, output_dir, stem + "_pred")
            pictures.save_image(pictures.prediction_overlay(image, labels, classes.class_names,
                                                            classes.palette),
                                output_dir, stem + "_pred_c")
            done += 1
            print("%s -> %s  [%s]" % (path, os.path.join(output_dir, stem + "_pred.png"),
                                      images.text(number)))
    if not done:
        raise FCNError("none of the %d images could be predicted (%s)"
                       % (len(paths), "; ".join(failures)))
    print("Predicted %d images in %.1f s" % (done, time.time() - started))
