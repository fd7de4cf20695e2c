"""MIT Scene Parsing (ADE20K challenge): download, extraction and the lists of records.

read_dataset(data_dir) returns (training_records, validation_records), each record a dict
{'image': path, 'annotation': path, 'filename': stem}, as in the reference, in a fixed (sorted)
order; shuffling is the batch reader's job.

Differences from the reference, on purpose:
- file names are taken with os.path (basename, splitext, join), never by splitting on "/", which
  gave 0 records on Windows. The pairing takes its path module as a parameter (pathmod), so that
  a test runs it with ntpath on backslash paths;
- the dataset is downloaded only when the extracted folder is missing, to a temporary file that is
  renamed when complete, checked (size, valid zip, no entry leaving the folder) and extracted into
  a temporary folder that is renamed into place: an interruption never leaves anything that later
  looks complete;
- the record cache is JSON (MITSceneParsing.json) with paths relative to data_dir, not a pickle:
  loading a pickle runs whatever code the file holds. A cache that is unreadable, of another
  format, names a file that no longer exists, or was written before files were added to or
  removed from a split (a digest of each folder's listing is kept in it) is rebuilt.
"""
import hashlib
import json
import ntpath
import os
import posixpath
import shutil
import tempfile
import zipfile
import zlib

from image_files import IMAGE_EXTENSIONS
from datasets import ADE20K
from downloads import fetch_archive, url_file_name
from guards import FCNError, atomic_path

DATA_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
# The published MD5 of the zip, by URL: another URL (a mirror, a test's server) has none known.
DATA_MD5S = {DATA_URL: "7328b3957e407ddae1d3cbf487f149ef"}
DATASET_FOLDER = "ADEChallengeData2016"  # what the zip holds, extracted into data_dir
CACHE_NAME = "MITSceneParsing.json"
CACHE_FORMAT = "FCN.tensorflow MIT Scene Parsing records"
CACHE_VERSION = 2  # 2: with the digests of the folders' listings
SPLITS = ("training", "validation")
CLASS_INFO_NAME = "objectInfo150.txt"
ANNOTATION_EXTENSION = ".png"
_EXTRACTING_PREFIX = "." + DATASET_FOLDER + ".extracting-"


# ----------------------------------------------------------------------------------------------
# Pairing images with annotations (pure: the path module is a parameter)
# ----------------------------------------------------------------------------------------------

def file_stem(path, pathmod=os.path):
    """'C:\\data\\ADE_train_00000001.jpg' -> 'ADE_train_00000001' (with pathmod=ntpath)."""
    return pathmod.splitext(pathmod.basename(path))[0]


def pair_records(image_paths, annotation_paths, pathmod=os.path):
    """Pairs every image with the annotation of the same stem.

    Returns (records, unpaired): records sorted by file name, each
    {'image': path, 'annotation': path, 'filename': stem}; unpaired the sorted image paths that
    have no annotation. Only the path functions of pathmod are used, so the same code pairs
    Windows paths (ntpath) and POSIX ones.
    """
    annotations = {}
    for path in annotation_paths:
        if pathmod.splitext(path)[1].lower() == ANNOTATION_EXTENSION:
            annotations[file_stem(path, pathmod)] = path
    records, unpaired = [], []
    for path in image_paths:
        stem = file_stem(path, pathmod)
        if stem in annotations:
            records.append({"image": path, "annotation": annotations[stem], "filename": stem})
        else:
            unpaired.append(path)
    records.sort(key=lambda record: (record["filename"], record["image"]))
    return records, sorted(unpaired)


def _list_files(folder, extensions):
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, name) for name in os.listdir(folder)
            if os.path.splitext(name)[1].lower() in extensions
            and os.path.isfile(os.path.join(folder, name))]


