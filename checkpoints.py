"""Checkpoints in --logs_dir: finding the newest readable one, restoring it, saving, and cleaning
up after a save that was killed halfway or ran out of disk space.

Names are the reference's: <logs_dir>/model.ckpt-<step>.{index,data-*}, listed in
<logs_dir>/checkpoint. No .meta is written: the graph is rebuilt from the code, and a first run's
meta graph would embed the 0.5 GB of VGG weights.

The model.ckpt-<step> files in the folder are the truth, the 'checkpoint' state file only a
hint: it goes stale when a run is killed between a save and its update, holds the absolute paths
of a folder that has since been moved, and can be lost or damaged like any file. Training
rewrites it from the folder (repair_state), with paths relative to the folder.
"""
import glob
import math
import os
import re

import tensorflow.compat.v1 as tf
from google.protobuf import text_format

from guards import (DISK_FULL_TEXTS, FCNError, atomic_path, error_summary, format_size,
                    free_space, is_disk_full, remove_quietly)
from optimizers import slot_optimizer

CHECKPOINT_PREFIX = "model.ckpt"
KEEP_CHECKPOINTS = 5  # the newest ones kept on disk; older ones are deleted as new ones come
STATE_NAME = "checkpoint"  # the state file TensorFlow's Saver writes and get_checkpoint_state reads

# model.ckpt-<step>, alone (an old V1 checkpoint) or with the suffix of one of its files; the
# temporaries of an unfinished save (.tempstate<n>, _temp) are not checkpoint files.
_CHECKPOINT_FILE = re.compile(r"^%s-(\d+)(?:\.index|\.meta|\.data-\d+-of-\d+)?$"
                              % re.escape(CHECKPOINT_PREFIX))
_DATA_SHARD = re.compile(r"\.data-(\d+)-of-(\d+)$")


def step_from_checkpoint_name(path):
    """'logs/model.ckpt-500' -> 500; 0 when the name carries no step."""
    suffix = os.path.basename(path).rsplit("-", 1)
    return int(suffix[1]) if len(suffix) == 2 and suffix[1].isdigit() else 0


# ---- what the folder holds ---------------------------------------------------------------------

def checkpoints_on_disk(logs_dir):
    """The prefixes (<logs_dir>/model.ckpt-<step>) of which logs_dir holds at least one file,
    oldest step first, readable or not. A folder that is not there holds none."""
    try:
        names = os.listdir(logs_dir)
    except OSError:
        return []
    found = {}
    for name in names:
        match = _CHECKPOINT_FILE.match(name)
        if match:
            prefix = name[:match.end(1)]
            found[prefix] = int(match.group(1))
    return [os.path.join(logs_dir, prefix)
            for prefix in sorted(found, key=lambda p: (found[p], p))]


def _tensor_nbytes(shape, dtype):
    """Bytes of a tensor in a checkpoint's data; 0 for a string, whose size its shape won't tell."""
    try:
        return math.prod(shape) * dtype.size
    except (TypeError, ValueError):
        return 0


def _data_shard_problem(prefix):
    """(paths of the .data shards of the checkpoint at prefix, None), or (None, what is wrong):
    one is missing, or there are none."""
    counts, indices, paths = set(), set(), []
    for path in glob.glob(glob.escape(prefix) + ".data-*"):
        match = _DATA_SHARD.search(path)
        if match:
            indices.add(int(match.group(1)))
            counts.add(int(match.group(2)))
            paths.append(path)
    if not paths:
        return None, "no .data file"
    if len(counts) > 1:
        return None, ".data files of different saves (of %s shards)" % sorted(counts)
    count = counts.pop()
    missing = [i for i in range(count) if i not in indices]
    if missing:
        return None, "%s.data-%05d-of-%05d is missing" % (os.path.basename(prefix), missing[0],
                                                          count)
    return paths, None


