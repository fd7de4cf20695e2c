"""PASCAL VOC 2012 segmentation: download, extraction, the lists of records, class names.

read_dataset(data_dir) returns (training_records, validation_records), each record a dict
{'image': path, 'annotation': path, 'filename': stem} as for MIT Scene Parsing, in the order of
the official lists (ImageSets/Segmentation/train.txt: 1,464 names, val.txt: 1,449). The layout,
as VOCtrainval_11-May-2012.tar holds it, extracted into data_dir:

    <data_dir>/VOCdevkit/VOC2012/JPEGImages/<name>.jpg          (17,125: more than are segmented)
    <data_dir>/VOCdevkit/VOC2012/SegmentationClass/<name>.png   (2,913)
    <data_dir>/VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt, val.txt

Only the names the lists give are read, so the JPEGs without a segmentation never become records.
A listed name whose image or annotation is missing is an FCNError, not a warning: the lists and the
files come from one tar, so a gap means a damaged folder, and training on part of a fixed split
would give figures that cannot be compared with anyone's. Nothing is cached: the lists are short.

Annotations are palette PNGs whose indices are the classes 0..20 (CLASS_NAMES) and 255 on object
boundaries and 'difficult' regions, the ignore label (datasets.VOC). Their palette is the VOC
colour map, so read as RGB they would give colours, not classes: imageio's Pillow path converts a
palette to RGB unless asked for the indices. image_files.read_annotation asks for them, so
the batch reader gets the class indices; nothing here decodes pixels.

The tar (about 2 GB) is downloaded only when <data_dir>/VOCdevkit/VOC2012 is missing, as the ADE20K
zip is: atomically (downloads), checked against its published MD5, then checked itself (readable,
complete up to its end-of-archive marker, no member leaving the folder, the segmentation lists
present) and extracted with Python's tarfile filter "data" into a temporary folder inside data_dir
that is renamed into place: an interruption never leaves anything that later looks complete. A
tar already in data_dir (put there by hand) is used as is; one that turns out bad is named and
kept, while a downloaded one is removed so that the next run downloads it again.
"""
import os
import posixpath
import sys
import tarfile
import tempfile
import zlib

from downloads import fetch_archive, url_file_name
from guards import FCNError, process_is_alive, remove_quietly
from read_MITSceneParsingData import zip_member_is_safe

DATA_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
# The published MD5 of the tar, by URL (the one torchvision checks too): another URL (a mirror,
# a test's server) has none known.
DATA_MD5S = {DATA_URL: "6cd6e144f989b92b3379bac3b3de84fd"}
TAR_NAME = "VOCtrainval_11-May-2012.tar"
DEVKIT_FOLDER = "VOCdevkit"
YEAR_FOLDER = "VOC2012"
IMAGE_FOLDER = "JPEGImages"
ANNOTATION_FOLDER = "SegmentationClass"
LIST_FOLDER = ("ImageSets", "Segmentation")
SPLITS = ("train", "val")  # the list files, training first
IMAGE_EXTENSION = ".jpg"
ANNOTATION_EXTENSION = ".png"
CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
# The tar members the dataset cannot do without: a tar lacking them is another tar (the VOC 2012
# test tar holds VOCdevkit/VOC2012 too, but no segmentation of train and val).
REQUIRED_MEMBERS = tuple(posixpath.join(DEVKIT_FOLDER, YEAR_FOLDER, *LIST_FOLDER, split + ".txt")
                         for split in SPLITS)
_EXTRACTING_PREFIX = "." + DEVKIT_FOLDER + ".extracting-"
# What reading a damaged tar raises: TarError (ReadError, a header that does not parse),
# EOFError (a compressed tar cut short), zlib.error (a corrupt .tar.gz), OSError (the disk).
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def dataset_dir(data_dir):
    """<data_dir>/VOCdevkit/VOC2012: its presence means the dataset is there."""
    return os.path.join(data_dir, DEVKIT_FOLDER, YEAR_FOLDER)


