"""BatchDatsetReader: shapes, pixels and labels, order and epochs, bad data, streaming."""
import gc
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

import BatchDatsetReader as reader
import image_files
import read_MITSceneParsingData as scene
from guards import FCNError

import imageio.v2 as imageio


@pytest.fixture(scope="module")
def records(scene_data_dir):
    training, _ = scene.pair_records(
        [os.path.join(scene_data_dir, "ADEChallengeData2016", "images", "training", n)
         for n in sorted(os.listdir(os.path.join(scene_data_dir, "ADEChallengeData2016",
                                                 "images", "training")))],
        [os.path.join(scene_data_dir, "ADEChallengeData2016", "annotations", "training", n)
         for n in sorted(os.listdir(os.path.join(scene_data_dir, "ADEChallengeData2016",
                                                 "annotations", "training")))])
    return training


def _sequence(batches, calls, batch_size):
    """[(epochs_completed, batch_offset, filenames, images, annotations)] of calls batches."""
    out = []
    for _ in range(calls):
        images, annotations = batches.next_batch(batch_size)
        out.append((batches.epochs_completed, batches.batch_offset,
                    [r["filename"] for r in batches.last_batch_records], images, annotations))
    return out


def _write_pair(folder, name, image, label, image_ext=".png"):
    image_path = os.path.join(str(folder), name + image_ext)
    label_path = os.path.join(str(folder), name + "_label.png")
    imageio.imwrite(image_path, image)
    imageio.imwrite(label_path, label)
    return {"image": image_path, "annotation": label_path, "filename": name}


# ---- pixels (pure) ---------------------------------------------------------------------------

def test_to_rgb_grayscale_alpha_and_depths():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = image_files.to_rgb(gray)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert all(np.array_equal(rgb[:, :, c], gray) for c in range(3))
    rgba = np.dstack([gray, gray + 1, gray + 2, np.full_like(gray, 7)])
    assert np.array_equal(image_files.to_rgb(rgba), rgba[:, :, :3])
    assert np.array_equal(image_files.to_rgb(np.dstack([gray, np.zeros_like(gray)]))[:, :, 2], gray)
    assert np.array_equal(image_files.to_rgb(np.array([[0x1234, 0xff00]], np.uint16))[0, :, 0],
                          [0x12, 0xff])
    assert np.array_equal(image_files.to_rgb(np.array([[True, False]]))[0, :, 1], [255, 0])


def test_files_in_other_modes_become_rgb(tmp_path):
    colour = (200, 40, 90)
    solid = np.zeros((16, 16, 3), np.uint8) + np.array(colour, np.uint8)
    Image.fromarray(solid).convert("CMYK").save(str(tmp_path / "cmyk.jpg"), quality=100)
    Image.fromarray(solid).convert("P", palette=Image.ADAPTIVE, colors=4).save(
        str(tmp_path / "palette.png"))
    rgba = np.dstack([solid, np.full((16, 16), 10, np.uint8)])
    Image.fromarray(rgba).save(str(tmp_path / "rgba.png"))
    for name, tolerance in (("cmyk.jpg", 6), ("palette.png", 0), ("rgba.png", 0)):
        image = image_files.read_image(str(tmp_path / name))
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8, name
        assert np.abs(image.astype(int) - colour).max() <= tolerance, name


def test_palette_annotation_is_read_as_indices(tmp_path):
    labels = (np.arange(20 * 30) % 9).reshape(20, 30).astype(np.uint8)
    image = Image.fromarray(labels, "P")
    image.putpalette([(i * 37) % 256 for i in range(9 * 3)])
    image.save(str(tmp_path / "p.png"))
    assert np.array_equal(image_files.read_annotation(str(tmp_path / "p.png")), labels)


