"""benchmarks/: the analytic FLOP count against a hand count, the small helpers, and a
--quick run whose table and JSON hold every row, each a finite positive number (nothing about
speed is asserted)."""
import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks import bench, flop_count, measuring, reader_bench
from tests.project import ROOT


# ---- the FLOP count ----------------------------------------------------------------------------

def test_forward_gflop_of_a_32x32_image_equals_a_hand_count():
    # A 32x32 image: VGG blocks at 32, 16, 8, 4, 2; fc6..fc8 at 1x1. Written out by hand, each
    # term 2 * out_h * out_w * k * k * cin * cout.
    vgg = (2 * 32 * 32 * 9 * 3 * 64            # conv1_1
           + 2 * 32 * 32 * 9 * 64 * 64         # conv1_2
           + 2 * 16 * 16 * 9 * 64 * 128        # conv2_1
           + 2 * 16 * 16 * 9 * 128 * 128       # conv2_2
           + 2 * 8 * 8 * 9 * 128 * 256         # conv3_1
           + 3 * (2 * 8 * 8 * 9 * 256 * 256)   # conv3_2..conv3_4
           + 2 * 4 * 4 * 9 * 256 * 512         # conv4_1
           + 3 * (2 * 4 * 4 * 9 * 512 * 512)   # conv4_2..conv4_4
           + 3 * (2 * 2 * 2 * 9 * 512 * 512))  # conv5_1..conv5_3 (conv5_4 is pruned)
    head = (2 * 1 * 1 * 49 * 512 * 4096        # fc6, 7x7
            + 2 * 1 * 1 * 4096 * 4096          # fc7
            + 2 * 1 * 1 * 4096 * 151)          # fc8
    # Transposed: (k/s)^2 = 4 multiply-adds per output pixel and channel pair for both kinds.
    upsampling = (2 * 2 * 2 * 4 * 151 * 512    # conv_t1 -> 2x2 (pool4's size)
                  + 2 * 4 * 4 * 4 * 512 * 256  # conv_t2 -> 4x4 (pool3's size)
                  + 2 * 32 * 32 * 4 * 256 * 151)  # conv_t3 -> 32x32
    assert vgg == 777_388_032 and head == 240_312_320 and upsampling == 335_921_152
    assert flop_count.fcn8s_forward_gflop(32, 32) == pytest.approx(1.353621504, rel=1e-12)


def test_a_few_layers_of_the_32x32_count_by_hand():
    layers = flop_count.fcn8s_gflop_by_layer(32, 32)
    assert layers["conv1_1"] == pytest.approx(3_538_944 / 1e9)
    assert layers["conv5_3"] == pytest.approx(18_874_368 / 1e9)
    assert layers["fc6"] == pytest.approx(205_520_896 / 1e9)
    assert layers["conv_t3"] == pytest.approx(316_669_952 / 1e9)
    assert "conv5_4" not in layers
    assert len(layers) == 15 + 3 + 3


def test_the_224_count_is_the_reference_66_gflop_and_its_largest_layers():
    layers = flop_count.fcn8s_gflop_by_layer(224, 224)
    assert flop_count.fcn8s_forward_gflop(224, 224) == pytest.approx(66.4, abs=0.1)
    ranked = sorted(layers, key=layers.get, reverse=True)
    # The x8 upsampling at full resolution, then fc6's 7x7x512x4096, then the 3x3 convolutions.
    assert ranked[:2] == ["conv_t3", "fc6"]
    assert layers["conv1_2"] == pytest.approx(layers["conv4_4"])  # area / 64, channels x 8 x 8


def test_the_count_grows_with_the_area():
    assert flop_count.fcn8s_forward_gflop(448, 448) == pytest.approx(
        4 * flop_count.fcn8s_forward_gflop(224, 224))
    assert flop_count.fcn8s_forward_gflop(64, 96) == pytest.approx(
        1.5 * flop_count.fcn8s_forward_gflop(64, 64))


def test_sides_that_are_not_multiples_of_32_round_up_like_same_pooling():
    # 33 pools to 17, 9, 5, 3, 2: fc6 runs on 2x2.
    layers = flop_count.fcn8s_gflop_by_layer(33, 33)
    assert layers["fc6"] == pytest.approx(4 * 205_520_896 / 1e9)


# ---- helpers -----------------------------------------------------------------------------------

def test_summarize_times_gives_work_per_second_of_the_best_and_the_median_run():
    assert measuring.summarize_times([2.0, 4.0, 1.0], 10.0) == {"best": 10.0, "median": 5.0}


def test_spread_is_the_range_of_the_runs_over_their_median():
    assert measuring.spread([10.0, 12.0, 11.0, 10.5, 13.0]) == pytest.approx(3.0 / 11.0)


