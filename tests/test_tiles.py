"""Predict in tiles stage by stage (tiles.py, tiled_network.py): the spans by hand; the stage
runner on numpy stages whose whole-image result numpy computes directly; the network's labels
in tiles equal to one pass over the whole image, for both networks, in fp32 and bf16, on sizes
that cut through every stage; predict's progress line; and (slow) predict's peak memory on
photos of three sizes, each in a fresh process.
"""
import os
import sys
import weakref

import imageio.v2 as imageio
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import datasets
import network
import tiled_network
import tiles
from tests.make_dataset import make_folder_dataset
from tests.make_vgg_mat import MEAN_PIXEL, NARROW, vgg19_fc_weights, vgg19_kernels
from tests.project import FCN_PY, SMALL, own_peak, run_fcn


# ---- the spans, by hand ------------------------------------------------------------------------

@pytest.mark.parametrize("length, side, halo, expected", [
    (96, 128, 16, [(0, 96, 0, 96)]),  # one tile when the axis fits
    (256, 128, 16, [(0, 128, 0, 144), (128, 256, 112, 256)]),
    (320, 128, 32, [(0, 128, 0, 160), (128, 256, 96, 288), (256, 320, 224, 320)]),
    (64, 32, 64, [(0, 32, 0, 64), (32, 64, 0, 64)]),  # a halo past both ends is cut there
])
def test_spans_hand_worked(length, side, halo, expected):
    assert tiles.spans(length, side, halo) == expected


def test_the_halo_is_the_reach_rounded_up_to_the_grid():
    stage = tiles.StageGeometry("s", (("x", 1),), ("y", 4), reach=6, grid=4, tile=1)
    assert tiles.halo(stage) == 8 and tiles.halo(stage._replace(reach=8)) == 8
    assert tiles.halo(stage._replace(reach=0)) == 0


@pytest.mark.parametrize("tile, problem", [
    (0, None), (512, None), (64, None),
    (500, "--tile_size=500: it must be 0 (no tiles) or a positive multiple of 32"),
    (-32, "--tile_size=-32"),
])
def test_tiling_problem(tile, problem):
    found = tiles.tiling_problem(tile)
    assert found == problem if problem is None else found.startswith(problem)


def test_downscaled_size():
    assert tiles.downscaled_size(3000, 4000, 1000) == (750, 1000)
    assert tiles.downscaled_size(4000, 3000, 1000) == (1000, 750)
    assert tiles.downscaled_size(1000, 10, 100) == (100, 1)
    assert tiles.downscaled_size(300, 400, 400) == (300, 400)
    assert tiles.downscaled_size(3000, 4000, 0) == (3000, 4000)


def test_pad_to_multiple_fills_with_the_mean_pixel():
    image = np.ones((33, 64, 3), np.float32)
    padded, size = tiles.pad_to_multiple(image, 32, [1.0, 2.0, 3.0])
    assert padded.shape == (64, 64, 3) and size == (33, 64)
    np.testing.assert_array_equal(padded[33:], np.broadcast_to([1.0, 2.0, 3.0], (31, 64, 3)))
    np.testing.assert_array_equal(padded[:33], 1.0)


def test_a_padded_image_cuts_the_crops_of_the_padded_copy():
    image = photo(70, 45, seed=3)
    padded, _ = tiles.pad_to_multiple(image, 32, MEAN_PIXEL)
    lazy = tiles.PaddedImage(image, 32, MEAN_PIXEL)
    assert lazy.shape == padded.shape
    # Inside, across the image's edges, wholly in the padding, the whole, and empty.
    for rows, cols in ((slice(8, 40), slice(0, 32)), (slice(48, 96), slice(16, 64)),
                       (slice(72, 96), slice(48, 64)), (slice(0, 96), slice(0, 64)),
                       (slice(5, 5), slice(0, 64))):
        crop = lazy[rows, cols]
        assert crop.dtype == np.float32
        np.testing.assert_array_equal(crop, padded[rows, cols])


