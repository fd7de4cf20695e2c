"""--mode=train: the run (the data checked, a checkpoint resumed or the weights initialised, the
settings recorded) and its loop, one small piece for each thing a step can do: train, log,
save a checkpoint with the validation scores, stop."""
import contextlib
import os
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

import augment
import checkpoints
import class_weights
import datasets
import devices
import distribute
import evaluation
import image_files
import memory_estimate
import metrics
import model_checks
import network
import predicting
import run_settings
import vgg_weights
from progress import format_duration
from guards import (FCNError, StopRequest, TrainLock, ensure_writable_dir, write_json_atomically,
                    writing)

SLOW_CPU_ETA = 86400  # seconds: a CPU-only training run expected to take longer is warned about
# What training writes of its validation subset at each checkpoint (metrics.scores' keys).
VALIDATION_SCALARS = ("pixel_accuracy", "mean_iou")


def slow_cpu_warning(eta_seconds, gpus):
    """The warning line for training on the CPU when the ETA is over a day, else None."""
    if gpus or not eta_seconds > SLOW_CPU_ETA:
        return None
    return ("Warning: training on the CPU only; at this pace the run needs about %s more. A GPU "
            "is far faster (README, Set-up), or lower --max_iterations or --image_size"
            % format_duration(eta_seconds))


def memory_warning(settings, classes, weights_from, cluster):
    """memory_estimate's warning line when this run may need more memory than this machine has
    available, else None. weights_from: the checkpoint that will supply the weights, whose
    widths the network takes, else the .mat's. Not on a GPU: the activations are in its
    memory, and TensorFlow reports running out of that itself."""
    if devices.gpu_names(tf):
        return None
    widths = (vgg_weights.file_widths(settings.model_dir) if weights_from is None
              else network.checkpoint_widths(weights_from, settings.variant))
    local_batch = settings.batch_size // (1 if cluster is None else cluster.num_workers)
    return memory_estimate.training_warning(
        memory_estimate.available_bytes(), settings.variant, settings.precision,
        settings.optimizer, local_batch, settings.image_size, classes.num_classes, widths)


def checked_records(settings, classes):
    """(training, validation) records of the dataset, every pair checked first (sizes, and the
    values of the first annotations against the class count)."""
    train_records, valid_records = predicting.dataset_records(settings)
    started = time.time()
    for records in (train_records, valid_records):
        image_files.validate_records(records, num_classes=classes.num_classes,
                                     extra_label=classes.extra_label, dataset=settings.dataset)
    print("Checked %d training and %d validation pairs in %.1f s"
          % (len(train_records), len(valid_records), time.time() - started))
    return train_records, valid_records


def check_batch_size(batch_size, train_records, valid_records, data_dir):
    """FCNError when a batch is larger than a split: training and its validation batches take
    whole batches."""
    for split, records in (("training", train_records), ("validation", valid_records)):
        if batch_size > len(records):
            raise FCNError("--batch_size=%d is larger than the %d %s records of %s; use a "
                           "smaller --batch_size" % (batch_size, len(records), split, data_dir))


def distributed_cluster(settings):
    """The distribute.Cluster of --distribute (its strategy, this worker's part), or None for
    --distribute=none, one device as the reference trained."""
    distribute.check_settings(settings)
    if settings.distribute == "none":
        return None
    tf.get_logger().setLevel("WARNING")  # the strategy's INFO lines on every all-reduce built
    cluster = distribute.Cluster(tf, settings, len(devices.gpu_names(tf)))
    print(cluster.describe())
    return cluster