def test_images_nearest_by_default_or_bilinear_and_labels_always_nearest():
    checker = ((np.indices((40, 40)).sum(axis=0) // 1) % 2 * 255).astype(np.uint8)
    image = np.dstack([checker] * 3)
    # Bilinear mixes neighbours: values between black and white appear; nearest would not.
    resized = image_files.resize_image(image, 25, 30, "bilinear")
    assert resized.shape == (25, 30, 3) and 0 < resized.mean() < 255
    assert len(np.unique(resized)) > 2
    # The reference's default, misc.imresize(interp='nearest'): only the source's values.
    nearest = image_files.resize_image(image, 25, 30)
    assert nearest.shape == (25, 30, 3) and set(np.unique(nearest)) == {0, 255}
    labels = np.zeros((40, 40), np.uint8)
    labels[::2] = 150
    labels[:, ::3] = 7
    assert set(np.unique(image_files.resize_label(labels, 25, 25))) <= {0, 7, 150}


# ---- shapes, labels, grayscale through the reader --------------------------------------------

def test_shapes_and_dtypes(records):
    with reader.BatchDatset(records, {"resize": True, "resize_size": 48}) as batches:
        images, annotations = batches.next_batch(5)
    assert images.shape == (5, 48, 48, 3) and images.dtype == np.uint8
    assert annotations.shape == (5, 48, 48, 1) and annotations.dtype == np.int32
    assert not hasattr(batches, "images") and not hasattr(batches, "annotations")  # streaming
    assert batches.records == records


def test_every_resized_annotation_keeps_only_its_source_values(records):
    options = {"resize": True, "resize_size": 57, "shuffle": False}
    with reader.BatchDatset(records, options) as batches:
        for record in records:
            _, annotations = batches.next_batch(1)
            source = set(np.unique(np.asarray(Image.open(record["annotation"]))))
            assert batches.last_batch_records == [record]
            assert set(np.unique(annotations)) <= source and len(source) > 1


@pytest.mark.parametrize("interpolation, pillow_filter", [("nearest", Image.NEAREST),
                                                          ("bilinear", Image.BILINEAR)])
def test_batch_pixels_are_the_records_resized(records, interpolation, pillow_filter):
    options = {"resize": True, "resize_size": 40, "seed": 3, "interpolation": interpolation}
    with reader.BatchDatset(records, options) as batches:
        images, annotations = batches.next_batch(4)
        for image, annotation, record in zip(images, annotations, batches.last_batch_records):
            with Image.open(record["image"]) as source:
                expected = np.asarray(source.convert("RGB").resize((40, 40), pillow_filter))
            with Image.open(record["annotation"]) as source:
                labels = np.asarray(source.resize((40, 40), Image.NEAREST))
            assert np.abs(image.astype(int) - expected).max() <= 1
            assert np.array_equal(annotation[:, :, 0], labels)


def test_grayscale_jpeg_becomes_three_equal_channels(records):
    gray = [r for r in records if r["filename"] == "ADE_train_00000003"]
    with Image.open(gray[0]["image"]) as source:
        assert source.mode == "L"  # the generator really wrote a grayscale JPEG
        expected = np.asarray(source.resize((32, 32), Image.BILINEAR))
    with reader.BatchDatset(gray, {"resize": True, "resize_size": 32,
                                   "interpolation": "bilinear"}) as batches:
        images, _ = batches.next_batch(1)
    assert images.shape == (1, 32, 32, 3)
    for channel in range(3):
        assert np.abs(images[0, :, :, channel].astype(int) - expected).max() <= 1


def test_without_resize_original_size_and_mixed_sizes_refused(records):
    with reader.BatchDatset(records, {"shuffle": False}) as batches:
        images, annotations = batches.next_batch(1)
        height, width = Image.open(records[0]["image"]).size[::-1]
        assert images.shape == (1, height, width, 3) and annotations.shape == (1, height, width, 1)
    sizes = {Image.open(r["image"]).size for r in records[:4]}
    assert len(sizes) > 1  # the generator varies the sizes
    with reader.BatchDatset(records, {"shuffle": False}) as batches:
        with pytest.raises(FCNError, match="images of different sizes .* resizing is off"):
            batches.next_batch(4)


# ---- order and epochs ------------------------------------------------------------------------

def test_batch_plan_never_straddles_epochs():
    plan = reader.batch_plan(10, 3)
    assert [next(plan) for _ in range(5)] == [(0, 0, 3), (0, 3, 6), (0, 6, 9), (1, 0, 3),
                                              (1, 3, 6)]
    plan = reader.batch_plan(10, 3, drop_remainder=False)
    assert [next(plan) for _ in range(5)] == [(0, 0, 3), (0, 3, 6), (0, 6, 9), (0, 9, 10),
                                              (1, 0, 3)]
    plan = reader.batch_plan(9, 3, epoch=2, offset=6)
    assert [next(plan) for _ in range(2)] == [(2, 6, 9), (3, 0, 3)]
    with pytest.raises(ValueError):
        next(reader.batch_plan(2, 3))


def test_epochs_are_permutations_with_reference_bookkeeping(records):
    options = {"resize": True, "resize_size": 16, "seed": 5}
    with reader.BatchDatset(records, options) as batches:  # 24 records, 5 a batch: 4 an epoch
        seen = _sequence(batches, 12, 5)
    assert [(e, o) for e, o, _, _, _ in seen] == [(0, 5), (0, 10), (0, 15), (0, 20),
                                                  (1, 5), (1, 10), (1, 15), (1, 20),
                                                  (2, 5), (2, 10), (2, 15), (2, 20)]
    epochs = [sum((names for _, _, names, _, _ in seen[i:i + 4]), []) for i in (0, 4, 8)]
    all_names = sorted(r["filename"] for r in records)
    for names in epochs:
        assert len(set(names)) == 20 and set(names) <= set(all_names)
    assert epochs[0] != epochs[1] != epochs[2]  # a fresh permutation each epoch
    assert epochs[0] != all_names[:20]  # shuffled


def test_same_seed_same_batches_whatever_the_workers(records):
    runs = []
    for workers, seed in ((1, 11), (3, 11), (2, 12)):
        options = {"resize": True, "resize_size": 16, "seed": seed, "workers": workers}
        with reader.BatchDatset(records, options) as batches:
            runs.append(_sequence(batches, 7, 6))
    for a, b in zip(runs[0], runs[1]):
        assert a[2] == b[2] and np.array_equal(a[3], b[3]) and np.array_equal(a[4], b[4])
    assert [a[2] for a in runs[0]] != [c[2] for c in runs[2]]


def test_fixed_order_with_short_last_batch_for_validation(records):
    options = {"resize": True, "resize_size": 16, "shuffle": False, "drop_remainder": False}
    with reader.BatchDatset(records, options) as batches:
        seen = _sequence(batches, 6, 5)
    names = [r["filename"] for r in records]
    assert [s[2] for s in seen] == [names[0:5], names[5:10], names[10:15], names[15:20],
                                    names[20:24], names[0:5]]
    assert seen[4][3].shape[0] == 4 and seen[5][0] == 1


def test_reset_batch_offset_and_random_batches_leave_the_order(records):
    options = {"resize": True, "resize_size": 16, "seed": 2}
    with reader.BatchDatset(records, options) as plain:
        expected = [s[2] for s in _sequence(plain, 6, 4)]
    with reader.BatchDatset(records, options) as batches:
        first = _sequence(batches, 2, 4)
        batches.reset_batch_offset()
        assert [s[2] for s in _sequence(batches, 1, 4)] == [first[0][2]]
        random_images, _ = batches.get_random_batch(6)
        random_names = [r["filename"] for r in batches.last_batch_records]
        assert random_images.shape == (6, 16, 16, 3) and len(set(random_names)) == 6
        rest = [s[2] for s in _sequence(batches, 5, 4)]
    assert [first[0][2]] + rest == expected
    with reader.BatchDatset(records, options) as again:
        again.get_random_batch(6)
        assert [r["filename"] for r in again.last_batch_records] == random_names


def test_changing_the_batch_size_continues_from_the_offset(records):
    options = {"resize": True, "resize_size": 16, "shuffle": False}
    with reader.BatchDatset(records, options) as batches:
        batches.next_batch(3)
        batches.next_batch(5)
        assert batches.batch_offset == 8
        assert [r["filename"] for r in batches.last_batch_records] == \
            [r["filename"] for r in records[3:8]]


# ---- bad data --------------------------------------------------------------------------------

def test_label_above_150_stops_naming_file_and_value(tmp_path):
    label = np.zeros((20, 30), np.uint8)
    label[5, 5] = 200
    record = _write_pair(tmp_path, "bad_value", np.zeros((20, 30, 3), np.uint8), label)
    with reader.BatchDatset([record], {"resize": True, "resize_size": 8}) as batches:
        with pytest.raises(FCNError, match=r"annotation .*bad_value_label\.png holds the value "
                                           r"200, outside the classes 0\.\.150"):
            batches.next_batch(1)
        with pytest.raises(FCNError):  # and keeps saying so, never hangs
            batches.next_batch(1)
    with pytest.raises(FCNError, match="value 200"):
        image_files.validate_records([record])


def test_size_mismatch_stops_naming_both(tmp_path):
    record = _write_pair(tmp_path, "pair", np.zeros((20, 30, 3), np.uint8),
                         np.zeros((20, 31), np.uint8))
    pattern = r"image .*pair\.png is 20x30 but its annotation .*pair_label\.png is 20x31"
    with reader.BatchDatset([record], {"resize": True, "resize_size": 8}) as batches:
        with pytest.raises(FCNError, match=pattern):
            batches.next_batch(1)
    with pytest.raises(FCNError, match=pattern):
        image_files.validate_records([record], max_check=0)  # from the headers alone


def test_colour_annotation_is_refused(tmp_path):
    label = np.zeros((10, 10, 3), np.uint8)
    label[:, :, 1] = 3
    record = _write_pair(tmp_path, "colour", np.zeros((10, 10, 3), np.uint8), label)
    with pytest.raises(FCNError, match=r"colour_label\.png is a colour image"):
        image_files.load_pair(record)


@pytest.fixture(scope="module")
def many_records(module_tmp):
    """150 records of one small good pair, and two truncated JPEGs."""
    folder = module_tmp("many")
    rng = np.random.default_rng(0)
    good = _write_pair(folder, "good", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8),
                       rng.integers(0, 151, (24, 24), dtype=np.uint8), ".jpg")
    with open(good["image"], "rb") as f:
        data = f.read()
    bad = []
    for i in range(2):
        path = os.path.join(str(folder), "truncated%d.jpg" % i)
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])
        bad.append(dict(good, image=path, filename="truncated%d" % i))
    return [dict(good, filename="good%03d" % i) for i in range(148)], bad


