"""Finding, listing and saving checkpoints when the folder around them went wrong: a logs_dir that
was moved or copied (its 'checkpoint' state file naming the old place), a state file that is
missing, empty, binary or other text, or stale; a newest checkpoint cut short, with a zeroed
index or a lost shard; none readable at all; and a disk that fills up during a save, by fault
injection and on a small tmpfs.

The graphs are a few small variables and a global step, saved with tf.train.Saver as a run of
this project (or of the original implementation) would; every variable of the checkpoint of
step s holds the value s, so that what is restored tells which checkpoint it came from. What the
tests compare against is what they did: the steps they saved, the files they cut.
"""
import errno
import glob
import hashlib
import os
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import checkpoints
from guards import FCNError
from tests.project import mounted_tmpfs

SHAPES = [("inference/W1", [8, 16]), ("inference/b1", [16]), ("inference/W2", [16, 4])]
# float32 values plus the int64 global step: the bytes of one checkpoint's data.
DATA_BYTES = 4 * (8 * 16 + 16 + 16 * 4) + 8


class SmallModel:
    """A graph of SHAPES and a global step in a session of its own; set(step) gives every
    variable the value step."""

    def __init__(self, shapes=SHAPES, devices=None, config=None):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.variables = []
            for i, (name, shape) in enumerate(shapes):
                with tf.device(devices[i] if devices else None):
                    self.variables.append(tf.get_variable(name, shape,
                                                          initializer=tf.zeros_initializer()))
            self.global_step = tf.train.get_or_create_global_step()
            self.value = tf.placeholder(tf.float32, [])
            self.assign = [tf.assign(v, tf.fill(tf.shape(v), self.value)) for v in self.variables]
            self.saveable = tf.global_variables()
            self.sess = tf.Session(graph=self.graph, config=config)
            self.sess.run(tf.global_variables_initializer())

    def set(self, step):
        self.sess.run(self.assign, {self.value: float(step)})
        self.global_step.load(step, self.sess)

    def values(self):
        """The value all variables hold (asserting they hold one), and the global step."""
        arrays = self.sess.run(self.variables)
        value = float(arrays[0].flat[0])
        assert all(np.all(a == value) for a in arrays)
        return value, int(self.sess.run(self.global_step))

    def __enter__(self):
        self._default = self.graph.as_default()
        self._default.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.sess.close()
        self._default.__exit__(*exc_info)


def save_run(folder, steps, **saver_args):
    """Checkpoints of these steps in folder, saved as a run would with a plain tf.train.Saver
    (which lists them in the state file by absolute path, folder being absolute)."""
    os.makedirs(folder, exist_ok=True)
    with SmallModel() as model:
        saver = tf.train.Saver(model.saveable, **saver_args)
        for step in steps:
            model.set(step)
            saver.save(model.sess, os.path.join(folder, "model.ckpt"), global_step=step,
                       write_meta_graph=False)


def prefix(folder, step):
    return os.path.join(folder, "model.ckpt-%d" % step)


def data_file(folder, step):
    return prefix(folder, step) + ".data-00000-of-00001"


def state_path(folder):
    return os.path.join(folder, "checkpoint")


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def listed(folder):
    """The checkpoints TensorFlow's own reader finds in the state file, oldest first."""
    state = tf.train.get_checkpoint_state(folder)
    return None if state is None else list(state.all_model_checkpoint_paths)


