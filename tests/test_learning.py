"""FCN-8s learns the toy scene set: the whole train -> validate path, end to end.

Slow (a couple of minutes on 2 cores): deselect locally with  -m "not slow".
"""
import json
import os

import numpy as np
import pytest

from tests.make_dataset import make_scene_dataset
from tests.test_modes import run_fcn


@pytest.mark.slow
def test_training_beats_always_predicting_the_most_frequent_class(tmp_path, model_dir):
    data = str(tmp_path / "data")
    make_scene_dataset(data, n_train=60, n_val=12, seed=5)
    logs = str(tmp_path / "logs")
    common = ["--data_dir=" + data, "--model_dir=" + model_dir, "--logs_dir=" + logs,
              "--image_size=64", "--batch_size=4"]
    run_fcn("--mode=train", "--max_iterations=120", "--log_every=20", "--save_every=120",
            *common)
    run_fcn("--mode=validate", *common)
    with open(os.path.join(logs, "validation_metrics.json")) as f:
        result = json.load(f)
    confusion = np.array(result["confusion_matrix"])
    # Always answering the most frequent labelled class scores its share of the labelled pixels.
    baseline = confusion.sum(axis=1).max() / confusion.sum()
    assert baseline < 0.5
    assert result["pixel_accuracy"] > baseline + 0.3, (result["pixel_accuracy"], baseline)
