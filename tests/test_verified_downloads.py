"""Downloads checked against their MD5, from local HTTP and HTTPS servers on 127.0.0.1: a match is
kept and recorded, a mismatch removed; a file put there by hand is used with a warning and hashed
once; a certificate that cannot be verified is tolerated only when an MD5 vouches for the file;
the beta16 VGG-19 URL falls back to the newer one. Every expected MD5 is computed here with
hashlib, independently of downloads.py."""
import hashlib
import http.server
import json
import os
import shutil
import ssl
import subprocess
import threading

import pytest

import downloads
import read_MITSceneParsingData as scene
import vgg_weights
from guards import FCNError

BODY = bytes(range(256)) * 3000  # 768 kB, more than one chunk of a small chunk_size
OTHER = b"a different file of the same name\n" * 100
VGG_NAME = vgg_weights.VGG19_FILE_NAME
ZIP_NAME = "ADEChallengeData2016.zip"


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


# ---- servers ----------------------------------------------------------------------------------

def _handler(bodies, requests, redirects):
    """A request handler serving bodies ({path: bytes}), answering redirects ({path: location})
    with 301 and anything else with 404; each request's path is appended to requests."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path in redirects:
                self.send_response(301)
                self.send_header("Location", redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = bodies.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


class _Server:
    """A threaded server on 127.0.0.1 (port 0); url(path) is its address for a path."""

    def __init__(self, bodies, redirects=None, tls_context=None):
        self.requests = []
        self.redirects = dict(redirects or {})
        handler = _handler(bodies, self.requests, self.redirects)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        scheme = "http"
        if tls_context is not None:
            # A failed handshake (the client refusing the certificate) is an OSError in accept,
            # which socketserver ignores.
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.base = "%s://127.0.0.1:%d" % (scheme, self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return self.base + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _bodies(vgg_mat_paths):
    with open(vgg_mat_paths["beta16"], "rb") as f:
        beta16 = f.read()
    with open(vgg_mat_paths["meta"], "rb") as f:
        meta = f.read()
    return {"/body": BODY, "/other": OTHER,
            "/beta16/" + VGG_NAME: beta16, "/meta/" + VGG_NAME: meta}


@pytest.fixture(scope="module")
def http_server(vgg_mat_paths):
    server = _Server(_bodies(vgg_mat_paths))
    yield server
    server.close()


def self_signed_context(folder):
    """A server-side TLS context with a certificate made here by the openssl command line (no
    Python package needed), signed by itself, so that no client can verify it."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed, and it makes the test's certificate")
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture(scope="module")
def https_server(vgg_mat_paths, module_tmp):
    server = _Server(_bodies(vgg_mat_paths),
                     tls_context=self_signed_context(str(module_tmp("tls"))))
    yield server
    server.close()


@pytest.fixture
def hash_calls(monkeypatch):
    """Counts the files downloads.py hashes from disk (a download hashes as it writes)."""
    calls = []
    real = downloads.md5_of_file

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(downloads, "md5_of_file", counting)
    return calls


def _record(path):
    with open(path + ".md5.json", encoding="utf-8") as f:
        return json.load(f)