def read_class_names(data_dir):
    """The 21 class names, index 0 'background' (fixed by the challenge: no file names them)."""
    return list(CLASS_NAMES)


# ----------------------------------------------------------------------------------------------
# The lists of records
# ----------------------------------------------------------------------------------------------

def parse_list(lines):
    """The image names of a list file's lines, in order; surrounding blanks and blank lines are
    dropped. Raises ValueError naming the line when a name is not a plain file name (a separator,
    '..'): a list must not send the reader outside the dataset folder."""
    names = []
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name in (".", "..") or "/" in name or "\\" in name or ":" in name:
            raise ValueError("line %d, %r, is not an image name" % (number, name))
        names.append(name)
    return names


def read_list(path, fix):
    """The names in the list file at path; FCNError (ending with fix: what to do) when it is
    missing, unreadable, or lists nothing."""
    try:
        with open(path, "r", encoding="utf-8-sig") as f:
            names = parse_list(f)
    except FileNotFoundError:
        raise FCNError("the list %s is missing, so the folder is not the extracted VOC 2012 "
                       "trainval tar; %s" % (path, fix)) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FCNError("the list %s cannot be used (%s); %s" % (path, e, fix)) from None
    if not names:
        raise FCNError("the list %s names no image; %s" % (path, fix))
    return names


def _listing(folder):
    """The names in folder as a set (empty when it is missing): one listing instead of a stat per
    file, which is slow on Windows."""
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def split_records(voc_dir, split, fix):
    """The records of one split ('train' or 'val'), in the order of its list file; FCNError
    naming the first listed name whose image or annotation is missing, and the list."""
    list_path = os.path.join(voc_dir, *LIST_FOLDER, split + ".txt")
    names = read_list(list_path, fix)
    folders = [(os.path.join(voc_dir, IMAGE_FOLDER), IMAGE_EXTENSION),
               (os.path.join(voc_dir, ANNOTATION_FOLDER), ANNOTATION_EXTENSION)]
    present = [_listing(folder) for folder, _ in folders]
    for name in names:
        for (folder, extension), listing in zip(folders, present):
            if name + extension not in listing:
                raise FCNError("%s is missing, but the list %s names %s; %s"
                               % (os.path.join(folder, name + extension), list_path, name, fix))
    return [{"image": os.path.join(folders[0][0], name + IMAGE_EXTENSION),
             "annotation": os.path.join(folders[1][0], name + ANNOTATION_EXTENSION),
             "filename": name} for name in names]


# ----------------------------------------------------------------------------------------------
# Checking the tar (pure: TarInfo objects in, the problem out)
# ----------------------------------------------------------------------------------------------

def _normalised(name):
    """A member name as a comparable path: 'VOCdevkit//VOC2012/' -> 'VOCdevkit/VOC2012'."""
    return posixpath.normpath(name.replace("\\", "/"))


def member_problem(member, symlinks=frozenset()):
    """Why extracting this TarInfo would reach outside the folder it is extracted into, as a
    phrase ('the member '../x', which would be written outside ...'), or None when it is safe.

    Refused: a name that is absolute, has a drive or climbs out with '..' (either separator); a
    name under one of symlinks (the normalised names of the tar's symbolic links: a file written
    through a link lands where the link points); a symbolic link whose target, taken from the
    link's folder, is absolute or leaves the folder; a hard link to such a path; a device or FIFO.
    The data filter refuses these too (an absolute name it makes relative instead); this says so
    in one line before anything is written.
    """
    name = member.name
    if not zip_member_is_safe(name):
        return "the member %r, which would be written outside the folder" % name
    folder = posixpath.dirname(_normalised(name))
    while folder:
        if folder in symlinks:
            return "the member %r, which would be written through the link %r" % (name, folder)
        folder = posixpath.dirname(folder)
    if member.issym():
        target = posixpath.join(posixpath.dirname(name), member.linkname)
        if not zip_member_is_safe(target):  # an absolute target stays absolute in the join
            return ("the link %r -> %r, which points outside the folder"
                    % (name, member.linkname))
    elif member.islnk():
        if not zip_member_is_safe(member.linkname):
            return ("the hard link %r -> %r, which points outside the folder"
                    % (name, member.linkname))
    elif not (member.isfile() or member.isdir()):
        return "the member %r, a device or FIFO, which a dataset has no use for" % name
    return None


