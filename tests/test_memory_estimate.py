"""memory_estimate: the network's size against its variables as listed and as built, the
estimate's parts, the warning line exactly when the estimate exceeds the memory available, the
memory available as Linux and a container tell it; training's warning on the narrow network;
and (slow) the estimate against the peak memory of real training runs."""
import json
import math
import os
import subprocess
import sys

import pytest

import memory_estimate
import vgg_weights
from memory_estimate import Estimate
from optimizers import OPTIMIZERS
from tests.make_vgg_mat import NARROW
from tests.project import ROOT, SMALL, run_fcn

ADAM_SLOTS = OPTIMIZERS["adam"].slots

ORIGINAL_VARIABLES = os.path.join(ROOT, "tests", "data", "original_variables.json")
GIB = 1 << 30


def test_the_reference_counts_the_original_implementations_variables():
    with open(ORIGINAL_VARIABLES) as f:
        original = json.load(f)
    by_hand = 0
    for _, shape in original:
        size = 1
        for side in shape:
            size *= side
        by_hand += size
    assert by_hand == 153419886  # about 153 M, fc6's 103 M the most
    assert memory_estimate.parameter_count("reference") == by_hand
    assert [("inference/" + name, list(shape)) for name, shape
            in memory_estimate.variable_shapes("reference")] == [tuple(v) for v in original]


@pytest.mark.parametrize("variant,num_classes,widths", [
    ("paper", 151, None), ("paper", 3, None), ("reference", 3, None), ("reference", 21, NARROW),
    ("paper", 5, NARROW)])
def test_the_variables_are_those_network_builds(variant, num_classes, widths):
    import tensorflow.compat.v1 as tf
    import datasets
    import network
    import vgg_weights
    classes = datasets.class_info(datasets.FOLDER, ["c%d" % k for k in range(num_classes)])
    with tf.Graph().as_default():
        model = network.Model((None, vgg_weights.VGG19_MEAN_PIXEL), False,
                              classes=classes, variant=variant, widths=widths)
        built = {v.op.name: tuple(v.shape.as_list()) for v in model.network_variables}
    scope = network.VARIANT_SCOPES[variant]
    args = (variant, num_classes) + ((widths,) if widths else ())
    listed = {"%s/%s" % (scope, name): tuple(shape)
              for name, shape in memory_estimate.variable_shapes(*args)}
    assert listed == built
    assert memory_estimate.parameter_count(*args) == sum(math.prod(s) for s in built.values())


def test_the_weights_part_is_the_variables_gradients_and_slots_in_float32():
    slots = {name: optimizer.slots for name, optimizer in OPTIMIZERS.items()}
    assert slots == {"adam": 2, "sgd": 1}  # m and v; the momentum
    count = memory_estimate.parameter_count("reference")
    adam = memory_estimate.training_estimate(count, 10, 224, "fp32", ADAM_SLOTS)
    momentum = memory_estimate.training_estimate(count, 10, 224, "fp32", 1)
    assert adam.weights == count * 4 * 4  # the variable, its gradient, m and v
    assert momentum.weights == count * 4 * 3
    assert adam.activations == momentum.activations and adam.overhead == momentum.overhead


def test_the_narrow_network_is_estimated_far_below_the_full_one():
    # Its runs in the tests must never warn: 2 M parameters, not 153 M, at 64x64.
    narrow = memory_estimate.training_estimate(
        memory_estimate.parameter_count("reference", 151, NARROW), 2, 64, "fp32", ADAM_SLOTS)
    full = memory_estimate.training_estimate(
        memory_estimate.parameter_count("reference"), 2, 64, "fp32", ADAM_SLOTS)
    assert narrow.weights == memory_estimate.parameter_count("reference", 151, NARROW) * 16
    assert narrow.total < 1.5e9 < 153419886 * 16 < full.total


def test_activations_grow_with_the_batch_and_the_pixels_and_the_total_adds_the_parts():
    count = memory_estimate.parameter_count("reference")
    for precision in ("fp32", "bf16"):
        base = memory_estimate.training_estimate(count, 2, 224, precision, ADAM_SLOTS)
        bigger = memory_estimate.training_estimate(count, 6, 448, precision, ADAM_SLOTS)
        assert bigger.activations == pytest.approx(base.activations * 3 * 4)
        assert bigger.weights == base.weights and bigger.overhead == base.overhead
        assert base.total == base.weights + base.activations + base.overhead
    fp32 = memory_estimate.training_estimate(count, 10, 224, "fp32", ADAM_SLOTS)
    bf16 = memory_estimate.training_estimate(count, 10, 224, "bf16", ADAM_SLOTS)
    assert bf16.activations < fp32.activations
    fewer_classes = memory_estimate.training_estimate(
        memory_estimate.parameter_count("reference", 3), 10, 224, "fp32", ADAM_SLOTS,
        num_classes=3)
    assert fewer_classes.activations < fp32.activations


