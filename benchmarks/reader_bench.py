"""The reader section of benchmarks/bench.py: BatchDatset.next_batch on generated JPEGs and PNGs
of ADE20K's sizes, each record count in a fresh process so that its peak memory is the
reader's alone.

    python benchmarks/reader_bench.py RECORDS_JSON BATCH SIZE   (the child; bench.py runs it)
"""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # FCN.py and friends are flat top-level modules

import numpy as np  # noqa: E402

from benchmarks import measuring  # noqa: E402
from datasets import ADE20K  # noqa: E402

RESULT_PREFIX = "READER_RESULT "


def synthetic_scene(rng, height, width):
    """An image with the smooth regions and edges of a photo (so that its JPEG has a photo's size
    and decoding cost, which noise would not) and its label map, uint8 0..150."""
    rows, cols = 6, 8
    labels_coarse = rng.randint(0, ADE20K.num_classes, (rows, cols)).astype(np.uint8)
    colours = rng.randint(0, 256, (rows, cols, 3)).astype(np.float32)
    ys = np.minimum(np.arange(height) * rows // height, rows - 1)
    xs = np.minimum(np.arange(width) * cols // width, cols - 1)
    label = labels_coarse[ys][:, xs]
    shade = np.linspace(0.7, 1.0, width, dtype=np.float32)[None, :, None]
    image = colours[ys][:, xs] * shade + rng.normal(0, 6, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_distinct_pairs(folder, count, size, seed=0):
    """count distinct (jpg, png) pairs of size (h, w) in folder; returns their paths."""
    import imageio.v2 as imageio
    rng = np.random.RandomState(seed)
    pairs = []
    for i in range(count):
        image, label = synthetic_scene(rng, *size)
        jpg, png = (os.path.join(folder, "source_%04d.%s" % (i, ext)) for ext in ("jpg", "png"))
        imageio.imwrite(jpg, image, quality=90)
        imageio.imwrite(png, label)
        pairs.append((jpg, png))
    return pairs


def link_records(folder, pairs, count):
    """count records {'image', 'annotation', 'filename'} in folder, each a hard link (a copy where
    links are refused) of one of the distinct pairs, in turn: distinct names, shared content."""
    import shutil
    os.makedirs(folder, exist_ok=True)
    records = []
    for i in range(count):
        stem = "ADE_bench_%06d" % i
        record = {"filename": stem}
        for key, source in zip(("image", "annotation"), pairs[i % len(pairs)]):
            path = os.path.join(folder, stem + os.path.splitext(source)[1])
            try:
                os.link(source, path)
            except OSError:
                shutil.copyfile(source, path)
            record[key] = path
        records.append(record)
    return records


def make_reader_data(folder, settings):
    """{record count: records}, generated in folder."""
    pairs = write_distinct_pairs(folder, settings["distinct_files"], settings["source_image"])
    return {n: link_records(os.path.join(folder, "records%d" % n), pairs, n)
            for n in settings["reader_records"]}


def reader_child(records_path, batch, size):
    """Runs in a fresh process: one epoch of next_batch over the records in records_path (JSON);
    prints the measurements as one JSON line."""
    from BatchDatsetReader import BatchDatset
    with open(records_path) as f:
        records = json.load(f)
    baseline = measuring.rss_mb()
    start = time.perf_counter()
    with BatchDatset(records, {"resize": True, "resize_size": size}) as reader:
        reader.next_batch(batch)
        first, cpu_first = time.perf_counter(), measuring.process_cpu_seconds()
        batches = len(records) // batch
        for _ in range(batches - 1):
            reader.next_batch(batch)
        end = time.perf_counter()
        share = measuring.cpu_share(measuring.process_cpu_seconds() - cpu_first,
                                    end - first, len(os.sched_getaffinity(0)))
    result = {"records": len(records), "batch": batch, "first_batch_s": first - start,
              "images_per_s": (batches - 1) * batch / (end - first), "cpu_share": share,
              "peak_rss_mb": measuring.peak_rss_mb(), "baseline_rss_mb": baseline,
              "reader_rss_mb": measuring.peak_rss_mb() - baseline}
    print(RESULT_PREFIX + json.dumps(result))


def run_reader_child(records, folder, batch, size):
    records_path = os.path.join(folder, "records%d.json" % len(records))
    with open(records_path, "w") as f:
        json.dump(records, f)
    done = subprocess.run([sys.executable, os.path.abspath(__file__), records_path, str(batch),
                           str(size)], capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError("the reader benchmark failed (exit %d):\n%s"
                           % (done.returncode, done.stderr[-2000:]))
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    del result["records"], result["batch"]
    return result


def reader_section(reader_data, folder, settings):
    return {"records%d" % n: run_reader_child(records, folder, settings["reader_batch"],
                                              settings["image_size"])
            for n, records in sorted(reader_data.items())}


if __name__ == "__main__":
    reader_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
