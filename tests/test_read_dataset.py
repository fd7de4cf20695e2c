"""read_MITSceneParsingData: pairing (also with Windows paths), the JSON record cache (a pickle in
its place is never executed), class names."""
import glob
import json
import ntpath
import os
import pickle
import posixpath
import shutil

import numpy as np
import pytest
from PIL import Image

import read_MITSceneParsingData as scene
from guards import FCNError

TRAIN_NAMES = ["ADE_train_%08d" % i for i in range(1, 25)]
VAL_NAMES = ["ADE_val_%08d" % i for i in range(1, 9)]


@pytest.fixture
def data_dir(tmp_path, scene_data_dir):
    """A private copy of the generated data_dir (without any cache written into the shared one)."""
    target = tmp_path / "data"
    shutil.copytree(os.path.join(scene_data_dir, "ADEChallengeData2016"),
                    str(target / "ADEChallengeData2016"))
    return str(target)


# ---- the generated dataset ------------------------------------------------------------------

def test_generated_dataset_layout_and_learnability(scene_data_dir):
    from tests.make_dataset import CLASS_COLOURS
    base = os.path.join(scene_data_dir, "ADEChallengeData2016")
    images = sorted(os.listdir(os.path.join(base, "images", "training")))
    annotations = sorted(os.listdir(os.path.join(base, "annotations", "training")))
    assert images == ["ADE_train_%08d.jpg" % i for i in range(1, 26)]
    assert annotations == ["ADE_train_%08d.png" % i for i in range(1, 25)]
    assert sorted(os.listdir(os.path.join(base, "images", "validation"))) == \
        ["ADE_val_%08d.jpg" % i for i in range(1, 9)]
    with open(os.path.join(base, "objectInfo150.txt"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "Idx\tRatio\tTrain\tVal\tName" and len(lines) == 151
    modes, sizes, hits, total = [], set(), 0, 0
    colours = np.array([CLASS_COLOURS[c] for c in sorted(CLASS_COLOURS)], np.float64)
    for name in annotations:
        with Image.open(os.path.join(base, "images", "training", name[:-4] + ".jpg")) as image:
            modes.append(image.mode)
            rgb = np.asarray(image.convert("RGB"), np.float64)
        with Image.open(os.path.join(base, "annotations", "training", name)) as label_image:
            assert label_image.mode == "L"
            label = np.asarray(label_image)
        assert label.shape == rgb.shape[:2] and 64 <= min(label.shape) <= max(label.shape) <= 100
        assert set(np.unique(label)) <= set(CLASS_COLOURS) and len(np.unique(label)) > 1
        sizes.add(label.shape)
        if image.mode == "RGB":  # learnable: even the nearest class colour labels most pixels
            nearest = np.argmin(((rgb[:, :, None, :] * 1.18 - colours) ** 2).sum(axis=3), axis=2)
            hits, total = hits + (nearest == label).sum(), total + label.size
    assert modes.count("L") == 1 and modes[2] == "L" and len(sizes) > 5
    assert hits / total > 0.9, hits / total


# ---- pairing ---------------------------------------------------------------------------------

WIN_IMAGES = [r"C:\Users\me\data\ADEChallengeData2016\images\training\ADE_train_00000002.jpg",
              r"C:\Users\me\data\ADEChallengeData2016\images\training\ADE_train_00000001.jpg",
              r"C:\Users\me\data\ADEChallengeData2016\images\training\ADE_train_00000003.jpg"]
WIN_ANNOTATIONS = [
    r"C:\Users\me\data\ADEChallengeData2016\annotations\training\ADE_train_00000001.png",
    r"C:\Users\me\data\ADEChallengeData2016\annotations\training\ADE_train_00000002.png",
    r"C:\Users\me\data\ADEChallengeData2016\annotations\training\ADE_train_00000003.txt"]


def test_pairing_windows_paths_with_ntpath():
    records, unpaired = scene.pair_records(WIN_IMAGES, WIN_ANNOTATIONS, pathmod=ntpath)
    assert records == [
        {"image": WIN_IMAGES[1], "annotation": WIN_ANNOTATIONS[0],
         "filename": "ADE_train_00000001"},
        {"image": WIN_IMAGES[0], "annotation": WIN_ANNOTATIONS[1],
         "filename": "ADE_train_00000002"},
    ]
    assert unpaired == [WIN_IMAGES[2]]  # its only "annotation" is not a .png


def test_pairing_depends_on_the_path_module():
    # The reference split on "/": on backslash paths the whole path became the "file name" and
    # nothing paired. The same happens with posixpath, which shows the test above means something.
    records, unpaired = scene.pair_records(WIN_IMAGES, WIN_ANNOTATIONS, pathmod=posixpath)
    assert records == [] and len(unpaired) == 3


def test_cache_written_on_windows_reads_on_linux():
    records = scene.pair_records(WIN_IMAGES, WIN_ANNOTATIONS, pathmod=ntpath)[0]
    cache = scene.records_to_cache({"training": records, "validation": records[:1]},
                                   r"C:\Users\me\data", pathmod=ntpath)
    text = json.dumps(cache)
    assert "Users" not in text and "\\\\" not in text  # relative, no separators stored
    loaded = scene.records_from_cache(json.loads(text), "/mnt/shared/data", pathmod=posixpath)
    assert loaded["training"][0] == {
        "image": "/mnt/shared/data/ADEChallengeData2016/images/training/ADE_train_00000001.jpg",
        "annotation":
            "/mnt/shared/data/ADEChallengeData2016/annotations/training/ADE_train_00000001.png",
        "filename": "ADE_train_00000001"}
    assert [r["filename"] for r in loaded["validation"]] == ["ADE_train_00000001"]


@pytest.mark.parametrize("parts", [["..", "etc", "passwd"], ["/etc/passwd"], ["a\\..\\b"],
                                   ["C:\\x.jpg"], [], "ADEChallengeData2016/x.jpg"])
def test_cache_refuses_paths_that_leave_data_dir(parts):
    cache = {"format": scene.CACHE_FORMAT, "version": scene.CACHE_VERSION, "validation": [],
             "training": [{"image": parts, "annotation": ["a.png"], "filename": "x"}]}
    with pytest.raises(ValueError):
        scene.records_from_cache(cache, "/data")


# ---- read_dataset on the generated folder ----------------------------------------------------

def test_read_dataset_lists_sorted_pairs_and_skips_the_unannotated(data_dir, capsys):
    training, validation = scene.read_dataset(data_dir)
    assert [r["filename"] for r in training] == TRAIN_NAMES
    assert [r["filename"] for r in validation] == VAL_NAMES
    for split, records in (("training", training), ("validation", validation)):
        for r in records:
            assert r["image"] == os.path.join(data_dir, "ADEChallengeData2016", "images", split,
                                              r["filename"] + ".jpg")
            assert r["annotation"] == os.path.join(data_dir, "ADEChallengeData2016",
                                                   "annotations", split, r["filename"] + ".png")
    out = capsys.readouterr().out
    assert "ADE_train_00000025.jpg has no annotation" in out


def test_second_call_reads_the_json_cache(data_dir, monkeypatch):
    first = scene.read_dataset(data_dir)
    with open(os.path.join(data_dir, "MITSceneParsing.json"), encoding="utf-8") as f:
        cache = json.load(f)
    assert data_dir not in json.dumps(cache)  # relative paths only
    monkeypatch.setattr(scene, "scan_split", lambda *a: pytest.fail("rescanned"))
    monkeypatch.setattr(scene, "maybe_download_and_extract",
                        lambda *a: pytest.fail("looked for a download"))
    assert scene.read_dataset(data_dir) == first


def test_cache_follows_a_moved_folder(data_dir, tmp_path, monkeypatch):
    scene.read_dataset(data_dir)
    moved = str(tmp_path / "elsewhere")
    shutil.move(data_dir, moved)
    monkeypatch.setattr(scene, "scan_split", lambda *a: pytest.fail("rescanned"))
    training, _ = scene.read_dataset(moved)
    assert training[0]["image"] == os.path.join(moved, "ADEChallengeData2016", "images",
                                                "training", "ADE_train_00000001.jpg")


class _Payload:
    """Unpickling this writes a marker file: what loading a tampered pickle would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("content", ["garbage", "pickle", "other-json", "dotdot"])
def test_bad_cache_is_rebuilt_with_a_warning_never_executed(data_dir, tmp_path, capsys, content):
    cache_path = os.path.join(data_dir, "MITSceneParsing.json")
    marker = str(tmp_path / "executed")
    if content == "garbage":
        data = b"\x00\xff not json {"
    elif content == "pickle":
        data = pickle.dumps(_Payload(marker))
    elif content == "other-json":
        data = json.dumps({"training": [], "validation": []}).encode()
    else:
        data = json.dumps({"format": scene.CACHE_FORMAT, "version": scene.CACHE_VERSION,
                           "validation": [], "training": [
                               {"image": ["..", "..", "x.jpg"], "annotation": ["x.png"],
                                "filename": "x"}]}).encode()
    with open(cache_path, "wb") as f:
        f.write(data)
    training, validation = scene.read_dataset(data_dir)
    assert not os.path.exists(marker)
    assert "record cache %s is unreadable" % cache_path in capsys.readouterr().out
    assert [r["filename"] for r in training] == TRAIN_NAMES and len(validation) == 8
    with open(cache_path, encoding="utf-8") as f:
        assert len(json.load(f)["training"]) == 24  # rewritten as JSON


def test_cache_naming_a_removed_file_is_rebuilt(data_dir, capsys):
    scene.read_dataset(data_dir)
    gone = os.path.join(data_dir, "ADEChallengeData2016", "annotations", "validation",
                        "ADE_val_00000004.png")
    os.remove(gone)
    capsys.readouterr()
    _, validation = scene.read_dataset(data_dir)
    out = capsys.readouterr().out
    assert "names %s, which no longer exists; rebuilding" % gone in out
    assert [r["filename"] for r in validation] == [n for n in VAL_NAMES if not n.endswith("04")]


@pytest.mark.parametrize("split", ["training", "validation"])
def test_an_image_added_after_the_cache_was_written_is_found(data_dir, split, capsys):
    scene.read_dataset(data_dir)
    base = os.path.join(data_dir, "ADEChallengeData2016")
    for folder, extension in (("images", ".jpg"), ("annotations", ".png")):
        shutil.copy(os.path.join(base, folder, split, "ADE_%s_00000001%s"
                                 % ("train" if split == "training" else "val", extension)),
                    os.path.join(base, folder, split, "ADE_new_00000001" + extension))
    capsys.readouterr()
    training, validation = scene.read_dataset(data_dir)
    out = capsys.readouterr().out
    assert "files were added to or removed from %s" % os.path.join(base, "annotations", split) \
        in out and "rebuilding" in out
    names = TRAIN_NAMES if split == "training" else VAL_NAMES
    assert [r["filename"] for r in (training if split == "training" else validation)] == \
        sorted(names + ["ADE_new_00000001"])
    # The rebuilt cache lists it: a third call reads the cache, without a warning.
    assert scene.read_dataset(data_dir) == (training, validation)
    assert "rebuilding" not in capsys.readouterr().out


def test_an_image_rewritten_in_place_keeps_the_cache(data_dir, capsys, monkeypatch):
    first = scene.read_dataset(data_dir)
    path = os.path.join(data_dir, "ADEChallengeData2016", "images", "training",
                        "ADE_train_00000002.jpg")
    shutil.copy(path.replace("00000002", "00000001"), path)
    monkeypatch.setattr(scene, "scan_split", lambda *a: pytest.fail("rescanned"))
    assert scene.read_dataset(data_dir) == first


def test_listing_digest_sees_names_not_other_files():
    base = scene.listing_digest(["a.jpg", "b.jpg"], (".jpg",))
    assert scene.listing_digest(["b.jpg", "a.jpg", "notes.txt"], (".jpg",)) == base
    assert scene.listing_digest(["a.jpg"], (".jpg",)) != base
    assert scene.listing_digest(["a.jpg", "b.jpg", "c.JPG"], (".jpg",)) != base


def test_empty_split_is_an_error(data_dir):
    for path in glob.glob(os.path.join(data_dir, "ADEChallengeData2016", "images", "validation",
                                       "*")):
        os.remove(path)
    with pytest.raises(FCNError, match=r"no validation images with annotations in .*"
                                       r"ADEChallengeData2016"):
        scene.read_dataset(data_dir)


def test_data_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(FCNError, match=r"--data_dir .*a_file.* cannot be created"):
        scene.read_dataset(str(blocker / "data"))


# ---- class names -----------------------------------------------------------------------------

def test_class_names_from_object_info(scene_data_dir):
    names = scene.read_class_names(scene_data_dir)
    assert len(names) == 151
    assert names[:6] == ["other", "wall", "building;edifice", "sky", "floor;flooring", "tree"]
    assert names[150] == "thing150"


def test_class_names_without_the_file(tmp_path):
    names = scene.read_class_names(str(tmp_path))
    assert len(names) == 151 and names[0] == "other" and names[42] == "class 42"


def test_class_names_parse_skips_bad_lines():
    names = scene.parse_class_names(["Idx\tRatio\tTrain\tVal\tName\r\n",
                                     "2\t0.1\t1\t1\tbuilding\r\n",
                                     "999\t0\t0\t0\tbeyond\n", "x\ty\n"])
    assert names[2] == "building" and names[1] == "class 1" and len(names) == 151
