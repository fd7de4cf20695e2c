"""Multi-scale and mirrored evaluation: seconds per image of --eval_scales and --eval_flip on one
image of ADE20K's typical validation size, on the full-size network, against one pass at 1.0.

    nice -n 5 python benchmarks/eval_scales.py [--runs 3] [--no-memory] [--json FILE]

The image is a generated photo-like one of 512x683 (height x width), the model a 151-class
checkpoint at VGG-19's widths with its initial weights (photos.py's write_model: the cost does
not depend on the values), fp32, the default --tile_size. Each protocol's labels are computed by
the function the modes call: predicting.Passes.own_size_labels, what validate, visualize and
predict run per image at --eval_scales; and for the reference's square resize, predict --resize's
predicting.predict_labels (the image resized to --image_size, one pass of the network built for
that size, the labels resized back: validate's computation without --eval_scales, one image
instead of a batch and without the loss).

All protocols run in this one process, each warmed up once, then timed in turn within each round
(each round starting one protocol further on), so that a shared machine's changing load falls on
all of them alike. Reported per protocol: the median seconds with min and max; the ratio to `1.0`
(the median over rounds of the ratio within a round); the number of network passes and their
pixels as multiples of the 1.0 pass, which is what the compute would be if it went as the pixel
count. For two scales "1.0,s" the added scale's cost is (time - time of 1.0) / time of 1.0,
printed beside s squared; its excess over s squared is the overhead (the probabilities resized
and summed at the image's size, a pass's cost not going exactly as its pixels). The
flip's cost is the ratio with it to without it. Unless --no-memory, each protocol then runs once
more in a fresh child process (same niceness) for its peak RSS, and that peak's growth over the
RSS of the restored model (/proc/self/status, the peak reset after the restore). The load
averages are recorded at each round.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # FCN.py and friends are flat top-level modules
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks.bench import cpu_model  # noqa: E402
from benchmarks.measuring import write_result  # noqa: E402
from benchmarks.photos import write_model  # noqa: E402

HEIGHT, WIDTH = 512, 683  # ADE20K's most common validation size, landscape
MMSEG_SCALES = "0.5,0.75,1.0,1.25,1.5,1.75"
# (name, --eval_scales, --eval_flip); --eval_scales "" is the reference's square resize.
PROTOCOLS = (
    ("224 square", "", False),
    ("1.0", "1.0", False),
    ("1.0 flip", "1.0", True),
    ("0.5,1.0", "0.5,1.0", False),
    ("0.75,1.0", "0.75,1.0", False),
    ("1.0,1.25", "1.0,1.25", False),
    ("1.0,1.5", "1.0,1.5", False),
    ("1.0,1.75", "1.0,1.75", False),
    ("mmseg 6 scales", MMSEG_SCALES, False),
    ("mmseg 6 scales flip", MMSEG_SCALES, True),
)
BASE = "1.0"


def photo_like(height, width, seed=0):
    """uint8 [height, width, 3]: random colours on a coarse grid, resized up smoothly, so that the
    image has regions and edges as a photo has, rather than pixel noise."""
    import image_files
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 255, (height // 16 + 2, width // 16 + 2, 3)).astype(np.uint8)
    return image_files.resize_image(coarse, height, width, "bilinear")


def scales_of(scales_text):
    import multi_scale
    return multi_scale.parse_scales(scales_text)


def passes_and_pixels(scales_text, flip):
    """(network passes, their pixels as a multiple of the image's) of a protocol; the square
    resize counts its 224x224 pixels."""
    scales = scales_of(scales_text)
    if scales is None:
        return 1, 224 * 224 / float(HEIGHT * WIDTH)
    times = 2 if flip else 1
    return len(scales) * times, times * sum(s * s for s in scales)


def settings_for(logs, model_dir, scales_text, flip):
    """The Settings the command line would give validate at these --eval_scales and --eval_flip,
    or predict --resize for the square resize (its graph is validate's without them)."""
    import FCN
    base = FCN.current_settings().replace(logs_dir=logs, model_dir=model_dir)
    if scales_text:
        settings = base.replace(mode="validate", eval_scales=scales_text, eval_flip=flip)
    else:
        settings = base.replace(mode="predict", resize=True, image="photo.png")
    FCN.check_settings(settings)
    return settings


class Runner:
    """The restored model(s) and one labels function per protocol: {name: labels_of(image)}."""

    def __init__(self, logs, model_dir, protocols):
        import predicting
        self.sessions, self.labels_of = {}, {}
        for name, scales_text, flip in protocols:
            settings = settings_for(logs, model_dir, scales_text, flip)
            # The square resize builds its own fixed-size graph, as validate does without
            # --eval_scales; every --eval_scales protocol shares the graph of any size.
            kind = "own size" if scales_text else "square"
            if kind not in self.sessions:
                classes = predicting.model_classes(settings)
                model, sess, _, _ = predicting.restored_session(settings, classes)
                with sess.graph.as_default():
                    tiled = predicting.tiled_network_of(settings, model, classes.num_classes)
                self.sessions[kind] = (model, sess, tiled)
            model, sess, tiled = self.sessions[kind]
            passes = predicting.Passes(sess, model, tiled, settings)
            if scales_text:
                self.labels_of[name] = passes.own_size_labels
            else:
                self.labels_of[name] = (lambda image, passes=passes, settings=settings:
                                        predicting.predict_labels(passes, image, settings))

    def close(self):
        for _, sess, _ in self.sessions.values():
            sess.close()


def load_averages():
    return [round(value, 2) for value in os.getloadavg()]


def measure(logs, model_dir, protocols, runs, image):
    """{name: {'seconds': [...], 'warmup_seconds'}}, and the load averages of each round."""
    runner = Runner(logs, model_dir, protocols)
    names = [name for name, _, _ in protocols]
    rows = {name: {"seconds": []} for name in names}
    try:
        for name in names:
            started = time.perf_counter()
            labels = runner.labels_of[name](image)
            rows[name]["warmup_seconds"] = round(time.perf_counter() - started, 2)
            if labels.shape != image.shape[:2]:
                raise RuntimeError("%s: labels of shape %s for an image of %s"
                                   % (name, labels.shape, image.shape[:2]))
            print("warm-up %-20s %6.2f s" % (name, rows[name]["warmup_seconds"]))
            sys.stdout.flush()
        loads = [load_averages()]
        for run in range(runs):
            start = run % len(names)
            for name in names[start:] + names[:start]:
                started = time.perf_counter()
                runner.labels_of[name](image)
                rows[name]["seconds"].append(time.perf_counter() - started)
            loads.append(load_averages())
            print("round %d (load %s): %s" % (run + 1, loads[-1], ", ".join(
                "%s %.2f" % (name, rows[name]["seconds"][-1]) for name in names)))
            sys.stdout.flush()
    finally:
        runner.close()
    return rows, loads


def summarize(rows, protocols):
    """Each protocol's medians, ratios to BASE and its passes; the added scales' and the flips'
    costs."""
    base = rows[BASE]["seconds"]
    summary = {}
    for name, scales_text, flip in protocols:
        seconds = rows[name]["seconds"]
        passes, pixels = passes_and_pixels(scales_text, flip)
        summary[name] = {
            "eval_scales": scales_text or None, "eval_flip": flip,
            "seconds_median": round(statistics.median(seconds), 3),
            "seconds_min": round(min(seconds), 3), "seconds_max": round(max(seconds), 3),
            "seconds": [round(s, 3) for s in seconds],
            "warmup_seconds": rows[name]["warmup_seconds"],
            # Within a round, so that a change of load between rounds cancels.
            "ratio_to_1.0": round(statistics.median(s / b for s, b in zip(seconds, base)), 3),
            "passes": passes, "pixels_of_1.0": round(pixels, 4)}
    added = {}
    for name, scales_text, flip in protocols:
        scales = scales_of(scales_text)
        if scales and len(scales) == 2 and 1.0 in scales and not flip:
            scale = [s for s in scales if s != 1.0][0]
            cost = summary[name]["ratio_to_1.0"] - 1
            added[str(scale)] = {"cost_of_1.0": round(cost, 3), "scale_squared": scale * scale,
                                 "overhead_of_1.0": round(cost - scale * scale, 3)}
    flips = {}
    for name, scales_text, flip in protocols:
        partner = [other for other, text, other_flip in protocols
                   if text == scales_text and flip and not other_flip]
        if partner:
            pairs = zip(rows[name]["seconds"], rows[partner[0]]["seconds"])
            flips[scales_text] = round(statistics.median(a / b for a, b in pairs), 3)
    return summary, added, flips


def format_table(summary, memory):
    lines = ["| protocol | passes | pixels (x 1.0) | s/image median (min-max) | x 1.0 |"
             + (" peak RSS GB (growth) |" if memory else ""),
             "| --- | --- | --- | --- | --- |" + (" --- |" if memory else "")]
    for name, row in summary.items():
        line = ("| %s | %d | %.2f | %.2f (%.2f-%.2f) | %.2f |"
                % (name, row["passes"], row["pixels_of_1.0"], row["seconds_median"],
                   row["seconds_min"], row["seconds_max"], row["ratio_to_1.0"]))
        if memory:
            line += " %.2f (%.2f) |" % (memory[name]["peak_rss_mb"] / 1024.0,
                                         memory[name]["growth_mb"] / 1024.0)
        lines.append(line)
    return "\n".join(lines)


def status_mb(field):
    """A field of /proc/self/status (VmRSS, VmHWM...) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def child_memory(logs, model_dir, index):
    """In a fresh process: the RSS (MB) once the model is restored, and the peak RSS of one run
    of protocol `index` on the image. The restore's own peak is higher than most runs', so the
    peak is reset after it (Linux's clear_refs 5) to see the run's."""
    protocol = PROTOCOLS[index]
    runner = Runner(logs, model_dir, [protocol])
    image = photo_like(HEIGHT, WIDTH)
    restore_peak = status_mb("VmHWM")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    loaded = status_mb("VmRSS")
    runner.labels_of[protocol[0]](image)
    peak = status_mb("VmHWM")
    runner.close()
    print(json.dumps({"restore_peak_rss_mb": round(restore_peak), "loaded_rss_mb": round(loaded),
                      "peak_rss_mb": round(peak), "growth_mb": round(peak - loaded)}))


def measure_memory(logs, model_dir, protocols):
    """{name: {'loaded_peak_rss_mb', 'peak_rss_mb'}}, each protocol in its own child."""
    found = {}
    for name, _, _ in protocols:
        index = [p[0] for p in PROTOCOLS].index(name)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(index),
                              "--logs", logs, "--model_dir", model_dir],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if out.returncode != 0:
            raise RuntimeError("the child for %s failed: %s" % (name, out.stderr[-2000:]))
        found[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print("memory %-20s peak %5.2f GB, %5.2f GB over the restored model's"
              % (name, found[name]["peak_rss_mb"] / 1024.0, found[name]["growth_mb"] / 1024.0))
        sys.stdout.flush()
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each protocol")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak RSS of each protocol (a child process each)")
    parser.add_argument("--only", help="protocol names separated by ';' (default: all)")
    parser.add_argument("--json", help="write the results to this file")
    # The memory children's arguments.
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--logs", help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child_memory(args.logs, args.model_dir, args.child)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    protocols = PROTOCOLS
    if args.only:
        wanted = set(args.only.split(";")) | {BASE}
        protocols = tuple(p for p in PROTOCOLS if p[0] in wanted)
    with open("/proc/cpuinfo") as f:
        cpu = cpu_model(f.read())
    started_at = time.strftime("%Y-%m-%d %H:%M:%S")
    with tempfile.TemporaryDirectory() as folder:
        logs, model_dir = write_model(folder)
        rows, loads = measure(logs, model_dir, protocols, args.runs, photo_like(HEIGHT, WIDTH))
        memory = None if args.no_memory else measure_memory(logs, model_dir, protocols)
    summary, added, flips = summarize(rows, protocols)
    import tensorflow as tf
    result = {"rows": summary, "added_scale": added, "flip_ratio": flips,
              "peak_rss": memory, "image": "%dx%d" % (HEIGHT, WIDTH), "classes": 151,
              "precision": "fp32", "runs": args.runs, "load_averages": loads,
              "niceness": os.nice(0), "cpu": cpu, "cores": os.cpu_count(),
              "tensorflow": tf.__version__, "started": started_at,
              "ended": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(format_table(summary, memory))
    for scale, row in added.items():
        print("added scale %s: %.2f x the 1.0 pass (scale squared %.4g, overhead %.2f)"
              % (scale, row["cost_of_1.0"], row["scale_squared"], row["overhead_of_1.0"]))
    for scales_text, ratio in flips.items():
        print("flip at %s: x %.2f" % (scales_text, ratio))
    print("load averages (1, 5, 15 min) at the start and after each round: %s" % loads)
    return write_result(result, args.json)


if __name__ == "__main__":
    main()
