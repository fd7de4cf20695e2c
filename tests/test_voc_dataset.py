"""PASCAL VOC 2012 (read_PascalVOCData) on a generated VOCdevkit tree (tests/make_voc.py): the
records and their order, palette annotations read back as class indices, broken lists; and the
download against a local HTTP server on 127.0.0.1: a good tar, a dropped connection, truncated
tars, a file that is not a tar, members that leave the folder, a tar of another dataset, a tar
put there by hand, and extraction only through tarfile's "data" filter."""
import io
import os
import posixpath
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

import read_PascalVOCData as voc
from guards import FCNError
from image_files import read_annotation, read_image
from tests.local_server import LocalServer, closed_port_url as closed_port_url_of
from tests.make_voc import make_voc_dataset, make_voc_tar

TAR_NAME = "VOCtrainval_11-May-2012.tar"
LISTS = os.path.join("VOCdevkit", "VOC2012", "ImageSets", "Segmentation")
LISTS_MEMBER = "VOCdevkit/VOC2012/ImageSets/Segmentation"  # the same, as a tar names it
# Typed from the VOC 2012 development kit's documentation, not taken from the code under test.
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]
# Colours of the VOC colour map as published with the development kit.
KNOWN_COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
                 8: (64, 0, 0), 15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)}


def voc_colour(index):
    """The VOC colour map computed here: bit 3k of index -> bit 7-k of red, 3k+1 of green,
    3k+2 of blue."""
    channels = [0, 0, 0]
    for k in range(8):
        for channel in range(3):
            channels[channel] |= ((index >> (3 * k + channel)) & 1) << (7 - k)
    return tuple(channels)


def voc_paths(root, name):
    base = os.path.join(root, "VOCdevkit", "VOC2012")
    return (os.path.join(base, "JPEGImages", name + ".jpg"),
            os.path.join(base, "SegmentationClass", name + ".png"))


# ---- data --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def voc_root(module_tmp):
    """(root, VocSet): a generated VOCdevkit/VOC2012 of 6 training and 4 validation images.
    Shared: copy it before changing anything in it."""
    root = str(module_tmp("voc"))
    return root, make_voc_dataset(root, n_train=6, n_val=4, seed=3)


@pytest.fixture(scope="module")
def voc_tar(module_tmp, voc_root):
    return make_voc_tar(voc_root[0], str(module_tmp("voc_tar") / TAR_NAME))


@pytest.fixture
def copied(tmp_path, voc_root):
    """A private copy of the generated tree: (data_dir, VocSet)."""
    data_dir = str(tmp_path / "data")
    shutil.copytree(voc_root[0], data_dir)
    return data_dir, voc_root[1]


@pytest.fixture(scope="module")
def outside(module_tmp):
    """A folder outside any data_dir, where the evil tars aim; it must stay empty."""
    return str(module_tmp("outside"))