def test_aligned_empty_starts_on_the_boundary_tensorflow_feeds_without_a_copy():
    for shape, dtype in (((3, 5, 7), np.float32), ((1, 1), np.uint8), ((4, 2), np.float64)):
        array = tiles.aligned_empty(shape, dtype)
        assert array.shape == shape and array.dtype == dtype and array.ctypes.data % 64 == 0


# ---- the stage runner, on numpy stages of known reach ------------------------------------------

def box_sum(x, radius):
    """Each pixel's sum over the (2 radius + 1)^2 pixels around it, zeros outside (SAME)."""
    padded = np.pad(x, [(radius, radius), (radius, radius)] + [(0, 0)] * (x.ndim - 2))
    total = np.zeros_like(x)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            total += padded[dy:dy + x.shape[0], dx:dx + x.shape[1]]
    return total


def pool2(x):
    return x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]


# A three-stage "network" in integers (exact whatever the order of the sums): a box and a pool,
# a wider box at half scale, and a skip that joins the image at full scale again.
STAGES = (
    tiles.StageGeometry("box-pool", (("image", 1),), ("a", 2), reach=2, grid=2, tile=1),
    tiles.StageGeometry("box", (("a", 2),), ("b", 2), reach=6, grid=2, tile=2),
    tiles.StageGeometry("join", (("b", 2), ("image", 1)), ("c", 1), reach=1, grid=2, tile=1),
)


def numpy_stage(index, inputs):
    if index == 0:
        return pool2(box_sum(inputs[0], 1))
    if index == 1:
        return box_sum(inputs[0], 3)
    b, image = inputs
    return np.repeat(np.repeat(b, 2, axis=0), 2, axis=1) + box_sum(image, 1)


def whole(image):
    a = numpy_stage(0, [image])
    return numpy_stage(2, [numpy_stage(1, [a]), image])


@pytest.mark.parametrize("shape, tile", [((64, 96), 8), ((32, 32), 4), ((96, 64), 32)])
def test_staged_tiles_equal_the_whole_computation(shape, tile):
    image = np.random.RandomState(1).randint(0, 100, shape).astype(np.int64)
    seen = []

    def run(index, crops):
        seen.append(index)
        return numpy_stage(index, crops)

    maps = {"image": image}
    np.testing.assert_array_equal(tiles.run_stages(STAGES, maps, run, tile), whole(image))
    assert seen == sorted(seen) and len(seen) > 3  # stage by stage, in tiles
    assert maps == {}  # each map is dropped once no later stage reads it


