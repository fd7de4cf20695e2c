"""Throughput of the FCN-8s port on this machine, against a ceiling measured in the same run.

    python benchmarks/bench.py [--quick] [--precision fp32|bf16|both] [--json FILE]

Sections (each prints its rows; --json writes them all, nested, to FILE):
  ceiling    GFLOP/s of one 3x3 256->256 convolution, fp32 and bf16: what this CPU and
             TensorFlow's kernels reach on the network's most common layer shape.
  train      images/s of the full step (forward, backward, Adam), data fed from numpy arrays,
             and its GFLOP/s from the analytic count (benchmarks/flop_count.py), as a
             fraction of the fp32 ceiling.
  inference  the same for the forward pass alone, fetching the prediction.
  reader     BatchDatset.next_batch images/s, time to the first batch and peak RSS, on JPEGs
             and PNGs generated here; each record count runs in a fresh process, so that its
             peak RSS is the reader's and not this process's (benchmarks/reader_bench.py).
  end_to_end the training loop fed by the reader against the step alone.

Every timing is taken over several timed runs after warm-up. The summary printed first leads
with the medians (the figure to quote and compare) and gives the best run and the spread
((slowest - fastest) / median) beside them; every row of the full table has both. Fractions of
a ceiling divide like by like: a median by the ceiling's median, a best by its best. "paired":
each timed train and inference run follows one run of the fp32 ceiling's chain (end_to_end's
loop and step are timed in turn with each other instead), and the fraction is the median over
those pairs, so that a machine whose speed drifts between the ceiling section and the
network's (a shared host) moves both sides of the fraction alike.
Each measurement also records cpu_share, this process's CPU time over wall time x cores during
the timed runs (for the paired rows, their ceiling runs included): near 1 for the compute-bound
sections when the machine was ours, lower when other processes took cores (the load averages
at start and end say the same more coarsely).
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # FCN.py and friends are flat top-level modules
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks.flop_count import (NUM_CLASSES, TRAIN_FLOP_FACTOR, conv_gflop,  # noqa: E402
                                   fcn8s_forward_gflop, fcn8s_gflop_by_layer)
from benchmarks.measuring import (paired_fraction, spread, summarize_times,  # noqa: E402
                                  time_runs, time_runs_in_turn)
from benchmarks.reader_bench import make_reader_data, reader_section  # noqa: E402

# Sizes of one run. "full" is what the report's figures mean; "quick" only proves the script works.
SETTINGS = {
    "full": dict(image_size=224, train_batches=(10, 2), inference_batch=10,
                 ceiling_shape=(8, 56, 56, 256), convs_per_run=4, warmup=2,
                 timed_runs={"ceiling": 5, "large_batch": 5, "small_batch": 5, "loop": 3},
                 reader_records=(200, 2000), reader_batch=10, source_image=(512, 683),
                 distinct_files=40),
    "quick": dict(image_size=64, train_batches=(2, 1), inference_batch=2,
                  ceiling_shape=(2, 16, 16, 256), convs_per_run=2, warmup=1,
                  timed_runs={"ceiling": 2, "large_batch": 1, "small_batch": 1, "loop": 1},
                  reader_records=(20, 40), reader_batch=2, source_image=(96, 128),
                  distinct_files=4),
}




# ----------------------------------------------------------------------------------------------
# Small helpers (pure)
# ----------------------------------------------------------------------------------------------

# The summary's rows: (label, dotted key of the row in the results). Each row's median,
# best and spread are printed.
SUMMARY_ROWS = [
    ("fp32 train, large batch", "train.fp32.batch{large}"),
    ("fp32 train, small batch", "train.fp32.batch{small}"),
    ("fp32 inference", "inference.fp32.batch{inference}"),
    ("bf16 train, large batch", "train.bf16.batch{large}"),
    ("bf16 train, small batch", "train.bf16.batch{small}"),
    ("bf16 inference", "inference.bf16.batch{inference}"),
]


def summary_rows(results):
    """[(label, median fraction of the fp32 ceiling, best fraction, paired fraction (nan when
    not measured), spread, median images/s)] of the network rows present in results."""
    meta = results["meta"]
    batches = {"large": meta["train_batches"][0], "small": meta["train_batches"][1],
               "inference": meta["inference_batch"]}
    rows = []
    for label, key in SUMMARY_ROWS:
        node = results
        for part in key.format(**batches).split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node:
            rows.append((label + " (batch %d)" % node["batch"],
                         node["fraction_of_fp32_ceiling_median"],
                         node["fraction_of_fp32_ceiling"],
                         node.get("fraction_of_fp32_ceiling_paired", float("nan")),
                         node["spread"], node["images_per_s_median"]))
    return rows


def format_summary(results):
    """The summary table: medians first, as fractions of the fp32 3x3-conv ceiling."""
    ceiling = results["ceiling"]["fp32"]
    lines = ["fp32 ceiling: median %.1f GFLOP/s (best %.1f)"
             % (ceiling["gflops_median"], ceiling["gflops"]),
             "%-34s %8s %8s %8s %8s %10s" % ("fraction of the fp32 ceiling", "median", "best",
                                             "paired", "spread", "images/s")]
    for label, median, best, paired, runs_spread, images in summary_rows(results):
        lines.append("%-34s %8.3f %8.3f %8.3f %7.0f%% %10.3f"
                     % (label, median, best, paired, 100 * runs_spread, images))
    return "\n".join(lines)


def precisions_of(choice):
    return ("fp32", "bf16") if choice == "both" else (choice,)


def cpu_model(cpuinfo_text):
    """The first 'model name' of /proc/cpuinfo's text, or 'unknown'."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def flatten(results, prefix=""):
    """[(dotted key, value)] of a nested dict, in insertion order (for the table and the tests)."""
    rows = []
    for key, value in results.items():
        name = prefix + str(key)
        if isinstance(value, dict):
            rows += flatten(value, name + ".")
        else:
            rows.append((name, value))
    return rows