def first_problem(members):
    """The member_problem of the first unsafe member of a list of TarInfo objects, or None."""
    symlinks = frozenset(_normalised(m.name) for m in members if m.issym())
    for member in members:
        problem = member_problem(member, symlinks)
        if problem is not None:
            return problem
    return None


def missing_members(names):
    """The REQUIRED_MEMBERS that the member names (as the tar gives them) lack."""
    present = {_normalised(name) for name in names}
    return [required for required in REQUIRED_MEMBERS if required not in present]


def _reason(error):
    """'ReadError: ...' of an exception, on one line (tarfile's reasons can span several: one per
    compression it tried)."""
    return " ".join(("%s: %s" % (type(error).__name__, error)).split())


def check_tar(tar_path, hint):
    """Raises FCNError (its message ending with hint: what to do) unless tar_path is a readable,
    complete tar whose every member stays inside the folder and which holds the segmentation
    lists of VOCdevkit/VOC2012. Reads the headers only, nothing is written.

    Complete: Python's tarfile takes a header that is cut short or garbled (after the first) for
    the end of the archive, so a truncated tar would list fewer members without an error; the end
    is therefore checked to be the zero block of a real end-of-archive marker.
    """
    try:
        with tarfile.open(tar_path) as archive:
            members = archive.getmembers()
            archive.fileobj.seek(archive.offset)
            end = archive.fileobj.read(tarfile.BLOCKSIZE)
    except _TAR_ERRORS as e:
        raise FCNError("%s is not a valid tar (%s); %s" % (tar_path, _reason(e), hint)) from None
    if end != bytes(tarfile.BLOCKSIZE):
        raise FCNError("%s is truncated or damaged after %d members (no end-of-archive marker "
                       "there); %s" % (tar_path, len(members), hint))
    problem = first_problem(members)
    if problem is not None:
        raise FCNError("%s holds %s; nothing was extracted; %s" % (tar_path, problem, hint))
    missing = missing_members(m.name for m in members)
    if missing:
        raise FCNError("%s holds no %s, so it is not the VOC 2012 trainval tar (%s); %s"
                       % (tar_path, missing[0], TAR_NAME, hint))
    return members


# ----------------------------------------------------------------------------------------------
# Download and extraction
# ----------------------------------------------------------------------------------------------

def require_data_filter(tar_path):
    """FCNError unless this Python's tarfile has the "data" extraction filter (3.10.12+, 3.11.4+,
    3.12+): without it a tar may write anywhere, so the project does not extract one."""
    if not hasattr(tarfile, "data_filter"):
        raise FCNError("extracting %s needs the \"data\" filter of Python's tarfile, which this "
                       "Python %s lacks; upgrade to Python 3.10.12+, 3.11.4+ or 3.12+, or extract "
                       "the tar by hand into %s" % (tar_path, sys.version.split()[0],
                                                    os.path.dirname(tar_path) or "."))