def _one_line_error(call, *args, **kwargs):
    with pytest.raises(FCNError) as error:
        call(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


# ---- downloads over HTTP ------------------------------------------------------------------------

def test_a_matching_download_is_kept_and_recorded_so_it_is_not_hashed_again(
        tmp_path, http_server, hash_calls, capsys):
    dest = str(tmp_path / "file.bin")
    downloads.download_file(http_server.url("/body"), dest, md5=md5_hex(BODY), chunk_size=4096)
    with open(dest, "rb") as f:
        assert f.read() == BODY
    stat = os.stat(dest)
    assert _record(dest) == {"file": "file.bin", "size": len(BODY), "mtime_ns": stat.st_mtime_ns,
                             "md5": md5_hex(BODY)}
    assert sorted(os.listdir(str(tmp_path))) == ["file.bin", "file.bin.md5.json"]
    capsys.readouterr()
    assert downloads.check_file_in_place(dest, [md5_hex(BODY)], "u") == md5_hex(BODY)
    assert hash_calls == []  # the download's own hash was remembered
    assert "Warning" not in capsys.readouterr().out


def test_without_a_known_md5_a_download_is_kept_unchecked_and_unrecorded(tmp_path, http_server):
    dest = str(tmp_path / "voc.tar")
    downloads.download_file(http_server.url("/other"), dest, md5=None)
    assert os.listdir(str(tmp_path)) == ["voc.tar"]
    assert downloads.check_file_in_place(dest, [None], "u") is None


def test_a_mismatching_download_is_removed_naming_both_hashes(tmp_path, http_server):
    dest = str(tmp_path / "file.bin")
    url = http_server.url("/other")
    message = _one_line_error(downloads.download_file, url, dest, md5=md5_hex(BODY))
    assert ("download of %s has MD5 %s, not the expected %s; it was removed: run again, or "
            "download it by hand to %s" % (url, md5_hex(OTHER), md5_hex(BODY), dest)) == message
    assert os.listdir(str(tmp_path)) == []


# ---- a file put there by hand -------------------------------------------------------------------

def test_a_mismatching_file_put_by_hand_is_used_with_a_warning_and_hashed_once(
        tmp_path, hash_calls, capsys):
    path = str(tmp_path / "file.bin")
    with open(path, "wb") as f:
        f.write(OTHER)
    expected = md5_hex(BODY)
    for _ in range(2):
        assert downloads.check_file_in_place(path, [expected], "http://x/file.bin") == \
            md5_hex(OTHER)
        warnings = [line for line in capsys.readouterr().out.splitlines() if "Warning" in line]
        assert len(warnings) == 1
        assert md5_hex(OTHER) in warnings[0] and expected in warnings[0]
        assert path in warnings[0] and "http://x/file.bin" in warnings[0]
    assert hash_calls == [path]
    assert _record(path)["md5"] == md5_hex(OTHER)
    with open(path, "rb") as f:
        assert f.read() == OTHER  # used, not removed


def test_a_changed_file_is_hashed_again(tmp_path, hash_calls, capsys):
    path = str(tmp_path / "file.bin")
    with open(path, "wb") as f:
        f.write(BODY)
    assert downloads.check_file_in_place(path, [md5_hex(BODY)], "u") == md5_hex(BODY)
    assert "Warning" not in capsys.readouterr().out
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10 ** 9))  # touched
    assert downloads.check_file_in_place(path, [md5_hex(BODY)], "u") == md5_hex(BODY)
    assert len(hash_calls) == 2
    mtime_ns = os.stat(path).st_mtime_ns
    with open(path, "ab") as f:  # longer, with the mtime set back: the size gives it away
        f.write(b"x")
    os.utime(path, ns=(mtime_ns, mtime_ns))
    assert downloads.check_file_in_place(path, [md5_hex(BODY)], "u") == md5_hex(BODY + b"x")
    assert len(hash_calls) == 3
    assert "Warning" in capsys.readouterr().out
    downloads.check_file_in_place(path, [md5_hex(BODY)], "u")
    assert len(hash_calls) == 3


def test_an_unreadable_record_is_replaced(tmp_path, hash_calls):
    path = str(tmp_path / "file.bin")
    with open(path, "wb") as f:
        f.write(BODY)
    with open(path + ".md5.json", "w") as f:
        f.write("{not json")
    assert downloads.check_file_in_place(path, [md5_hex(BODY)], "u") == md5_hex(BODY)
    assert _record(path)["md5"] == md5_hex(BODY) and len(hash_calls) == 1


def test_a_folder_in_place_of_the_file_is_left_to_its_reader(tmp_path, capsys):
    path = tmp_path / "file.bin"
    path.mkdir()
    assert downloads.check_file_in_place(str(path), [md5_hex(BODY)], "u") is None
    assert "Warning" not in capsys.readouterr().out


def test_a_synthetic_vgg_put_by_hand_is_used_with_the_real_urls_and_no_network(
        tmp_path, vgg_mat_paths, hash_calls, capsys):
    model_dir = str(tmp_path / "Model_zoo")
    os.makedirs(model_dir)
    path = os.path.join(model_dir, VGG_NAME)
    shutil.copy(vgg_mat_paths["beta16"], path)
    beta16_url = list(vgg_weights.VGG19_DOWNLOADS)[0]
    with open(path, "rb") as f:
        found = md5_hex(f.read())
    for _ in range(2):
        weights, _ = vgg_weights.load_vgg19(vgg_weights.get_model_data(model_dir, beta16_url))
        assert weights["conv5_4"][0].shape == (3, 3, 512, 512)
        warnings = [line for line in capsys.readouterr().out.splitlines() if "Warning" in line]
        assert len(warnings) == 1 and found in warnings[0] and beta16_url in warnings[0]
        assert "8ee3263992981a1d26e73b3ca028a123" in warnings[0]
        assert "106118b7cf60435e6d8e04f6a6dc3657" in warnings[0]
    assert hash_calls == [path]