def test_the_warning_appears_exactly_when_the_estimate_is_above_the_memory_available():
    estimate = Estimate(weights=2 * GIB, activations=8 * GIB, overhead=GIB, batch_size=8,
                        image_size=512)
    total = 11 * GIB
    assert memory_estimate.warning_line(estimate, total) is None
    assert memory_estimate.warning_line(estimate, total + 1) is None
    assert memory_estimate.warning_line(estimate, None) is None  # unknown: no warning
    line = memory_estimate.warning_line(estimate, total - 1)
    assert line.startswith("Warning: this run needs about 11.8 GB of memory (weights, gradients "
                           "and optimizer slots 2.1 GB, activations 8.6 GB at batch 8 of 512x512, "
                           "the rest 1.1 GB) but 11.8 GB is available")
    # One image's activations are 1 GiB: 3.5 GiB beyond the fixed 3 GiB hold 3 images.
    line = memory_estimate.warning_line(estimate, int(6.5 * GIB))
    assert "but 7.0 GB is available" in line
    assert line.endswith("lower --batch_size (at most 3 fits at 512x512) or --image_size")
    line = memory_estimate.warning_line(estimate, int(3.5 * GIB))
    assert line.endswith("lower --image_size (not even batch 1 fits at 512x512)")
    assert "\n" not in line
    line = memory_estimate.warning_line(estimate, 3 * GIB)  # the weights and the rest alone
    assert line.endswith("even without activations it does not fit: free memory, or train "
                         "where there is more")


