"""Training's peak memory: `python FCN.py --mode=train` for a few steps, each run in a fresh
process on the full-size network, its peak resident memory measured (the child's, from wait4),
at several batch sizes, image sizes and class counts; the fit of memory_estimate's terms to them,
and memory_estimate's own estimate of each run against what it took.

    python benchmarks/training_memory.py [--variant reference,paper] [--precision fp32,bf16]
        [--optimizer adam|sgd] [--points 8x320,8x448,8x448@3] [--below 1x224,4x320]
        [--wait SECONDS] [--json FILE]

A point is BATCHxSIZE, or BATCHxSIZE@3 on a 3-class dataset of one's own (--dataset=folder)
instead of the 151 classes of the ADE20K layout. First one run of the tests' narrow network
(tests/make_vgg_mat.NARROW, 64x64, batch 2) measures the runtime, what any run holds; less its
own weights part, that is memory_estimate's RUNTIME_BYTES. Then for each variant and precision,
peak = weights (memory_estimate.weights_bytes: the variables, their gradients and the
optimizer's slots) + runtime + copies x the float32 parameters + pixels x (every pixel's bytes +
classes x the bytes per class) is fitted to the --points (the class term only when they hold
both class counts), then raised until no run's peak is above it, those of --below too: smaller
steps, whose activations partly fit in memory that loading and setting up left free, so that
their peaks lie below the line of the larger ones; the estimate errs high there rather than
extrapolate a slope they flatten. The data are generated (tests/make_dataset.py); the .mat is
the synthetic VGG-19 with fc6 and fc7 at their real shapes, so that both variants read a file
the size of the real one. Each run trains --steps steps and saves its checkpoint, as a run does
at --save_every. Sizes of 224 and more: below, fc6's map is smaller than its kernel and the
graph leaves out taps. Linux: ru_maxrss is in KiB there.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import memory_estimate  # noqa: E402
from optimizers import OPTIMIZERS  # noqa: E402
from tests.project import own_peak  # noqa: E402
from vgg_weights import VGG19_WIDTHS  # noqa: E402

FCN_PY = os.path.join(ROOT, "FCN.py")
SCENE_CLASSES, FOLDER_CLASSES = 151, 3  # the two datasets a point can run on
RUNTIME_POINT = (2, 64, SCENE_CLASSES)  # the narrow network's run: the tests' own size
MARGIN = 1.3  # a run starts when memory_estimate's figure times this is available


def available_now():
    return memory_estimate.available_bytes()


def parse_point(text):
    """'4x224' -> (4, 224, 151); '4x224@3' -> (4, 224, 3)."""
    size_part, _, classes = text.partition("@")
    batch, size = (int(v) for v in size_part.split("x"))
    classes = int(classes) if classes else SCENE_CLASSES
    if classes not in (SCENE_CLASSES, FOLDER_CLASSES):
        raise ValueError("a point's classes are %d or %d, not %d"
                         % (SCENE_CLASSES, FOLDER_CLASSES, classes))
    return batch, size, classes


def write_data(folder, records):
    """{classes: the flags of its dataset}, the flag of the full-size .mat and that of the
    narrow one: generated in folder, with `records` training and validation pairs (at least the
    largest batch)."""
    from tests.make_dataset import make_folder_dataset, make_scene_dataset
    from tests.make_demo import write_paper_model_dir
    from tests.make_vgg_mat import NARROW
    scene = os.path.join(folder, "scene")
    make_scene_dataset(scene, n_train=records, n_val=records, seed=0)
    own = make_folder_dataset(os.path.join(folder, "own"), n_train=records, n_val=records)
    model_dir = write_paper_model_dir(folder, seed=0)
    narrow_dir = write_paper_model_dir(os.path.join(folder, "narrow"), seed=0, widths=NARROW)
    datasets = {SCENE_CLASSES: ["--data_dir=" + scene],
                FOLDER_CLASSES: ["--dataset=folder", "--data_dir=" + own]}
    return datasets, "--model_dir=" + model_dir, "--model_dir=" + narrow_dir


def train_once(flags, logs, steps):
    """(peak RSS bytes, wall seconds) of one training run of `steps` steps in a fresh process,
    its logs_dir removed after it."""
    command = [sys.executable, FCN_PY, "--mode=train", "--logs_dir=" + logs,
               "--max_iterations=%d" % steps, "--save_every=%d" % steps, "--log_every=1"]
    started = time.perf_counter()
    # Its own peak (tests/project.own_peak): started from this process, the run's would be at
    # least this one's.
    code, errors, peak = own_peak(command + flags)
    seconds = time.perf_counter() - started
    shutil.rmtree(logs, ignore_errors=True)  # a full-size checkpoint: gigabytes, every run
    if code != 0:
        raise RuntimeError("training failed (%s): %s" % (" ".join(flags), errors[-2000:]))
    return peak, seconds


def float32_parameters(variant, classes, widths=VGG19_WIDTHS):
    """The bytes of one float32 copy of the network's variables for that many classes."""
    return memory_estimate.FLOAT32_BYTES * memory_estimate.parameter_count(variant, classes,
                                                                          widths)


