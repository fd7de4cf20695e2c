"""Predict in tiles (tiles.py): the spans against hand-worked cases, stitching with a local
function whose untiled result numpy computes directly, the network's labels in tiles whose kept
interiors have the context of its whole receptive field equal to an untiled run, and predict's
peak memory on photos of three sizes, each in a fresh process.
"""
import os
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

import tiles
from tests.make_dataset import make_folder_dataset
from tests.project import FCN_PY, SMALL, run_fcn

# The farthest input pixel that changes an output label of FCN-8s (VGG-19's 16 convolutions,
# fc6's 7x7 at 1/32 and the three transposed convolutions), measured by perturbing single input
# columns: 252 pixels; a kept interior with this much context on every side is exact.
RECEPTIVE_RADIUS = 256


# ---- the spans, by hand ------------------------------------------------------------------------

@pytest.mark.parametrize("length, tile, overlap, expected", [
    # one tile when the axis fits, or tile 0
    (96, 128, 64, [(0, 96, 0, 96)]),
    (128, 128, 64, [(0, 128, 0, 128)]),
    (640, 0, 0, [(0, 640, 0, 640)]),
    # stride 64; the neighbours' overlaps [64,128), [128,192), [192,256) split in the middle
    (320, 128, 64, [(0, 128, 0, 96), (64, 192, 96, 160), (128, 256, 160, 224),
                    (192, 320, 224, 320)]),
    # the last tile moved back to end at the edge: it overlaps its neighbour by 96
    (224, 128, 64, [(0, 128, 0, 96), (64, 192, 96, 144), (96, 224, 144, 224)]),
    # a stride of 128 - 40 = 88 rounded down to 64: the same tiles as overlap 64
    (320, 128, 40, [(0, 128, 0, 96), (64, 192, 96, 160), (128, 256, 160, 224),
                    (192, 320, 224, 320)]),
    (256, 128, 0, [(0, 128, 0, 128), (128, 256, 128, 256)]),
    (640, 512, 256, [(0, 512, 0, 320), (128, 640, 320, 640)]),
])
def test_spans_hand_worked(length, tile, overlap, expected):
    assert tiles.spans(length, tile, overlap) == expected


@pytest.mark.parametrize("tile, overlap", [(64, 0), (128, 64), (128, 96), (512, 256), (320, 32)])
def test_kept_ranges_cover_each_pixel_once_with_the_context_promised(tile, overlap):
    for length in range(32, 2049, 32):
        result = tiles.spans(length, tile, overlap)
        assert result[0][2] == 0 and result[-1][3] == length
        for (s, e, ks, ke), following in zip(result, result[1:] + [None]):
            assert s % 32 == 0 and e - s == min(tile, length) and 0 <= s <= ks < ke <= e <= length
            if following is not None:
                assert following[2] == ke  # abutting, in order
            if s > 0:
                assert ks - s >= overlap // 2
            if e < length:
                assert e - ke >= overlap // 2


@pytest.mark.parametrize("tile, overlap, problem", [
    (0, 0, None), (512, 256, None), (64, 32, None),
    (500, 0, "--tile_size=500: it must be 0 (no tiles) or a positive multiple of 32"),
    (-32, 0, "--tile_size=-32"),
    (128, -1, "--tile_overlap=-1: it must be 0 or more"),
    (128, 100, "--tile_overlap=100 leaves tiles of --tile_size=128 less than 32 new pixels"),
])
def test_tiling_problem(tile, overlap, problem):
    found = tiles.tiling_problem(tile, overlap)
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


# ---- stitching, with a function of known reach -------------------------------------------------

def box_labels(image, radius):
    """A 'network' whose label at a pixel depends on the pixels within radius: the sum of the
    (2r+1)^2 window, zero-padded at the crop's borders, modulo 7."""
    padded = np.pad(image[:, :, 0].astype(np.int64), radius)
    h, w = image.shape[:2]
    total = np.zeros((h, w), np.int64)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            total += padded[dy:dy + h, dx:dx + w]
    return (total % 7).astype(np.uint8)


