"""The training recipe's options (docs/recipes.md) against numpy: the learning rate's schedule,
SGD with momentum and weight decay, class weights and the hardest pixels; the label histogram
and its cache; and the options on the command line."""
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import class_weights
import network
import training_recipe
from guards import FCNError
from optimizers import slot_optimizer
from tests.project import SMALL, run_fcn


def _recipe(**changes):
    return training_recipe.REFERENCE_RECIPE._replace(**changes)


def _softmax_cross_entropy(logits, labels):
    """Each pixel's -log softmax(logits)[label], in float64."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probabilities, labels[..., None], axis=-1)[..., 0]


# ---- the learning rate ------------------------------------------------------------------------

def test_the_learning_rate_follows_poly_and_the_warmup():
    steps = [0, 1, 5, 10, 50, 99, 100, 120]
    with tf.Graph().as_default(), tf.Session() as sess:
        step = tf.placeholder(tf.int64, [])
        poly = training_recipe.learning_rate_at(step, 0.01, _recipe(lr_schedule="poly",
                                                            max_iterations=100))
        warm = training_recipe.learning_rate_at(step, 0.01, _recipe(lr_schedule="poly",
                                                            max_iterations=100,
                                                            warmup_steps=10))
        flat_warm = training_recipe.learning_rate_at(step, 0.01, _recipe(warmup_steps=4))
        values = [sess.run([poly, warm, flat_warm], {step: s}) for s in steps]
    for s, (p, w, f) in zip(steps, values):
        expected_poly = 0.01 * max(1 - s / 100, 0) ** 0.9
        assert p == pytest.approx(expected_poly, rel=1e-5, abs=1e-12)
        assert w == pytest.approx(expected_poly * min(s / 10, 1), rel=1e-5, abs=1e-12)
        assert f == pytest.approx(0.01 * min(s / 4, 1), rel=1e-5)
    assert training_recipe.constant_rate(training_recipe.REFERENCE_RECIPE)
    assert not training_recipe.constant_rate(_recipe(warmup_steps=1))


# ---- SGD and weight decay, through the Model training builds ----------------------------------

def _model_step(narrow_vgg, recipe, images, labels, learning_rate=0.05):
    """(variables before, gradients of the plain loss, variables after one update) of a Model
    built with recipe, dropout off."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        model = network.Model(narrow_vgg[:2], True, learning_rate=learning_rate,
                              widths=narrow_vgg[2], recipe=recipe, image_size=32)
        variables = model.network_variables
        # conv5_4 is built and unused in the reference: no gradient but the decay's
        gradients = [tf.zeros_like(v) if g is None else g
                     for v, g in zip(variables, tf.gradients(model.loss, variables))]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            feed = {model.image: images, model.annotation: labels, model.keep_probability: 1.0}
            before = sess.run(variables)
            grads = sess.run(gradients, feed)
            sess.run(model.train_op, feed)
            after = sess.run(variables)
            names = [v.op.name for v in variables]
    return names, before, grads, after


def test_one_sgd_step_with_weight_decay_equals_numpys(narrow_vgg):
    rng = np.random.RandomState(0)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    labels = rng.randint(0, 151, (2, 32, 32, 1)).astype(np.int32)
    decay, rate = 0.01, 0.05
    names, before, grads, after = _model_step(
        narrow_vgg, _recipe(optimizer="sgd", momentum=0.9, weight_decay=decay), images,
        labels, rate)
    checked_weights = checked_biases = 0
    for name, w0, g, w1 in zip(names, before, grads, after):
        # The first momentum step is plain gradient descent on loss + decay / 2 * |W|^2: the
        # weights decay, the biases do not.
        is_weight = w0.ndim >= 2
        expected = w0 - rate * (g + (decay * w0 if is_weight else 0))
        np.testing.assert_allclose(w1, expected, rtol=1e-4, atol=1e-6, err_msg=name)
        checked_weights += is_weight
        checked_biases += not is_weight
    assert checked_weights == 22 and checked_biases == 22


