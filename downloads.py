"""Downloads of the VGG-19 weights and the datasets: atomic, with progress, and errors that say what
to do. No TensorFlow here.
"""
import http.client
import os
import posixpath
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from guards import FCNError, atomic_path


def _progress_line(done, total, started):
    elapsed = max(time.time() - started, 1e-6)
    rate = done / elapsed / 1e6
    if total:
        return "\r>> %5.1f%%  %7.1f / %.1f MB  %6.2f MB/s" % (
            100.0 * done / total, done / 1e6, total / 1e6, rate)
    return "\r>> %7.1f MB  %6.2f MB/s" % (done / 1e6, rate)


def _copy_response(response, out, progress, chunk_size):
    """Copies the body to the open file out; returns (bytes done, Content-Length or None)."""
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    done = 0
    started = last_print = time.time()
    while True:
        chunk = response.read(chunk_size)
        if not chunk:
            break
        out.write(chunk)
        done += len(chunk)
        if progress and time.time() - last_print >= 0.5:
            sys.stdout.write(_progress_line(done, total, started))
            sys.stdout.flush()
            last_print = time.time()
    if progress:
        sys.stdout.write(_progress_line(done, total, started) + "\n")
    return done, total


def download_file(url, dest_path, timeout=60, progress=True, chunk_size=1 << 20):
    """Downloads url to dest_path, atomically: the bytes go to a temporary file that is renamed
    into place only when the transfer is complete (its size equal to Content-Length, when given).

    An interrupted or failed download never leaves dest_path behind; it raises FCNError naming the
    URL and where a hand-downloaded copy can be put instead.
    """
    os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
    hint = "download it by hand to %s" % dest_path
    try:
        with atomic_path(dest_path) as part, open(part, "wb") as out, \
                urllib.request.urlopen(url, timeout=timeout) as response:
            done, total = _copy_response(response, out, progress, chunk_size)
            if total is not None and done != total:
                raise FCNError("download of %s stopped at %d of %d bytes; run again, or %s"
                               % (url, done, total, hint))
    except urllib.error.HTTPError as e:
        raise FCNError("download of %s failed: HTTP %d %s; %s" % (url, e.code, e.reason, hint))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        # URLError: no network or no such host; OSError: a timeout or a reset; HTTPException:
        # the server dropped the connection halfway (IncompleteRead and friends).
        reason = getattr(e, "reason", None) or "%s: %s" % (type(e).__name__, e)
        raise FCNError("download of %s failed (%s); check the network and run again, or %s"
                       % (url, reason, hint))
    return dest_path


def url_file_name(url, default=None):
    """The last component of url's path ('.../x.zip?dl=1' -> 'x.zip'), or default."""
    return posixpath.basename(urllib.parse.urlparse(url).path) or default


def maybe_download(url, dest_dir, filename=None, **kwargs):
    """Returns the path of url's file in dest_dir, downloading it first when it is not there."""
    dest_path = os.path.join(dest_dir, filename or url_file_name(url))
    if not os.path.exists(dest_path):
        print("Downloading %s to %s" % (url, dest_path))
        download_file(url, dest_path, **kwargs)
    return dest_path
