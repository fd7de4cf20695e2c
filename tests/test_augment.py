"""--augment's transforms (augment.py) against numpy expectations on small hand-made pairs, and
the reader's seeding by (seed, epoch, position)."""
import colorsys

import numpy as np
import pytest

import augment
import BatchDatsetReader
from guards import FCNError
from tests.make_dataset import make_scene_dataset

MEAN = np.array([120.0, 110.0, 100.0])


def _settings(parts, size=32, low=0.5, high=2.0, ignore=None):
    return augment.augmentation_of(parts, size, low, high, MEAN, ignore, "nearest")


def _painted_pair(height, width, seed=0, block=4):
    """An image of random blocks of block x block pixels and its label painted from the image
    itself (label = red channel // 32): wherever the pair stays aligned, label ==
    image[..., 0] // 32 holds pixel for pixel."""
    rng = np.random.RandomState(seed)
    blocks = rng.randint(0, 8, (height // block + 1, width // block + 1))
    red = (np.kron(blocks, np.ones((block, block), int))[:height, :width] * 32
           + 16).astype(np.uint8)
    image = np.stack([red, rng.randint(0, 255, (height, width)),
                      rng.randint(0, 255, (height, width))], axis=2).astype(np.uint8)
    return image, (red // 32).astype(np.int32)


def test_parts_are_parsed_and_an_unknown_one_is_refused():
    assert augment.parse_parts("") == ()
    assert augment.parse_parts("all") == ("scale", "flip", "photometric")
    assert augment.parse_parts("flip, scale") == ("scale", "flip")
    with pytest.raises(FCNError, match="--augment=scale,rotate: rotate is not a part"):
        augment.parse_parts("scale,rotate")
    assert _settings("") is None


@pytest.mark.parametrize("seed", range(6))
def test_image_and_label_stay_aligned_through_scale_crop_and_flip(seed):
    image, label = _painted_pair(64, 96, seed, block=32)
    settings = _settings("scale,flip")
    out_image, out_label = augment.augment_pair(image, label, settings,
                                                augment.generator(seed, 0, seed))
    assert out_image.shape == (32, 32, 3) and out_label.shape == (32, 32, 1)
    out_label = out_label[..., 0]
    # Inside a block (a pixel whose 5x5 neighbourhood holds one label), bilinear resizing keeps
    # the block's own red value: there the label must be the one painted from it.
    padded = np.pad(out_label, 2, constant_values=augment.PAD_LABEL)
    interior = np.ones_like(out_label, bool)
    for dy in range(5):
        for dx in range(5):
            interior &= padded[dy:dy + 32, dx:dx + 32] == out_label
    interior &= out_label != augment.PAD_LABEL
    assert interior.sum() > 20
    red = out_image[..., 0].astype(int)
    np.testing.assert_array_equal(red[interior], out_label[interior] * 32 + 16)


def test_at_scale_one_the_crop_keeps_every_label_on_its_pixel():
    image, label = _painted_pair(32, 80, block=2)
    settings = _settings("scale,flip", size=32, low=1.0, high=1.0)
    for k in range(10):
        out_image, out_label = augment.augment_pair(image, label, settings,
                                                    augment.generator(0, 0, k))
        np.testing.assert_array_equal(out_label[..., 0], out_image[..., 0] // 32)
        # and the crop is a window of the pair itself, mirrored or not
        windows = [image[:, left:left + 32] for left in range(49)]
        assert any(np.array_equal(out_image, w) or np.array_equal(out_image, w[:, ::-1])
                   for w in windows)


def test_a_flip_mirrors_image_and_label_together():
    image, label = _painted_pair(32, 32)
    settings = _settings("flip", size=32)
    flipped = [augment.augment_pair(image, label, settings, augment.generator(0, 0, k))
               for k in range(20)]
    kinds = set()
    for out_image, out_label in flipped:
        if np.array_equal(out_image, image):
            kinds.add("kept")
            np.testing.assert_array_equal(out_label[..., 0], label)
        else:
            kinds.add("mirrored")
            np.testing.assert_array_equal(out_image, image[:, ::-1])
            np.testing.assert_array_equal(out_label[..., 0], label[:, ::-1])
    assert kinds == {"kept", "mirrored"}  # 20 draws at probability 0.5


def test_the_shorter_side_is_scaled_within_the_factors():
    assert augment.scaled_size(100, 200, 50) == (50, 100)
    assert augment.scaled_size(300, 150, 75) == (150, 75)
    # A small image scaled by the smallest factor is padded: the label's pad is PAD_LABEL, the
    # image's the mean pixel, at the bottom and right.
    image, label = _painted_pair(16, 16)
    settings = _settings("scale", size=32, low=0.5, high=0.5)
    out_image, out_label = augment.augment_pair(image, label, settings,
                                                augment.generator(1, 2, 3))
    out_label = out_label[..., 0]
    assert (out_label[:16, :16] != augment.PAD_LABEL).all()
    assert (out_label[16:, :] == augment.PAD_LABEL).all()
    assert (out_label[:, 16:] == augment.PAD_LABEL).all()
    np.testing.assert_array_equal(out_image[20, 20], np.round(MEAN).astype(np.uint8))


def test_padding_is_added_last_neither_flipped_nor_distorted():
    # mmsegmentation pads after the flip and the photometric distortion: whatever they draw,
    # the padding stays at the bottom and right, the image's the mean pixel exactly.
    image, label = _painted_pair(16, 16)
    settings = _settings("all", size=32, low=0.5, high=0.5)
    for position in range(12):
        out_image, out_label = augment.augment_pair(image, label, settings,
                                                    augment.generator(0, 0, position))
        assert (out_label[16:, :, 0] == augment.PAD_LABEL).all()
        assert (out_label[:, 16:, 0] == augment.PAD_LABEL).all()
        assert (out_label[:16, :16, 0] != augment.PAD_LABEL).all()
        assert (out_image[16:] == np.round(MEAN).astype(np.uint8)).all()
        assert (out_image[:, 16:] == np.round(MEAN).astype(np.uint8)).all()


def test_padding_takes_the_losss_ignore_label_when_it_has_one():
    assert _settings("scale", ignore=None).pad_label == augment.PAD_LABEL
    assert _settings("scale", ignore=0).pad_label == 0
    assert _settings("scale", ignore=255).pad_label == 255


def test_a_crop_dominated_by_one_class_is_drawn_again():
    # Left quarter class 1, the rest class 2: a 32-wide crop of the 128-wide label is all
    # class 2 (too uniform) unless it reaches into the left quarter.
    label = np.full((32, 128), 2, np.int32)
    label[:, :32] = 1
    assert augment.too_uniform(label[:, 64:96], augment.PAD_LABEL)
    assert not augment.too_uniform(label[:, 16:48], augment.PAD_LABEL)
    # ignored (pad) pixels do not count: 3 of class 1 against 1 of class 2 is 75%
    assert augment.too_uniform(np.array([[1, 1, 1, 2, 255, 255]]), 255)
    assert not augment.too_uniform(np.array([[1, 1, 2, 2, 255, 255]]), 255)
    # With a scale of 1, a crop's left edge is drawn from 0..96; the crop is mixed (each class
    # under 75%) only for a left edge of 9..23, 15 of 97. Ten draws miss with (82/97)**10.
    image = np.zeros((32, 128, 3), np.uint8)
    settings = _settings("scale", size=32, low=1.0, high=1.0)
    mixed = 0
    for k in range(400):
        _, out = augment.augment_pair(image, label, settings, augment.generator(0, 0, k))
        mixed += not augment.too_uniform(out[..., 0], augment.PAD_LABEL)
    expected = 1 - (82 / 97) ** augment.CROP_TRIES
    assert abs(mixed / 400 - expected) < 0.06  # 3 standard deviations of 400 draws
    assert mixed / 400 > 2 * 15 / 97  # well above one draw's chance


class ScriptedDraws:
    """A generator whose random() and uniform() return scripted values, and which records the
    range of each uniform() asked for."""

    def __init__(self, randoms, uniforms):
        self.randoms, self.uniforms, self.ranges = list(randoms), list(uniforms), []

    def random(self):
        return self.randoms.pop(0)

    def uniform(self, low, high):
        self.ranges.append((low, high))
        return self.uniforms.pop(0)


APPLY, SKIP = 0.1, 0.9  # random() values that apply a part (p = 0.5) and that skip it


def test_each_photometric_part_against_its_own_arithmetic():
    rng = np.random.RandomState(0)
    image = rng.randint(40, 216, (6, 6, 3)).astype(np.uint8)
    # brightness +20 alone (order: brightness, contrast first?, contrast, saturation, hue)
    out = augment.photometric(image, ScriptedDraws([APPLY, SKIP, SKIP, SKIP, SKIP], [20.0]))
    np.testing.assert_array_equal(out, np.clip(image.astype(int) + 20, 0, 255))
    # contrast x1.25 alone
    out = augment.photometric(image, ScriptedDraws([SKIP, APPLY, APPLY, SKIP, SKIP], [1.25]))
    np.testing.assert_array_equal(out, np.clip(np.round(image * 1.25), 0, 255))
    # hue turned by 30 degrees alone: colorsys's hue of each pixel moves by 30/360 (within
    # Pillow's 8-bit HSV rounding), saturation and value stay
    out = augment.photometric(image, ScriptedDraws([SKIP, SKIP, SKIP, SKIP, APPLY], [30.0]))
    before = np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in image.reshape(-1, 3)])
    after = np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in out.reshape(-1, 3)])
    vivid = before[:, 1] > 0.25
    turn = (after[vivid, 0] - before[vivid, 0]) % 1.0
    np.testing.assert_allclose(turn, 30 / 360, atol=0.02)
    # saturation x0.5 alone
    out = augment.photometric(image, ScriptedDraws([SKIP, SKIP, SKIP, APPLY, SKIP], [0.5]))
    after = np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in out.reshape(-1, 3)])
    np.testing.assert_allclose(after[:, 1], before[:, 1] * 0.5, atol=0.03)