def test_throughput_row_divides_medians_by_the_median_ceiling_and_bests_by_the_best():
    ceilings = {"fp32": {"gflops": 80.0, "gflops_median": 64.0},
                "bf16": {"gflops": 160.0, "gflops_median": 128.0}}
    # Batch 4 in 2, 4 and 8 s: 2 images/s at the median, 1 GFLOP each; best 2 s -> 2 GFLOP/s.
    row = bench.throughput_row(([4.0, 2.0, 8.0], 0.9), 4, 1.0, ceilings, "bf16")
    assert row["images_per_s_median"] == 1.0 and row["images_per_s"] == 2.0
    assert row["step_s_median"] == 4.0 and row["step_s"] == 2.0 and row["runs"] == 3
    assert row["fraction_of_fp32_ceiling_median"] == pytest.approx(1.0 / 64.0)
    assert row["fraction_of_fp32_ceiling"] == pytest.approx(2.0 / 80.0)
    assert row["fraction_of_bf16_ceiling_median"] == pytest.approx(1.0 / 128.0)
    assert row["spread"] == pytest.approx(6.0 / 4.0)
    assert "fraction_of_fp32_ceiling_paired" not in row


def test_the_paired_fraction_is_the_median_of_each_runs_over_the_ceiling_before_it():
    ceilings = {"fp32": {"gflops": 80.0, "gflops_median": 64.0, "gflop_per_run": 10.0}}
    # Batch 2 of 5 GFLOP an image: 10 GFLOP a run, as the ceiling's; the ratios of the pairs are
    # the ceiling's seconds over the run's: 1/2, 3/2, 8/4 -> median 1.5 (the mean is 4/3).
    row = bench.throughput_row(([2.0, 2.0, 4.0], 0.9, [1.0, 3.0, 8.0]), 2, 5.0, ceilings, "fp32")
    assert row["fraction_of_fp32_ceiling_paired"] == pytest.approx(1.5)
    assert row["fp32_ceiling_in_turn_gflops_median"] == pytest.approx(10.0 / 3.0)
    assert measuring.paired_fraction([1.0, 4.0, 2.0], 8.0, [1.0, 1.0, 1.0], 4.0) == \
        pytest.approx(1.0)  # 2, 0.5 and 1 times the reference's rate


def test_runs_in_turn_time_the_reference_just_before_each_run(monkeypatch):
    # A clock that moves only when the functions run: the reference takes 5 s, the run 1, 2, 3.
    clock, calls = [0.0], []
    monkeypatch.setattr(measuring.time, "perf_counter", lambda: clock[0])

    def run():
        calls.append("run")
        clock[0] += calls.count("run") - 1  # the warm-up call takes no time

    def reference():
        calls.append("ceiling")
        clock[0] += 5.0

    seconds, share, reference_seconds = measuring.time_runs_in_turn(run, reference, 1, 3)
    assert calls == ["ceiling", "run"] * 4
    assert seconds == [1.0, 2.0, 3.0] and reference_seconds == [5.0, 5.0, 5.0]
    assert share >= 0


def test_the_summary_leads_with_the_median_of_each_network_row_present():
    row = {"batch": 10, "fraction_of_fp32_ceiling_median": 0.8, "fraction_of_fp32_ceiling": 0.85,
           "spread": 0.03, "images_per_s_median": 0.28}
    results = {"meta": {"train_batches": [10, 2], "inference_batch": 10},
               "ceiling": {"fp32": {"gflops": 73.0, "gflops_median": 72.0}},
               "train": {"fp32": {"batch10": dict(row, fraction_of_fp32_ceiling_paired=0.9),
                                  "batch2": dict(row, batch=2)}},
               "inference": {"fp32": {"batch10": dict(row, fraction_of_fp32_ceiling_median=0.96)}}}
    rows = bench.summary_rows(results)
    assert [r[0] for r in rows] == ["fp32 train, large batch (batch 10)",
                                    "fp32 train, small batch (batch 2)",
                                    "fp32 inference (batch 10)"]
    assert rows[2][1:3] == (0.96, 0.85) and rows[0][3] == 0.9 and math.isnan(rows[2][3])
    text = bench.format_summary(results).splitlines()
    assert text[0] == "fp32 ceiling: median 72.0 GFLOP/s (best 73.0)"
    assert text[1].split()[-5:] == ["median", "best", "paired", "spread", "images/s"]
    assert text[2].split()[-5:] == ["0.800", "0.850", "0.900", "3%", "0.280"]
    assert text[4].split()[-5:] == ["0.960", "0.850", "nan", "3%", "0.280"]


def test_merged_timings_keep_every_run_and_weigh_the_share_by_time():
    seconds, share = bench.merge_timings([([1.0, 2.0], 1.0), ([1.0], 0.4)])
    assert seconds == [1.0, 2.0, 1.0]
    assert share == pytest.approx((3.0 * 1.0 + 1.0 * 0.4) / 4.0)