def design(variant, points, with_classes):
    """The fit's matrix: the float32 parameters (their copies), pixels, and pixels x classes."""
    rows = []
    for batch, size, classes in points:
        pixels = batch * size * size
        rows.append([float32_parameters(variant, classes), pixels]
                    + ([pixels * classes] if with_classes else []))
    return np.array(rows, float)


def weights(variant, classes, slots, widths=VGG19_WIDTHS):
    """The variables, their gradients and the optimizer's slots of the network for that many
    classes."""
    count = memory_estimate.parameter_count(variant, classes, widths)
    return memory_estimate.weights_bytes(count, slots)


def fit(variant, slots, runtime, rows, below_rows):
    """(copies of the float32 parameters, every pixel's bytes, bytes per class or None): least
    squares of the peaks of rows less each one's weights (the class count changes the class
    layers) and the runtime, then the copies raised until no peak of rows or below_rows is
    above the fit. None without two sizes to fit."""
    points = [row["point"] for row in rows]
    if len({batch * size * size for batch, size, _ in points}) < 2:
        return None
    with_classes = len({classes for _, _, classes in points}) > 1

    def rest_of(chosen):
        return np.array([row["peak"] - weights(variant, row["point"][2], slots) - runtime
                         for row in chosen])

    solution = np.linalg.lstsq(design(variant, points, with_classes), rest_of(rows),
                               rcond=None)[0]
    every = rows + below_rows
    matrix = design(variant, [row["point"] for row in every], with_classes)
    solution[0] += max(0.0, ((rest_of(every) - matrix @ solution) / matrix[:, 0]).max())
    return solution[0], solution[1], (solution[2] if with_classes else None)


def predicted(variant, slots, runtime, coefficients, point):
    copies, every_pixel, per_class = coefficients
    batch, size, classes = point
    return (weights(variant, classes, slots) + runtime
            + copies * float32_parameters(variant, classes)
            + batch * size * size * (every_pixel + (per_class or 0.0) * classes))


def module_estimate(variant, precision, slots, point):
    batch, size, classes = point
    count = memory_estimate.parameter_count(variant, classes)
    return memory_estimate.training_estimate(count, batch, size, precision, slots, variant,
                                             classes).total


def measure_runtime(narrow_dir, datasets, folder, steps, slots):
    """The runtime's bytes: the peak of the narrow network's run less its weights part (its
    activations are a few megabytes)."""
    from tests.make_vgg_mat import NARROW
    batch, size, classes = RUNTIME_POINT
    flags = datasets[classes] + [narrow_dir, "--batch_size=%d" % batch, "--image_size=%d" % size]
    peak, seconds = train_once(flags, os.path.join(folder, "logs"), steps)
    runtime = peak - weights(memory_estimate.REFERENCE, classes, slots, NARROW)
    print("narrow network, batch %d %dx%d: peak %.3f GB, %.1f s; the runtime %.3f GB"
          % (batch, size, size, peak / 1e9, seconds, runtime / 1e9))
    return runtime


def room_for(needed, wait):
    """(whether needed bytes are available, those available), waiting up to wait seconds for
    them: on a shared machine the others' runs end."""
    deadline = time.monotonic() + wait
    while True:
        available = available_now()
        if available is None or needed <= available or time.monotonic() >= deadline:
            return available is None or needed <= available, available
        time.sleep(10)


def measure(variant, precision, slots, points, datasets, model_dir, folder, steps, optimizer,
            wait):
    """[{point, peak, seconds}] of one run per point."""
    rows = []
    for point in points:
        batch, size, classes = point
        needed = module_estimate(variant, precision, slots, point)
        fits, available = room_for(needed * MARGIN, wait)
        if not fits:
            # The machine may be shared: a run the OOM killer ends could take another with it.
            print("%-9s %-4s batch %3d %4dx%-4d %3d classes: skipped, it may need %.1f GB and "
                  "%.1f GB is available" % (variant, precision, batch, size, size, classes,
                                            needed * MARGIN / 1e9, available / 1e9))
            continue
        flags = datasets[classes] + [model_dir, "--batch_size=%d" % batch,
                                     "--image_size=%d" % size, "--precision=" + precision,
                                     "--variant=" + variant, "--optimizer=" + optimizer]
        peak, seconds = train_once(flags, os.path.join(folder, "logs"), steps)
        rows.append({"point": point, "peak": peak, "seconds": seconds})
        print("%-9s %-4s batch %3d %4dx%-4d %3d classes: peak %6.3f GB, %6.1f s"
              % (variant, precision, batch, size, size, classes, peak / 1e9, seconds))
        sys.stdout.flush()
    return rows