def test_sgd_carries_momentum_into_the_second_step():
    with tf.Graph().as_default(), tf.Session() as sess:
        w = tf.Variable([[1.0, -2.0], [0.5, 3.0]])
        b = tf.Variable([0.25, -0.5])
        x = tf.constant([[1.0, 2.0]])
        loss = tf.reduce_sum(tf.square(tf.matmul(x, w) + b))
        recipe = _recipe(optimizer="sgd", momentum=0.9, weight_decay=0.1)
        objective = loss + training_recipe.weight_decay_loss([w, b], 0.1)
        update = network.training_op(objective, [w, b], learning_rate=0.01, recipe=recipe)
        sess.run(tf.global_variables_initializer())
        sess.run(update)
        sess.run(update)
        got_w, got_b = sess.run([w, b])
    # numpy: v = 0.9 v + g, p -= 0.01 v, with g of the squared output plus 0.1 w for w
    W, B, X = np.array([[1.0, -2.0], [0.5, 3.0]]), np.array([0.25, -0.5]), np.array([[1., 2.]])
    vw, vb = np.zeros_like(W), np.zeros_like(B)
    for _ in range(2):
        out = X @ W + B
        gw = X.T @ (2 * out) + 0.1 * W
        gb = (2 * out)[0]
        vw, vb = 0.9 * vw + gw, 0.9 * vb + gb
        W, B = W - 0.01 * vw, B - 0.01 * vb
    np.testing.assert_allclose(got_w, W, rtol=1e-5)
    np.testing.assert_allclose(got_b, B, rtol=1e-5)


# ---- class weights and the hardest pixels ------------------------------------------------------

def _numpy_recipe_loss(logits, labels, ignore, weights, fraction):
    losses = _softmax_cross_entropy(logits, labels).reshape(-1)
    labels = labels.reshape(-1)
    counted = np.ones_like(losses) if ignore is None else (labels != ignore).astype(float)
    pixel_weights = counted * (1.0 if weights is None
                               else np.asarray(weights)[np.where(counted > 0, labels, 0)])
    if fraction < 1:
        k = max(int(np.ceil(fraction * counted.sum())), 1)
        order = np.argsort(-np.where(counted > 0, losses, -1), kind="stable")[:k]
        losses, pixel_weights = losses[order], pixel_weights[order]
    return (losses * pixel_weights).sum() / pixel_weights.sum()


@pytest.mark.parametrize("ignore, weights, fraction", [
    (None, [0.5, 2.0, 1.0, 4.0], 1.0),
    (3, [0.5, 2.0, 1.0, 4.0], 1.0),
    (None, None, 0.25),
    (3, None, 0.1),
    (3, [0.5, 2.0, 1.0, 0.0], 0.3),
])
def test_the_recipes_loss_equals_numpys(ignore, weights, fraction):
    rng = np.random.RandomState(1)
    logits = rng.normal(0, 3, (2, 8, 8, 4)).astype(np.float32)
    labels = rng.randint(0, 4, (2, 8, 8)).astype(np.int32)
    with tf.Graph().as_default(), tf.Session() as sess:
        loss = network.recipe_pixel_loss(tf.constant(logits), tf.constant(labels[..., None]),
                                         ignore, weights, fraction)
        got = sess.run(loss)
    assert got == pytest.approx(_numpy_recipe_loss(logits, labels, ignore, weights, fraction),
                                rel=1e-5)


def test_the_reference_networks_weighted_loss_is_its_logits(narrow_vgg):
    # The reference network's loss is computed on its phase groups: the same as numpy's on the
    # logits it returns, weights and hardest pixels included.
    rng = np.random.RandomState(2)
    images = rng.uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    labels = rng.randint(0, 151, (1, 32, 32, 1)).astype(np.int32)
    weights = list(rng.uniform(0.1, 3.0, 151))
    graph = tf.Graph()
    with graph.as_default():
        model = network.Model(narrow_vgg[:2], True, widths=narrow_vgg[2], image_size=32,
                              recipe=_recipe(class_weights=weights, hard_pixel_fraction=0.4))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            loss, logits = sess.run([model.loss, model.logits],
                                    {model.image: images, model.annotation: labels,
                                     model.keep_probability: 1.0})
    assert loss == pytest.approx(_numpy_recipe_loss(logits, labels[..., 0], None, weights, 0.4),
                                 rel=1e-4)


def test_padding_is_ignored_by_the_training_loss_on_ade20k(narrow_vgg):
    # ADE20K's loss trains on every label; with augmentation's padding it leaves out
    # PAD_LABEL, and only that: the loss equals numpy's over the other pixels.
    rng = np.random.RandomState(3)
    images = rng.uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    labels = rng.randint(0, 151, (1, 32, 32, 1)).astype(np.int32)
    labels[:, 20:, :] = 255
    graph = tf.Graph()
    with graph.as_default():
        model = network.Model(narrow_vgg[:2], True, widths=narrow_vgg[2], image_size=32,
                              recipe=_recipe(pad_label=255))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            loss, logits = sess.run([model.loss, model.logits],
                                    {model.image: images, model.annotation: labels,
                                     model.keep_probability: 1.0})
    kept = labels[0, :20, :, 0]
    expected = _softmax_cross_entropy(logits[0, :20], kept).mean()
    assert loss == pytest.approx(expected, rel=1e-4)