def test_unreadable_file_is_skipped_with_a_warning(many_records, capsys):
    good, bad = many_records
    records = good[:70] + bad[:1] + good[70:]  # 149 records, one unreadable: 0.7%
    options = {"resize": True, "resize_size": 8, "shuffle": False}
    with reader.BatchDatset(records, options) as batches:
        names = sum((s[2] for s in _sequence(batches, 14, 10)), [])  # all but the last 9
    assert "truncated0" not in names and len(names) == 140
    assert names[70] == "good070"  # the next record took its place
    out = capsys.readouterr().out
    assert "%s is unreadable" % bad[0]["image"] in out and "skipped" in out


def test_unreadable_file_in_a_visit_of_every_record_once_shortens_its_batch(many_records):
    good, bad = many_records
    records = good[:12] + bad[:1] + good[12:100]  # 101 records, one unreadable
    options = {"resize": True, "resize_size": 8, "shuffle": False, "drop_remainder": False}
    with reader.BatchDatset(records, options) as batches:
        seen = _sequence(batches, 11, 10)
    names = sum((s[2] for s in seen), [])
    assert [len(s[2]) for s in seen] == [10, 9] + [10] * 8 + [1]
    assert names == [r["filename"] for r in records if r is not bad[0]]  # each once, in order


def test_more_than_one_percent_unreadable_stops(many_records):
    good, bad = many_records
    records = bad[:1] + good + bad[1:]  # 150 records, two unreadable: 1.3%
    options = {"resize": True, "resize_size": 8, "shuffle": False}
    with reader.BatchDatset(records, options) as batches:
        with pytest.raises(FCNError, match=r"2 of 150 records are unreadable, more than 1%"):
            _sequence(batches, 15, 10)


