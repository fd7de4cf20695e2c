"""read_dataset's download and extraction against a local HTTP server on 127.0.0.1: a good zip,
a connection dropped halfway, a file that is not a zip, an HTTP error, no server at all, a zip
with entries that leave the folder, a corrupt zip, a zip put there by hand."""
import io
import os
import zipfile

import pytest

import read_MITSceneParsingData as scene
from guards import FCNError
from tests import local_server
from tests.local_server import LocalServer

ZIP_NAME = "ADEChallengeData2016.zip"


def _zip_bytes(entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def _corrupted(data):
    """data with a byte changed in the middle of the first large member's stored bytes."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    # The local header is 30 bytes plus the name and extra field; the data follows it.
    header_len = 30 + len(info.filename.encode()) + len(info.extra)
    position = info.header_offset + header_len + info.compress_size // 2
    return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]


@pytest.fixture(scope="module")
def server(scene_dataset_zip):
    """Serves /good/, /drop/, /notzip/, /missing/, /evil/, /absolute/ and /corrupt/ + ZIP_NAME;
    counts the requests."""
    with open(scene_dataset_zip, "rb") as f:
        good = f.read()
    bodies = {
        "good": good,
        "drop": good,
        "notzip": b"<html><body>Moved to a new server</body></html>" * 50,
        "evil": _zip_bytes([("ADEChallengeData2016/objectInfo150.txt", b"x"),
                            ("../evil.txt", b"outside")]),
        "absolute": _zip_bytes([("ADEChallengeData2016/objectInfo150.txt", b"x"),
                                ("/tmp/fcn_absolute_evil.txt", b"outside")]),
        "corrupt": _corrupted(good),
    }
    with LocalServer(bodies, name=ZIP_NAME) as server:
        yield server


@pytest.fixture
def closed_port_url():
    return local_server.closed_port_url(ZIP_NAME)


def _leftovers(data_dir):
    """What a failure must not leave: the zip, a .part, the folder, a temporary folder."""
    return sorted(name for name in os.listdir(data_dir) if name != "MITSceneParsing.json")


def test_download_verify_extract_index_then_no_network(tmp_path, server, closed_port_url):
    data_dir = str(tmp_path / "data")
    before = len(server.requests)
    training, validation = scene.read_dataset(data_dir, data_url=server.url("good"))
    assert len(server.requests) == before + 1
    assert [r["filename"] for r in training] == ["ADE_train_%08d" % i for i in range(1, 25)]
    assert len(validation) == 8 and all(os.path.isfile(r["image"]) for r in validation)
    assert _leftovers(data_dir) == ["ADEChallengeData2016", ZIP_NAME]
    # Again: the cache answers; no request, even with no server at all.
    assert scene.read_dataset(data_dir, data_url=closed_port_url) == (training, validation)
    # The zip and the cache deleted but the data there: still no download (the reference's bug).
    os.remove(os.path.join(data_dir, ZIP_NAME))
    os.remove(os.path.join(data_dir, "MITSceneParsing.json"))
    assert scene.read_dataset(data_dir, data_url=closed_port_url) == (training, validation)
    assert len(server.requests) == before + 1


def _download_failure(data_dir, url):
    """read_dataset's FCNError for url: one line naming the URL and where the zip or the extracted
    folder can be put by hand, and nothing left behind. Returns the message."""
    with pytest.raises(FCNError) as error:
        scene.read_dataset(data_dir, data_url=url)
    message = str(error.value)
    assert url in message and "\n" not in message
    assert os.path.join(data_dir, ZIP_NAME) in message
    assert os.path.join(data_dir, "ADEChallengeData2016") in message
    assert _leftovers(data_dir) == []
    return message


def test_dropped_connection_leaves_nothing_and_the_next_call_recovers(tmp_path, server):
    data_dir = str(tmp_path / "data")
    assert "stopped at" in _download_failure(data_dir, server.url("drop"))
    training, _ = scene.read_dataset(data_dir, data_url=server.url("good"))
    assert len(training) == 24


def test_not_a_zip_is_refused_removed_and_the_next_call_recovers(tmp_path, server):
    data_dir = str(tmp_path / "data")
    with pytest.raises(FCNError, match=r"ADEChallengeData2016\.zip is not a valid zip .*removed"):
        scene.read_dataset(data_dir, data_url=server.url("notzip"))
    assert _leftovers(data_dir) == []
    assert len(scene.read_dataset(data_dir, data_url=server.url("good"))[1]) == 8


def test_http_error_names_the_url_and_where_to_put_the_data(tmp_path, server):
    assert "HTTP 404" in _download_failure(str(tmp_path / "data"), server.url("missing"))


def test_no_network_is_one_clear_error(tmp_path, closed_port_url):
    assert "check the network" in _download_failure(str(tmp_path / "data"), closed_port_url)


@pytest.mark.parametrize("kind, entry", [("evil", "../evil.txt"),
                                         ("absolute", "/tmp/fcn_absolute_evil.txt")])
def test_entries_leaving_the_folder_are_refused_and_nothing_extracted(tmp_path, server, kind,
                                                                      entry):
    data_dir = str(tmp_path / "data")
    with pytest.raises(FCNError, match="holds the entry %r, which would be written outside"
                                       % entry):
        scene.read_dataset(data_dir, data_url=server.url(kind))
    assert not os.path.exists(str(tmp_path / "evil.txt"))
    assert not os.path.exists("/tmp/fcn_absolute_evil.txt")
    assert _leftovers(data_dir) == []


def test_corrupt_zip_fails_extraction_cleanly(tmp_path, server):
    data_dir = str(tmp_path / "data")
    # A stale temporary folder of a killed extraction is cleaned up on the way.
    os.makedirs(os.path.join(data_dir, ".ADEChallengeData2016.extracting-old", "junk"))
    with pytest.raises(FCNError, match=r"extracting .*ADEChallengeData2016\.zip failed"):
        scene.read_dataset(data_dir, data_url=server.url("corrupt"))
    assert _leftovers(data_dir) == []
    assert len(scene.read_dataset(data_dir, data_url=server.url("good"))[0]) == 24
    assert _leftovers(data_dir) == ["ADEChallengeData2016", ZIP_NAME]


def test_zip_put_there_by_hand_is_used_without_network(tmp_path, scene_dataset_zip,
                                                       closed_port_url):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / ZIP_NAME).write_bytes(open(scene_dataset_zip, "rb").read())
    training, validation = scene.read_dataset(str(data_dir), data_url=closed_port_url)
    assert (len(training), len(validation)) == (24, 8)


def test_bad_zip_put_there_by_hand_is_refused_but_kept(tmp_path, closed_port_url):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / ZIP_NAME).write_bytes(b"not a zip at all")
    with pytest.raises(FCNError, match=r"is not a valid zip .*replace it with the zip from"):
        scene.read_dataset(str(data_dir), data_url=closed_port_url)
    assert _leftovers(str(data_dir)) == [ZIP_NAME]


@pytest.mark.parametrize("name, safe", [
    ("ADEChallengeData2016/images/training/a.jpg", True), ("ADEChallengeData2016/", True),
    ("a/../b.txt", True), ("../x", False), ("a/../../x", False), ("/etc/passwd", False),
    ("..\\x", False), ("a\\..\\..\\x", False), ("C:\\Windows\\x", False), ("C:x", False),
    ("\\\\server\\share\\x", False),
])
def test_zip_member_is_safe(name, safe):
    assert scene.zip_member_is_safe(name) is safe