def test_median_frequency_weights_of_a_hand_worked_histogram():
    # Two images of 100 pixels: A = 60 of class 0, 40 of class 1; B = 90 of class 0, 10 of
    # class 2. Frequencies: class 0 150/200 = 0.75, class 1 40/100 = 0.4, class 2 10/100 = 0.1;
    # class 3 never occurs. Median 0.4: weights 0.4/0.75, 1, 4, and 0.
    a = np.array([0] * 60 + [1] * 40).reshape(10, 10)
    b = np.array([0] * 90 + [2] * 10).reshape(10, 10)
    pixels, image_pixels = np.zeros(4, int), np.zeros(4, int)
    for label in (a, b):
        counts, present = class_weights.image_histogram(label, 4)
        pixels += counts
        image_pixels[present] += label.size
    np.testing.assert_array_equal(pixels, [150, 40, 10, 0])
    np.testing.assert_array_equal(image_pixels, [200, 100, 100, 0])
    np.testing.assert_allclose(class_weights.median_frequency(pixels, image_pixels),
                               [0.4 / 0.75, 1.0, 4.0, 0.0])


def _write_annotation(path, label):
    from PIL import Image
    Image.fromarray(np.asarray(label, np.uint8)).save(path)


def test_the_histogram_is_cached_and_counted_again_when_the_records_change(tmp_path, capsys):
    paths = [str(tmp_path / ("a%d.png" % k)) for k in range(3)]
    for k, path in enumerate(paths):
        _write_annotation(path, np.full((4, 5), k))
    _write_annotation(paths[2], [[2, 2, 255, 255, 1]] * 4)  # 255: ignored, not counted
    pixels, image_pixels = class_weights.cached_histogram(paths, 3, str(tmp_path))
    np.testing.assert_array_equal(pixels, [20, 24, 8])
    np.testing.assert_array_equal(image_pixels, [20, 40, 20])
    cache = tmp_path / class_weights.CACHE_NAME
    assert cache.exists()
    # Read from the cache: a record changed behind its back is seen by its size or time.
    capsys.readouterr()
    again = class_weights.cached_histogram(paths, 3, str(tmp_path))
    np.testing.assert_array_equal(again[0], pixels)
    assert "changed" not in capsys.readouterr().out
    _write_annotation(paths[0], np.full((6, 5), 2))
    pixels, _ = class_weights.cached_histogram(paths, 3, str(tmp_path))
    np.testing.assert_array_equal(pixels, [0, 24, 38])
    assert "changed" in capsys.readouterr().out
    # A record removed counts again too.
    pixels, _ = class_weights.cached_histogram(paths[1:], 3, str(tmp_path))
    np.testing.assert_array_equal(pixels, [0, 24, 8])


def test_a_weights_file_must_hold_one_weight_per_class(tmp_path):
    good = tmp_path / "w.json"
    good.write_text("[1, 0.5, 2]")
    assert class_weights.read_weights_file(str(good), 3) == [1.0, 0.5, 2.0]
    for text in ("[1, 2]", "{\"a\": 1}", "[1, -1, 2]", "[0, 0, 0]", "not json",
                 "[1, true, 2]", "[1, %s, 2]" % ("9" * 400)):
        good.write_text(text)
        with pytest.raises(FCNError, match="--class_weights=.*w.json"):
            class_weights.read_weights_file(str(good), 3)
    with pytest.raises(FCNError, match="--class_weights=nothing.json: use none"):
        class_weights.check_setting("nothing.json")


# ---- on the command line -------------------------------------------------------------------------

@pytest.mark.parametrize("flag, message", [
    ("--augment=rotate", "--augment=rotate: rotate is not a part"),
    ("--min_scale_factor=3", "--min_scale_factor=3, --max_scale_factor=2"),
    ("--max_scale_factor=50", "the second at most 4"),
    ("--lr_schedule=cosine", "--lr_schedule=cosine: use constant or poly"),
    ("--optimizer=rmsprop", "--optimizer=rmsprop: use adam or sgd"),
    ("--momentum=1", "--momentum=1: it must be at least 0 and below 1"),
    ("--weight_decay=-1", "--weight_decay=-1"),
    ("--hard_pixel_fraction=0", "--hard_pixel_fraction=0"),
    ("--class_weights=missing.json", "--class_weights=missing.json"),
    ("--warmup_steps=-2", "--warmup_steps=-2"),
])
def test_bad_recipe_flags_are_one_line(flag, message, tmp_path):
    out = run_fcn("--mode=train", "--logs_dir=" + str(tmp_path / "logs"), flag, expect=2)
    assert message in out
    assert not (tmp_path / "logs").exists()