def test_unreadable_message_names_the_file_and_what_is_wrong():
    path = os.path.join("data", "images", "a.png")
    assert (image_files.unreadable_message(path, None, None)
            == "%s is unreadable: missing or not readable" % path)
    assert (image_files.unreadable_message(path, 0, None)
            == "%s is unreadable: empty (0 bytes)" % path)
    # The decoder's words, without its own mention of the path (the line names it once).
    assert (image_files.unreadable_message(path, 17, "cannot identify image file '%s'" % path)
            == "%s is unreadable: not a decodable image (cannot identify image file)" % path)
    truncated = "image file is truncated (9 bytes not processed)"
    assert (image_files.unreadable_message(path, 17, truncated)
            == "%s is unreadable: not a decodable image (image file is truncated (9 bytes not "
               "processed))" % path)


def test_unreadable_files_say_what_is_wrong(tmp_path, many_records):
    empty, junk = str(tmp_path / "empty.png"), str(tmp_path / "junk.png")
    open(empty, "wb").close()
    with open(junk, "wb") as f:
        f.write(b"not an image at all")
    cases = [(empty, "empty (0 bytes)"), (str(tmp_path / "gone.png"), "missing or not readable"),
             (str(tmp_path), "missing or not readable"),
             # imageio says only "`pillow` can not handle the given uri"; Pillow says why.
             (junk, "not a decodable image (cannot identify image file)"),
             (many_records[1][0]["image"], "not a decodable image (truncated file read)")]
    for path, problem in cases:
        for read in (image_files.read_image, image_files.read_annotation):
            with pytest.raises(image_files.UnreadableFile) as caught:
                read(path)
            assert str(caught.value).lower() == ("%s is unreadable: %s" % (path, problem)).lower()


