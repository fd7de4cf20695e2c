"""FCN-8s learns the toy scene set, end to end through train and validate: the full-size network
in fp32, and bf16 as fp32 does on the narrow one (the same topology; what is compared is the
arithmetic); and --augment makes the narrow one recognise objects at a scale training did not
show.

Slow (minutes on 2 cores): deselect locally with  -m "not slow". The bf16 comparison runs only
where bfloat16 is native (see devices.native_bf16).
"""
import json
import os
import re

import numpy as np
import pytest

import devices
from tests.make_dataset import make_scene_dataset
from tests.project import run_fcn

STEPS = 120
# bf16 against fp32 on the same data, seed and steps: the tolerances this project states.
ACCURACY_TOLERANCE = 0.08   # final validation pixel accuracy, absolute
LOSS_TOLERANCE = 0.25       # mean of the last two logged training losses, absolute


@pytest.fixture(scope="module")
def toy_data(module_tmp):
    data = str(module_tmp("toy"))
    make_scene_dataset(data, n_train=60, n_val=12, seed=5)
    return data


@pytest.fixture(scope="module")
def learned(toy_data, full_model_dir, model_dir, module_tmp):
    """(size, precision) -> (validation metrics, logged training losses) of the full-size
    network (size "full") or the narrow one ("narrow"), trained once each."""
    results = {}

    def get(size, precision):
        if (size, precision) not in results:
            logs = str(module_tmp("logs-%s-%s" % (size, precision)))
            common = ["--data_dir=" + toy_data, "--logs_dir=" + logs,
                      "--image_size=64", "--batch_size=4", "--precision=" + precision]
            if size == "full":
                common.append("--model_dir=" + full_model_dir)
            else:  # the narrow network learns the toy scenes in STEPS steps at a higher rate
                common += ["--model_dir=" + model_dir, "--learning_rate=1e-3"]
            out = run_fcn("--mode=train", "--max_iterations=%d" % STEPS, "--log_every=20",
                          "--save_every=%d" % STEPS, *common)
            losses = [float(x) for x in re.findall(r"step \d+ loss ([0-9.]+)", out)]
            run_fcn("--mode=validate", *common)
            with open(os.path.join(logs, "validation_metrics.json")) as f:
                results[size, precision] = (json.load(f), losses)
        return results[size, precision]
    return get


@pytest.mark.slow
def test_training_beats_always_predicting_the_most_frequent_class(learned):
    result, losses = learned("full", "fp32")
    confusion = np.array(result["confusion_matrix"])
    # Always answering the most frequent labelled class scores its share of the labelled pixels.
    baseline = confusion.sum(axis=1).max() / confusion.sum()
    assert baseline < 0.5
    assert result["pixel_accuracy"] > baseline + 0.3, (result["pixel_accuracy"], baseline)
    assert losses[-1] < losses[0] / 3, losses


# Without bfloat16 hardware TensorFlow emulates it: the steps take many times fp32's (figures:
# docs/testing.md) and would measure the emulation, not this project.
@pytest.mark.slow
@pytest.mark.skipif(not devices.native_bf16(gpus=None, flags=devices.cpu_flags()),
                    reason="no bfloat16 hardware (AVX512_BF16, AMX or a GPU): bf16 is emulated")
def test_bf16_learns_as_fp32_does(learned):
    fp32, fp32_losses = learned("narrow", "fp32")
    bf16, bf16_losses = learned("narrow", "bf16")
    print("pixel accuracy fp32 %.4f bf16 %.4f; losses fp32 %s bf16 %s"
          % (fp32["pixel_accuracy"], bf16["pixel_accuracy"], fp32_losses, bf16_losses))
    assert abs(bf16["pixel_accuracy"] - fp32["pixel_accuracy"]) < ACCURACY_TOLERANCE
    assert abs(np.mean(bf16_losses[-2:]) - np.mean(fp32_losses[-2:])) < LOSS_TOLERANCE


@pytest.fixture(scope="module")
def scale_shift_data(module_tmp):
    from tests.make_dataset import make_scale_shift_dataset
    data = str(module_tmp("scale_shift"))
    make_scale_shift_dataset(data, n_train=40, n_val=10, seed=0)
    return data


@pytest.mark.slow
def test_augmentation_helps_objects_at_another_scale(scale_shift_data, model_dir, module_tmp):
    # Classes told apart by texture alone; validation objects twice the training's scale, scored
    # at each image's own size. For each seed the same steps and rate; only --augment differs.
    # Three seeds: one run's score moves by tenths with the batches it happens to draw.
    scores = {"": [], "scale,flip": []}
    for seed in (0, 1, 2):
        for augment in scores:
            logs = str(module_tmp("logs-%d-augment-%s" % (seed, augment.replace(",", "-")
                                                          or "off")))
            common = ["--data_dir=" + scale_shift_data, "--model_dir=" + model_dir,
                      "--logs_dir=" + logs, "--image_size=64", "--batch_size=4",
                      "--learning_rate=1e-3", "--seed=%d" % seed]
            run_fcn("--mode=train", "--max_iterations=300", "--log_every=50",
                    "--save_every=300", "--validation_images=0", "--augment=" + augment,
                    *common)
            run_fcn("--mode=validate", "--eval_scales=1.0", *common)
            with open(os.path.join(logs, "validation_metrics.json")) as f:
                scores[augment].append(json.load(f)["mean_iou"])
    print("mean IoU by seed without and with --augment=scale,flip: %s, %s"
          % (scores[""], scores["scale,flip"]))
    assert all(a > b for a, b in zip(scores["scale,flip"], scores[""])), scores
    assert np.mean(scores["scale,flip"]) > np.mean(scores[""]) + 0.1, scores
