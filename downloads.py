"""Downloads of the VGG-19 weights and the datasets: atomic, with progress, checked against the
published MD5 where one is known, and errors that say what to do. No TensorFlow here.

Checksums: a file downloaded here that does not match its known MD5 is never kept. A file that was
already in place (put there by hand, or downloaded by an older version) and does not match is used
with a warning, since the demo and the tests use synthetic files of the same names; its MD5 is
computed once and remembered in a small JSON sidecar next to it (<file>.md5.json: size, mtime,
MD5), so that a 0.5 GB file is not hashed at every start. MD5 here guards against damaged and
substituted files, not as a signature: what it is compared with is fixed, and making a second
file with a given MD5 (a second preimage) is not feasible.
"""
import hashlib
import http.client
import json
import os
import posixpath
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from guards import FCNError, atomic_path, remove_quietly, write_json_atomically

RECORD_SUFFIX = ".md5.json"
# What a failed transfer raises: URLError (no network, no such host, a TLS failure), OSError (a
# timeout, a reset), HTTPException (the server dropped the connection halfway: IncompleteRead).
_TRANSFER_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


# ----------------------------------------------------------------------------------------------
# MD5s, and the record that remembers one
# ----------------------------------------------------------------------------------------------

def new_md5():
    """An empty MD5 hash, declared not for security, so that FIPS-restricted builds allow it."""
    try:
        return hashlib.md5(usedforsecurity=False)
    except TypeError:  # a Python build without the keyword
        return hashlib.md5()


def md5_of_file(path, chunk_size=1 << 20):
    """The MD5 (hex) of the file at path, read in chunks so that a large file costs no memory."""
    digest = new_md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(path):
    """The sidecar that remembers path's MD5: '<path>.md5.json'."""
    return path + RECORD_SUFFIX


def file_signature(path):
    """(size, mtime in ns) of path: what changes when the file is replaced or edited."""
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def recorded_md5(record, signature):
    """The MD5 a sidecar's content holds if it describes a file of this signature, else None
    (a record of another size or mtime is stale: the file changed since it was hashed)."""
    if not isinstance(record, dict):
        return None
    md5 = record.get("md5")
    if (record.get("size"), record.get("mtime_ns")) != tuple(signature) or not isinstance(md5, str):
        return None
    return md5