def checkpoint_problem(prefix):
    """None when the checkpoint at prefix can be restored; else what is wrong with it, in a few
    words.

    Cheap enough for every start, without reading a 1.7 GB checkpoint: its index must parse, every
    data shard must be there and together hold at least the bytes the index lists (a save that ran
    out of space or a copy cut short leaves less; a numeric tensor is stored as its raw bytes, so
    a complete checkpoint holds exactly that), and its smallest tensor must read back with a
    matching checksum.
    """
    if not os.path.isfile(prefix + ".index"):
        return "no .index file"
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    except Exception as e:  # not an index: zeroed, cut short, another file's content
        return "its .index is damaged: %s" % error_summary(e)
    paths, problem = _data_shard_problem(prefix)
    if problem:
        return problem
    sizes = {name: _tensor_nbytes(shapes[name], dtypes[name]) for name in shapes}
    try:
        present = sum(os.path.getsize(p) for p in paths)
    except OSError as e:  # a shard removed while we look
        return "%s: %s" % (e.filename, e.strerror)
    if present < sum(sizes.values()):
        return "its data is cut short: %d of the %d bytes its index lists" % (
            present, sum(sizes.values()))
    if sizes:
        smallest = min(sizes, key=lambda name: (sizes[name], name))
        try:
            reader.get_tensor(smallest)
        except Exception as e:  # a checksum that does not match, a shard that went away
            return "reading %s fails: %s" % (smallest, error_summary(e))
    return None


def readable_checkpoints(logs_dir):
    """The prefixes of the checkpoints in logs_dir that can be restored, oldest first."""
    return [p for p in checkpoints_on_disk(logs_dir) if checkpoint_problem(p) is None]


def latest_checkpoint(logs_dir, refuse_unreadable=False):
    """The newest checkpoint in logs_dir that can be restored, or None when there is none.

    Found from the model.ckpt-* files themselves: a stale, lost, damaged or moved 'checkpoint'
    state file changes nothing. A newer checkpoint that cannot be read (cut short by a full disk,
    a shard lost in a copy) is skipped with a warning naming it, and an older one is taken.

    refuse_unreadable: when model.ckpt-* files are there but none of them can be read, FCNError
    instead of None; so that training refuses to start afresh from VGG-19 (and a later save to
    overwrite them) where the user expects it to resume.
    """
    unreadable = []
    for prefix in reversed(checkpoints_on_disk(logs_dir)):
        problem = checkpoint_problem(prefix)
        if problem is None:
            return prefix
        print("Warning: checkpoint %s cannot be read (%s); trying an older one"
              % (prefix, problem))
        unreadable.append(prefix)
    if unreadable and refuse_unreadable:
        raise FCNError(
            "none of the checkpoints in --logs_dir %s can be read (%s); restore their files, or "
            "move %s out of it to start afresh" % (
                logs_dir, ", ".join(os.path.basename(p) for p in unreadable),
                os.path.join(logs_dir, CHECKPOINT_PREFIX + "-*")))
    return None


def checkpoint_to_use(logs_dir, purpose=""):
    """latest_checkpoint(logs_dir, refuse_unreadable=True) for a mode that needs one; FCNError
    saying what to do when there is none. purpose, e.g. " to export", ends the first clause."""
    if not os.path.isdir(logs_dir):
        raise FCNError("--logs_dir %s does not exist, so there is no checkpoint%s; point it at "
                       "the folder training wrote" % (logs_dir, purpose))
    checkpoint = latest_checkpoint(logs_dir, refuse_unreadable=True)
    if checkpoint is None:
        raise FCNError("no checkpoint in --logs_dir %s%s; train first (--mode=train) or point "
                       "--logs_dir at a folder with model.ckpt-* files" % (logs_dir, purpose))
    return checkpoint


# ---- the state file ----------------------------------------------------------------------------

def _empty_state():
    """An empty CheckpointState message (tf.compat.v1 exports no constructor for it)."""
    state = tf.train.generate_checkpoint_state_proto("/", "/", all_model_checkpoint_paths=["/"])
    state.Clear()
    return state


def read_state(logs_dir):
    """The paths <logs_dir>/checkpoint lists, oldest first, as written (absolute, or relative to
    the folder); None when it is missing or not a state file (empty, binary, other text).

    tf.train.get_checkpoint_state raises UnicodeDecodeError on a binary file and ValueError on
    one without a model_checkpoint_path, and logs warnings on others: this never raises."""
    try:
        with open(os.path.join(logs_dir, STATE_NAME), "rb") as f:
            text = f.read(1 << 20).decode("utf-8")
        state = text_format.Parse(text, _empty_state())
    except (OSError, ValueError, text_format.ParseError):  # ValueError: UnicodeDecodeError
        return None
    if not state.model_checkpoint_path:
        return None
    paths = list(state.all_model_checkpoint_paths)
    if not paths or paths[-1] != state.model_checkpoint_path:
        paths.append(state.model_checkpoint_path)
    return paths


def state_text(names):
    """The content of a state file listing names (relative to its folder), oldest first."""
    state = _empty_state()
    state.model_checkpoint_path = names[-1]
    state.all_model_checkpoint_paths.extend(names)
    return text_format.MessageToString(state)