def scan_split(dataset_dir, split):
    """The records of one split of an extracted ADEChallengeData2016 folder, sorted; an image
    without its annotation is skipped with a warning, as in the reference."""
    image_dir = os.path.join(dataset_dir, "images", split)
    annotation_dir = os.path.join(dataset_dir, "annotations", split)
    records, unpaired = pair_records(_list_files(image_dir, IMAGE_EXTENSIONS),
                                     _list_files(annotation_dir, (ANNOTATION_EXTENSION,)))
    for path in unpaired:
        print("Warning: %s has no annotation in %s; skipped" % (path, annotation_dir))
    return records


# ----------------------------------------------------------------------------------------------
# The record cache (JSON, paths relative to data_dir)
# ----------------------------------------------------------------------------------------------

def path_parts(path, start, pathmod=os.path):
    """The components of path relative to start, as a list: ['ADEChallengeData2016', 'images',
    'training', 'x.jpg']. Stored as a list, the cache reads the same on Windows and Linux."""
    relative = pathmod.relpath(path, start)
    parts = []
    while relative:
        head, tail = pathmod.split(relative)
        if not tail:  # a root or drive: relpath never returns one for a path under start
            raise ValueError("%s is not relative" % relative)
        parts.append(tail)
        relative = head
    return parts[::-1]


def _safe_part(part):
    """One plain file or folder name: no separator of either system, no '..', no drive."""
    return (isinstance(part, str) and part not in ("", ".", "..")
            and posixpath.basename(part) == part and ntpath.basename(part) == part)


def records_to_cache(splits, data_dir, pathmod=os.path):
    """The JSON-able cache of {'training': records, 'validation': records}."""
    cache = {"format": CACHE_FORMAT, "version": CACHE_VERSION}
    for split, records in splits.items():
        cache[split] = [{"image": path_parts(r["image"], data_dir, pathmod),
                         "annotation": path_parts(r["annotation"], data_dir, pathmod),
                         "filename": r["filename"]} for r in records]
    return cache


def records_from_cache(cache, data_dir, pathmod=os.path):
    """The inverse of records_to_cache: {'training': records, 'validation': records}.

    Raises ValueError naming what is wrong when cache is not such an object (another format or
    version, a missing split, a path part that would leave data_dir).
    """
    if not isinstance(cache, dict) or cache.get("format") != CACHE_FORMAT:
        raise ValueError("not a record cache of this project")
    if cache.get("version") != CACHE_VERSION:
        raise ValueError("cache version %r, expected %d" % (cache.get("version"), CACHE_VERSION))
    splits = {}
    for split in SPLITS:
        entries = cache.get(split)
        if not isinstance(entries, list):
            raise ValueError("no list of %s records" % split)
        records = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
                raise ValueError("a %s record is not {'image', 'annotation', 'filename'}" % split)
            record = {"filename": entry["filename"]}
            for key in ("image", "annotation"):
                parts = entry.get(key)
                if not isinstance(parts, list) or not parts or not all(map(_safe_part, parts)):
                    raise ValueError("a %s record has the %s path %r, not a list of plain names"
                                     % (split, key, parts))
                record[key] = pathmod.join(data_dir, *parts)
            records.append(record)
        splits[split] = records
    return splits


def _first_missing(paths):
    """The first of paths that is not a file, or None; one listing per folder, not a stat each
    (tens of thousands of stats are slow on Windows)."""
    listings = {}
    for path in paths:
        folder, name = os.path.split(path)
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(folder))
            except OSError:
                listings[folder] = set()
        if name not in listings[folder]:
            return path
    return None


def split_folders(split):
    """{kind: extensions} of the folders <kind>/<split> of ADEChallengeData2016 that a split
    is read from."""
    return {"images": IMAGE_EXTENSIONS, "annotations": (ANNOTATION_EXTENSION,)}


def listing_digest(names, extensions):
    """SHA-256 of the sorted names among `names` that have one of extensions: changes when such
    a file is added, removed or renamed, not when one is rewritten."""
    kept = sorted(n for n in names if n.lower().endswith(extensions))
    return hashlib.sha256("\n".join(kept).encode("utf-8", "surrogateescape")).hexdigest()