def read_record(path):
    """The parsed sidecar of path, or None when it is missing or unreadable."""
    try:
        with open(record_path(path), "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_record(path, signature, md5):
    """Remembers path's MD5 for the file of this signature. Best effort: a folder that cannot be
    written only means the MD5 is computed again next time."""
    size, mtime_ns = signature
    try:
        write_json_atomically(record_path(path), {"file": os.path.basename(path), "size": size,
                                                  "mtime_ns": mtime_ns, "md5": md5})
    except OSError:
        pass


def file_md5(path):
    """path's MD5: read from its sidecar when that describes the file as it is now, else computed
    (once) and recorded. The signature is taken before hashing, so that a file changed meanwhile
    is hashed again next time."""
    signature = file_signature(path)
    md5 = recorded_md5(read_record(path), signature)
    if md5 is None:
        print("Checking the MD5 of %s (once; remembered in %s)" % (path, record_path(path)))
        md5 = md5_of_file(path)
        write_record(path, signature, md5)
    return md5


def check_file_in_place(path, accepted_md5s, source):
    """Checks a file that was already there against the MD5s of the published file(s) from
    source (a URL, for the message). A mismatch is a one-line warning, not an error: the file was
    put there on purpose. Returns its MD5, or None when no MD5 is known (nothing is checked)."""
    accepted = [md5 for md5 in accepted_md5s if md5]
    if not accepted:
        return None
    try:
        found = file_md5(path)
    except OSError:  # a folder, an unreadable file: what reads it next says so, in its own words
        return None
    if found not in accepted:
        print("Warning: %s has MD5 %s, not that of the file published at %s (%s); using it as "
              "it is (delete it to download that file)" % (path, found, source,
                                                           " or ".join(accepted)))
    return found


def remove_download(path):
    """Removes a downloaded file and its MD5 record, so that the next run downloads it again."""
    remove_quietly(path)
    remove_quietly(record_path(path))


# ----------------------------------------------------------------------------------------------
# One download
# ----------------------------------------------------------------------------------------------

def _progress_line(done, total, started):
    elapsed = max(time.time() - started, 1e-6)
    rate = done / elapsed / 1e6
    if total:
        return "\r>> %5.1f%%  %7.1f / %.1f MB  %6.2f MB/s" % (
            100.0 * done / total, done / 1e6, total / 1e6, rate)
    return "\r>> %7.1f MB  %6.2f MB/s" % (done / 1e6, rate)


def _copy_response(response, out, digest, progress, chunk_size):
    """Copies the body to the open file out, feeding digest on the way (one pass over the bytes);
    returns (bytes done, Content-Length or None)."""
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    done = 0
    started = last_print = time.time()
    while True:
        chunk = response.read(chunk_size)
        if not chunk:
            break
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if progress and time.time() - last_print >= 0.5:
            sys.stdout.write(_progress_line(done, total, started))
            sys.stdout.flush()
            last_print = time.time()
    if progress:
        sys.stdout.write(_progress_line(done, total, started) + "\n")
    return done, total


def certificate_failure(error):
    """The ssl.SSLCertVerificationError behind a failed transfer (urllib wraps it in a URLError),
    or None when the failure was something else."""
    for candidate in (error, getattr(error, "reason", None)):
        if isinstance(candidate, ssl.SSLCertVerificationError):
            return candidate
    return None


def unverified_context():
    """A TLS context that accepts any certificate: used only for a file whose MD5 is known, and
    kept only if the MD5 matches."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _transfer(url, dest_path, md5, hint, context, timeout, progress, chunk_size):
    """One attempt: url's body into a temporary file, renamed to dest_path only when complete and,
    if md5 is given, matching it. Returns the MD5 found."""
    digest = new_md5()
    with atomic_path(dest_path) as part:
        with open(part, "wb") as out, \
                urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            done, total = _copy_response(response, out, digest, progress, chunk_size)
        if total is not None and done != total:
            raise FCNError("download of %s stopped at %d of %d bytes; run again, or %s"
                           % (url, done, total, hint))
        found = digest.hexdigest()
        if md5 is not None and found != md5:
            how = " (without certificate verification)" if context is not None else ""
            raise FCNError("download of %s%s has MD5 %s, not the expected %s; it was removed: run "
                           "again, or %s" % (url, how, found, md5, hint))
    return found


def _transfer_error(url, error, hint):
    """The one-line FCNError for a failed transfer."""
    if isinstance(error, urllib.error.HTTPError):
        return FCNError("download of %s failed: HTTP %d %s; %s"
                        % (url, error.code, error.reason, hint))
    reason = getattr(error, "reason", None) or "%s: %s" % (type(error).__name__, error)
    return FCNError("download of %s failed (%s); check the network and run again, or %s"
                    % (url, reason, hint))


def download_file(url, dest_path, timeout=60, progress=True, chunk_size=1 << 20, md5=None):
    """Downloads url to dest_path, atomically: the bytes go to a temporary file that is renamed
    into place only when the transfer is complete (its size equal to Content-Length, when given)
    and, when md5 (hex) is given, its MD5 matches; the MD5 is then recorded next to the file.

    An interrupted, failed or mismatching download never leaves dest_path behind; it raises
    FCNError naming the URL and where a hand-downloaded copy can be put instead.

    When the server's TLS certificate cannot be verified (an expired one, as www.vlfeat.org's was
    in 2022), a file with a known md5 is downloaded once more without verification and kept only
    if it matches: the MD5 then vouches for the file. Without a known md5 nothing would, so that
    is an error.
    """
    os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
    hint = "download it by hand to %s" % dest_path
    try:
        found = _transfer(url, dest_path, md5, hint, None, timeout, progress, chunk_size)
    except _TRANSFER_ERRORS as e:
        failure = certificate_failure(e)
        if failure is None:
            raise _transfer_error(url, e, hint) from None
        why = getattr(failure, "verify_message", None) or str(failure)
        host = urllib.parse.urlparse(url).hostname
        if md5 is None:
            raise FCNError("the TLS certificate for %s cannot be verified (%s) and no MD5 of %s "
                           "is known to check the file instead, so it is not downloaded; fix the "
                           "system's certificates or clock and run again, or %s"
                           % (host, why, url, hint)) from None
        print("The TLS certificate for %s cannot be verified (%s): downloading %s without "
              "verification, to be kept only if its MD5 is %s" % (host, why, url, md5))
        try:
            found = _transfer(url, dest_path, md5, hint, unverified_context(), timeout, progress,
                              chunk_size)
        except _TRANSFER_ERRORS as e:
            raise _transfer_error(url, e, hint) from None
    if md5 is not None:
        write_record(dest_path, file_signature(dest_path), found)
    return dest_path


# ----------------------------------------------------------------------------------------------
# Where from: URLs, their MD5s and fallbacks
# ----------------------------------------------------------------------------------------------

def url_file_name(url, default=None):
    """The last component of url's path ('.../x.zip?dl=1' -> 'x.zip'), or default."""
    return posixpath.basename(urllib.parse.urlparse(url).path) or default


