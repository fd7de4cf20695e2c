"""Runtimes: the time of one 512x512 image, batch 1, through the exported full-size network in each
runtime that --mode=export's files are verified in, and the share of each one's labels equal to
TF's SavedModel's.

    python benchmarks/runtimes.py [--runs 5] [--threads N] [--runtimes KEY,...]
                                  [--workdir DIR] [--json FILE]

The model is a 151-class checkpoint at VGG-19's widths with its initial weights (the cost does
not depend on the values; an untrained model is the hard case for the labels of fp16, int8 and
bf16: many pixels near a tie), exported once to every format by `python FCN.py --mode=export` in
a child process. Then, in this one process, each runtime loads its file and runs the image once
untimed (kernels chosen, memory laid out), and the runtimes are timed in turn, run by run (each
run starting one runtime further on), so that all see the same machine: the wall time of one
call for both outputs, labels and confidence, as numpy arrays; medians with min and max over
--runs runs. The rows: TF (tf.saved_model.load, serving_default), onnxruntime on fcn.onnx, LiteRT
on fcn.tflite, fcn_fp16.tflite and fcn_int8.tflite, OpenVINO's CPU plugin at float32
(INFERENCE_PRECISION_HINT f32) on the SavedModel and on fcn.onnx, and OpenVINO at its default
precision on the SavedModel (bf16 on a CPU with AVX512_BF16 or AMX). --threads is given to LiteRT
and onnxruntime (default: every core, which TF and OpenVINO take by themselves). The image is
photos.py's random photo.

--runtimes times a subset of the rows (keys: RUNTIMES' first column), TF's among them always:
its labels are the reference. All rows at once hold every runtime's copy of the weights and its
own buffers, more memory than a shared machine may have free; two runs with TF in both keep the
rows comparable through TF's. --workdir keeps the model and its export there, and reuses the
export on the next run: the export takes minutes, and the ONNX conversion most of the machine's
memory.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks.bench import cpu_model  # noqa: E402
from benchmarks.measuring import rss_mb, write_result  # noqa: E402
from benchmarks.photos import photo, write_model  # noqa: E402

SIDE = 512
FORMATS = "saved_model,tflite,tflite_fp16,tflite_int8,onnx"
PACKAGES = ("tensorflow", "onnxruntime", "ai-edge-litert", "openvino")


def export(folder):
    """The version folder of the full-size model's export to every format, in folder: written
    (model, then export in a child process) unless a complete one is there already."""
    version_dir = os.path.join(folder, "export", "1")  # write_model's checkpoint is step 1
    if os.path.isfile(os.path.join(version_dir, "export.json")):
        print("Reusing the export in %s" % version_dir)
        return version_dir
    if os.path.exists(os.path.join(folder, "Model_zoo")):
        logs, model_dir = os.path.join(folder, "logs"), os.path.join(folder, "Model_zoo")
    else:
        logs, model_dir = write_model(folder)
    command = [sys.executable, os.path.join(ROOT, "FCN.py"), "--mode=export",
               "--logs_dir=" + logs, "--model_dir=" + model_dir,
               "--export_dir=" + os.path.join(folder, "export"), "--export_format=" + FORMATS]
    if subprocess.run(command).returncode != 0:
        raise SystemExit("runtimes.py: error: the export failed (its output is above)")
    return version_dir


# Each loader returns run(batch) -> (labels, confidence) as numpy arrays, and a note.

def load_tf(version_dir, threads):
    import tensorflow as tf
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]

    def run(batch):
        out = serve(images=tf.constant(batch))
        return out["labels"].numpy(), out["confidence"].numpy()
    return run, "tf.saved_model.load"


def load_onnxruntime(version_dir, threads):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(os.path.join(version_dir, "fcn.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(batch):
        return tuple(session.run(["labels", "confidence"], {name: batch}))
    return run, "fcn.onnx, %d threads" % threads


def litert_loader(file_name):
    def load(version_dir, threads):
        from ai_edge_litert.interpreter import Interpreter
        runner = Interpreter(model_path=os.path.join(version_dir, file_name),
                             num_threads=threads).get_signature_runner("serving_default")

        def run(batch):
            out = runner(images=batch)
            return out["labels"], out["confidence"]
        return run, "%s, %d threads" % (file_name, threads)
    return load


def openvino_loader(file_name, precision):
    """OpenVINO's CPU plugin on the SavedModel (file_name None) or a file of the export, at
    precision 'f32' or None (the plugin's default for this CPU)."""
    def load(version_dir, threads):
        import openvino
        core = openvino.Core()
        model = core.read_model(os.path.join(version_dir, file_name or ""))
        config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
        compiled = core.compile_model(model, "CPU", config)
        labels, confidence = compiled.output("labels"), compiled.output("confidence")

        def run(batch):
            out = compiled(batch)
            return out[labels], out[confidence]
        return run, "%s, %s" % (file_name or "SavedModel",
                                compiled.get_property("INFERENCE_PRECISION_HINT").to_string())
    return load


# (key for --runtimes, row name, loader); the first is the reference.
RUNTIMES = (
    ("tf", "TF SavedModel", load_tf),
    ("onnxruntime", "onnxruntime", load_onnxruntime),
    ("litert", "LiteRT fp32", litert_loader("fcn.tflite")),
    ("litert_fp16", "LiteRT fp16", litert_loader("fcn_fp16.tflite")),
    ("litert_int8", "LiteRT int8", litert_loader("fcn_int8.tflite")),
    ("openvino", "OpenVINO f32, SavedModel", openvino_loader(None, "f32")),
    ("openvino_onnx", "OpenVINO f32, ONNX", openvino_loader("fcn.onnx", "f32")),
    ("openvino_default", "OpenVINO default, SavedModel", openvino_loader(None, None)),
)
REFERENCE = RUNTIMES[0][1]


def measure(version_dir, runs, threads, keys):
    """{runtime: {...}}: the rows of keys, each loaded and warmed up, then all timed in turn,
    run by run."""
    batch = photo(SIDE, SIDE)[None]
    loaded, rows = {}, {}
    for key, name, load in RUNTIMES:
        if key not in keys:
            continue
        rss_before, started = rss_mb(), time.perf_counter()
        run, note = load(version_dir, threads)
        loaded_at = time.perf_counter()
        labels, _ = run(batch)
        first = time.perf_counter() - loaded_at
        loaded[name] = run
        rows[name] = {"note": note, "load_seconds": round(loaded_at - started, 2),
                      "first_run_seconds": round(first, 2),
                      "rss_growth_mb": round(rss_mb() - rss_before), "labels": labels,
                      "seconds": []}
        print("%-30s loaded in %.1f s, first run %.2f s, RSS +%d MB (%s)"
              % (name, loaded_at - started, first, rows[name]["rss_growth_mb"], note))
        sys.stdout.flush()
    names = list(loaded)
    for run_index in range(runs):
        start = run_index % len(names)
        for name in names[start:] + names[:start]:
            started = time.perf_counter()
            loaded[name](batch)
            rows[name]["seconds"].append(time.perf_counter() - started)
        print("run %d: %s" % (run_index + 1, ", ".join(
            "%s %.2f s" % (name, rows[name]["seconds"][-1]) for name in names)))
        sys.stdout.flush()
    return rows


def summarize(rows, reference=REFERENCE):
    """The rows with their medians, min and max, and the percentage of each one's labels equal
    to the reference's; the label arrays dropped."""
    expected = rows[reference]["labels"]
    summary = {}
    for name, row in rows.items():
        seconds = row["seconds"]
        summary[name] = dict(
            {key: value for key, value in row.items() if key not in ("labels", "seconds")},
            seconds_median=round(statistics.median(seconds), 3),
            seconds_min=round(min(seconds), 3), seconds_max=round(max(seconds), 3),
            seconds=[round(s, 3) for s in seconds],
            labels_equal_percent=round(100.0 * float(np.mean(row["labels"] == expected)), 2))
    return summary


def format_table(summary):
    lines = ["| runtime | file, precision | median s (min-max) | labels = TF's | load s |",
             "| --- | --- | --- | --- | --- |"]
    for name, row in summary.items():
        lines.append("| %s | %s | %.2f (%.2f-%.2f) | %.2f%% | %.1f |"
                     % (name, row["note"], row["seconds_median"], row["seconds_min"],
                        row["seconds_max"], row["labels_equal_percent"], row["load_seconds"]))
    return "\n".join(lines)


def versions():
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def main(argv=None):
    keys = [key for key, _, _ in RUNTIMES]
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each runtime")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads of LiteRT and onnxruntime (default: every core)")
    parser.add_argument("--runtimes", default=",".join(keys),
                        help="the rows to time, of %s (default: all; tf always)"
                        % ", ".join(keys))
    parser.add_argument("--workdir", help="keep the model and its export here, and reuse them")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 1:
        parser.error("--runs and --threads must be at least 1")
    chosen = {key.strip() for key in args.runtimes.split(",") if key.strip()} | {keys[0]}
    unknown = sorted(chosen - set(keys))
    if unknown:
        parser.error("unknown --runtimes: %s (known: %s)" % (", ".join(unknown),
                                                              ", ".join(keys)))
    missing = [package for package, version in versions().items() if version is None]
    if missing:
        parser.error("not installed: %s (pip install -r requirements.txt)" % ", ".join(missing))
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        rows = measure(export(args.workdir), args.runs, args.threads, chosen)
    else:
        with tempfile.TemporaryDirectory() as folder:
            rows = measure(export(folder), args.runs, args.threads, chosen)
    summary = summarize(rows)
    with open("/proc/cpuinfo") as f:
        cpu = cpu_model(f.read())
    result = {"rows": summary, "image": "%dx%d" % (SIDE, SIDE), "runs": args.runs,
              "threads": args.threads, "classes_in_tf_labels": len(np.unique(
                  rows[REFERENCE]["labels"])),
              "versions": versions(), "cpu": cpu, "cores": os.cpu_count(),
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(format_table(summary))
    print("classes in TF's labels: %d" % result["classes_in_tf_labels"])
    return write_result(result, args.json)


if __name__ == "__main__":
    main()