@pytest.mark.parametrize("shape, tile", [((64, 96), 8), ((96, 64), 32), ((40, 24), 8)])
def test_the_last_stage_in_bands_gives_its_rows_in_order_and_equals_the_whole(shape, tile):
    image = np.random.RandomState(3).randint(0, 100, shape).astype(np.int64)
    maps, calls, bands, alive = {"image": image}, [], [], []
    for start, band in tiles.run_stages_in_bands(STAGES, maps, numpy_stage, tile,
                                                 lambda done, total: calls.append(done)):
        # Once let go here, no band before this one is held any more.
        assert [ref() is None for ref in alive] == [True] * len(alive)
        bands.append((start, band.copy()))
        alive.append(weakref.ref(band))
        del band
    last = STAGES[-1]
    side = tile * last.tile // last.output[1]  # the last stage's tile side at its scale
    assert [start for start, _ in bands] == list(range(0, shape[0] // last.output[1], side))
    np.testing.assert_array_equal(np.concatenate([band for _, band in bands]), whole(image))
    assert maps == {} and calls == list(range(1, len(calls) + 1))


def test_a_halo_short_of_the_reach_shows_at_the_seams():
    image = np.random.RandomState(2).randint(0, 100, (64, 64)).astype(np.int64)
    short = (STAGES[0], STAGES[1]._replace(reach=2), STAGES[2])
    got = tiles.run_stages(short, {"image": image}, numpy_stage, 8)
    assert (got != whole(image)).any()


def test_progress_counts_every_tile_of_every_stage():
    calls = []
    tiles.run_stages(STAGES, {"image": np.zeros((32, 32), np.int64)}, numpy_stage, 8,
                     progress=lambda done, total: calls.append((done, total)))
    expected = sum(len(tiles.stage_tiles(stage, 32, 32, 8)) for stage in STAGES)
    assert calls == [(k, expected) for k in range(1, expected + 1)]


# ---- the network: labels in tiles equal a whole-image pass -------------------------------------

def _graphs(vgg, variant, precision, classes, seed):
    """(session, the whole network's labels function, the tiled network): one graph, the weights
    random but for VGG's (the score layers of varied scale, so that the labels vary)."""
    graph = tf.Graph()
    with graph.as_default():
        model = network.Model(vgg, False, precision=precision, classes=classes, variant=variant,
                              widths=NARROW)
        tiled = tiled_network.TiledNetwork(vgg[1], variant, precision, classes.num_classes,
                                           NARROW)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
        rng = np.random.RandomState(seed)
        for variable in tf.global_variables():
            if not any(part in variable.op.name for part in ("conv", "fc")):
                shape = variable.shape.as_list()
                variable.load(rng.standard_normal(shape).astype(np.float32) * 0.3, sess)

    def whole_labels(image, probabilities=False):
        output = model.probabilities if probabilities else model.pred_annotation
        out = sess.run(output, {model.image: image[None], model.keep_probability: 1.0})[0]
        return out if probabilities else out[:, :, 0]
    return sess, whole_labels, tiled


@pytest.fixture(scope="module")
def narrow_weights():
    weights = vgg19_kernels(seed=0, widths=NARROW)
    weights.update(vgg19_fc_weights(seed=0, density=1.0, widths=NARROW))
    return weights, MEAN_PIXEL


def photo(h, w, seed):
    """A photo-like image: smooth colour regions with noise, so that labels vary in it."""
    from PIL import Image
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 255, (h // 24 + 2, w // 24 + 2, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float64)
    return np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("variant", [network.REFERENCE, network.PAPER])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_tiled_labels_equal_a_whole_image_pass(narrow_weights, variant, precision):
    """Photos of 1024x768, 1000x750 and odd sizes, and one smaller than a tile, padded as
    predict pads them; tiles of 32 cut every stage many times (1024x768: 768 tiles of its first
    stage). One of them has a single bright column, which changes labels far from it."""
    classes = datasets.class_info(datasets.FOLDER, ["c%d" % k for k in range(5)])
    sess, whole_labels, tiled = _graphs(narrow_weights, variant, precision, classes, seed=3)
    column = photo(200, 600, seed=9)
    column[:, 300] = 255
    cases = [photo(768, 1024, 1), photo(750, 1000, 2), photo(97, 131, 4), photo(40, 50, 5),
             column]
    with sess:
        for k, image in enumerate(cases):
            padded, _ = tiles.pad_to_multiple(image, tiles.ALIGN, MEAN_PIXEL)
            expected = whole_labels(padded)
            got = tiled.labels(sess, padded, 32 if k != 1 else 64)
            assert got.dtype == np.uint8 and got.shape == padded.shape[:2]
            assert len(np.unique(expected)) > 1, k  # labels that vary: the equality means much
            np.testing.assert_array_equal(got, expected, err_msg="image %d" % k)
        # Not only the labels: every probability, to the last bit.
        padded, _ = tiles.pad_to_multiple(cases[2], tiles.ALIGN, MEAN_PIXEL)
        bands = tiled.probability_bands(sess, padded, 32)
        np.testing.assert_array_equal(np.concatenate([band for _, band in bands]),
                                      whole_labels(padded, probabilities=True))
        # The column reaches labels beyond the first stage's halo: the tiles carried the rest.
        plain = photo(200, 600, seed=9)
        padded, _ = tiles.pad_to_multiple(plain, tiles.ALIGN, MEAN_PIXEL)
        differs = np.flatnonzero((whole_labels(padded) != expected).any(axis=0))
        assert differs.min() < 300 - 16 or differs.max() > 300 + 16


def test_tiles_short_of_a_stages_reach_differ_from_the_whole(narrow_weights, monkeypatch):
    classes = datasets.class_info(datasets.FOLDER, ["c%d" % k for k in range(5)])
    sess, whole_labels, tiled = _graphs(narrow_weights, network.REFERENCE, "fp32", classes, 3)
    short = list(tiled_network.GEOMETRY)
    short[4] = short[4]._replace(reach=0)  # fc6's 7x7 without its neighbours at the seams
    monkeypatch.setattr(tiled_network, "GEOMETRY", tuple(short))
    padded, _ = tiles.pad_to_multiple(photo(256, 512, 7), tiles.ALIGN, MEAN_PIXEL)
    with sess:
        assert (tiled.labels(sess, padded, 32) != whole_labels(padded)).any()


# ---- predict through the command line ------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model(module_tmp, model_dir):
    """A 3-class folder model trained 2 steps at 64x64: (the predict flags, a scratch folder)."""
    root = module_tmp("tiles")
    data = make_folder_dataset(str(root / "mine"), n_train=4, n_val=2, seed=5)
    logs = str(root / "logs")
    args = ["--dataset=folder", "--data_dir=" + data, "--model_dir=" + model_dir,
            "--logs_dir=" + logs] + SMALL
    run_fcn("--mode=train", "--max_iterations=2", "--save_every=2", *args)
    return args, root


def test_predict_in_tiles_equals_one_pass_and_counts_its_images(small_model, tmp_path):
    args, _ = small_model
    images = str(tmp_path / "in")
    os.makedirs(images)
    for name, (h, w) in {"wide.png": (70, 810), "tall.png": (800, 96)}.items():
        imageio.imwrite(os.path.join(images, name), photo(h, w, seed=len(name)))
    results = {}
    for label, flags in (("whole", ["--tile_size=0"]), ("tiled", ["--tile_size=64"])):
        out_dir = str(tmp_path / label)
        out = run_fcn("--mode=predict", "--image=" + images, "--output_dir=" + out_dir,
                      *(args + flags))
        for k, name in enumerate(sorted(["wide.png", "tall.png"]), 1):
            assert "[predicted %d/2 images, " % k in out and " images/s, eta " in out
        results[label] = {n: imageio.imread(os.path.join(out_dir, n[:-4] + "_pred.png"))
                          for n in ("wide.png", "tall.png")}
    for name in ("wide.png", "tall.png"):
        np.testing.assert_array_equal(results["tiled"][name], results["whole"][name])


def test_tile_overlap_is_refused_naming_what_replaced_it(small_model, tmp_path):
    args, _ = small_model
    out = run_fcn("--mode=predict", "--image=" + str(tmp_path), "--tile_overlap=256", *args,
                  expect=2)
    assert "FCN.py: error: --tile_overlap is no longer used" in out
    assert "--tile_size alone sets the tiles" in out


@pytest.mark.slow
def test_peak_memory_of_predict_does_not_grow_with_the_photo(full_size_logs, tmp_path):
    """1000x750, 2000x1500 and 4000x3000 photos, each predicted by the full-size network in a
    fresh process with the default tiles: the peaks are within 1 GiB of each other (untiled
    they grow with the photo: docs/predicting.md). What does grow with the photo is the
    image, the maps between stages, its labels and the overlay; the network's activations do
    not."""
    _, args = full_size_logs
    peaks = {}
    for w, h in ((1000, 750), (2000, 1500), (4000, 3000)):
        path = str(tmp_path / ("photo_%dx%d.png" % (w, h)))
        imageio.imwrite(path, np.random.RandomState(w).randint(0, 255, (h, w, 3), np.uint8))
        # Started from a waiter: a child of this process would count this one's peak as its own.
        code, stderr, peaks[(w, h)] = own_peak(
            [sys.executable, FCN_PY, "--mode=predict", "--image=" + path,
             "--output_dir=" + str(tmp_path / "out")] + args)
        assert code == 0, stderr[-3000:]
        os.remove(path)
    assert max(peaks.values()) - min(peaks.values()) <= 1 << 30, peaks