def folder_listings(dataset_dir):
    """{split: {kind: digest}}: listing_digest of each folder <kind>/<split> ('' for a folder that
    is not there). One listing a folder, no stat a file."""
    digests = {}
    for split in SPLITS:
        digests[split] = {}
        for kind, extensions in split_folders(split).items():
            try:
                names = os.listdir(os.path.join(dataset_dir, kind, split))
            except OSError:
                names = None
            digests[split][kind] = "" if names is None else listing_digest(names, extensions)
    return digests


def load_cache(data_dir):
    """The cached (training, validation) records, or None (with a warning when a cache file is
    there but unusable, so that it is rebuilt). The cache is parsed as JSON, never executed."""
    path = os.path.join(data_dir, CACHE_NAME)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "r", encoding="utf-8") as f:
            content = json.load(f)
        splits = records_from_cache(content, data_dir)
        cached_listings = content.get("listings")
        if not isinstance(cached_listings, dict):
            raise ValueError("no digests of the folders' listings")
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        print("Warning: the record cache %s is unreadable (%s); rebuilding it"
              % (path, str(e).splitlines()[0] if str(e) else type(e).__name__))
        return None
    missing = _first_missing(p for split in SPLITS for record in splits[split]
                             for p in (record["image"], record["annotation"]))
    if missing is not None:
        print("Warning: the record cache %s names %s, which no longer exists; rebuilding it"
              % (path, missing))
        return None
    now = folder_listings(os.path.join(data_dir, DATASET_FOLDER))
    changed = [os.path.join(data_dir, DATASET_FOLDER, kind, split)
               for split in SPLITS for kind, digest in sorted(now[split].items())
               if not isinstance(cached_listings.get(split), dict)
               or cached_listings[split].get(kind) != digest]
    if changed:
        print("Warning: files were added to or removed from %s since the record cache %s was "
              "written; rebuilding it" % (", ".join(changed), path))
        return None
    return splits["training"], splits["validation"]


def save_cache(data_dir, training, validation, listings):
    """Writes the cache atomically (temporary file, then rename); a read-only data_dir only
    costs a warning. listings: folder_listings of the folders as they were scanned."""
    path = os.path.join(data_dir, CACHE_NAME)
    cache = records_to_cache({"training": training, "validation": validation}, data_dir)
    cache["listings"] = listings
    try:
        with atomic_path(path) as part, open(part, "w", encoding="utf-8") as f:
            json.dump(cache, f, separators=(",", ":"))
    except OSError as e:
        print("Warning: cannot write the record cache %s (%s); continuing without it"
              % (path, e.strerror or e))


# ----------------------------------------------------------------------------------------------
# Download and extraction
# ----------------------------------------------------------------------------------------------

def zip_member_is_safe(name):
    """False for a zip entry that would land outside the folder it is extracted into: an
    absolute path, a drive, or '..' that climbs out, with / or \\ as the separator."""
    if ntpath.splitdrive(name)[0]:  # C:x, \\server\share\x
        return False
    for pathmod, root in ((posixpath, "/target"), (ntpath, "C:\\target")):
        target = pathmod.normpath(pathmod.join(root, name))
        try:
            if pathmod.commonpath([root, target]) != root:
                return False
        except ValueError:  # another drive
            return False
    return True