def run_train(settings):
    logs_dir = settings.logs_dir
    ensure_writable_dir(logs_dir, "logs_dir")
    cluster = distributed_cluster(settings)
    chief = cluster is None or cluster.is_chief
    # Only the chief writes into --logs_dir (storage every worker sees) and holds its lock.
    with TrainLock(logs_dir) if chief else contextlib.nullcontext():
        classes = predicting.dataset_classes(settings)
        train_records, valid_records = checked_records(settings, classes)
        check_batch_size(settings.batch_size, train_records, valid_records, settings.data_dir)
        if chief:
            checkpoints.remove_partial_saves(logs_dir)
        checkpoint = checkpoints.latest_checkpoint(logs_dir, refuse_unreadable=True)
        init_from = None
        if checkpoint is not None:
            model_checks.check_class_count(checkpoint, classes, settings)
            model_checks.check_optimizer(checkpoint, settings.optimizer)
            for line in run_settings.recipe_changes(settings, logs_dir):
                print(line)
            if settings.init_from:
                print("--init_from ignored: %s resumes from its own checkpoint %s"
                      % (logs_dir, checkpoint))
        elif settings.init_from:
            init_from = checkpoints.resolve_init_from(settings.init_from)
            model_checks.check_variant(init_from, settings.variant, "--init_from")
        weights_from = checkpoint
        if weights_from is None and init_from is not None and checkpoints.holds_variables(
                init_from, network.pretrained_variable_names(settings.variant)):
            weights_from = init_from
        warning = memory_warning(settings, classes, weights_from, cluster)
        if warning:  # before the .mat is read and the graph built, which take the memory
            print(warning)
        loss_class_weights = class_weights.class_weights(
            settings.class_weights, train_records, classes.num_classes, settings.data_dir)
        graph, model = network.build_model(settings, True, classes, weights_from,
                                           strategy=cluster and cluster.strategy,
                                           class_weights=loss_class_weights)
        tiled = None
        if settings.eval_scales and cluster is None:
            # The subset scored at --eval_scales of each image's size, as validate scores it.
            with graph.as_default():
                tiled = predicting.tiled_network_of(settings, model, classes.num_classes)
        if chief:  # every check passed, the VGG-19 file read: what this run is
            record_run(settings, classes)
        with graph.as_default(), _train_session(cluster) as sess:
            # Under multi_worker the initialisers are a broadcast from the chief that every
            # worker joins; only then does each restore the same checkpoint.
            run_with_workers(sess, cluster, tf.global_variables_initializer(), {},
                             checkpoint, starting=True)
            step = 0
            if checkpoint is not None:
                step = checkpoints.restore(sess, checkpoint, model.saveable, model.global_step)
            elif init_from is not None:
                checkpoints.restore_matching(sess, init_from, model.network_variables)
            else:
                print("No checkpoint in %s: starting from VGG-19" % logs_dir)
            saver = checkpoints.make_saver(model.saveable, logs_dir) if chief else None
            shard = (0, 1) if cluster is None else (cluster.rank, cluster.num_workers)
            augmentation = augment.augmentation_of(
                settings.augment, settings.image_size, settings.min_scale_factor,
                settings.max_scale_factor, model.mean_pixel, classes.loss_ignore_label,
                settings.interpolation)
            with predicting.batch_reader(settings, train_records, classes, shard=shard,
                                         augmentation=augmentation) as train_reader, \
                    predicting.batch_reader(settings, valid_records, classes,
                                            shard=shard) as valid_reader, \
                    StopRequest() as stop:
                if step:  # the batches a run that was never stopped would see next
                    train_reader.resume_after(step, settings.batch_size)
                writers = [None, None]
                if chief:
                    writers = [tf.summary.FileWriter(os.path.join(logs_dir, "train"), sess.graph),
                               tf.summary.FileWriter(os.path.join(logs_dir, "validation"))]
                # The subset is scored on one device; under --distribute its batches would have
                # to split among replicas and workers, so it is off there (docs/distributed.md).
                subset = (evaluation.validation_subset(valid_records, settings.validation_images)
                          if cluster is None else [])
                passes = tiled and predicting.Passes(sess, model, tiled, settings)
                loop = Loop(settings, sess, model, cluster, saver, train_reader, valid_reader,
                            writers, stop, subset, classes, passes)
                try:
                    loop.run(step, checkpoint)
                finally:
                    for writer in writers:
                        if writer is not None:
                            writer.close()


def record_run(settings, classes):
    """What this run is, beside the checkpoints it produces, once its checks have passed: its
    settings (run_settings.record) and the model's classes (classes.json)."""
    logs_dir = settings.logs_dir
    run_settings.record(logs_dir, dict(run_settings.as_recorded(settings),
                                       tensorflow=tf.__version__,
                                       started=time.strftime("%Y-%m-%d %H:%M:%S")))
    classes_path = os.path.join(logs_dir, datasets.CLASSES_NAME)
    with writing(classes_path):
        write_json_atomically(classes_path, dict(datasets.info_to_json(classes),
                                                 variant=settings.variant))