def fingerprint(folder):
    """{file name: sha256} of what folder holds."""
    return {name: hashlib.sha256(read_bytes(os.path.join(folder, name))).hexdigest()
            for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


def leftovers(folder):
    """What a save that did not finish can leave."""
    return sorted(glob.glob(os.path.join(folder, "*.tempstate*"))
                  + glob.glob(os.path.join(folder, "*_temp*"))
                  + glob.glob(os.path.join(folder, "checkpoint.tmp*"))
                  + glob.glob(os.path.join(folder, "checkpoint.part-*")))


def restored(path):
    """(value, step) the checkpoint at path gives a fresh graph through checkpoints.restore."""
    with SmallModel() as model:
        step = checkpoints.restore(model.sess, path, model.saveable, model.global_step)
        value, global_step = model.values()
        assert global_step == step
        return value, step


def resume_and_save(folder, step):
    """What a training run does under its lock: a saver continuing the folder's list, one save;
    returns the path saved."""
    with SmallModel() as model:
        model.set(step)
        saver = checkpoints.make_saver(model.saveable, folder)
        return checkpoints.save(model.sess, saver, folder, step)


def unreadable(folder):
    """The checkpoints in folder that cannot be restored."""
    return [p for p in checkpoints.checkpoints_on_disk(folder)
            if checkpoints.checkpoint_problem(p) is not None]


def one_line(error):
    message = str(error)
    assert "\n" not in message and "Traceback" not in message and \
        not message.startswith("Graph execution error"), message
    return message


# ---- a moved or copied folder ------------------------------------------------------------------

def test_a_moved_folder_resumes_and_its_state_file_is_rewritten_with_names(tmp_path, capsys):
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    save_run(old, [2, 4, 6])
    assert '"%s"' % prefix(old, 6) in read_bytes(state_path(old)).decode()  # absolute paths
    os.rename(old, new)
    state_before = read_bytes(state_path(new))

    # Read-only discovery (visualize, validate, predict) finds it and writes nothing.
    assert checkpoints.latest_checkpoint(new) == prefix(new, 6)
    assert read_bytes(state_path(new)) == state_before
    assert restored(prefix(new, 6)) == (6.0, 6)

    # Training rewrites the state file with the names alone, which TensorFlow resolves here.
    saved = resume_and_save(new, 8)
    assert saved == prefix(new, 8)
    assert "Rewrote %s" % state_path(new) in capsys.readouterr().out
    text = read_bytes(state_path(new)).decode()
    assert str(tmp_path) not in text
    assert '"model.ckpt-8"' in text and '"model.ckpt-2"' in text
    assert listed(new) == [prefix(new, s) for s in (2, 4, 6, 8)]
    assert tf.train.get_checkpoint_state(new).model_checkpoint_path == prefix(new, 8)
    assert not os.path.exists(old)  # nothing was written where the folder used to be
    assert restored(checkpoints.latest_checkpoint(new)) == (8.0, 8)


def test_a_copied_folder_stops_pointing_at_the_original(tmp_path):
    original, copy = str(tmp_path / "original"), str(tmp_path / "copy")
    save_run(original, [2, 4])
    shutil.copytree(original, copy)
    assert listed(copy) == [prefix(original, 2), prefix(original, 4)]  # the copy's list: wrong
    original_files = fingerprint(original)

    assert checkpoints.latest_checkpoint(copy) == prefix(copy, 4)
    resume_and_save(copy, 6)
    assert listed(copy) == [prefix(copy, s) for s in (2, 4, 6)]
    assert fingerprint(original) == original_files


def test_after_a_move_the_saver_still_keeps_only_the_newest_five(tmp_path):
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    save_run(old, [2, 4, 6, 8, 10])
    os.rename(old, new)
    resume_and_save(new, 12)
    assert not glob.glob(prefix(new, 2) + ".*")  # the oldest one deleted, as max_to_keep says
    assert listed(new) == [prefix(new, s) for s in (4, 6, 8, 10, 12)]


# ---- the state file: missing, damaged, stale ---------------------------------------------------

def _write(folder, content):
    with open(state_path(folder), "wb") as f:
        f.write(content)


STATE_FAULTS = {
    "missing": lambda folder: os.remove(state_path(folder)),
    "empty": lambda folder: _write(folder, b""),
    "binary": lambda folder: _write(folder, bytes(range(256)) * 4),
    "text": lambda folder: _write(folder, b"model_checkpoint_path = [not, a state file\n"),
    "no path": lambda folder: _write(folder, b'all_model_checkpoint_paths: ""\n'),
    "lists a deleted one": lambda folder: _write(
        folder, b'model_checkpoint_path: "model.ckpt-8"\nall_model_checkpoint_paths: '
                b'"model.ckpt-2"\nall_model_checkpoint_paths: "model.ckpt-8"\n'),
    "misses the newest": lambda folder: _write(
        folder, b'model_checkpoint_path: "model.ckpt-4"\nall_model_checkpoint_paths: '
                b'"model.ckpt-2"\nall_model_checkpoint_paths: "model.ckpt-4"\n'),
}


@pytest.mark.parametrize("fault", sorted(STATE_FAULTS))
def test_a_bad_state_file_changes_nothing_and_is_rewritten(fault, tmp_path, capsys):
    folder = str(tmp_path / "logs")
    save_run(folder, [2, 4, 6])
    STATE_FAULTS[fault](folder)
    damaged = read_bytes(state_path(folder)) if os.path.exists(state_path(folder)) else None

    assert checkpoints.latest_checkpoint(folder) == prefix(folder, 6)
    assert checkpoints.latest_checkpoint(folder, refuse_unreadable=True) == prefix(folder, 6)
    # Discovery alone leaves the file as it was.
    assert (read_bytes(state_path(folder)) if os.path.exists(state_path(folder)) else None) \
        == damaged

    with SmallModel() as model:
        saver = checkpoints.make_saver(model.saveable, folder)
        assert saver.last_checkpoints == [prefix(folder, s) for s in (2, 4, 6)]
    assert "Rewrote %s" % state_path(folder) in capsys.readouterr().out
    assert listed(folder) == [prefix(folder, s) for s in (2, 4, 6)]
    assert "Traceback" not in capsys.readouterr().err


def test_a_right_state_file_is_left_alone(tmp_path, capsys):
    folder = str(tmp_path / "logs")
    save_run(folder, [2, 4])
    before = read_bytes(state_path(folder))
    with SmallModel() as model:
        checkpoints.make_saver(model.saveable, folder)
    assert read_bytes(state_path(folder)) == before
    assert "Rewrote" not in capsys.readouterr().out


def test_a_folder_in_place_of_the_state_file_is_one_line(tmp_path):
    folder = str(tmp_path / "logs")
    save_run(folder, [2])
    os.remove(state_path(folder))
    os.makedirs(state_path(folder))
    assert checkpoints.latest_checkpoint(folder) == prefix(folder, 2)
    with SmallModel() as model, pytest.raises(FCNError) as caught:
        checkpoints.make_saver(model.saveable, folder)
    assert one_line(caught.value).startswith("%s is a folder" % state_path(folder))


def test_the_state_file_lists_the_newest_five_readable_ones(tmp_path):
    folder = str(tmp_path / "logs")
    save_run(folder, [1, 2, 3, 4, 5, 6, 7], max_to_keep=None)  # more than the saver keeps
    os.remove(state_path(folder))
    with open(data_file(folder, 6), "r+b") as f:
        f.truncate(10)
    with SmallModel() as model:
        checkpoints.make_saver(model.saveable, folder)
    assert listed(folder) == [prefix(folder, s) for s in (2, 3, 4, 5, 7)]


@pytest.mark.parametrize("where", ["absent", "a file", "empty"])
def test_no_checkpoint_is_no_error(where, tmp_path):
    folder = str(tmp_path / "logs")
    if where == "a file":
        (tmp_path / "logs").write_text("x")
    elif where == "empty":
        os.makedirs(folder)
        _write(folder, b"\xff\xfe garbage")  # a state file alone is not a checkpoint
    assert checkpoints.latest_checkpoint(folder) is None
    assert checkpoints.latest_checkpoint(folder, refuse_unreadable=True) is None


# ---- a damaged newest checkpoint ---------------------------------------------------------------

def _truncate(folder, step):
    path = data_file(folder, step)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _zero_index(folder, step):
    path = prefix(folder, step) + ".index"
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(bytes(size))


def _cut_index(folder, step):
    path = prefix(folder, step) + ".index"
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 20)