def disturbed_rows(results, threshold=0.8):
    """The measurements whose cpu_share is below threshold: done while others used cores."""
    return [key[:-len(".cpu_share")] for key, value in flatten(results)
            if key.endswith(".cpu_share") and value < threshold]


def format_value(value):
    if isinstance(value, float):
        return "%.4g" % value
    if isinstance(value, (list, tuple)):
        return " ".join(format_value(v) for v in value)
    return str(value)


def format_table(results):
    rows = flatten(results)
    width = max(len(key) for key, _ in rows)
    return "\n".join("%-*s  %s" % (width, key, format_value(value)) for key, value in rows)


# ----------------------------------------------------------------------------------------------
# TensorFlow set-up
# ----------------------------------------------------------------------------------------------

def session_config():
    """(config, description): the session settings FCN.py runs with."""
    import network
    return network.session_config(), "network.session_config()"


# ----------------------------------------------------------------------------------------------
# 1. The ceiling
# ----------------------------------------------------------------------------------------------

class CeilingChain:
    """A chain of convs_per_run 3x3 SAME convolutions (cin = cout = shape[3]) on a variable
    input in its own session; run() is one session.run of the chain, so that the per-run
    overhead is spread over it. Kept open to be timed in turn with the network's runs."""

    def __init__(self, dtype_name, shape, convs_per_run, config):
        import tensorflow.compat.v1 as tf
        dtype = {"fp32": tf.float32, "bf16": tf.bfloat16}[dtype_name]
        n, h, w, c = shape
        graph = tf.Graph()
        with graph.as_default():
            # The bf16 variables hold bf16 values from the start: the chain casts nothing per
            # run. A kernel std of 1/sqrt(9c) keeps the activations near unit variance along the
            # chain, away from overflow and from denormals, either of which would time
            # something else.
            images = tf.Variable(tf.cast(tf.random.normal([n, h, w, c], seed=1), dtype))
            kernel = tf.Variable(tf.cast(tf.random.normal(
                [3, 3, c, c], stddev=(9.0 * c) ** -0.5, seed=2), dtype))
            out = images
            for _ in range(convs_per_run):
                out = tf.nn.conv2d(out, kernel, strides=1, padding="SAME")
            # Fetch a reduction of the last output, not tf.group(out): Grappler prunes a pure
            # computation that only a control dependency asks for, and the "convolutions" then
            # take no time at all (measured: a million GFLOP/s).
            self._checksum = tf.reduce_sum(tf.cast(out, tf.float32))
            init = tf.global_variables_initializer()
        self._sess = tf.Session(graph=graph, config=config)
        try:
            self._sess.run(init)
        except BaseException:
            self._sess.close()
            raise
        self.gflop = convs_per_run * conv_gflop(h, w, 3, c, c) * n

    def run(self):
        return self._sess.run(self._checksum)

    def close(self):
        self._sess.close()