def sources_from(url, checksums):
    """The (url, md5) pairs to try for url, in order: url with its MD5 from checksums (a dict
    {url: md5}, in the order of preference), then the URLs listed after it there, its fallbacks.
    A URL that checksums does not list (a mirror, a test's server) is tried alone, unchecked."""
    urls = list(checksums)
    if url not in checksums:
        return [(url, None)]
    return [(u, checksums[u]) for u in urls[urls.index(url):]]


def download_first(sources, dest_path, **kwargs):
    """Downloads dest_path from the first of sources ((url, md5) pairs) that works: a failed
    download, a mismatching one too, is a warning and the next is tried. Returns the URL used;
    raises the last FCNError when none works."""
    for i, (url, md5) in enumerate(sources):
        print("Downloading %s to %s" % (url, dest_path))
        try:
            download_file(url, dest_path, md5=md5, **kwargs)
            return url
        except FCNError as e:
            if i + 1 == len(sources):
                raise
            print("Warning: %s; trying %s instead" % (e, sources[i + 1][0]))
    raise ValueError("no sources to download %s from" % dest_path)


def maybe_download(url, dest_dir, filename=None, md5=None, **kwargs):
    """Returns the path of url's file in dest_dir, downloading it first (checked against md5, when
    given) when it is not there; a file already there is checked with check_file_in_place."""
    dest_path = os.path.join(dest_dir, filename or url_file_name(url))
    if os.path.exists(dest_path):
        check_file_in_place(dest_path, [md5], url)
    else:
        download_first([(url, md5)], dest_path, **kwargs)
    return dest_path


def fetch_archive(archive_path, url, md5, target, unpack):
    """Unpacks the archive at archive_path into target by unpack(archive_path, hint), downloading
    it from url first when it is not there. A downloaded archive that fails to download, to match
    md5 or to unpack is removed, so that the next run downloads it again; one the user put there
    is checked against md5 with a warning and, when it fails, only named. hint is what the
    errors of unpack tell the user to do."""
    kind = os.path.splitext(archive_path)[1].lstrip(".") or "archive"
    downloaded = not os.path.exists(archive_path)
    if downloaded:
        try:
            download_first([(url, md5)], archive_path)
        except FCNError as e:
            raise FCNError("%s, or extract it by hand into %s" % (e, target)) from None
        hint = ("it was removed: run again to download it again, or put the %s from %s (or its "
                "extracted folder %s) there by hand" % (kind, url, target))
    else:
        check_file_in_place(archive_path, [md5], url)
        hint = ("replace it with the %s from %s, or delete it so that it is downloaded, or "
                "extract it by hand into %s" % (kind, url, target))
    try:
        unpack(archive_path, hint)
    except FCNError:
        if downloaded:  # not the user's file: remove it so that the next run downloads again
            remove_download(archive_path)
        raise
    return target
