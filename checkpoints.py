"""Checkpoints in --logs_dir: finding the newest, restoring it, saving, and cleaning up after a
save that was killed halfway.

Names are the reference's: <logs_dir>/model.ckpt-<step>.{index,data-*}, listed in
<logs_dir>/checkpoint. No .meta is written: the graph is rebuilt from the code, and a first run's
meta graph would embed the 0.5 GB of VGG weights.
"""
import glob
import os

import tensorflow.compat.v1 as tf

from guards import FCNError, remove_quietly

CHECKPOINT_PREFIX = "model.ckpt"
KEEP_CHECKPOINTS = 5  # the newest ones kept on disk; older ones are deleted as new ones come


def step_from_checkpoint_name(path):
    """'logs/model.ckpt-500' -> 500; 0 when the name carries no step."""
    suffix = os.path.basename(path).rsplit("-", 1)
    return int(suffix[1]) if len(suffix) == 2 and suffix[1].isdigit() else 0


def latest_checkpoint(logs_dir):
    """The newest checkpoint listed in <logs_dir>/checkpoint whose files are all there, or None."""
    state = tf.train.get_checkpoint_state(logs_dir)
    if state is None:
        return None
    candidates = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    if state.model_checkpoint_path not in candidates:
        candidates.append(state.model_checkpoint_path)
    for path in reversed(candidates):  # get_checkpoint_state already joined them to logs_dir
        if os.path.exists(path + ".index") and glob.glob(path + ".data-*"):
            return path
        print("Checkpoint %s is listed but its files are missing; trying an older one" % path)
    return None


def restore(sess, path, var_list, global_step=None):
    """Restores var_list from the checkpoint at path; returns its step.

    A checkpoint of the original implementation has no global_step: its step is taken from the
    file name. Variables the file lacks (Adam's slots in a checkpoint saved without them) keep
    their initial values, and are named.
    """
    try:
        in_file = dict(tf.train.list_variables(path))
    except Exception as e:  # a damaged index or data file
        raise FCNError("checkpoint %s cannot be read (%s); delete it, or move it out of "
                       "--logs_dir" % (path, str(e).splitlines()[0]))
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
    missing_weights = [n for n in missing if n.startswith("inference/") and "/Adam" not in n]
    if missing_weights:
        raise FCNError("checkpoint %s lacks %s; point --logs_dir at a checkpoint of this FCN-8s"
                       % (path, missing_weights[0]))
    tf.train.Saver(var_list=present).restore(sess, path)
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


def make_saver(var_list, logs_dir):
    """A Saver for var_list that continues the list of checkpoints already in logs_dir.

    A new Saver knows none of the checkpoints already listed: its first save would rewrite
    <logs_dir>/checkpoint listing itself alone, and after each restart the older ones would be
    left on disk, outside KEEP_CHECKPOINTS and no longer listed.
    """
    saver = tf.train.Saver(var_list, max_to_keep=KEEP_CHECKPOINTS)
    state = tf.train.get_checkpoint_state(logs_dir)
    if state is not None:
        saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
    return saver


def save(sess, saver, logs_dir, step):
    """Saves model.ckpt-<step> (without a .meta); returns its path."""
    return saver.save(sess, os.path.join(logs_dir, CHECKPOINT_PREFIX), global_step=step,
                      write_meta_graph=False)


def remove_partial_saves(logs_dir):
    """Removes what a save killed halfway left: TensorFlow writes a checkpoint's data to
    <prefix>.data-*.tempstate<n> (or a <prefix>_temp folder) and renames it when complete. Such a
    file is never listed or read, but as large as a checkpoint: a run killed during saves now
    and then would fill the disk. Call it under the train lock, so that no other run is saving
    into logs_dir."""
    prefix = os.path.join(glob.escape(logs_dir), CHECKPOINT_PREFIX + "-*")
    for path in glob.glob(prefix + ".data-*.tempstate*") + glob.glob(prefix + "_temp"):
        print("Removing %s, left by a save that did not finish" % path)
        remove_quietly(path)