def measure_ceiling(chain, warmup, repeats):
    """GFLOP/s of the chain's runs (median and best), with the row's other figures."""
    seconds, share = time_runs(chain.run, warmup, repeats)
    if not math.isfinite(chain.run()):
        raise RuntimeError("the ceiling chain overflowed; its timing would mean nothing")
    speed = summarize_times(seconds, chain.gflop)
    return {"gflops_median": speed["median"], "gflops": speed["best"], "spread": spread(seconds),
            "gflop_per_run": chain.gflop, "runs": len(seconds), "cpu_share": share}


# ----------------------------------------------------------------------------------------------
# 2., 3. and 5. The network (4., the reader, is benchmarks/reader_bench.py)
# ----------------------------------------------------------------------------------------------

def random_vgg_weights(seed=0):
    """He-scaled random VGG-19 weights in FCN.inference's format: the timings do not depend on
    the values, and the real .mat cannot be assumed here."""
    from vgg_weights import VGG19_CONV_SHAPES
    rng = np.random.RandomState(seed)
    return {name: ((rng.standard_normal(shape) * math.sqrt(2.0 / (9 * shape[2])))
                   .astype(np.float32), np.zeros(shape[3], np.float32))
            for name, shape in VGG19_CONV_SHAPES}


def build_network(image_size, precision, config, training=True, ignore_label=None):
    """A graph with FCN-8s computing in precision and a session with the variables set: for
    training, with its loss (ignoring ignore_label's pixels) and its Adam step; else as the modes
    that only predict build it (no dropout). Returns (session, tensors)."""
    import tensorflow.compat.v1 as tf
    import FCN
    import network
    import vgg_weights
    graph = tf.Graph()
    with graph.as_default():
        image, annotation, keep_prob = network.input_placeholders(image_size)
        pred, logits = FCN.inference(image, keep_prob if training else None,
                                     vgg=(random_vgg_weights(), vgg_weights.VGG19_MEAN_PIXEL),
                                     debug=False, precision=precision)
        tensors = dict(image=image, annotation=annotation, keep_prob=keep_prob, pred=pred)
        if training:
            loss = FCN.pixel_loss(logits, annotation, ignore_label)
            tensors["train_op"] = FCN.train(loss, tf.trainable_variables(), learning_rate=1e-4,
                                            debug=False)
        init = tf.global_variables_initializer()
    sess = tf.Session(graph=graph, config=config)
    sess.run(init)
    return sess, tensors


def random_batch(batch, size, seed=0):
    """Pre-made numpy data: images 0..255 float32 [B,S,S,3], labels int32 0..150 [B,S,S,1]."""
    rng = np.random.RandomState(seed)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    labels = rng.randint(0, NUM_CLASSES, (batch, size, size, 1)).astype(np.int32)
    return images, labels


def throughput_row(timing, batch, gflop_per_image, ceilings, precision):
    """images/s, GFLOP/s and fractions of the ceilings from the timing of one batch: time_runs'
    (seconds, share), or time_runs_in_turn's (seconds, share, fp32 ceiling seconds), which adds
    the fraction of the fp32 ceiling paired run by run."""
    seconds, share = timing[:2]
    images = summarize_times(seconds, batch)
    row = {"batch": batch, "runs": len(seconds),
           "images_per_s_median": images["median"], "images_per_s": images["best"],
           "step_s_median": statistics.median(seconds), "step_s": min(seconds),
           "spread": spread(seconds),
           "gflops_median": images["median"] * gflop_per_image,
           "gflops": images["best"] * gflop_per_image}
    for name in sorted({"fp32", precision}):
        row["fraction_of_%s_ceiling_median" % name] = (row["gflops_median"]
                                                       / ceilings[name]["gflops_median"])
        row["fraction_of_%s_ceiling" % name] = row["gflops"] / ceilings[name]["gflops"]
    if len(timing) == 3:
        ceiling_gflop = ceilings["fp32"]["gflop_per_run"]
        # The ceiling as the pairs saw it: compare it with the ceiling section's own median.
        row["fp32_ceiling_in_turn_gflops_median"] = summarize_times(timing[2],
                                                                    ceiling_gflop)["median"]
        row["fraction_of_fp32_ceiling_paired"] = paired_fraction(
            seconds, batch * gflop_per_image, timing[2], ceiling_gflop)
    row["cpu_share"] = share
    return row