def test_disturbed_rows_are_those_with_a_low_cpu_share():
    results = {"ceiling": {"fp32": {"gflops": 100.0, "cpu_share": 0.5},
                           "bf16": {"gflops": 200.0, "cpu_share": 0.97}}}
    assert bench.disturbed_rows(results) == ["ceiling.fp32"]


def test_cpu_model_is_the_first_model_name():
    text = "processor\t: 0\nmodel name\t: Some CPU @ 2GHz\n\nprocessor\t: 1\nmodel name\t: Other\n"
    assert bench.cpu_model(text) == "Some CPU @ 2GHz"
    assert bench.cpu_model("flags: avx\n") == "unknown"


def test_synthetic_labels_are_class_indices_of_the_image_size():
    import numpy as np
    image, label = reader_bench.synthetic_scene(np.random.RandomState(0), 40, 50)
    assert image.shape == (40, 50, 3) and image.dtype == np.uint8
    assert label.shape == (40, 50) and label.dtype == np.uint8 and label.max() <= 150


# ---- a --quick run -----------------------------------------------------------------------------

def numbers(rows):
    return [(key, value) for key, value in rows
            if isinstance(value, (int, float)) and not isinstance(value, bool)]


@pytest.fixture(scope="module")
def quick_run(module_tmp):
    path = str(module_tmp("bench") / "quick.json")
    done = subprocess.run([sys.executable, os.path.join("benchmarks", "bench.py"), "--quick",
                           "--precision", "fp32", "--json", path],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(path) as f:
        return json.load(f), done.stdout


def expected_keys(results):
    meta = results["meta"]
    keys = ["meta.tensorflow", "meta.cpu", "meta.cores", "meta.session_config",
            "meta.loadavg_start", "meta.loadavg_end", "flops.forward_gflop_per_image",
            "flops.train_gflop_per_image", "flops.forward_gflop_by_layer.conv_t3"]
    for precision in ("fp32", "bf16"):
        keys += ["ceiling.%s.gflops" % precision, "ceiling.%s.gflops_median" % precision]
    for batch in meta["train_batches"]:
        keys += ["train.fp32.batch%d.%s" % (batch, name) for name in
                 ("images_per_s", "images_per_s_median", "gflops", "fraction_of_fp32_ceiling",
                  "fraction_of_fp32_ceiling_median", "fraction_of_fp32_ceiling_paired",
                  "spread")]
    keys += ["inference.fp32.batch%d.%s" % (meta["inference_batch"], name) for name in
             ("images_per_s", "gflops", "fraction_of_fp32_ceiling",
              "fraction_of_fp32_ceiling_paired")]
    for records in meta["reader_records"]:
        keys += ["reader.records%d.%s" % (records, name) for name in
                 ("images_per_s", "first_batch_s", "peak_rss_mb")]
    keys += ["end_to_end.loop_images_per_s", "end_to_end.step_images_per_s",
             "end_to_end.loop_over_step", "end_to_end.cpu_share"]
    return keys


@pytest.mark.slow  # a benchmark run in its own process, tens of seconds
def test_quick_run_has_every_row_in_the_json_and_the_table(quick_run):
    results, stdout = quick_run
    rows = dict(bench.flatten(results))
    for key in expected_keys(results):
        assert key in rows, key
        assert key in stdout, key
    assert "train.bf16" not in rows  # --precision fp32 measures no bf16 network
    # The summary comes first and leads with the medians.
    assert stdout.index("fraction of the fp32 ceiling") < stdout.index("ceiling.fp32.gflops")
    assert "fp32 train, large batch" in stdout and "bf16 train" not in stdout


@pytest.mark.slow  # a benchmark run in its own process, tens of seconds
def test_quick_run_numbers_are_finite_and_positive(quick_run):
    results, _ = quick_run
    rows = bench.flatten(results)
    measured = [(key, value) for key, value in numbers(rows) if not key.startswith("meta.")]
    assert len(measured) > 30
    for key, value in measured:
        assert math.isfinite(value), (key, value)
        # One timed run (as --quick takes for some rows) has no spread.
        assert value >= 0 if key.endswith(".spread") else value > 0, (key, value)
    for key in ("loadavg_start", "loadavg_end"):
        assert len(results["meta"][key]) == 3
        assert all(math.isfinite(v) and v >= 0 for v in results["meta"][key])


@pytest.mark.slow  # a benchmark run in its own process, tens of seconds
def test_quick_run_fraction_is_gflops_over_the_ceiling(quick_run):
    results, _ = quick_run
    batch = results["meta"]["train_batches"][0]
    row = results["train"]["fp32"]["batch%d" % batch]
    assert row["gflops"] == pytest.approx(
        row["images_per_s"] * results["flops"]["train_gflop_per_image"])
    assert row["fraction_of_fp32_ceiling"] == pytest.approx(
        row["gflops"] / results["ceiling"]["fp32"]["gflops"])