# ---- TLS: a certificate that cannot be verified ------------------------------------------------

@pytest.fixture
def redirect_to_https(http_server, https_server):
    """/redirect/body on the HTTP server: 301 to the HTTPS server's /body, as http://www.vlfeat.org
    now redirects to https."""
    http_server.redirects["/redirect/body"] = https_server.url("/body")
    yield http_server.url("/redirect/body")
    http_server.redirects.pop("/redirect/body")


@pytest.mark.parametrize("how", ["https", "redirect"])
def test_an_unverifiable_certificate_is_retried_once_and_kept_when_the_md5_matches(
        how, tmp_path, https_server, redirect_to_https, capsys):
    url = https_server.url("/body") if how == "https" else redirect_to_https
    dest = str(tmp_path / "file.bin")
    before = len(https_server.requests)
    downloads.download_file(url, dest, md5=md5_hex(BODY), timeout=10)
    with open(dest, "rb") as f:
        assert f.read() == BODY
    lines = [line for line in capsys.readouterr().out.splitlines()
             if "cannot be verified" in line]
    assert len(lines) == 1
    assert "127.0.0.1" in lines[0] and url in lines[0] and md5_hex(BODY) in lines[0]
    assert https_server.requests[before:] == ["/body"]  # the first try failed at the handshake


def test_an_unverified_download_that_does_not_match_is_refused(tmp_path, https_server):
    dest = str(tmp_path / "file.bin")
    url = https_server.url("/other")
    message = _one_line_error(downloads.download_file, url, dest, md5=md5_hex(BODY), timeout=10)
    assert "%s (without certificate verification) has MD5 %s, not the expected %s" % (
        url, md5_hex(OTHER), md5_hex(BODY)) in message
    assert os.listdir(str(tmp_path)) == []


def test_without_a_known_md5_an_unverifiable_certificate_is_an_error_and_not_retried(
        tmp_path, https_server):
    dest = str(tmp_path / "voc.tar")
    before = len(https_server.requests)
    message = _one_line_error(downloads.download_file, https_server.url("/body"), dest,
                              md5=None, timeout=10)
    assert "the TLS certificate for 127.0.0.1 cannot be verified" in message
    assert "no MD5 of %s is known" % https_server.url("/body") in message
    assert message.endswith("download it by hand to %s" % dest)
    assert https_server.requests[before:] == []
    assert os.listdir(str(tmp_path)) == []


# ---- VGG-19: the beta16 URL falls back to the newer file ---------------------------------------

@pytest.mark.parametrize("failure", ["404", "mismatch"])
def test_the_first_vgg_url_failing_falls_back_to_the_second(failure, tmp_path, http_server,
                                                            vgg_mat_paths, capsys):
    with open(vgg_mat_paths["beta16"], "rb") as f:
        beta16_md5 = md5_hex(f.read())
    with open(vgg_mat_paths["meta"], "rb") as f:
        meta_md5 = md5_hex(f.read())
    if failure == "404":
        first = http_server.url("/missing/" + VGG_NAME)
    else:  # the first URL serves a file, but not the one its MD5 names
        first, beta16_md5 = http_server.url("/beta16/" + VGG_NAME), md5_hex(OTHER)
    second = http_server.url("/meta/" + VGG_NAME)
    model_dir = str(tmp_path / "Model_zoo")
    mat = vgg_weights.get_model_data(model_dir, first,
                                     checksums={first: beta16_md5, second: meta_md5})
    weights, _ = vgg_weights.load_vgg19(mat)
    expected, _ = vgg_weights.load_vgg19(vgg_weights.load_mat(vgg_mat_paths["meta"]))
    assert (weights["conv1_1"][0] == expected["conv1_1"][0]).all()
    assert sorted(os.listdir(model_dir)) == [VGG_NAME, VGG_NAME + ".md5.json"]
    assert _record(os.path.join(model_dir, VGG_NAME))["md5"] == meta_md5
    out = capsys.readouterr().out
    assert "trying %s instead" % second in out
    assert ("HTTP 404" if failure == "404" else "not the expected %s" % beta16_md5) in out