def _tar_bytes(members):
    """An uncompressed tar of members: (name, bytes) for a file, (name, kind, target) for a link
    (kind tarfile.SYMTYPE or LNKTYPE)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for member in members:
            info = tarfile.TarInfo(member[0])
            if len(member) == 2:
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))
            else:
                info.type, info.linkname = member[1], member[2]
                archive.addfile(info)
    return buffer.getvalue()


def absolute_member(outside):
    """'/<the outside folder>/absolute_evil.txt' as a tar member name (its drive dropped)."""
    folder = os.path.splitdrive(outside)[1].replace(os.sep, "/")
    return posixpath.join("/", folder.lstrip("/"), "absolute_evil.txt")


def evil_tars(outside):
    """{kind: tar bytes} of tars whose one bad member would write outside the folder."""
    lists = [(posixpath.join(LISTS_MEMBER, "train.txt"), b"2007_000032\n"),
             (posixpath.join(LISTS_MEMBER, "val.txt"), b"2007_000033\n")]
    return {
        "evil": _tar_bytes(lists + [("../evil.txt", b"outside")]),
        "absolute": _tar_bytes(lists + [(absolute_member(outside), b"out")]),
        "abslink": _tar_bytes(lists + [("VOCdevkit/VOC2012/escape", tarfile.SYMTYPE, outside),
                                       ("VOCdevkit/VOC2012/escape/link_evil.txt", b"out")]),
        "rellink": _tar_bytes(lists + [("VOCdevkit/VOC2012/up", tarfile.SYMTYPE, "../../../.."),
                                       ("VOCdevkit/VOC2012/up/rel_evil.txt", b"out")]),
    }


def _cut_inside_a_member(data):
    """data ending half-way through the bytes of its largest member."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        largest = max(archive.getmembers(), key=lambda member: member.size)
    return data[:largest.offset_data + largest.size // 2]


def _cut_at_a_member(data):
    """data ending exactly where a member's header starts, half-way through: a tar cut short at a
    block boundary, which tarfile itself reads without complaint."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
    return data[:members[len(members) // 2].offset]


@pytest.fixture(scope="module")
def bodies(voc_tar, outside):
    """{kind: what the server sends for it}."""
    with open(voc_tar, "rb") as f:
        good = f.read()
    bodies = dict(evil_tars(outside))
    bodies.update({
        "good": good,
        "drop": good,  # a third of it, then the connection closes
        "truncated": _cut_inside_a_member(good),
        "cut": _cut_at_a_member(good),
        "notatar": b"<html><body>The server is down for maintenance</body></html>" * 40,
        "voc2007": _tar_bytes([("VOCdevkit/VOC2007/ImageSets/Segmentation/train.txt", b"x\n"),
                               ("VOCdevkit/VOC2007/ImageSets/Segmentation/val.txt", b"y\n")]),
    })
    return bodies


@pytest.fixture(scope="module")
def server(bodies):
    """Serves /<kind>/VOCtrainval_11-May-2012.tar; an unknown kind is a 404."""
    with LocalServer(bodies, name=TAR_NAME) as local:
        yield local


@pytest.fixture
def closed_port_url():
    return closed_port_url_of(TAR_NAME)


# ---- records -----------------------------------------------------------------------------------

def test_records_follow_the_lists_and_pair_image_and_annotation(voc_root, closed_port_url):
    root, made = voc_root
    training, validation = voc.read_dataset(root, data_url=closed_port_url)
    for records, names in ((training, made.train), (validation, made.val)):
        assert [r["filename"] for r in records] == names
        for record, name in zip(records, names):
            assert (record["image"], record["annotation"]) == voc_paths(root, name)
            assert os.path.isfile(record["image"]) and os.path.isfile(record["annotation"])
    assert (len(training), len(validation)) == (6, 4)
    assert not set(made.train) & set(made.val)
    # JPEGImages holds more images than the lists name, as the real one does; they are no record.
    assert len(os.listdir(os.path.join(made.voc_dir, "JPEGImages"))) == 12


def test_records_keep_the_order_of_the_list_not_a_sorted_one(copied, closed_port_url):
    data_dir, made = copied
    order = [made.train[i] for i in (3, 0, 5, 1, 4, 2)]
    with open(os.path.join(data_dir, LISTS, "train.txt"), "w", newline="") as f:
        f.write("\r\n".join(" %s " % name for name in order) + "\r\n\r\n")  # CRLF, blanks
    training, _ = voc.read_dataset(data_dir, data_url=closed_port_url)
    assert [r["filename"] for r in training] == order


def test_the_generated_lists_are_laid_out_as_the_real_ones(voc_root):
    root, made = voc_root
    folder = os.path.join(root, LISTS)
    assert sorted(os.listdir(folder)) == ["train.txt", "trainval.txt", "val.txt"]
    with open(os.path.join(folder, "trainval.txt")) as f:
        assert f.read().split("\n") == sorted(made.train + made.val) + [""]
    for name in made.train + made.val:
        year, number = name.split("_")
        assert 2007 <= int(year) <= 2012 and len(number) == 6 and number.isdigit()


def test_palette_annotations_read_back_as_the_class_indices_drawn(voc_root):
    root, made = voc_root
    expected_palette = [voc_colour(i) for i in range(256)]
    for index, colour in KNOWN_COLOURS.items():
        assert expected_palette[index] == colour
    for name in made.train + made.val:
        image_path, annotation_path = voc_paths(root, name)
        with Image.open(annotation_path) as picture:
            assert picture.mode == "P"
            palette = picture.getpalette()
        assert [tuple(palette[3 * i:3 * i + 3]) for i in range(256)] == expected_palette
        label = read_annotation(annotation_path)
        assert label.shape == read_image(image_path).shape[:2]
        np.testing.assert_array_equal(label, made.labels[name])
        values = set(np.unique(label).tolist())
        assert values <= set(range(21)) | {255}
        assert 255 in values and 0 in values and len(values - {0, 255}) >= 1


def test_every_object_is_outlined_by_the_ignore_label(voc_root):
    """Where two different classes touch (4-neighbours), a 255 lies between them: no class pixel
    borders another class directly, and the 255 band is at least 3 pixels wide across."""
    root, made = voc_root
    for name in made.train + made.val:
        label = read_annotation(voc_paths(root, name)[1]).astype(np.int32)
        for a, b in ((label[1:, :], label[:-1, :]), (label[:, 1:], label[:, :-1])):
            assert not np.any((a != b) & (a != 255) & (b != 255))
        for a, b in ((label[2:, :], label[:-2, :]), (label[:, 2:], label[:, :-2])):
            assert not np.any((a != b) & (a != 255) & (b != 255))


def test_the_image_colour_tells_the_class(voc_root):
    """The mean colour of a class's pixels is about the same in every image and far from every
    other class's: a network can learn the classes from the JPEGs."""
    root, made = voc_root
    means = {}
    for name in made.train + made.val:
        image_path, annotation_path = voc_paths(root, name)
        image, label = read_image(image_path).astype(np.float64), read_annotation(annotation_path)
        for cls in set(np.unique(label).tolist()) - {255}:
            if (label == cls).sum() >= 30:
                means.setdefault(cls, []).append(image[label == cls].mean(axis=0))
    assert len(means) >= 5
    centres = {cls: np.mean(found, axis=0) for cls, found in means.items()}
    for cls, found in means.items():
        assert max(np.abs(m - centres[cls]).max() for m in found) < 15
    classes = sorted(centres)
    for i, a in enumerate(classes):
        for b in classes[i + 1:]:
            assert np.abs(centres[a] - centres[b]).max() > 25, (a, b)


def test_class_names():
    assert voc.read_class_names("anywhere") == VOC_CLASSES
    assert voc.CLASS_NAMES[15] == "person" and len(voc.CLASS_NAMES) == 21


# ---- broken folders ----------------------------------------------------------------------------

def _read_error(data_dir, url):
    """read_dataset's FCNError: one line. Returns the message."""
    with pytest.raises(FCNError) as error:
        voc.read_dataset(data_dir, data_url=url)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_list_is_named(copied, closed_port_url):
    data_dir, _ = copied
    val_list = os.path.join(data_dir, LISTS, "val.txt")
    os.remove(val_list)
    message = _read_error(data_dir, closed_port_url)
    assert val_list in message and "is missing" in message
    assert "VOCtrainval_11-May-2012.tar" in message


def test_empty_list_is_named(copied, closed_port_url):
    data_dir, _ = copied
    train_list = os.path.join(data_dir, LISTS, "train.txt")
    with open(train_list, "w") as f:
        f.write("\n  \n")
    message = _read_error(data_dir, closed_port_url)
    assert train_list in message and "names no image" in message


@pytest.mark.parametrize("split, index, kind", [("train", 2, "image"), ("val", 1, "annotation")])
def test_a_listed_file_that_is_missing_is_named_with_its_list(copied, closed_port_url, split,
                                                              index, kind):
    data_dir, made = copied
    name = getattr(made, split)[index]
    missing = voc_paths(data_dir, name)[0 if kind == "image" else 1]
    os.remove(missing)
    message = _read_error(data_dir, closed_port_url)
    assert missing in message
    assert os.path.join(data_dir, LISTS, split + ".txt") in message


def test_a_list_naming_a_path_is_refused(copied, closed_port_url):
    data_dir, made = copied
    with open(os.path.join(data_dir, LISTS, "train.txt"), "a") as f:
        f.write("../../../etc/passwd\n")
    assert "is not an image name" in _read_error(data_dir, closed_port_url)


# ---- download and extraction -------------------------------------------------------------------

def _leftovers(data_dir):
    return sorted(os.listdir(data_dir))


def test_download_extract_read_then_no_network(tmp_path, server, voc_root, closed_port_url):
    made = voc_root[1]
    data_dir = str(tmp_path / "data")
    before = len(server.requests)
    training, validation = voc.read_dataset(data_dir, data_url=server.url("good"))
    assert len(server.requests) == before + 1
    assert [r["filename"] for r in training] == made.train
    assert [r["filename"] for r in validation] == made.val
    for record in training + validation:
        assert (record["image"], record["annotation"]) == voc_paths(data_dir, record["filename"])
        np.testing.assert_array_equal(read_annotation(record["annotation"]),
                                      made.labels[record["filename"]])
    assert _leftovers(data_dir) == ["VOCdevkit", TAR_NAME]
    assert os.listdir(os.path.join(data_dir, "VOCdevkit")) == ["VOC2012"]
    # Again, with no server at all: the folder is there, nothing is downloaded.
    assert voc.read_dataset(data_dir, data_url=closed_port_url) == (training, validation)
    os.remove(os.path.join(data_dir, TAR_NAME))
    assert voc.read_dataset(data_dir, data_url=closed_port_url) == (training, validation)
    assert len(server.requests) == before + 1


def test_another_year_in_vocdevkit_is_kept(tmp_path, server):
    data_dir = tmp_path / "data"
    (data_dir / "VOCdevkit" / "VOC2007").mkdir(parents=True)
    training, _ = voc.read_dataset(str(data_dir), data_url=server.url("good"))
    assert len(training) == 6
    assert sorted(os.listdir(str(data_dir / "VOCdevkit"))) == ["VOC2007", "VOC2012"]


def _download_failure(data_dir, url):
    """read_dataset's FCNError for url: one line naming the URL and where the tar or the extracted
    folder can be put by hand, and nothing left behind. Returns the message."""
    message = _read_error(data_dir, url)
    assert url in message
    assert os.path.join(data_dir, TAR_NAME) in message
    assert os.path.join(data_dir, "VOCdevkit", "VOC2012") in message
    assert _leftovers(data_dir) == []
    return message


def test_dropped_connection_leaves_nothing_and_the_next_call_recovers(tmp_path, server):
    data_dir = str(tmp_path / "data")
    assert "stopped at" in _download_failure(data_dir, server.url("drop"))
    training, _ = voc.read_dataset(data_dir, data_url=server.url("good"))
    assert len(training) == 6


@pytest.mark.parametrize("kind, why", [("truncated", "not a valid tar"),
                                       ("cut", "truncated or damaged"),
                                       ("notatar", "not a valid tar"),
                                       ("voc2007", "not the VOC 2012 trainval tar")])
def test_a_bad_download_is_refused_removed_and_the_next_call_recovers(tmp_path, server, kind,
                                                                      why):
    data_dir = str(tmp_path / "data")
    message = _download_failure(data_dir, server.url(kind))
    assert why in message and "it was removed: run again" in message
    assert len(voc.read_dataset(data_dir, data_url=server.url("good"))[1]) == 4


def test_http_error_and_no_network_are_one_clear_error(tmp_path, server, closed_port_url):
    assert "HTTP 404" in _download_failure(str(tmp_path / "a"), server.url("missing"))
    assert "check the network" in _download_failure(str(tmp_path / "b"), closed_port_url)


def _nothing_outside(tmp_path, outside):
    assert os.listdir(outside) == []
    assert not os.path.exists(str(tmp_path / "evil.txt"))
    assert not os.path.exists(str(tmp_path / "rel_evil.txt"))


@pytest.mark.parametrize("kind, member", [("evil", "'../evil.txt'"),
                                          ("absolute", "absolute_evil.txt'"),
                                          ("abslink", "'VOCdevkit/VOC2012/escape' -> "),
                                          ("rellink", "'VOCdevkit/VOC2012/up' -> '../../../..'")])
def test_members_leaving_the_folder_are_refused_before_anything_is_extracted(
        tmp_path, server, outside, kind, member):
    data_dir = str(tmp_path / "data")
    message = _download_failure(data_dir, server.url(kind))
    assert member in message and "outside the folder; nothing was extracted" in message
    _nothing_outside(tmp_path, outside)


# How tarfile's data filter refuses each evil tar. An absolute member name it does not refuse but
# makes relative (it lands inside the folder), so only the module's own check refuses that one.
FILTER_REFUSALS = {"evil": "OutsideDestinationError", "abslink": "AbsoluteLinkError",
                   "rellink": "LinkOutsideDestinationError"}


@pytest.mark.parametrize("kind", sorted(FILTER_REFUSALS))
def test_extraction_goes_through_the_data_filter(tmp_path, server, outside, monkeypatch, kind):
    """With the module's own check switched off, the data filter alone still refuses each of
    them: extraction passes filter="data"."""
    monkeypatch.setattr(voc, "first_problem", lambda members: None)
    data_dir = str(tmp_path / "data")
    message = _download_failure(data_dir, server.url(kind))
    assert ("extracting %s failed (%s: " % (os.path.join(data_dir, TAR_NAME),
                                            FILTER_REFUSALS[kind])) in message
    _nothing_outside(tmp_path, outside)


def test_the_evil_tars_are_what_tarfiles_data_filter_says(tmp_path, outside):
    """The tars above are real attacks by Python's own definition (not harmless files that only
    this module refuses), and the absolute name is one the filter defuses rather than refuses."""
    for kind, body in evil_tars(outside).items():
        destination = str(tmp_path / kind)
        os.mkdir(destination)
        with tarfile.open(fileobj=io.BytesIO(body)) as archive:
            if kind in FILTER_REFUSALS:
                with pytest.raises(tarfile.FilterError) as error:
                    archive.extractall(destination, filter="data")
                assert type(error.value).__name__ == FILTER_REFUSALS[kind]
            else:
                archive.extractall(destination, filter="data")
                inside = os.path.join(destination, absolute_member(outside).lstrip("/"))
                assert os.path.isfile(inside)
    _nothing_outside(tmp_path, outside)


def test_a_python_without_the_data_filter_is_refused_before_downloading(tmp_path, server,
                                                                       monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter")
    data_dir = str(tmp_path / "data")
    before = len(server.requests)
    message = _read_error(data_dir, server.url("good"))
    assert "upgrade to Python" in message and os.path.join(data_dir, TAR_NAME) in message
    assert len(server.requests) == before and _leftovers(data_dir) == []


def test_leftovers_of_a_killed_run_are_removed(tmp_path, server):
    data_dir = tmp_path / "data"
    dead = 2 ** 31 - 2  # above any pid_max: no such process
    (data_dir / (".VOCdevkit.extracting-%d-abc" % dead) / "VOCdevkit" / "VOC2012").mkdir(
        parents=True)
    (data_dir / ("%s.part-%d-0123abcd" % (TAR_NAME, dead))).write_bytes(b"half a tar")
    voc.read_dataset(str(data_dir), data_url=server.url("good"))
    assert _leftovers(str(data_dir)) == ["VOCdevkit", TAR_NAME]


def test_remove_stale_keeps_what_a_running_process_owns(tmp_path):
    prefix = ".VOCdevkit.extracting-"
    names = {prefix + "%d-x" % os.getppid(): True,     # alive: another run's, kept
             prefix + "%d-y" % os.getpid(): True,      # this process's own, kept
             prefix + "%d-z" % (2 ** 31 - 2): False,   # dead: removed
             prefix + "junk": False,                   # no process id: removed
             "VOCdevkit": True}
    for name in names:
        (tmp_path / name).mkdir()
    voc.remove_stale(str(tmp_path), prefix)
    assert sorted(os.listdir(str(tmp_path))) == sorted(n for n, kept in names.items() if kept)


def test_a_tar_put_there_by_hand_is_used_without_network(tmp_path, voc_tar, closed_port_url):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(voc_tar, str(data_dir / TAR_NAME))
    training, validation = voc.read_dataset(str(data_dir), data_url=closed_port_url)
    assert (len(training), len(validation)) == (6, 4)
    assert _leftovers(str(data_dir)) == ["VOCdevkit", TAR_NAME]


@pytest.mark.parametrize("kind, why", [("garbage", "is not a valid tar"),
                                       ("cut", "is truncated or damaged"),
                                       ("evil", "which would be written outside the folder")])
def test_a_bad_tar_put_there_by_hand_is_named_and_kept(tmp_path, bodies, closed_port_url, kind,
                                                       why):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tar_path = data_dir / TAR_NAME
    tar_path.write_bytes(bodies.get(kind, b"not a tar at all"))
    message = _read_error(str(data_dir), closed_port_url)
    assert str(tar_path) in message
    assert why in message and "replace it with the tar from %s" % closed_port_url in message
    assert os.path.join(str(data_dir), "VOCdevkit", "VOC2012") in message
    assert _leftovers(str(data_dir)) == [TAR_NAME]


def test_the_generated_tar_is_laid_out_as_the_real_one(voc_tar):
    with tarfile.open(voc_tar) as archive:
        names = archive.getnames()
    assert all(n == "VOCdevkit/VOC2012" or n.startswith("VOCdevkit/VOC2012/") for n in names)
    assert "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt" in names
    assert "VOCdevkit/VOC2012/JPEGImages" in names


# ---- the checks, alone -------------------------------------------------------------------------

def _info(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("member, safe", [
    (_info("VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg"), True),
    (_info("VOCdevkit/VOC2012", tarfile.DIRTYPE), True),
    (_info("VOCdevkit/./VOC2012/../VOC2012/x"), True),
    (_info("../x"), False), (_info("VOCdevkit/../../x"), False), (_info("/etc/passwd"), False),
    (_info("VOCdevkit\\..\\..\\x"), False), (_info("C:\\x"), False),
    (_info("VOCdevkit/a", tarfile.SYMTYPE, "b/c"), True),
    (_info("VOCdevkit/a", tarfile.SYMTYPE, "../b"), True),
    (_info("VOCdevkit/a", tarfile.SYMTYPE, "../../b"), False),
    (_info("VOCdevkit/a", tarfile.SYMTYPE, "/etc"), False),
    (_info("VOCdevkit/a", tarfile.LNKTYPE, "VOCdevkit/b"), True),
    (_info("VOCdevkit/a", tarfile.LNKTYPE, "../b"), False),
    (_info("VOCdevkit/dev", tarfile.CHRTYPE), False),
    (_info("VOCdevkit/fifo", tarfile.FIFOTYPE), False),
])
def test_member_problem(member, safe):
    assert (voc.member_problem(member) is None) is safe


def test_a_member_written_through_a_link_is_refused():
    members = [_info("VOCdevkit/VOC2012/up", tarfile.SYMTYPE, ".."),
               _info("VOCdevkit/VOC2012/up/x.txt")]
    assert "written through the link 'VOCdevkit/VOC2012/up'" in voc.first_problem(members)
    assert voc.first_problem([_info("VOCdevkit/VOC2012/up", tarfile.SYMTYPE, "..")]) is None


def test_missing_members_normalises_names():
    assert voc.missing_members(["./VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt",
                                "VOCdevkit//VOC2012/ImageSets/Segmentation/val.txt"]) == []
    assert voc.missing_members(["VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"]) == [
        "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"]


def test_parse_list():
    assert voc.parse_list(["2007_000032\n", "\n", "  2007_000039 \r\n"]) == ["2007_000032",
                                                                             "2007_000039"]
    for bad in ("../x", "a/b", "a\\b", "C:x", ".."):
        with pytest.raises(ValueError, match="line 2"):
            voc.parse_list(["2007_000032", bad])