@pytest.mark.parametrize("dataset, advice, not_advice", [
    ("ade20k", "downloaded again", "your own files"),
    ("voc", "downloaded again", "your own files"),
    ("folder", "your own files: fix each file named, or remove it together with its pair",
     "downloaded again"),
])
def test_too_many_unreadable_files_get_the_advice_of_the_datasets_origin(
        many_records, dataset, advice, not_advice):
    good, bad = many_records
    records = bad[:1] + good[:10]
    with pytest.raises(FCNError) as caught:
        image_files.validate_records(records, dataset=dataset)
    message = str(caught.value)
    assert message.startswith("1 of 11 records are unreadable, more than 1%% (first: %s is "
                              "unreadable: not a decodable image" % bad[0]["image"])
    assert advice in message and not_advice not in message
    with reader.BatchDatset(records, {"resize": True, "resize_size": 8, "shuffle": False,
                                      "dataset": dataset}) as batches:
        with pytest.raises(FCNError, match="1 of 11 records") as caught:
            batches.next_batch(2)
    assert advice in str(caught.value) and not_advice not in str(caught.value)


def test_empty_records_and_bad_options_are_errors(records):
    with pytest.raises(FCNError, match="has none"):
        reader.BatchDatset([], {})
    with pytest.raises(FCNError, match="unknown image option 'resise'"):
        reader.BatchDatset(records, {"resise": True})
    with pytest.raises(FCNError, match="resize_size is None"):
        reader.BatchDatset(records, {"resize": True})
    with pytest.raises(FCNError, match="interpolation is 'cubic'; use nearest or bilinear"):
        reader.BatchDatset(records, {"interpolation": "cubic"})
    with reader.BatchDatset(records, {"resize": True, "resize_size": 8}) as batches:
        with pytest.raises(FCNError, match="batch size 25 is larger than the 24 records"):
            batches.next_batch(25)