def measure_train(sess, t, batch, size, warmup, repeats, ceiling):
    images, labels = random_batch(batch, size)
    feed = {t["image"]: images, t["annotation"]: labels, t["keep_prob"]: 0.85}
    return time_runs_in_turn(lambda: sess.run(t["train_op"], feed), ceiling.run, warmup, repeats)


def measure_inference(sess, t, batch, size, warmup, repeats, ceiling):
    images, _ = random_batch(batch, size, seed=1)
    feed = {t["image"]: images, t["keep_prob"]: 1.0}
    return time_runs_in_turn(lambda: sess.run(t["pred"], feed), ceiling.run, warmup, repeats)


def merge_timings(timings):
    """One (seconds, cpu_share) of several time_runs results: all the runs, and the share
    weighted by each result's time."""
    seconds = [run for runs, _ in timings for run in runs]
    share = sum(sum(runs) * share for runs, share in timings) / sum(seconds)
    return seconds, share


def measure_loop_and_step(sess, t, reader, batch, size, warmup, repeats):
    """(loop timing, step timing) in time_runs' form: iterations of the training loop fed by
    reader.next_batch, and steps alone on pre-made arrays, taken in turn so that both see the
    same load (a step timed minutes earlier may have shared the cores with something else)."""
    images, labels = random_batch(batch, size)
    fixed_feed = {t["image"]: images, t["annotation"]: labels, t["keep_prob"]: 0.85}

    def loop_iteration():
        images, labels = reader.next_batch(batch)
        sess.run(t["train_op"], {t["image"]: images, t["annotation"]: labels,
                                 t["keep_prob"]: 0.85})

    loop, step = [], []
    for i in range(repeats):
        loop.append(time_runs(loop_iteration, warmup if i == 0 else 0, 1))
        step.append(time_runs(lambda: sess.run(t["train_op"], fixed_feed), 0, 1))
    return merge_timings(loop), merge_timings(step)


def network_sections(precision, settings, ceilings, config, reader_data, ceiling):
    """{'train': ..., 'inference': ...} of one precision, and 'end_to_end' when reader_data is
    given (the reader's cost does not depend on the precision: it is measured once). Each timed
    run follows one run of the fp32 ceiling chain `ceiling`."""
    size, runs, warmup = settings["image_size"], settings["timed_runs"], settings["warmup"]
    train_gflop = TRAIN_FLOP_FACTOR * fcn8s_forward_gflop(size, size)
    forward_gflop = fcn8s_forward_gflop(size, size)
    sess, t = build_network(size, precision, config)
    try:
        train = {}
        for batch, role in zip(settings["train_batches"], ("large_batch", "small_batch")):
            timing = measure_train(sess, t, batch, size, warmup, runs[role], ceiling)
            train["batch%d" % batch] = throughput_row(timing, batch, train_gflop, ceilings,
                                                      precision)
        sections = {"train": train}
        if reader_data is not None:
            sections["end_to_end"] = end_to_end_section(sess, t, settings, reader_data)
    finally:
        sess.close()
    # Inference in the graph predict, validate and the export build, after the training
    # graph is gone: one network's memory at a time.
    sess, t = build_network(size, precision, config, training=False)
    try:
        batch = settings["inference_batch"]
        timing = measure_inference(sess, t, batch, size, warmup, runs["large_batch"],
                                   ceiling)
        sections["inference"] = {"batch%d" % batch: throughput_row(timing, batch, forward_gflop,
                                                                   ceilings, precision)}
    finally:
        sess.close()
    return sections