def test_photometric_draws_from_mmsegmentations_ranges():
    draws = ScriptedDraws([APPLY, APPLY, APPLY, APPLY, APPLY], [0.0, 1.0, 1.0, 0.0])
    augment.photometric(np.zeros((2, 2, 3), np.uint8), draws)
    assert draws.ranges == [(-32, 32), (0.5, 1.5), (0.5, 1.5), (-36, 36)]
    # and with a real generator, most pairs change: all four parts skipped is 1 in 16
    image = np.random.RandomState(1).randint(40, 216, (8, 8, 3)).astype(np.uint8)
    changed = sum(not np.array_equal(augment.photometric(image, augment.generator(0, 0, k)),
                                     image) for k in range(200))
    assert changed >= 170


def test_the_same_seed_epoch_and_position_give_the_same_pair():
    image, label = _painted_pair(40, 60)
    settings = _settings("all")
    first = augment.augment_pair(image, label, settings, augment.generator(3, 1, 7))
    again = augment.augment_pair(image, label, settings, augment.generator(3, 1, 7))
    other = augment.augment_pair(image, label, settings, augment.generator(3, 2, 7))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_position_after_continues_the_batch_plan():
    # 10 records, batches of 3: 3 batches an epoch (one record skipped), so step 7 is the
    # second batch of the third epoch.
    assert BatchDatsetReader.position_after(10, 3, 0) == (0, 0)
    assert BatchDatsetReader.position_after(10, 3, 3) == (1, 0)
    assert BatchDatsetReader.position_after(10, 3, 7) == (2, 3)