def _lists_this_folder(logs_dir, listed, prefixes):
    """Whether the state file's paths are prefixes, relative to logs_dir or absolute into it (not
    into the folder it was moved or copied from)."""
    if listed is None or len(listed) != len(prefixes):
        return False
    for path, prefix in zip(listed, prefixes):
        full = path if os.path.isabs(path) else os.path.join(logs_dir, path)
        if os.path.basename(path) != os.path.basename(prefix) or \
                os.path.realpath(full) != os.path.realpath(prefix):
            return False
    return True


def _state_fault(logs_dir, listed, path):
    """What was wrong with the state file at path, which listed `listed`, in a few words."""
    if listed is None:
        return "was missing" if not os.path.exists(path) else "could not be read"
    here = os.path.realpath(logs_dir)
    elsewhere = [p for p in listed
                 if os.path.isabs(p) and os.path.realpath(os.path.dirname(p)) != here]
    if elsewhere:
        return "named the folder %s" % os.path.dirname(elsewhere[-1])
    return "listed %s" % ", ".join(os.path.basename(p) for p in listed)


def repair_state(logs_dir, keep=KEEP_CHECKPOINTS):
    """Rewrites <logs_dir>/checkpoint when it does not list the newest `keep` readable
    checkpoints of the folder (missing, damaged, stale, or naming the folder it was moved from),
    with their names alone, which get_checkpoint_state resolves against the folder wherever it
    goes. Returns the prefixes listed, oldest first.

    It writes into logs_dir: call it under the train lock only.
    """
    prefixes = readable_checkpoints(logs_dir)[-keep:]
    if not prefixes:
        return []
    path = os.path.join(logs_dir, STATE_NAME)
    listed = read_state(logs_dir)
    if _lists_this_folder(logs_dir, listed, prefixes):
        return prefixes
    if os.path.isdir(path):
        raise FCNError("%s is a folder, where TensorFlow keeps its list of checkpoints; move it "
                       "out of --logs_dir" % path)
    why = _state_fault(logs_dir, listed, path)
    try:
        with atomic_path(path) as part:
            with open(part, "w", encoding="utf-8") as f:
                f.write(state_text([os.path.basename(p) for p in prefixes]))
    except OSError as e:
        print("Warning: cannot rewrite %s (%s); the next save will" % (path, e.strerror or e))
        return prefixes
    print("Rewrote %s to list %s (it %s)"
          % (path, ", ".join(os.path.basename(p) for p in prefixes), why))
    return prefixes


# ---- restoring ---------------------------------------------------------------------------------

def restore(sess, path, var_list, global_step=None):
    """Restores var_list from the checkpoint at path; returns its step.

    A checkpoint of the original implementation has no global_step: its step is taken from the
    file name. Variables the file lacks (Adam's slots in a checkpoint saved without them) keep
    their initial values, and are named. A checkpoint that cannot be read (damaged since it was
    found) is an FCNError.
    """
    unreadable = ("checkpoint %s cannot be read (%%s); delete it, or move it out of --logs_dir"
                  % path)
    try:
        in_file = dict(tf.train.list_variables(path))
    except Exception as e:  # a damaged index or data file
        raise FCNError(unreadable % error_summary(e))
    present, missing, wrong = [], [], []
    for v in var_list:
        name = v.op.name
        if name not in in_file:
            missing.append(name)
        elif list(in_file[name]) != v.shape.as_list():
            wrong.append("%s %s in the file, %s here" % (name, in_file[name], v.shape.as_list()))
        else:
            present.append(v)
    if wrong:
        raise FCNError("checkpoint %s does not fit this network (%s); point --logs_dir at a "
                       "checkpoint of this FCN-8s" % (path, wrong[0]))
    # An optimizer's slots may be missing (a run started with another optimizer's checkpoint
    # gets fresh ones); a weight may not.
    missing_weights = [n for n in missing if n.startswith(("inference/", "paper/"))
                       and slot_optimizer(n) is None]
    if missing_weights:
        raise FCNError("checkpoint %s lacks %s; point --logs_dir at a checkpoint of this FCN-8s"
                       % (path, missing_weights[0]))
    try:
        tf.train.Saver(var_list=present).restore(sess, path)
    except (tf.errors.OpError, ValueError) as e:  # cut short or gone since it was found
        raise FCNError(unreadable % error_summary(e))
    step = step_from_checkpoint_name(path)
    if global_step is not None:
        if global_step.op.name in in_file:
            step = int(sess.run(global_step))
        else:
            global_step.load(step, sess)
    others = [n for n in missing if global_step is None or n != global_step.op.name]
    print("Model restored from %s (step %d)%s" % (
        path, step, "; not in it, left initial: " + ", ".join(others) if others else ""))
    return step