def test_training_with_the_whole_recipe(tmp_path, dirs, scene_data):
    logs = str(tmp_path / "logs")
    data = str(tmp_path / "data")
    import shutil
    shutil.copytree(scene_data, data)
    flags = ["--augment=all", "--lr_schedule=poly", "--warmup_steps=2", "--optimizer=sgd",
             "--learning_rate=0.01", "--weight_decay=5e-4", "--class_weights=median_frequency",
             "--hard_pixel_fraction=0.5"]
    out = run_fcn("--mode=train", "--logs_dir=" + logs, "--max_iterations=4", "--log_every=1",
                  "--save_every=2", "--data_dir=" + data, dirs[1], *(SMALL + flags))
    lines = [line for line in out.splitlines() if " step " in line and "images/s" in line]
    rates = [float(line.split(" lr ")[1].split()[0]) for line in lines]
    # Poly over 4 steps and a 2-step warmup: the rate logged is the one of each step's update.
    expected = [0.01 * (1 - s / 4) ** 0.9 * min(s / 2, 1) for s in range(4)]
    np.testing.assert_allclose(rates, expected, rtol=1e-2, atol=1e-9)
    with open(os.path.join(logs, "settings.json")) as f:
        recorded = json.load(f)
    assert recorded["augment"] == "all" and recorded["optimizer"] == "sgd"
    assert recorded["class_weights"] == "median_frequency"
    assert os.path.exists(os.path.join(data, class_weights.CACHE_NAME))
    # Resuming with another optimizer would start its state afresh: refused, one line.
    out = run_fcn("--mode=train", "--logs_dir=" + logs, "--max_iterations=6",
                  "--data_dir=" + data, dirs[1], *SMALL, expect=2)
    assert "was trained with --optimizer=sgd, not adam" in out
    out = run_fcn("--mode=train", "--logs_dir=" + logs, "--max_iterations=5",
                  "--data_dir=" + data, dirs[1], *(SMALL + flags))
    assert "Model restored" in out and "Warning: resuming" not in out
    # A flag forgotten on resuming: the run goes on, with one line per recipe setting changed.
    out = run_fcn("--mode=train", "--logs_dir=" + logs, "--max_iterations=6",
                  "--data_dir=" + data, dirs[1], *(SMALL + flags[1:]))
    assert "Warning: resuming a run trained with --augment=all (" in out
    assert "with --augment=: the recipe changes" in out
    assert sum("Warning: resuming" in line for line in out.splitlines()) == 1


def test_the_reference_training_logs_no_learning_rate(trained):
    _, out = trained
    lines = [line for line in out.splitlines() if " step " in line and "images/s" in line]
    assert lines and not any(" lr " in line for line in lines)



def test_the_recipe_trains_the_paper_network_in_bf16_and_a_run_started_from_it(
        tmp_path, paper_model_dir, scene_data):
    # docs/recipes.md: every option works with both networks, bf16 and --init_from.
    flags = ["--variant=paper", "--precision=bf16", "--augment=all", "--lr_schedule=poly",
             "--optimizer=sgd", "--learning_rate=0.01", "--weight_decay=5e-4",
             "--class_weights=median_frequency", "--hard_pixel_fraction=0.5",
             "--data_dir=" + scene_data, "--model_dir=" + paper_model_dir, "--log_every=1"]
    first = str(tmp_path / "first")
    out = run_fcn("--mode=train", "--logs_dir=" + first, "--max_iterations=3",
                  "--save_every=3", *(SMALL + flags))
    losses = [float(line.split(" loss ")[1].split()[0]) for line in out.splitlines()
              if " step " in line and "images/s" in line]
    assert len(losses) == 3 and all(np.isfinite(losses)), losses
    second = str(tmp_path / "second")
    out = run_fcn("--mode=train", "--logs_dir=" + second, "--max_iterations=1",
                  "--init_from=" + first, *(SMALL + flags))
    assert "Initialised from %s" % first in out
    assert "the optimizer's slots start fresh" in out
    with open(os.path.join(second, "settings.json")) as f:
        assert json.load(f)["precision"] == "bf16"


def test_a_checkpoint_name_tells_the_optimizer_of_its_slot_and_none_for_a_weight():
    assert slot_optimizer("inference/conv1_1_w/Adam") == "adam"
    assert slot_optimizer("inference/W_t3/Adam_1") == "adam"
    assert slot_optimizer("paper/score_fr_w/Momentum") == "sgd"
    for weight in ("inference/conv1_1_w", "inference/W_t3", "paper/score_fr_b", "beta1_power"):
        assert slot_optimizer(weight) is None
