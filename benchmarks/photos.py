"""Predict on photos: time, megapixels per second and peak memory of --mode=predict on one photo
of 1000x750, 2000x1500 and 4000x3000, each in a fresh process, on the full-size network; and
the network's own rate on one 1024x768 image in one pass, in this process, as the yardstick.

    python benchmarks/photos.py [--runs 3] [--other PATH] [--json FILE]

For each photo: the wall time of `python FCN.py --mode=predict --image=<photo>` less the
start-up (the median time of the same command on a 64x64 image), its megapixels per second, its
peak RSS (its own, from wait4), and the ratio of that rate to the network's whole-image
rate: 1.0 is predict at the cost of one pass of the network over the photo, nothing more.
--other PATH runs the same commands with PATH/FCN.py (another checkout, e.g. the code before a
change) in turn with this one's, run by run, so that both see the same machine. The checkpoint
is a 151-class model at VGG-19's widths with its initial weights: the cost does not depend on
the values. Medians over --runs runs.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

PHOTOS = ((1000, 750), (2000, 1500), (4000, 3000))
YARDSTICK = (1024, 768)  # width x height of the one-pass measurement


def write_model(folder):
    """(logs_dir, model_dir) of a full-size 151-class checkpoint (initial weights) and its .mat."""
    import datasets
    import vgg_weights
    from tests.make_model import write_initial_model
    from tests.make_vgg_mat import write_vgg19_mat
    model_dir = os.path.join(folder, "Model_zoo")
    os.makedirs(model_dir)
    write_vgg19_mat(os.path.join(model_dir, vgg_weights.VGG19_FILE_NAME))
    weights, mean_pixel, _ = vgg_weights.load_vgg(model_dir)
    classes = datasets.class_info(datasets.ADE20K, ["c%d" % k for k in range(151)])
    logs = write_initial_model(os.path.join(folder, "logs"), (weights, mean_pixel), classes)
    return logs, model_dir


def photo(width, height, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randint(0, 255, (height, width, 3)).astype(np.uint8)


def one_pass_rate(logs, model_dir, runs):
    """Megapixels per second of the whole network, one pass over a 1024x768 image (padded as
    predict pads it), batch 1: the graph --tile_size=0 runs."""
    import tensorflow.compat.v1 as tf
    import datasets
    import network
    import vgg_weights
    classes = datasets.stored_classes(logs)
    checkpoint = tf.train.latest_checkpoint(logs) or os.path.join(logs, "model.ckpt-1")
    with tf.Graph().as_default():
        model = network.Model((None, vgg_weights.mean_pixel_for_restore(model_dir)), False,
                              classes=classes)
        with tf.Session() as sess:
            tf.train.Saver(model.saveable).restore(sess, checkpoint)
            image = photo(*YARDSTICK)[None].astype(np.float32)
            feed = {model.image: image, model.keep_probability: 1.0}
            sess.run(model.pred_annotation, feed)  # warm-up: kernels chosen, memory laid out
            seconds = []
            for _ in range(runs):
                started = time.perf_counter()
                sess.run(model.pred_annotation, feed)
                seconds.append(time.perf_counter() - started)
    return YARDSTICK[0] * YARDSTICK[1] / 1e6 / statistics.median(seconds), seconds


def predict_once(fcn_py, image_path, logs, model_dir, out_dir):
    """(wall seconds, peak RSS bytes) of one predict in a fresh process, the peak its own: this
    process has held the network, and a child of it would count that peak as its own."""
    from tests.project import own_peak
    started = time.perf_counter()
    code, stderr, peak = own_peak([sys.executable, fcn_py, "--mode=predict",
                                   "--image=" + image_path, "--logs_dir=" + logs,
                                   "--model_dir=" + model_dir, "--output_dir=" + out_dir])
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError("%s failed: %s" % (fcn_py, stderr[-2000:]))
    return seconds, peak


def measure(codes, folder, logs, model_dir, runs):
    """{code name: {photo: {...}}}: the codes' predicts in turn, run by run."""
    import imageio.v2 as imageio
    paths = {"startup": os.path.join(folder, "tiny.png")}
    imageio.imwrite(paths["startup"], photo(64, 64))
    for width, height in PHOTOS:
        paths["%dx%d" % (width, height)] = os.path.join(folder, "photo_%dx%d.png" % (width,
                                                                                   height))
        imageio.imwrite(paths["%dx%d" % (width, height)], photo(width, height, seed=width))
    raw = {name: {key: [] for key in paths} for name in codes}
    for run in range(runs):
        for key, path in paths.items():
            for name, fcn_py in codes.items():
                seconds, peak = predict_once(fcn_py, path, logs, model_dir,
                                             os.path.join(folder, "out_" + name))
                raw[name][key].append((seconds, peak))
                print("run %d %-6s %-10s %7.1f s  peak %5.2f GB" % (run + 1, name, key, seconds,
                                                                    peak / 1e9))
                sys.stdout.flush()
    return raw


def summarize(raw, one_pass_mps):
    rows = {}
    for name, by_photo in raw.items():
        startup = statistics.median(s for s, _ in by_photo["startup"])
        rows[name] = {"startup_seconds": round(startup, 2)}
        for width, height in PHOTOS:
            key = "%dx%d" % (width, height)
            seconds = [s - startup for s, _ in by_photo[key]]
            peaks = [p for _, p in by_photo[key]]
            mps = width * height / 1e6 / statistics.median(seconds)
            rows[name][key] = {
                "seconds_median": round(statistics.median(seconds), 2),
                "seconds": [round(s, 2) for s in seconds],
                "megapixels_per_second": round(mps, 4),
                "peak_rss_gb_median": round(statistics.median(peaks) / 1e9, 3),
                "compute_ratio": round(one_pass_mps / mps, 3)}
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--other", help="another checkout, run in turn with this one")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    codes = {"this": os.path.join(ROOT, "FCN.py")}
    if args.other:
        codes["other"] = os.path.join(os.path.abspath(args.other), "FCN.py")
    with tempfile.TemporaryDirectory() as folder:
        logs, model_dir = write_model(folder)
        one_pass_mps, one_pass_seconds = one_pass_rate(logs, model_dir, max(args.runs, 3))
        print("one pass of the network over %dx%d: %.3f megapixels/s (%s s)"
              % (YARDSTICK + (one_pass_mps, ", ".join("%.2f" % s for s in one_pass_seconds))))
        rows = summarize(measure(codes, folder, logs, model_dir, args.runs), one_pass_mps)
    result = {"one_pass_megapixels_per_second": round(one_pass_mps, 4), "codes": codes,
              "rows": rows, "runs": args.runs,
              "when": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": os.cpu_count()}
    print(json.dumps(rows, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