def end_to_end_section(sess, t, settings, reader_data):
    """The loop fed by BatchDatset against the step alone, at the large training batch."""
    from BatchDatsetReader import BatchDatset
    batch, size = settings["train_batches"][0], settings["image_size"]
    records = reader_data[min(reader_data)]
    with BatchDatset(records, {"resize": True, "resize_size": size}) as reader:
        loop, step = measure_loop_and_step(sess, t, reader, batch, size, settings["warmup"],
                                           settings["timed_runs"]["loop"])
    loop_speed, step_speed = summarize_times(loop[0], batch), summarize_times(step[0], batch)
    return {"batch": batch, "loop_images_per_s": loop_speed["best"],
            "loop_images_per_s_median": loop_speed["median"],
            "step_images_per_s": step_speed["best"],
            "step_images_per_s_median": step_speed["median"],
            "loop_over_step_median": loop_speed["median"] / step_speed["median"],
            "loop_over_step": loop_speed["best"] / step_speed["best"],
            "cpu_share": merge_timings([loop, step])[1]}


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------

def machine_description():
    import tensorflow as tf
    try:
        with open("/proc/cpuinfo") as f:
            cpu = cpu_model(f.read())
    except OSError:
        cpu = platform.processor() or "unknown"
    return {"tensorflow": tf.__version__, "cpu": cpu, "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0))}


def run(settings, precision_choice):
    """All sections; returns the nested results."""
    started = time.perf_counter()
    meta = machine_description()
    meta["loadavg_start"] = list(os.getloadavg())
    print("TensorFlow %(tensorflow)s | CPU %(cpu)s | %(cores)d cores (%(usable_cores)d usable)"
          % meta)
    print("load average at start: %.2f %.2f %.2f" % tuple(meta["loadavg_start"]), flush=True)
    config, meta["session_config"] = session_config()
    meta.update(image_size=settings["image_size"], precision=precision_choice,
                statistic="median and best of the timed runs after %d warm-up"
                % settings["warmup"],
                timed_runs=dict(settings["timed_runs"]),
                train_batches=list(settings["train_batches"]),
                inference_batch=settings["inference_batch"],
                reader_records=list(settings["reader_records"]))
    size = settings["image_size"]
    results = {"meta": meta,
               "flops": {"image_size": size,
                         "forward_gflop_per_image": fcn8s_forward_gflop(size, size),
                         "train_gflop_per_image": TRAIN_FLOP_FACTOR
                         * fcn8s_forward_gflop(size, size),
                         "forward_gflop_by_layer": fcn8s_gflop_by_layer(size, size)}}

    results["ceiling"], chains = {}, {}
    try:
        for precision in ("fp32", "bf16"):
            chains[precision] = CeilingChain(precision, settings["ceiling_shape"],
                                             settings["convs_per_run"], config)
            results["ceiling"][precision] = measure_ceiling(
                chains[precision], settings["warmup"], settings["timed_runs"]["ceiling"])
            print("ceiling %s: %.1f GFLOP/s"
                  % (precision, results["ceiling"][precision]["gflops"]), flush=True)
        chains.pop("bf16").close()
        network_and_reader_sections(results, settings, precision_choice, config, chains["fp32"])
    finally:
        for chain in chains.values():
            chain.close()
    meta["loadavg_end"] = list(os.getloadavg())
    meta["run_seconds"] = time.perf_counter() - started
    return results


def network_and_reader_sections(results, settings, precision_choice, config, ceiling):
    """Adds the reader, train, inference and end_to_end sections to results."""
    with tempfile.TemporaryDirectory(prefix="fcn-bench-") as folder:
        reader_data = make_reader_data(folder, settings)
        results["reader"] = reader_section(reader_data, folder, settings)
        print("reader done", flush=True)
        for section in ("train", "inference", "end_to_end"):
            results[section] = {}
        for precision in precisions_of(precision_choice):
            sections = network_sections(precision, settings, results["ceiling"], config,
                                        reader_data if precision == "fp32" else None, ceiling)
            for section, value in sections.items():
                results[section][precision] = value
            print("network %s done" % precision, flush=True)
    # The loop is measured in fp32 only: the reader's cost does not depend on the precision.
    results["end_to_end"] = results["end_to_end"].get("fp32", "n/a (fp32 not run)")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: proves the script runs, measures nothing useful")
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both",
                        help="the network's precision(s); the ceiling is always measured in both")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = run(SETTINGS["quick" if args.quick else "full"], args.precision)
    print()
    print(format_summary(results))
    print()
    print(format_table(results))
    print("load average at end: %.2f %.2f %.2f" % tuple(results["meta"]["loadavg_end"]))
    disturbed = disturbed_rows(results)
    if disturbed:
        print("warning: other processes took CPU during: %s" % ", ".join(disturbed))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
