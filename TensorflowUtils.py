"""Helpers for FCN.py: downloads, MatConvNet VGG-19 loading, layer helpers, image saving, summaries.

The layer helpers are graph code for tensorflow.compat.v1; everything that is plain logic
(kernel layout, mean pixel, shape checks, the download) is a small function testable without a
session.
"""
import http.client
import os
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import scipy.io

try:  # imported lazily by the few helpers that need it, so the pure helpers load fast
    import tensorflow.compat.v1 as tf
except ImportError:  # pragma: no cover - TensorFlow is in requirements.txt
    tf = None


class FCNError(Exception):
    """A problem the user can fix. Its message is one line: what is wrong and what to do.

    The command line prints it without a traceback and exits with code 2.
    """


# ----------------------------------------------------------------------------------------------
# Downloads
# ----------------------------------------------------------------------------------------------

def _progress_line(done, total, started):
    elapsed = max(time.time() - started, 1e-6)
    rate = done / elapsed / 1e6
    if total:
        return "\r>> %5.1f%%  %7.1f / %.1f MB  %6.2f MB/s" % (
            100.0 * done / total, done / 1e6, total / 1e6, rate)
    return "\r>> %7.1f MB  %6.2f MB/s" % (done / 1e6, rate)


def download_file(url, dest_path, timeout=60, progress=True, chunk_size=1 << 20):
    """Downloads url to dest_path, atomically: the bytes go to '<dest_path>.part' and are renamed
    into place only when the transfer is complete (its size equal to Content-Length, when given).

    An interrupted or failed download never leaves dest_path behind; it raises FCNError naming the
    URL and where a hand-downloaded copy can be put instead.
    """
    dest_dir = os.path.dirname(os.path.abspath(dest_path))
    os.makedirs(dest_dir, exist_ok=True)
    part_path = dest_path + ".part"
    hint = "download it by hand to %s" % dest_path
    done, total = 0, None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            started = last_print = time.time()
            with open(part_path, "wb") as out:
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
        if total is not None and done != total:
            raise FCNError("download of %s stopped at %d of %d bytes; run again, or %s"
                           % (url, done, total, hint))
        os.replace(part_path, dest_path)
    except FCNError:
        _remove_quietly(part_path)
        raise
    except urllib.error.HTTPError as e:
        _remove_quietly(part_path)
        raise FCNError("download of %s failed: HTTP %d %s; %s" % (url, e.code, e.reason, hint))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        # URLError: no network or no such host; OSError: a timeout or a reset; HTTPException:
        # the server dropped the connection halfway (IncompleteRead and friends).
        _remove_quietly(part_path)
        reason = getattr(e, "reason", None) or "%s: %s" % (type(e).__name__, e)
        raise FCNError("download of %s failed (%s); check the network and run again, or %s"
                       % (url, reason, hint))
    return dest_path


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def maybe_download(url, dest_dir, filename=None, **kwargs):
    """Returns the path of url's file in dest_dir, downloading it first when it is not there."""
    filename = filename or os.path.basename(url.split("?")[0])
    dest_path = os.path.join(dest_dir, filename)
    if not os.path.exists(dest_path):
        print("Downloading %s to %s" % (url, dest_path))
        download_file(url, dest_path, **kwargs)
    return dest_path