def test_validate_records_passes_good_data(records):
    assert image_files.validate_records(records, max_check=None) == 0


# ---- streaming -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def large_pair(module_tmp):
    """One pair of ADE20K size (512x683)."""
    from tests.make_dataset import make_scene_dataset
    root = str(module_tmp("large"))
    make_scene_dataset(root, n_train=1, n_val=0, size_range=(512, 683))
    return scene.scan_split(os.path.join(root, "ADEChallengeData2016"), "training")[0]


def _threads():
    return [t for t in threading.enumerate() if t.name.startswith("BatchDatset-")]


def test_next_batch_returns_at_once_when_prefetch_is_warm(large_pair):
    options = {"resize": True, "resize_size": 224, "prefetch": 3}
    started = time.perf_counter()
    for _ in range(10):
        image_files.load_pair(large_pair, 224)
    decode_batch = time.perf_counter() - started
    with reader.BatchDatset([large_pair] * 40, options) as batches:
        batches.next_batch(10)
        deadline = time.time() + 30
        while batches.prefetched < 3 and time.time() < deadline:
            time.sleep(0.02)
        started = time.perf_counter()
        batches.next_batch(10)
        waited = time.perf_counter() - started
    assert waited < decode_batch / 10, (waited, decode_batch)


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/self/status")
def test_memory_is_bounded_by_the_prefetch_not_the_records(large_pair):
    # Loaded whole, 2,000 records at 224 would take 2000 * 224*224 * (3 + 4) bytes = 700 MB.
    options = {"resize": True, "resize_size": 224, "prefetch": 4}

    def resident_after(n):
        with reader.BatchDatset([large_pair] * n, options) as batches:
            for _ in range(4):
                batches.next_batch(5)
            time.sleep(0.3)  # let the prefetch fill
            rss = _rss_mb()
        gc.collect()
        return rss

    small = resident_after(20)
    started = time.perf_counter()
    large = resident_after(2000)
    assert time.perf_counter() - started < 10  # nothing decoded up front
    print("RSS %.0f MB after 20 records, %.0f MB after 2000" % (small, large))
    assert large - small < 150, (small, large)


def _threads_of(make_reader):
    """The threads a reader started (made and used by make_reader), and the reader."""
    before = set(_threads())
    batches = make_reader()
    return set(_threads()) - before, batches


def _all_stop(threads):
    deadline = time.time() + 5
    while any(t.is_alive() for t in threads) and time.time() < deadline:
        time.sleep(0.02)
    return not any(t.is_alive() for t in threads)


def _used_reader(records):
    batches = reader.BatchDatset(records, {"resize": True, "resize_size": 8, "workers": 2})
    batches.next_batch(2)
    return batches


def test_close_and_forgetting_a_reader_stop_its_threads(records):
    threads, batches = _threads_of(lambda: _used_reader(records))
    assert len(threads) == 3  # two workers and the producer
    assert all(t.daemon for t in threads)  # the process can exit without close()
    batches.close()
    assert _all_stop(threads)
    with pytest.raises(RuntimeError, match="closed"):
        batches.next_batch(2)
    threads, batches = _threads_of(lambda: _used_reader(records))
    assert len(threads) == 3
    del batches
    gc.collect()
    assert _all_stop(threads)