def saved_step(checkpoint):
    """The global step stored in a checkpoint; for the original implementation's, which stores
    none, the step of its name."""
    try:
        return int(tf.train.load_variable(checkpoint, "global_step"))
    except Exception:  # no such variable
        return step_from_checkpoint_name(checkpoint)


# ---- saving ------------------------------------------------------------------------------------

def make_saver(var_list, logs_dir):
    """A Saver for var_list that continues the list of checkpoints in logs_dir.

    A new Saver knows none of the checkpoints already there: its first save would rewrite
    <logs_dir>/checkpoint listing itself alone, and after each restart the older ones would be
    left on disk, outside KEEP_CHECKPOINTS and no longer listed. It is given the readable ones
    found in the folder, not those the state file names (which repair_state rewrites when they
    differ), and writes names relative to the folder, so that the folder can be moved.

    It writes into logs_dir: call it under the train lock only.
    """
    saver = tf.train.Saver(var_list, max_to_keep=KEEP_CHECKPOINTS, save_relative_paths=True)
    saver.recover_last_checkpoints(repair_state(logs_dir))
    return saver


def checkpoint_nbytes(prefix):
    """The bytes of the files of the checkpoint at prefix (0 when it is gone)."""
    total = 0
    for path in [prefix + ".index"] + glob.glob(glob.escape(prefix) + ".data-*"):
        try:
            total += os.path.getsize(path)
        except OSError:
            pass
    return total


def variables_nbytes(var_list):
    """What var_list holds, in bytes: about the size of a checkpoint of it."""
    return sum(v.shape.num_elements() * v.dtype.base_dtype.size for v in var_list
               if v.shape.is_fully_defined())


def remove_failed_save(prefix, keep_files=False):
    """Removes what a failed save of the checkpoint at prefix left: the temporaries its data and
    index are written to (<prefix>.data-*.tempstate<n>, <prefix>.index.tempstate<n>, a
    <prefix>_temp* folder) and the temporary of the state file; unless keep_files, also the
    files of prefix that were completed before the failure (unlisted, so never deleted later)."""
    logs_dir = os.path.dirname(prefix) or "."
    pattern = glob.escape(prefix)
    leftovers = (glob.glob(pattern + ".*.tempstate*") + glob.glob(pattern + "_temp*")
                 + glob.glob(os.path.join(glob.escape(logs_dir), STATE_NAME + ".tmp*")))
    if not keep_files:
        leftovers += [p for p in glob.glob(pattern + ".*") if p not in leftovers]
    for path in leftovers:
        remove_quietly(path)
    return leftovers


def step_prefix(logs_dir, step):
    """<logs_dir>/model.ckpt-<step>: where the checkpoint of step is saved."""
    return os.path.join(logs_dir, "%s-%d" % (CHECKPOINT_PREFIX, step))


def save(sess, saver, logs_dir, step, var_list=None):
    """Saves model.ckpt-<step> (without a .meta); returns its path.

    A save that fails (a full disk is the usual cause, a folder gone or made read-only others)
    leaves nothing behind: its partial files are removed at once, as large as a checkpoint and
    never listed, while the previous checkpoint and the state file naming it are untouched (the
    state file is replaced in one rename, after the data). Then FCNError: for a full disk, how
    much space a checkpoint needs, the previous checkpoint's size or else var_list's (by default
    the graph's global variables).
    """
    prefix = step_prefix(logs_dir, step)
    before = saver.last_checkpoints
    try:
        return saver.save(sess, os.path.join(logs_dir, CHECKPOINT_PREFIX), global_step=step,
                          write_meta_graph=False)
    except (tf.errors.OpError, OSError, ValueError) as e:
        if isinstance(e, ValueError) and os.path.isdir(logs_dir):
            raise  # a mistake in the call; the Saver's ValueError for a folder that is gone
        remove_failed_save(prefix, keep_files=prefix in before)
        saver.recover_last_checkpoints(before)  # the saver appends the new one before failing
        previous = before[-1] if before else None
        kept = ("the last checkpoint %s is intact" % previous if previous
                else "no checkpoint was saved before")
        # TensorFlow's writers raise ResourceExhaustedError for a full disk.
        if not (isinstance(e, tf.errors.ResourceExhaustedError) or is_disk_full(e)):
            raise FCNError("saving checkpoint %s failed (%s); %s; fix that and train on"
                           % (prefix, error_summary(e), kept))
        cause = next((c for c in DISK_FULL_TEXTS if c in str(e)), error_summary(e))
        needed = checkpoint_nbytes(previous) if previous else 0
        if not needed:
            if var_list is None:
                var_list = sess.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
            needed = variables_nbytes(var_list)
        raise FCNError("the disk is full: saving checkpoint %s failed (%s); a checkpoint needs "
                       "%s (%s); %s; free space there or move --logs_dir, and train on"
                       % (prefix, cause, format_size(needed), free_space(logs_dir), kept))


