"""--augment's cost: the batch reader's images per second with and without augmentation, and the
training loop fed by the augmented reader against the step alone.

    python benchmarks/augment_reader.py [--runs 5] [--records 200] [--json FILE]

1. The reader: one pass of next_batch(10) over --records distinct JPEG and PNG pairs of
   ADE20K's typical size (512x683), resized to 224x224 (the reference's reading) and augmented
   with every part (scale, crop, flip, photometric), taken in turn run by run so that both see
   the same machine. Medians over --runs, with their range.
2. The loop: the full-size FCN-8s (fp32, batch 10, 224x224, Adam) fed by the augmented reader,
   against the same steps on fixed arrays, alternating (benchmarks/bench.py's
   measure_loop_and_step). 1.00 means the reader hides entirely behind the step.
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

import augment  # noqa: E402
from BatchDatsetReader import BatchDatset  # noqa: E402
from benchmarks.measuring import write_result  # noqa: E402
from benchmarks.reader_bench import link_records, write_distinct_pairs  # noqa: E402
from vgg_weights import VGG19_MEAN_PIXEL  # noqa: E402

BATCH, SIZE, SOURCE = 10, 224, (512, 683)


def reader_options(augmented):
    if not augmented:
        return {"resize": True, "resize_size": SIZE}
    return {"augment": augment.augmentation_of("all", SIZE, 0.5, 2.0, VGG19_MEAN_PIXEL, None,
                                               "nearest")}


def reader_rate(records, augmented):
    """Images per second of one pass of next_batch(BATCH) after the first batch."""
    with BatchDatset(records, reader_options(augmented)) as reader:
        reader.next_batch(BATCH)
        start = time.perf_counter()
        batches = len(records) // BATCH - 1
        for _ in range(batches):
            reader.next_batch(BATCH)
        return batches * BATCH / (time.perf_counter() - start)


def summary(values):
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def loop_against_step(records, runs):
    from benchmarks import bench
    from benchmarks.measuring import summarize_times
    # The loss ignores the padding's label, as training's does.
    sess, tensors = bench.build_network(SIZE, "fp32", bench.session_config()[0],
                                        ignore_label=augment.PAD_LABEL)
    try:
        with BatchDatset(records, reader_options(True)) as reader:
            loop, step = bench.measure_loop_and_step(sess, tensors, reader, BATCH, SIZE, 2,
                                                     runs)
    finally:
        sess.close()
    loop_rate = summarize_times(loop[0], BATCH)["median"]
    step_rate = summarize_times(step[0], BATCH)["median"]
    return {"loop_images_per_s_median": round(loop_rate, 3),
            "step_images_per_s_median": round(step_rate, 3),
            "loop_over_step_median": round(loop_rate / step_rate, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--loop_runs", type=int, default=8)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        pairs = write_distinct_pairs(folder, 50, SOURCE)
        records = link_records(os.path.join(folder, "records"), pairs, args.records)
        rates = {"plain": [], "augmented": []}
        for run in range(args.runs):
            for kind in ("plain", "augmented"):
                rates[kind].append(reader_rate(records, kind == "augmented"))
            print("run %d: plain %.1f, augmented %.1f images/s"
                  % (run + 1, rates["plain"][-1], rates["augmented"][-1]), flush=True)
        result = {"reader_images_per_s": {kind: summary(v) for kind, v in rates.items()},
                  "cores": len(os.sched_getaffinity(0)),
                  "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        result["loop"] = loop_against_step(records, args.loop_runs)
    print(json.dumps(result, indent=1))
    write_result(result, args.json)


if __name__ == "__main__":
    main()