def test_a_resumed_reader_sees_the_batches_of_one_never_stopped(tmp_path):
    from read_MITSceneParsingData import read_dataset
    make_scene_dataset(str(tmp_path), n_train=7, n_val=2, seed=3)
    records, _ = read_dataset(str(tmp_path))
    records = [r for r in records if r["annotation"]]
    options = {"augment": _settings("all", size=32), "seed": 4, "workers": 2}
    with BatchDatsetReader.BatchDatset(records, options) as straight:
        batches = [straight.next_batch(2) for _ in range(5)]
    with BatchDatsetReader.BatchDatset(records, options) as resumed:
        resumed.resume_after(3, 2)
        for images, labels in batches[3:]:
            again_images, again_labels = resumed.next_batch(2)
            np.testing.assert_array_equal(again_images, images)
            np.testing.assert_array_equal(again_labels, labels)
    # Two shards of a batch of 4 are its two halves, each augmented as one reader would.
    with BatchDatsetReader.BatchDatset(records, options) as whole:
        images, _ = whole.next_batch(4)
    for index in range(2):
        with BatchDatsetReader.BatchDatset(records, dict(options, shard=(index, 2))) as part:
            np.testing.assert_array_equal(part.next_batch(4)[0], images[2 * index:2 * index + 2])
    # Another epoch draws other augmentations of the same records.
    assert batches[0][0].shape == (2, 32, 32, 3)


def test_an_augment_option_of_the_wrong_kind_is_refused():
    with pytest.raises(FCNError, match="image option augment"):
        BatchDatsetReader.check_options({"augment": "all"})