def test_the_largest_batch_that_fits():
    # 3 GiB whatever the batch, 1 GiB an image: 11 GiB hold 8 images, a byte less 7.
    estimate = Estimate(weights=2 * GIB, activations=8 * GIB, overhead=GIB, batch_size=8,
                        image_size=512)
    assert memory_estimate.largest_batch(estimate, 11 * GIB) == 8
    assert memory_estimate.largest_batch(estimate, 11 * GIB - 1) == 7
    assert memory_estimate.largest_batch(estimate, 200 * GIB) == 197
    assert memory_estimate.largest_batch(estimate, 3 * GIB + GIB // 2) == 0
    assert memory_estimate.largest_batch(estimate, GIB) == 0  # less than the fixed part: none


def test_meminfo_gives_memavailable_in_bytes():
    text = ("MemTotal:       24731408 kB\nMemFree:        23000000 kB\n"
            "MemAvailable:   12000000 kB\nBuffers:           10000 kB\n")
    assert memory_estimate.meminfo_available(text) == 12000000 * 1024
    assert memory_estimate.meminfo_available("MemTotal: 100 kB\nMemFree: 50 kB\n") is None


def test_a_containers_limit_less_its_usage_plus_its_reclaimable_cache():
    stat_v2 = "anon 4000\nfile 3000\ninactive_file %d\nactive_file 5\n" % GIB
    assert memory_estimate.cgroup_headroom("%d\n" % (8 * GIB), "%d\n" % (5 * GIB), stat_v2,
                                           "inactive_file") == 4 * GIB
    assert memory_estimate.cgroup_headroom("max\n", "123\n", stat_v2, "inactive_file") is None
    stat_v1 = "cache 10\ninactive_file 7\ntotal_inactive_file %d\n" % (2 * GIB)
    assert memory_estimate.cgroup_headroom("9223372036854771712\n", "5", stat_v1,
                                           "total_inactive_file") is None  # v1's "no limit"
    assert memory_estimate.cgroup_headroom(str(4 * GIB), str(3 * GIB), stat_v1,
                                           "total_inactive_file") == 3 * GIB
    assert memory_estimate.cgroup_headroom("100", "300", "", "inactive_file") == 0


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="Linux's /proc/meminfo")
def test_the_memory_available_here_is_at_most_the_machines():
    with open("/proc/meminfo") as f:
        total = [int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:")][0]
    available = memory_estimate.available_bytes()
    assert 0 < available <= total


def test_the_widths_of_a_mat_are_read_without_its_weights(model_dir, tmp_path):
    assert vgg_weights.file_widths(model_dir) == NARROW  # the tests' .mat declares its widths
    assert vgg_weights.file_widths(str(tmp_path)) == vgg_weights.VGG19_WIDTHS  # not there yet
    with open(str(tmp_path / vgg_weights.VGG19_FILE_NAME), "wb") as f:
        f.write(b"not a .mat")
    assert vgg_weights.file_widths(str(tmp_path)) == vgg_weights.VGG19_WIDTHS  # loading says


def test_it_imports_no_tensorflow():
    # FCN.py can then estimate before TensorFlow's import, and the tests above run without it.
    code = ("import sys\nimport memory_estimate\nprint(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('tensorflow', 'keras')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---- training's warning, on the narrow network ---------------------------------------------------

def warnings_of(output):
    return [line for line in output.splitlines() if line.startswith("Warning: this run needs")]


def test_training_warns_before_loading_vgg_when_memory_is_short_and_trains_on(dirs, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(memory_estimate, "available_bytes", lambda: 1000)
    out = run_fcn("--mode=train", "--logs_dir=" + str(tmp_path / "logs"), "--max_iterations=2",
                  "--log_every=1", *(SMALL + dirs))
    [line] = warnings_of(out)
    assert "but 0.0 GB is available" in line and "at batch 2 of 64x64" in line
    assert line.endswith("even without activations it does not fit: free memory, or train "
                         "where there is more")
    assert out.index(line) < out.index("Loaded conv1_1")  # before the .mat's weights are read
    assert "step 2 loss" in out  # a warning: the run goes on


def test_the_narrow_network_does_not_warn_from_the_mat_or_a_checkpoint(dirs, tmp_path, trained,
                                                                       copy_of, monkeypatch):
    # 2 GB: less than the full network's weights, gradients and Adam's slots alone (153 M x 16
    # bytes), so that a run estimated at VGG-19's widths instead of the .mat's would warn.
    monkeypatch.setattr(memory_estimate, "available_bytes", lambda: int(2e9))
    out = run_fcn("--mode=train", "--logs_dir=" + str(tmp_path / "logs"), "--max_iterations=1",
                  "--log_every=1", *(SMALL + dirs))
    assert warnings_of(out) == [] and "step 1 loss" in out
    out = run_fcn("--mode=train", "--logs_dir=" + copy_of(trained[0]), "--max_iterations=4",
                  "--log_every=1", *(SMALL + dirs))
    assert warnings_of(out) == [] and "step 4 loss" in out


# ---- against real runs --------------------------------------------------------------------------

# The estimate against the measured peak: at most 15% below it (a run it lets through must not
# be killed) and at most 30% above (its advice must not be far too cautious). The fit's own
# errors are in docs/performance.md, "Training's memory"; the margin is for another machine's
# allocator, TensorFlow build and CPU kernels, which the estimate cannot see.
BELOW, ABOVE = 0.15, 0.30


@pytest.mark.slow  # two full-size training runs in their own processes, a few minutes
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB: Linux")
def test_the_estimate_is_within_its_tolerance_of_real_runs(scene_data_dir, full_paper_model_dir,
                                                           tmp_path):
    from benchmarks.training_memory import train_once
    # The .mat with fc6 and fc7 at their real shapes: as large as the real file, which the
    # reference reads whole too.
    for variant, precision, batch, size in (("reference", "fp32", 2, 224),
                                            ("paper", "bf16", 4, 320)):
        peak, _ = train_once(["--data_dir=" + scene_data_dir,
                              "--model_dir=" + full_paper_model_dir, "--variant=" + variant,
                              "--precision=" + precision, "--batch_size=%d" % batch,
                              "--image_size=%d" % size],
                             str(tmp_path / "logs"), steps=2)
        count = memory_estimate.parameter_count(variant)
        estimate = memory_estimate.training_estimate(count, batch, size, precision, ADAM_SLOTS,
                                                     variant).total
        print("%s %s batch %d at %d: peak %.3f GB, estimate %.3f GB"
              % (variant, precision, batch, size, peak / 1e9, estimate / 1e9))
        assert (1 - BELOW) * peak <= estimate <= (1 + ABOVE) * peak, (variant, peak, estimate)