def check_zip(zip_path, hint):
    """Raises FCNError (its message ending with hint: what to do) unless zip_path is a readable
    zip whose every entry stays inside the folder it is extracted into."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise FCNError("%s is not a valid zip (%s); %s" % (zip_path, e, hint))
    for name in names:
        if not zip_member_is_safe(name):
            raise FCNError("%s holds the entry %r, which would be written outside the folder it "
                           "is extracted into; nothing was extracted; %s" % (zip_path, name, hint))
    return names


def extract_dataset(zip_path, data_dir, hint):
    """Extracts the zip into a temporary folder inside data_dir and renames its
    ADEChallengeData2016 into place; on any failure nothing but the zip is left."""
    dataset_dir = os.path.join(data_dir, DATASET_FOLDER)
    for name in os.listdir(data_dir):  # what an earlier, killed extraction left
        if name.startswith(_EXTRACTING_PREFIX):
            shutil.rmtree(os.path.join(data_dir, name), ignore_errors=True)
    temp_dir = tempfile.mkdtemp(prefix=_EXTRACTING_PREFIX, dir=data_dir)
    print("Extracting %s to %s" % (zip_path, dataset_dir))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(temp_dir)
        extracted = os.path.join(temp_dir, DATASET_FOLDER)
        if not os.path.isdir(extracted):
            raise FCNError("%s holds no folder %s, so it is not the MIT Scene Parsing zip; %s"
                           % (zip_path, DATASET_FOLDER, hint))
        os.replace(extracted, dataset_dir)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:  # bad CRC, full disk
        raise FCNError("extracting %s failed (%s: %s); %s" % (zip_path, type(e).__name__, e, hint))
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return dataset_dir


def maybe_download_and_extract(data_dir, data_url=DATA_URL, checksums=DATA_MD5S):
    """Returns <data_dir>/ADEChallengeData2016, downloading and extracting it first only when
    that folder is missing. The download is checked against data_url's MD5 in checksums
    ({url: md5}) and removed if it does not match; a zip already in data_dir (put there by hand)
    is used as is, with a warning if it does not match."""
    dataset_dir = os.path.join(data_dir, DATASET_FOLDER)
    if os.path.isdir(dataset_dir):
        return dataset_dir
    zip_path = os.path.join(data_dir, url_file_name(data_url, DATASET_FOLDER + ".zip"))

    def unpack(path, hint):
        check_zip(path, hint)
        extract_dataset(path, data_dir, hint)

    return fetch_archive(zip_path, data_url, checksums.get(data_url), dataset_dir, unpack)


# ----------------------------------------------------------------------------------------------
# The entry points
# ----------------------------------------------------------------------------------------------

def _ensure_dir(data_dir):
    if not os.path.isdir(data_dir):
        try:
            os.makedirs(data_dir, exist_ok=True)
        except OSError as e:
            raise FCNError("--data_dir %s does not exist and cannot be created (%s); pass a "
                           "writable folder" % (data_dir, e.strerror or e))


def read_dataset(data_dir, data_url=DATA_URL):
    """(training_records, validation_records) of MIT Scene Parsing in data_dir, downloading the
    dataset from data_url when <data_dir>/ADEChallengeData2016 is missing."""
    _ensure_dir(data_dir)
    cached = load_cache(data_dir)
    if cached is not None:
        return cached
    dataset_dir = maybe_download_and_extract(data_dir, data_url)
    listings = folder_listings(dataset_dir)  # before the scan: a file added meanwhile is seen
    training, validation = (scan_split(dataset_dir, split) for split in SPLITS)
    for split, records in zip(SPLITS, (training, validation)):
        if not records:
            raise FCNError("no %s images with annotations in %s (expected images/%s/*.jpg and "
                           "annotations/%s/*.png); delete the folder so that it is downloaded "
                           "again, or fix it" % (split, dataset_dir, split, split))
    print("MIT Scene Parsing: %d training and %d validation records"
          % (len(training), len(validation)))
    save_cache(data_dir, training, validation, listings)
    return training, validation


def parse_class_names(lines):
    """The 151 class names (index 0 'other') from the lines of objectInfo150.txt
    ('Idx Ratio Train Val Name', tab-separated, after a header line); a class the lines do not
    name is called 'class <i>'."""
    names = ["other"] + ["class %d" % i for i in range(1, ADE20K.num_classes)]
    for line in lines:
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) >= 5 and fields[0].strip().isdigit():
            index = int(fields[0])
            if 1 <= index < ADE20K.num_classes and fields[4].strip():
                names[index] = fields[4].strip()
    return names


def read_class_names(data_dir):
    """The 151 class names of <data_dir>/ADEChallengeData2016/objectInfo150.txt (index 0
    'other'); generic names 'class <i>' where the file is absent or unreadable."""
    path = os.path.join(data_dir, DATASET_FOLDER, CLASS_INFO_NAME)
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return parse_class_names(f)
    except OSError:
        return parse_class_names([])