def test_stitched_tiles_equal_the_whole_where_the_overlap_covers_the_reach():
    rng = np.random.RandomState(0)
    image = rng.randint(0, 255, (224, 320, 3)).astype(np.uint8)
    whole = box_labels(image, 5)
    stitched = tiles.predict_tiled(image, 128, 64, lambda crop: box_labels(crop, 5))
    np.testing.assert_array_equal(stitched, whole)
    # Without overlap the seams see zeros where the neighbours' pixels are: the test can fail.
    seams = tiles.predict_tiled(image, 128, 0, lambda crop: box_labels(crop, 5))
    differ = seams != whole
    # The first tile (rows 0..127, columns 0..127) keeps rows 0..111 and columns 0..127: wrong
    # only within 5 pixels of its seam at column 128.
    assert differ[:112, 123:128].any() and not differ[:112, :123].any()


# ---- the network ------------------------------------------------------------------------------

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


def photo(h, w, seed):
    """A photo-like image: smooth colour regions with noise, so that labels vary in it."""
    from PIL import Image
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 255, (h // 24 + 2, w // 24 + 2, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float64)
    return np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8)


def test_tile_interiors_equal_an_untiled_run(small_model, tmp_path):
    """Tiles of 640 overlapping by 512: every kept label has 256 pixels of context on each side
    inside the image, the network's whole reach, so it must equal the untiled run's; one image
    is cut along its width, the other along its height (each a multiple of 32 and not)."""
    args, _ = small_model
    images = str(tmp_path / "in")
    os.makedirs(images)
    for name, (h, w) in {"wide.png": (70, 810), "tall.png": (800, 96)}.items():
        imageio.imwrite(os.path.join(images, name), photo(h, w, seed=len(name)))
    results = {}
    for label, flags in (("untiled", ["--tile_size=0"]),
                         ("exact", ["--tile_size=640", "--tile_overlap=512"]),
                         ("narrow", ["--tile_size=128", "--tile_overlap=0"])):
        out_dir = str(tmp_path / label)
        out = run_fcn("--mode=predict", "--image=" + images, "--output_dir=" + out_dir,
                      *(args + flags))
        assert out.count(" -> ") == 2
        results[label] = {n: imageio.imread(os.path.join(out_dir, n[:-4] + "_pred.png"))
                          for n in ("wide.png", "tall.png")}
    for name in ("wide.png", "tall.png"):
        untiled = results["untiled"][name]
        assert len(np.unique(untiled)) > 1  # labels that vary: an equality that means something
        np.testing.assert_array_equal(results["exact"][name], untiled)
        # Tiles without context differ from it, so this comparison can fail.
        assert (results["narrow"][name] != untiled).any()


@pytest.mark.slow
def test_peak_memory_of_predict_does_not_grow_with_the_photo(full_size_logs, tmp_path):
    """1000x750, 2000x1500 and 4000x3000 photos, each predicted by the full-size network in a
    fresh process with the same tiles: the peaks are within 1 GiB of each other (untiled,
    2000x1500 took 6.8 GB and 4000x3000 ran out of 20 GB). What does grow with the photo is the
    image, its padded float copy, its labels and the overlay (about 0.6 GB at 4000x3000); the
    network's activations do not. Tiles of 512 without overlap keep the test's cost to the
    photos' pixels."""
    _, args = full_size_logs
    peaks = {}
    for w, h in ((1000, 750), (2000, 1500), (4000, 3000)):
        path = str(tmp_path / ("photo_%dx%d.png" % (w, h)))
        imageio.imwrite(path, np.random.RandomState(w).randint(0, 255, (h, w, 3), np.uint8))
        proc = subprocess.Popen([sys.executable, FCN_PY, "--mode=predict", "--image=" + path,
                                 "--output_dir=" + str(tmp_path / "out"), "--tile_size=512",
                                 "--tile_overlap=0"] + args,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read()[-3000:]
        peaks[(w, h)] = usage.ru_maxrss * 1024  # KiB on Linux
        os.remove(path)
    assert max(peaks.values()) - min(peaks.values()) <= 1 << 30, peaks