def _train_session(cluster):
    return (tf.Session(config=network.session_config()) if cluster is None
            else cluster.session(tf))


def run_with_workers(sess, cluster, fetches, feed_dict, last_checkpoint, starting=False):
    """sess.run; under --distribute, Cluster.run: a lost worker stops this one."""
    if cluster is None:
        return sess.run(fetches, feed_dict=feed_dict)
    return cluster.run(tf, sess, fetches, feed_dict, last_checkpoint, starting)


def now():
    return time.strftime("%Y-%m-%d %H:%M:%S")


class Loop:
    """The training loop of one run: what it works with, and a method for each of its pieces."""

    def __init__(self, settings, sess, model, cluster, saver, train_reader, valid_reader,
                 writers, stop, subset, classes, passes=None):
        """saver None: a worker other than the chief, which writes nothing. writers: the
        FileWriters of logs/train and logs/validation (None, None off the chief). subset: the
        validation records scored at each checkpoint (evaluation.validation_subset). passes:
        the predicting.Passes that score them at --eval_scales."""
        self.settings, self.sess, self.model, self.cluster = settings, sess, model, cluster
        self.saver, self.stop, self.subset, self.classes = saver, stop, subset, classes
        self.passes = passes
        self.train_reader, self.valid_reader = train_reader, valid_reader
        self.train_writer, self.valid_writer = writers
        self.last_checkpoint = None

    def run(self, step, last_checkpoint):
        """Trains from step to --max_iterations, or until a stop is asked."""
        settings, max_iterations = self.settings, self.settings.max_iterations
        self.last_checkpoint = last_checkpoint
        if step >= max_iterations:
            print("Step %d already reached --max_iterations=%d; nothing to do (raise "
                  "--max_iterations to train on)" % (step, max_iterations))
            return
        print("Training from step %d to %d, batch %d, %dx%d"
              % (step, max_iterations, settings.batch_size, settings.image_size,
                 settings.image_size))
        window = RateWindow(settings.batch_size, devices.gpu_names(tf))
        while step < max_iterations:
            log_now = (step + 1) % settings.log_every == 0
            results = self.train_step(log_now, step)
            step += 1
            window.count()
            if log_now:
                self.log(step, results, window)
            if step % settings.save_every == 0 or step == max_iterations:
                self.checkpoint(step)
            signal_name = self.stop_asked(results)
            if signal_name is not None:
                self.stop_at(step, signal_name)
                break
        else:
            print("Reached --max_iterations=%d; last checkpoint %s"
                  % (max_iterations, self.last_checkpoint))
        if self.cluster is not None:
            print("Weights checksum: %016x"
                  % (int(self.sess.run(self.model.weights_checksum)) % (1 << 64)))

    def train_step(self, with_summary, step):
        """One update on the next batch; its results by name: loss, and summary, stop_votes
        when asked for."""
        model = self.model
        images, annotations = self.train_reader.next_batch(self.settings.batch_size)
        feed = {model.image: images, model.annotation: annotations,
                model.keep_probability: model.training_keep_probability}
        fetches = {"update": model.train_op, "loss": model.loss}
        if model.learning_rate is not None:
            fetches["learning_rate"] = model.learning_rate
        if with_summary:
            fetches["summary"] = model.train_summary
        if self.cluster is not None:
            # A signal here is this worker's vote; every worker stops once the votes summed
            # with a step say so, after that same step.
            feed[model.stop_vote] = 0.0 if self.stop.signal_name is None else 1.0
            fetches["stop_votes"] = model.stop_votes
        results = run_with_workers(self.sess, self.cluster, fetches, feed, self.last_checkpoint)
        loss = float(results["loss"])
        if not np.isfinite(loss):
            raise FCNError(
                "the training loss is %s at step %d; stopped without saving, the last good "
                "checkpoint is %s; try a lower --learning_rate"
                % (loss, step + 1, self.last_checkpoint))
        return results

    def log(self, step, results, window):
        """The log line, and the training summaries on the chief."""
        if self.train_writer is not None:
            self.train_writer.add_summary(results["summary"], step)
        rate, eta = window.rate_and_eta(self.settings.max_iterations - step)
        replicas = "" if self.cluster is None else " on %d replicas" % self.cluster.replicas
        rate_shown = ("" if "learning_rate" not in results
                      else " lr %.3g" % float(results["learning_rate"]))
        print("%s step %d loss %.5f%s images/s %.2f%s eta %s"
              % (now(), step, float(results["loss"]), rate_shown, rate, replicas,
                 format_duration(eta)))
        warning = window.slow_warning(eta)
        if warning:
            print(warning)
        sys.stdout.flush()
        window.restart()

    def checkpoint(self, step):
        """The loss of one validation batch, then a checkpoint (the chief saves it), then the
        validation subset's scores."""
        model = self.model
        images, annotations = self.valid_reader.next_batch(self.settings.batch_size)
        valid_loss, summary = run_with_workers(
            self.sess, self.cluster, [model.loss, model.loss_summary],
            {model.image: images, model.annotation: annotations, model.keep_probability: 1.0},
            self.last_checkpoint)
        if self.saver is None:
            self.last_checkpoint = checkpoints.step_prefix(self.settings.logs_dir, step)
            print("%s step %d validation loss %.5f (the chief saves %s)"
                  % (now(), step, valid_loss, self.last_checkpoint))
            return
        self.valid_writer.add_summary(summary, step)
        self.last_checkpoint = checkpoints.save(self.sess, self.saver, self.settings.logs_dir,
                                                step)
        # Scored after the save: a stop while scoring finds the checkpoint already written.
        print("%s step %d validation loss %.5f%s saved %s"
              % (now(), step, valid_loss, self.subset_scores(step), self.last_checkpoint))

    def subset_scores(self, step):
        """The validation subset's pixel accuracy and mean IoU, scored as --mode=validate
        scores, written to TensorBoard's validation folder; the words for the log line ('' when
        there is no subset)."""
        if not self.subset:
            return ""
        started = time.time()
        scored = predicting.score_records(self.settings, self.sess, self.model, self.subset,
                                          self.classes, passes=self.passes)
        result = metrics.scores(scored["confusion"], self.classes.metric_ignore_label)
        self.valid_writer.add_summary(tf.Summary(value=[
            tf.Summary.Value(tag=name, simple_value=result[name])
            for name in VALIDATION_SCALARS]), step)
        self.valid_writer.flush()
        return (" pixel accuracy %.2f%% mean IoU %.2f%% (%d images, %.1f s)"
                % (100 * result["pixel_accuracy"], 100 * result["mean_iou"],
                   scored["num_images"], time.time() - started))

    def stop_asked(self, results):
        """The name of the signal that asks this run to stop after this step, or None; under
        --distribute, any worker's vote (the sum of the votes comes with the step)."""
        if self.cluster is None:
            return self.stop.signal_name
        if results["stop_votes"] == 0:
            return None
        return self.stop.signal_name or "a Ctrl-C or SIGTERM on another worker"

    def stop_at(self, step, signal_name):
        """Ends the run after step with a checkpoint of it (the chief's)."""
        if self.saver is None:
            print("Stopped by %s at step %d; the chief saves the checkpoint" % (signal_name, step))
            return
        settings = self.settings
        if not (step % settings.save_every == 0 or step == settings.max_iterations):
            self.last_checkpoint = checkpoints.save(self.sess, self.saver, settings.logs_dir, step)
        print("Stopped by %s at step %d; checkpoint saved to %s"
              % (signal_name, step, self.last_checkpoint))


class RateWindow:
    """Images per second and the time left, over the steps since the last log line; the slow-CPU
    warning once per run."""

    def __init__(self, batch_size, gpus):
        self.batch_size, self.gpus, self.warned = batch_size, gpus, False
        self.restart()

    def restart(self):
        self.started, self.steps = time.time(), 0

    def count(self):
        self.steps += 1

    def rate_and_eta(self, steps_left):
        elapsed = time.time() - self.started
        rate = self.steps * self.batch_size / elapsed if elapsed > 0 else float("nan")
        return rate, steps_left * elapsed / self.steps

    def slow_warning(self, eta):
        warning = None if self.warned else slow_cpu_warning(eta, self.gpus)
        self.warned = self.warned or warning is not None
        return warning