def test_when_every_vgg_url_fails_the_last_error_is_raised_and_nothing_left(tmp_path, http_server):
    first, second = http_server.url("/missing/a.mat"), http_server.url("/missing/b.mat")
    model_dir = str(tmp_path / "Model_zoo")
    message = _one_line_error(vgg_weights.get_model_data, model_dir, first,
                              checksums={first: md5_hex(BODY), second: md5_hex(BODY)})
    assert message.startswith("download of %s failed: HTTP 404" % second)
    assert message.endswith("download it by hand to %s" % os.path.join(model_dir, "a.mat"))
    assert os.listdir(model_dir) == []


def test_sources_follow_the_table_from_the_url_on():
    table = {"a": "1", "b": "2", "c": "3"}
    assert downloads.sources_from("a", table) == [("a", "1"), ("b", "2"), ("c", "3")]
    assert downloads.sources_from("b", table) == [("b", "2"), ("c", "3")]
    assert downloads.sources_from("z", table) == [("z", None)]
    # FCN.py's call, get_model_data(model_dir, MODEL_URL), gets the beta16 MD5 and the fallback.
    assert downloads.sources_from(vgg_weights.MODEL_URL, vgg_weights.VGG19_DOWNLOADS) == [
        ("http://www.vlfeat.org/matconvnet/models/beta16/" + VGG_NAME,
         "8ee3263992981a1d26e73b3ca028a123"),
        ("https://www.vlfeat.org/matconvnet/models/" + VGG_NAME,
         "106118b7cf60435e6d8e04f6a6dc3657")]


# ---- the dataset zip ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zip_server(scene_dataset_zip):
    with open(scene_dataset_zip, "rb") as f:
        server = _Server({"/good/" + ZIP_NAME: f.read()})
    yield server
    server.close()


def test_a_dataset_zip_that_does_not_match_is_removed_and_one_that_does_is_extracted(
        tmp_path, zip_server, scene_dataset_zip):
    with open(scene_dataset_zip, "rb") as f:
        good_md5 = md5_hex(f.read())
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    url = zip_server.url("/good/" + ZIP_NAME)
    dataset_dir = os.path.join(data_dir, "ADEChallengeData2016")
    message = _one_line_error(scene.maybe_download_and_extract, data_dir, url,
                              checksums={url: md5_hex(BODY)})
    assert "has MD5 %s, not the expected %s" % (good_md5, md5_hex(BODY)) in message
    assert message.endswith("or extract it by hand into %s" % dataset_dir)
    assert os.listdir(data_dir) == []
    assert scene.maybe_download_and_extract(data_dir, url, checksums={url: good_md5}) == \
        dataset_dir
    assert sorted(os.listdir(data_dir)) == ["ADEChallengeData2016", ZIP_NAME,
                                            ZIP_NAME + ".md5.json"]


def test_a_synthetic_dataset_zip_put_by_hand_is_used_with_a_warning(tmp_path, scene_dataset_zip,
                                                                     capsys):
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    shutil.copy(scene_dataset_zip, os.path.join(data_dir, ZIP_NAME))
    with open(scene_dataset_zip, "rb") as f:
        found = md5_hex(f.read())
    scene.maybe_download_and_extract(data_dir)  # the real URL: never contacted, the zip is there
    warnings = [line for line in capsys.readouterr().out.splitlines() if "Warning" in line]
    assert len(warnings) == 1 and found in warnings[0]
    assert "7328b3957e407ddae1d3cbf487f149ef" in warnings[0] and scene.DATA_URL in warnings[0]
    assert os.path.isdir(os.path.join(data_dir, "ADEChallengeData2016"))


def test_a_checked_download_is_recorded_and_a_file_replaced_by_hand_is_named(tmp_path,
                                                                               http_server,
                                                                               capsys):
    path = str(tmp_path / "zoo" / "f.bin")
    url = http_server.url("/body")
    assert downloads.download_first([(url, md5_hex(BODY))], path) == url
    assert _record(path)["md5"] == md5_hex(BODY)
    with open(path, "wb") as f:  # replaced by hand
        f.write(OTHER)
    capsys.readouterr()
    assert downloads.check_file_in_place(path, [md5_hex(BODY)], url) == md5_hex(OTHER)
    out = capsys.readouterr().out
    assert "Warning: %s has MD5 %s" % (path, md5_hex(OTHER)) in out and "Downloading" not in out