def summarize(variant, precision, optimizer, runtime, fitted_rows, below_rows):
    """The fit, and every row with the fit's and memory_estimate's figures."""
    slots = OPTIMIZERS[optimizer].slots
    coefficients = fit(variant, slots, runtime, fitted_rows, below_rows)
    result = {"variant": variant, "precision": precision, "optimizer": optimizer,
              "runtime_bytes": runtime, "coefficients": coefficients,
              "weights_bytes": weights(variant, SCENE_CLASSES, slots), "rows": []}
    for kind, rows in (("line", fitted_rows), ("below", below_rows)):
        for row in rows:
            fitted = coefficients and predicted(variant, slots, runtime, coefficients,
                                                row["point"])
            result["rows"].append(dict(row, kind=kind, fitted=fitted, estimate=module_estimate(
                variant, precision, slots, row["point"])))
    return result


def print_summary(results):
    print("\n| variant | precision | optimizer | batch | image | classes | peak RSS | time | fit "
          "| memory_estimate |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for result in results:
        for row in result["rows"]:
            batch, size, classes = row["point"]
            fitted = ("no fit" if row["fitted"] is None else "%.2f GB (%s, %+.1f%%)" % (
                row["fitted"] / 1e9, row["kind"], 100 * (row["fitted"] / row["peak"] - 1)))
            print("| %s | %s | %s | %d | %dx%d | %d | %.2f GB | %.0f s | %s | %.2f GB (%+.1f%%) |"
                  % (result["variant"], result["precision"], result["optimizer"], batch, size,
                     size, classes, row["peak"] / 1e9, row["seconds"], fitted,
                     row["estimate"] / 1e9, 100 * (row["estimate"] / row["peak"] - 1)))
    print()
    for r in results:
        if r["coefficients"] is None:
            print("%s %s %s: no fit (fewer than two sizes measured)"
                  % (r["variant"], r["precision"], r["optimizer"]))
            continue
        copies, every_pixel, per_class = r["coefficients"]
        print("%s %s %s: peak = weights, gradients and slots (%.3f GB at %d classes) + runtime "
              "%.3f GB + %.3f x the float32 parameters + pixels x (%.1f B%s)"
              % (r["variant"], r["precision"], r["optimizer"], r["weights_bytes"] / 1e9,
                 SCENE_CLASSES, r["runtime_bytes"] / 1e9, copies, every_pixel,
                 "" if per_class is None else " + %.1f B x classes" % per_class))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="reference,paper")
    parser.add_argument("--precision", default="fp32,bf16")
    parser.add_argument("--optimizer", default="adam",
                        choices=sorted(OPTIMIZERS))
    parser.add_argument("--points", default="8x320,8x448,8x448@3",
                        help="the points the line is fitted to (BATCHxSIZE[@3])")
    parser.add_argument("--below", default="1x224,4x320",
                        help="smaller points, which the line is raised to stay above")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--wait", type=float, default=0.0,
                        help="seconds to wait for the memory a run needs before skipping it")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    points = [parse_point(p) for p in args.points.split(",")]
    below = [parse_point(p) for p in args.below.split(",") if p]
    if not points:
        parser.error("--points needs a point (two sizes at least to fit the line)")
    results = []
    slots = OPTIMIZERS[args.optimizer].slots
    with tempfile.TemporaryDirectory() as folder:
        records = max(batch for batch, _, _ in points + below + [RUNTIME_POINT])
        datasets, model_dir, narrow_dir = write_data(folder, records)
        runtime = measure_runtime(narrow_dir, datasets, folder, args.steps, slots)
        for variant in args.variant.split(","):
            for precision in args.precision.split(","):
                rows = [measure(variant, precision, slots, chosen, datasets, model_dir, folder,
                                args.steps, args.optimizer, args.wait)
                        for chosen in (points, below)]
                results.append(summarize(variant, precision, args.optimizer, runtime, *rows))
    print_summary(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "runtime_bytes": runtime,
                       "when": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": os.cpu_count()},
                      f, indent=1, default=float)
    return results


if __name__ == "__main__":
    main()