def _owner_pid(name, prefix):
    """The process id in a temporary name '<prefix><pid>-<random>', or None."""
    pid = name[len(prefix):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def remove_stale(folder, prefix):
    """Removes what a killed process left in folder under names '<prefix><pid>-...' (a temporary
    extraction folder, a partial download), unless that process still runs: two runs sharing
    data_dir must not delete each other's work in progress."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            pid = _owner_pid(name, prefix)
            if pid is None or (pid != os.getpid() and not process_is_alive(pid)):
                print("Removing %s, left by an interrupted run" % os.path.join(folder, name))
                remove_quietly(os.path.join(folder, name))


def extract_tar(tar_path, data_dir, hint):
    """Extracts the tar with the data filter into a temporary folder inside data_dir, then moves
    VOCdevkit (or, when data_dir/VOCdevkit already holds another year, VOCdevkit/VOC2012) into
    place with one rename; on any failure nothing but the tar is left."""
    target = dataset_dir(data_dir)
    remove_stale(data_dir, _EXTRACTING_PREFIX)
    temp_dir = tempfile.mkdtemp(prefix="%s%d-" % (_EXTRACTING_PREFIX, os.getpid()), dir=data_dir)
    print("Extracting %s to %s" % (tar_path, target))
    try:
        with tarfile.open(tar_path) as archive:
            archive.extractall(temp_dir, filter="data")
        extracted = os.path.join(temp_dir, DEVKIT_FOLDER)
        if not os.path.isdir(os.path.join(extracted, YEAR_FOLDER)):
            raise FCNError("%s holds no folder %s/%s, so it is not the VOC 2012 trainval tar (%s);"
                           " %s" % (tar_path, DEVKIT_FOLDER, YEAR_FOLDER, TAR_NAME, hint))
        devkit = os.path.join(data_dir, DEVKIT_FOLDER)
        if os.path.isdir(devkit):
            os.replace(os.path.join(extracted, YEAR_FOLDER), target)
        else:
            os.replace(extracted, devkit)
    except _TAR_ERRORS as e:  # a filter's refusal, a member cut short, a full disk
        raise FCNError("extracting %s failed (%s); %s" % (tar_path, _reason(e), hint)) from None
    finally:
        remove_quietly(temp_dir)
    return target


def maybe_download_and_extract(data_dir, data_url=DATA_URL, checksums=DATA_MD5S):
    """Returns <data_dir>/VOCdevkit/VOC2012, downloading and extracting the tar first only when
    that folder is missing. The download is checked against data_url's MD5 in checksums
    ({url: md5}) and removed if it, or its extraction, fails; a tar already in data_dir (put there
    by hand) is used as is (a warning if its MD5 differs) and only named when it is bad."""
    target = dataset_dir(data_dir)
    if os.path.isdir(target):
        return target
    tar_path = os.path.join(data_dir, url_file_name(data_url, TAR_NAME))
    require_data_filter(tar_path)  # before 2 GB are downloaded for nothing
    if not os.path.exists(tar_path):
        remove_stale(data_dir, os.path.basename(tar_path) + ".part-")  # a killed download's

    def unpack(path, hint):
        check_tar(path, hint)
        extract_tar(path, data_dir, hint)

    return fetch_archive(tar_path, data_url, checksums.get(data_url), target, unpack)


# ----------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------

def read_dataset(data_dir, data_url=DATA_URL):
    """(training_records, validation_records) of PASCAL VOC 2012 in data_dir, in the order of
    train.txt and val.txt, downloading the dataset from data_url when <data_dir>/VOCdevkit/VOC2012
    is missing."""
    if not os.path.isdir(data_dir):
        try:
            os.makedirs(data_dir, exist_ok=True)
        except OSError as e:
            raise FCNError("--data_dir %s does not exist and cannot be created (%s); pass a "
                           "writable folder" % (data_dir, e.strerror or e)) from None
    voc_dir = maybe_download_and_extract(data_dir, data_url)
    fix = ("delete %s so that it is downloaded again, or extract %s from %s into %s"
           % (voc_dir, TAR_NAME, data_url, data_dir))
    training, validation = (split_records(voc_dir, split, fix) for split in SPLITS)
    print("PASCAL VOC 2012: %d training and %d validation records"
          % (len(training), len(validation)))
    return training, validation