def _scramble_data(folder, step):
    """Same size, other bytes: what a checksum finds."""
    path = data_file(folder, step)
    with open(path, "r+b") as f:
        data = f.read()
        f.seek(0)
        f.write(bytes(255 - b for b in data))
    assert os.path.getsize(path) == DATA_BYTES


DAMAGE = {
    "data cut short": _truncate,
    "data cut by one byte": lambda folder, step: os.truncate(data_file(folder, step),
                                                            DATA_BYTES - 1),
    "data deleted": lambda folder, step: os.remove(data_file(folder, step)),
    "data scrambled": _scramble_data,
    "index zeroed": _zero_index,
    "index cut short": _cut_index,
    "index deleted": lambda folder, step: os.remove(prefix(folder, step) + ".index"),
    "index empty": lambda folder, step: open(prefix(folder, step) + ".index", "wb").close(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(damage, tmp_path, capsys):
    folder = str(tmp_path / "logs")
    save_run(folder, [2, 4, 6])
    assert os.path.getsize(data_file(folder, 6)) == DATA_BYTES
    DAMAGE[damage](folder, 6)
    capsys.readouterr()

    found = checkpoints.latest_checkpoint(folder, refuse_unreadable=True)
    assert found == prefix(folder, 4)
    warnings = [line for line in capsys.readouterr().out.splitlines() if "Warning" in line]
    assert len(warnings) == 1 and prefix(folder, 6) in warnings[0], warnings
    assert restored(found) == (4.0, 4)
    assert set(unreadable(folder)) == {prefix(folder, 6)}

    # The state file named model.ckpt-6: training lists the readable ones only, and its next
    # save of step 6 replaces the damaged files.
    resume_and_save(folder, 5)
    assert listed(folder) == [prefix(folder, s) for s in (2, 4, 5)]
    resume_and_save(folder, 6)
    assert checkpoints.latest_checkpoint(folder) == prefix(folder, 6)
    assert restored(prefix(folder, 6)) == (6.0, 6)


def test_a_lost_shard_of_a_sharded_checkpoint_is_found(tmp_path, capsys):
    folder = str(tmp_path / "logs")
    os.makedirs(folder)
    config = tf.ConfigProto(device_count={"CPU": 2})
    devices = ["/cpu:0", "/cpu:1", "/cpu:1"]
    with SmallModel(devices=devices, config=config) as model:
        saver = tf.train.Saver(model.saveable, sharded=True)
        for step in (2, 4):
            model.set(step)
            saver.save(model.sess, os.path.join(folder, "model.ckpt"), global_step=step,
                       write_meta_graph=False)
    shards = sorted(glob.glob(prefix(folder, 4) + ".data-*"))
    count = len(shards)  # one per device, the global step's own included
    assert count >= 2 and shards == [prefix(folder, 4) + ".data-%05d-of-%05d" % (i, count)
                                     for i in range(count)]
    os.remove(shards[1])
    assert checkpoints.latest_checkpoint(folder) == prefix(folder, 2)
    out = capsys.readouterr().out
    assert "%s is missing" % os.path.basename(shards[1]) in out and prefix(folder, 4) in out
    assert restored(prefix(folder, 2)) == (2.0, 2)


def test_none_readable_refuses_naming_what_to_move(tmp_path):
    folder = str(tmp_path / "logs")
    save_run(folder, [2, 4])
    _truncate(folder, 4)
    _zero_index(folder, 2)
    assert checkpoints.latest_checkpoint(folder) is None  # read-only modes: "no checkpoint"
    with pytest.raises(FCNError) as caught:
        checkpoints.latest_checkpoint(folder, refuse_unreadable=True)
    message = one_line(caught.value)
    assert "model.ckpt-4" in message and "model.ckpt-2" in message
    assert "move %s out of it" % os.path.join(folder, "model.ckpt-*") in message
    assert set(unreadable(folder)) == {prefix(folder, 2), prefix(folder, 4)}


def test_an_old_v1_checkpoint_alone_is_refused_not_overwritten(tmp_path):
    folder = str(tmp_path / "logs")
    os.makedirs(folder)
    for name in ("model.ckpt-500", "model.ckpt-500.meta"):
        (tmp_path / "logs" / name).write_bytes(b"\0" * 64)
    with pytest.raises(FCNError) as caught:
        checkpoints.latest_checkpoint(folder, refuse_unreadable=True)
    assert "model.ckpt-500" in one_line(caught.value)


def test_a_checkpoint_damaged_after_it_was_found_is_one_line_at_restore(tmp_path):
    folder = str(tmp_path / "logs")
    save_run(folder, [2, 4])
    found = checkpoints.latest_checkpoint(folder)
    assert found == prefix(folder, 4)
    _truncate(folder, 4)
    with SmallModel() as model, pytest.raises(FCNError) as caught:
        checkpoints.restore(model.sess, found, model.saveable, model.global_step)
    message = one_line(caught.value)
    assert message.startswith("checkpoint %s cannot be read (" % found)


# ---- a save that fails ------------------------------------------------------------------------

def _space_error(kind, path):
    if kind == "tensorflow":
        return tf.errors.ResourceExhaustedError(None, None, "%s; No space left on device" % path)
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def _partial_save(folder, step):
    """The files a save of step cut off halfway leaves, as TensorFlow names them."""
    base = prefix(folder, step)
    for path in (base + ".data-00000-of-00001.tempstate1234567", base + ".index.tempstate89",
                 os.path.join(folder, "checkpoint.tmp0123abcd")):
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
    os.makedirs(base + "_temp")
    with open(os.path.join(base + "_temp", "part-00000-of-00001.data-00000-of-00001"), "wb") as f:
        f.write(b"\0" * 100)


@pytest.mark.parametrize("kind", ["tensorflow", "os"])
def test_a_full_disk_during_a_save_is_one_line_and_leaves_the_last_checkpoint(
        kind, tmp_path, monkeypatch):
    folder = str(tmp_path / "logs")
    save_run(folder, [2, 4])
    before = fingerprint(folder)
    previous_bytes = sum(os.path.getsize(p) for p in glob.glob(prefix(folder, 4) + ".*"))

    with SmallModel() as model:
        model.set(6)
        saver = checkpoints.make_saver(model.saveable, folder)
        real_save = saver.save

        def disk_fills_up(*args, **kwargs):
            _partial_save(folder, 6)
            raise _space_error(kind, data_file(folder, 6) + ".tempstate1234567")

        monkeypatch.setattr(saver, "save", disk_fills_up)
        with pytest.raises(FCNError) as caught:
            checkpoints.save(model.sess, saver, folder, 6)
        message = one_line(caught.value)
        assert message.startswith("the disk is full: saving checkpoint %s failed"
                                  % prefix(folder, 6))
        assert "No space left on device" in message
        assert "a checkpoint needs %s" % checkpoints.format_size(previous_bytes) in message
        assert "the last checkpoint %s is intact" % prefix(folder, 4) in message
        assert leftovers(folder) == []
        assert fingerprint(folder) == before
        assert checkpoints.latest_checkpoint(folder) == prefix(folder, 4)
        assert listed(folder)[-1] == prefix(folder, 4)

        # Space freed, the same saver saves on, its list intact.
        monkeypatch.setattr(saver, "save", real_save)
        assert checkpoints.save(model.sess, saver, folder, 6) == prefix(folder, 6)
    assert listed(folder) == [prefix(folder, s) for s in (2, 4, 6)]
    assert restored(prefix(folder, 6)) == (6.0, 6)


def test_a_full_disk_when_the_state_file_is_written_removes_the_new_checkpoint(
        tmp_path, monkeypatch):
    """The data and index of step 6 are complete, the state file's temporary cannot be written:
    model.ckpt-6 would be on disk and listed nowhere, never deleted by max_to_keep."""
    from tensorflow.python.lib.io import file_io
    folder = str(tmp_path / "logs")
    save_run(folder, [2, 4])
    before = fingerprint(folder)

    def state_file_fails(filename, contents, overwrite=True):
        with open(filename + ".tmp5555", "w") as f:
            f.write(contents[:5])
        raise tf.errors.ResourceExhaustedError(None, None,
                                               "%s.tmp5555; No space left on device" % filename)

    with SmallModel() as model:
        model.set(6)
        saver = checkpoints.make_saver(model.saveable, folder)
        monkeypatch.setattr(file_io, "atomic_write_string_to_file", state_file_fails)
        with pytest.raises(FCNError) as caught:
            checkpoints.save(model.sess, saver, folder, 6)
    assert one_line(caught.value).startswith("the disk is full")
    assert fingerprint(folder) == before  # model.ckpt-6.* and checkpoint.tmp5555 removed
    assert leftovers(folder) == []


def test_a_full_disk_at_the_first_save_gives_the_size_of_the_variables(tmp_path, monkeypatch):
    folder = str(tmp_path / "logs")
    os.makedirs(folder)
    with SmallModel() as model:
        saver = checkpoints.make_saver(model.saveable, folder)

        def disk_fills_up(*args, **kwargs):
            _partial_save(folder, 1)
            raise _space_error("tensorflow", folder)

        monkeypatch.setattr(saver, "save", disk_fills_up)
        with pytest.raises(FCNError) as caught:
            checkpoints.save(model.sess, saver, folder, 1)
    message = one_line(caught.value)
    assert "a checkpoint needs %s" % checkpoints.format_size(DATA_BYTES) in message
    assert "no checkpoint was saved before" in message
    assert os.listdir(folder) == []


def test_another_save_failure_is_one_line_and_cleaned_up_too(tmp_path, monkeypatch):
    folder = str(tmp_path / "logs")
    save_run(folder, [2])
    before = fingerprint(folder)
    with SmallModel() as model:
        saver = checkpoints.make_saver(model.saveable, folder)

        def denied(*args, **kwargs):
            _partial_save(folder, 3)
            raise tf.errors.PermissionDeniedError(None, None, "%s: Permission denied" % folder)

        monkeypatch.setattr(saver, "save", denied)
        with pytest.raises(FCNError) as caught:
            checkpoints.save(model.sess, saver, folder, 3)
    message = one_line(caught.value)
    assert message.startswith("saving checkpoint %s failed (" % prefix(folder, 3))
    assert "Permission denied" in message and "disk is full" not in message
    assert fingerprint(folder) == before


def test_a_logs_dir_replaced_by_a_file_during_training_is_one_line(tmp_path):
    folder = str(tmp_path / "logs")
    os.makedirs(folder)
    with SmallModel() as model:
        saver = checkpoints.make_saver(model.saveable, folder)
        os.rmdir(folder)  # (a folder removed alone is created again by the save)
        (tmp_path / "logs").write_text("x")
        with pytest.raises(FCNError) as caught:
            checkpoints.save(model.sess, saver, folder, 1)
    assert one_line(caught.value).startswith("saving checkpoint %s failed" % prefix(folder, 1))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (root only): a disk that really fills up."""
    with mounted_tmpfs(str(tmp_path / "tmpfs"), "2m") as mount_point:
        yield mount_point


def test_a_really_full_disk_during_a_save(small_tmpfs):
    folder = os.path.join(small_tmpfs, "logs")
    os.makedirs(folder)
    filler = os.path.join(small_tmpfs, "filler")
    big = [("inference/W", [100, 1000])]  # 400,000 bytes a checkpoint
    with SmallModel(shapes=big) as model:
        saver = checkpoints.make_saver(model.saveable, folder)
        model.set(1)
        checkpoints.save(model.sess, saver, folder, 1)
        with open(filler, "wb") as f:  # leave less than a checkpoint free
            f.write(b"\1" * (shutil.disk_usage(small_tmpfs).free - 200000))
        before = fingerprint(folder)
        model.set(2)
        with pytest.raises(FCNError) as caught:
            checkpoints.save(model.sess, saver, folder, 2)
        message = one_line(caught.value)
        assert message.startswith("the disk is full: saving checkpoint %s failed (No space left "
                                  "on device)" % prefix(folder, 2)), message
        needed = sum(os.path.getsize(p) for p in glob.glob(prefix(folder, 1) + ".*"))
        assert "a checkpoint needs %s" % checkpoints.format_size(needed) in message
        assert leftovers(folder) == [] and fingerprint(folder) == before
        assert checkpoints.latest_checkpoint(folder) == prefix(folder, 1)
        assert listed(folder) == [prefix(folder, 1)]

        os.remove(filler)
        assert checkpoints.save(model.sess, saver, folder, 2) == prefix(folder, 2)
    assert listed(folder) == [prefix(folder, 1), prefix(folder, 2)]
    with SmallModel(shapes=big) as model:
        assert checkpoints.restore(model.sess, prefix(folder, 2), model.saveable,
                                   model.global_step) == 2
        assert model.values() == (2.0, 2)


# ---- what a killed save leaves -----------------------------------------------------------------

def test_the_leftovers_of_a_killed_save_are_removed_and_nothing_else(tmp_path):
    folder = str(tmp_path / "logs")
    save_run(folder, [2])
    before = fingerprint(folder)
    _partial_save(folder, 4)
    with open(os.path.join(folder, "checkpoint.part-77-abcd"), "w") as f:
        f.write("x")
    assert leftovers(folder)
    checkpoints.remove_partial_saves(folder)
    assert leftovers(folder) == [] and fingerprint(folder) == before


def test_format_size():
    assert checkpoints.format_size(512) == "512 bytes"
    assert checkpoints.format_size(1536) == "1.5 KiB"
    assert checkpoints.format_size(3 * 1024 ** 3 // 2) == "1.5 GiB"