def remove_partial_saves(logs_dir):
    """Removes what a save killed halfway left: TensorFlow writes a checkpoint's data and index to
    <prefix>.data-*.tempstate<n> and <prefix>.index.tempstate<n> (or a <prefix>_temp folder) and
    renames them when complete, and the state file to checkpoint.tmp<n>. Such a file is never
    listed or read, but as large as a checkpoint: a run killed during saves now and then would
    fill the disk. Call it under the train lock, so that no other run is saving into logs_dir."""
    folder = glob.escape(logs_dir)
    prefix = os.path.join(folder, CHECKPOINT_PREFIX + "-*")
    for path in (glob.glob(prefix + ".*.tempstate*") + glob.glob(prefix + "_temp*")
                 + glob.glob(os.path.join(folder, STATE_NAME + ".tmp*"))
                 + glob.glob(os.path.join(folder, STATE_NAME + ".part-*"))):
        print("Removing %s, left by a save that did not finish" % path)
        remove_quietly(path)


# ----------------------------------------------------------------------------------------------
# Another model's weights (--init_from) and the class count of a checkpoint
# ----------------------------------------------------------------------------------------------

def class_count(path, variable):
    """The number of classes of the model in the checkpoint at path, or None when it has no
    score layer of this network; variable: the score layer's bias (network.CLASS_COUNT_VARIABLES
    names each network's)."""
    shapes = dict(tf.train.list_variables(path))
    shape = shapes.get(variable)
    return None if shape is None else int(shape[0])


def resolve_init_from(path):
    """The checkpoint --init_from names: a prefix (model.ckpt-500), or a folder holding
    model.ckpt-<step> files (its newest readable one); FCNError when there is none."""
    if os.path.isdir(path):
        found = latest_checkpoint(path)
        if found is None:
            raise FCNError("--init_from %s is a folder without a readable checkpoint (no "
                           "complete %s-<step> files); pass a checkpoint prefix such as "
                           "%s" % (path, CHECKPOINT_PREFIX,
                                   os.path.join(path, CHECKPOINT_PREFIX + "-500")))
        return found
    if not os.path.exists(path + ".index"):
        raise FCNError("--init_from %s is not a checkpoint (no %s.index); pass a prefix such as "
                       "logs/model.ckpt-500, or the folder that holds it" % (path, path))
    problem = checkpoint_problem(path)
    if problem is not None:
        raise FCNError("--init_from %s cannot be read (%s); pass another checkpoint"
                       % (path, problem))
    return path


def holds_variables(path, names):
    """Whether the checkpoint at path has every one of names."""
    return set(names) <= set(dict(tf.train.list_variables(path)))


def restore_matching(sess, path, var_list):
    """Restores each variable of var_list whose name and shape the checkpoint at path has; the
    others keep their fresh initial values. Prints one line per variable; returns the names of
    those restored."""
    try:
        in_file = dict(tf.train.list_variables(path))
    except Exception as e:  # a damaged index or data file
        raise FCNError("--init_from checkpoint %s cannot be read (%s)" % (path, error_summary(e)))
    restored = []
    for v in var_list:
        name, shape = v.op.name, v.shape.as_list()
        if name not in in_file:
            print("initialised %-24s %-20s (not in %s)" % (name, shape, path))
        elif list(in_file[name]) != shape:
            print("initialised %-24s %-20s (%s there)" % (name, shape, list(in_file[name])))
        else:
            restored.append(v)
            print("restored    %-24s %-20s" % (name, shape))
    if restored:
        try:
            tf.train.Saver(var_list=restored).restore(sess, path)
        except (tf.errors.OpError, ValueError) as e:  # its data cut short or damaged
            raise FCNError("--init_from checkpoint %s cannot be read (%s)"
                           % (path, error_summary(e)))
    print("Initialised from %s: %d of %d variables restored, the step and the optimizer's "
          "slots start fresh"
          % (path, len(restored), len(var_list)))
    return [v.op.name for v in restored]
