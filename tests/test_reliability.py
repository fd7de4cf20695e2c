"""Reliability and security of a long training run: killed at any moment, stopped by a signal, a
non-finite loss, a second run on the same logs_dir, bad data found before or during training,
faults while downloading VGG-19, bad command lines.

What other files already try is not repeated here: the dataset download's faults, zip entries
leaving their folder and the JSON record cache in test_dataset_download.py and
test_read_dataset.py; bad labels, sizes and unreadable files in the reader in
test_batch_reader.py; bad flags and modes without a checkpoint in test_modes.py.

The kill sequence's runs are real `python FCN.py --mode=train` processes of the narrow network
at 256x256, batch 2 (slow tier); the kill points are chosen by watching their output and their
logs_dir, not by timing.
"""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import imageio.v2 as imageio

import BatchDatsetReader as reader
import checkpoints
import guards
import network
import vgg_weights
from guards import FCNError
from tests.local_server import LocalServer, closed_port_url
from tests.make_dataset import make_scene_dataset
from tests.make_vgg_mat import write_conv_layers_mat
from tests.make_vgg_mat import NARROW
from tests.project import FCN_PY, SMALL, fcn_main, main_in_this_process, run_fcn

VGG_NAME = vgg_weights.VGG19_FILE_NAME
ZIP_NAME = "ADEChallengeData2016.zip"
HANG = 600  # seconds: only against a hang, never an assertion about speed


# ---- helpers -----------------------------------------------------------------------------------

class Training:
    """`python -u FCN.py --mode=train args` in the background; its output is collected line by
    line (stderr with stdout) so that the test can act when a line appears."""

    def __init__(self, args):
        self.proc = subprocess.Popen([sys.executable, "-u", FCN_PY, "--mode=train"] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.pid = self.proc.pid
        self.lines = []
        self._ended = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self):
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def output(self):
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, pattern):
        """The match of the first output line matching pattern, waiting for it to appear."""
        regex = re.compile(pattern)
        deadline = time.time() + HANG
        with self._changed:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                if self._ended:
                    raise AssertionError("the run ended before %r:\n%s"
                                         % (pattern, "".join(self.lines)[-3000:]))
                if time.time() > deadline:
                    raise AssertionError("no %r after %d s" % (pattern, HANG))
                self._changed.wait(1.0)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL, and reaped: a zombie would still look alive to the next run's lock."""
        self.proc.kill()
        return self.finish()

    def finish(self):
        rc = self.proc.wait(timeout=HANG)
        self._thread.join(timeout=HANG)
        return rc

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def listed_checkpoints(logs_dir):
    """The checkpoints <logs_dir>/checkpoint lists (newest last), as paths."""
    state = tf.train.get_checkpoint_state(logs_dir)
    return [] if state is None else list(state.all_model_checkpoint_paths)


def check_listed_checkpoints_read(logs_dir):
    """Every listed checkpoint has a readable index and data, with the step of its name; returns
    the steps. (A full restore into the network comes at the end of the kill sequence.)"""
    steps = []
    for path in listed_checkpoints(logs_dir):
        names = dict(tf.train.list_variables(path))
        assert "inference/W8" in names and "global_step" in names, path
        step = int(tf.train.load_variable(path, "global_step"))
        assert step == checkpoints.step_from_checkpoint_name(path), path
        assert np.isfinite(tf.train.load_variable(path, "inference/W_t3")).all(), path
        steps.append(step)
    return steps


def lock_owner(logs_dir):
    path = os.path.join(logs_dir, guards.LOCK_NAME)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return int(f.read())


def partial_saves(logs_dir):
    """What a save killed halfway leaves: TensorFlow writes <prefix>.data-*.tempstate<n> (or a
    <prefix>_temp folder when sharded) and renames it when done."""
    return sorted(glob.glob(os.path.join(logs_dir, "model.ckpt-*.tempstate*"))
                  + glob.glob(os.path.join(logs_dir, "model.ckpt-*_temp")))


def checkpoint_files(logs_dir):
    """{name: (size, mtime_ns)} of the checkpoint files and the checkpoint list."""
    found = {}
    for path in glob.glob(os.path.join(logs_dir, "model.ckpt*")) + [
            os.path.join(logs_dir, "checkpoint")]:
        if os.path.exists(path):
            stat = os.stat(path)
            found[os.path.basename(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def error_lines(out):
    return [line for line in out.splitlines() if line.startswith("FCN.py: error:")]


def copy_dataset(source, tmp_path):
    data_dir = str(tmp_path / "data")
    shutil.copytree(source, data_dir)
    cache = os.path.join(data_dir, "MITSceneParsing.json")  # it names the source's files
    if os.path.exists(cache):
        os.remove(cache)
    return data_dir


# ---- killed, stopped, refused, non-finite: one logs_dir through a sequence of runs ---------------

@pytest.fixture(scope="module")
def kill_sequence(module_tmp, dirs):
    """Runs on one logs_dir, each started after the previous one ended:

    1. SIGKILL right after step 1 (no checkpoint yet; its lock file stays behind);
    2. a run that takes over that stale lock; while it trains, a second run on the same logs_dir
       (refused); then SIGKILL while the checkpoint of step 4 is being written;
    3. SIGINT after its first step; 4. SIGTERM after its first step;
    5. SIGKILL just after a save finished;
    6. --learning_rate=1e30: the loss goes non-finite.
    Each stage records the output and the state of logs_dir; the tests below look at them.
    """
    logs = str(module_tmp("kill_sequence"))
    # The narrow network at 256x256: steps of a few tenths of a second, so that a signal sent
    # when a step's line appears lands before the step after it ends.
    common = ["--image_size=256", "--batch_size=2"] + dirs + [
        "--logs_dir=" + logs, "--max_iterations=1000", "--save_every=2", "--log_every=1"]
    stages, runs = {}, []

    def start():
        run = Training(common)
        runs.append(run)
        return run

    def snapshot(run, rc, **more):
        return dict(more, pid=run.pid, rc=rc, out=run.output, lock=lock_owner(logs),
                    listed=listed_checkpoints(logs), steps=check_listed_checkpoints_read(logs),
                    partial=partial_saves(logs))

    try:
        run = start()
        run.wait_for(r"step 1 loss")
        stages["mid_step"] = snapshot(run, run.kill())

        run = start()
        run.wait_for(r"step 1 loss")
        # Another process on the same logs_dir: this one, which starts in no time.
        second_rc, second_out = main_in_this_process("--mode=train", *common)
        first_alive = run.proc.poll() is None
        lock_while_running = lock_owner(logs)
        run.wait_for(r"step 2 validation loss .* saved")
        run.wait_for(r"step 4 loss")
        in_save = False
        while "step 4 validation loss" not in run.output:  # the save of step 4 takes seconds
            if glob.glob(os.path.join(logs, "model.ckpt-4.data-*.tempstate*")):
                in_save = True
                break
            time.sleep(0.005)
        stages["during_save"] = snapshot(
            run, run.kill(), in_save=in_save, first_alive=first_alive,
            lock_while_running=lock_while_running, second_rc=second_rc, second_out=second_out)

        for name, sig in (("sigint", signal.SIGINT), ("sigterm", signal.SIGTERM)):
            run = start()
            restored = int(run.wait_for(r"Model restored from .* \(step (\d+)\)").group(1))
            run.wait_for(r"step %d loss" % (restored + 1))
            run.signal(sig)
            stages[name] = snapshot(run, run.finish(), restored=restored)

        run = start()
        restored = int(run.wait_for(r"Model restored from .* \(step (\d+)\)").group(1))
        saved = int(run.wait_for(r"step (\d+) validation loss .* saved").group(1))
        stages["after_save"] = snapshot(run, run.kill(), restored=restored, saved=saved)

        before = checkpoint_files(logs)
        out = run_fcn("--mode=train", *(common + ["--learning_rate=1e30", "--save_every=1000"]),
                      expect=2)
        stages["nan"] = dict(out=out, before=before, after=checkpoint_files(logs),
                             lock=lock_owner(logs), listed=listed_checkpoints(logs))

        # Every checkpoint still listed restores into the network in a fresh graph.
        restored_steps = []
        with tf.Graph().as_default():
            model = network.Model((None, vgg_weights.VGG19_MEAN_PIXEL), training=True,
                                  widths=NARROW)
            saver = tf.train.Saver(model.saveable)
            with tf.Session() as sess:
                for path in listed_checkpoints(logs):
                    saver.restore(sess, path)
                    restored_steps.append(int(sess.run(model.global_step)))
        stages["restored_steps"] = restored_steps
        stages["listed"] = listed_checkpoints(logs)
        yield stages
    finally:
        for run in runs:
            run.stop()
        shutil.rmtree(logs, ignore_errors=True)  # gigabytes of checkpoints


@pytest.mark.slow
def test_sigkill_mid_step_leaves_a_stale_lock_that_the_next_run_takes_over(kill_sequence):
    first, second = kill_sequence["mid_step"], kill_sequence["during_save"]
    assert first["rc"] == -signal.SIGKILL
    assert first["lock"] == first["pid"] and first["listed"] == []
    assert "Removing the stale lock" in second["out"]
    assert "process %d is gone" % first["pid"] in second["out"]
    assert "No checkpoint in" in second["out"] and "step 1 loss" in second["out"]
    assert second["lock_while_running"] == second["pid"]


@pytest.mark.slow
def test_a_second_run_on_the_same_logs_dir_is_refused(kill_sequence):
    stage = kill_sequence["during_save"]
    assert stage["first_alive"]  # refused while the first one trained
    assert stage["second_rc"] == 2
    lines = error_lines(stage["second_out"])
    assert len(lines) == 1, stage["second_out"][-2000:]
    assert "another training run (process %d) is using --logs_dir" % stage["pid"] in lines[0]
    assert "Traceback" not in stage["second_out"]
    # The first run was not disturbed: it saved and trained on.
    assert "step 4 loss" in stage["out"]


@pytest.mark.slow
def test_sigkill_during_a_save_keeps_the_older_checkpoints(kill_sequence):
    stage = kill_sequence["during_save"]
    assert stage["rc"] == -signal.SIGKILL
    # The kill lands while model.ckpt-4 is written (the save takes seconds); were it missed, the
    # checks below still hold, with model.ckpt-4 complete.
    if stage["in_save"]:
        assert stage["steps"] == [2]
        assert stage["partial"], "no partial save left to clean up"
    else:
        assert stage["steps"] in ([2], [2, 4])
    resumed = kill_sequence["sigint"]
    assert "Model restored from %s (step %d)" % (stage["listed"][-1], stage["steps"][-1]) \
        in resumed["out"]
    # The partial files of the killed save are removed by the next run (they are as large as a
    # checkpoint) and nothing else is listed than complete checkpoints.
    assert resumed["partial"] == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sigint", "sigterm"])
def test_sigint_and_sigterm_save_the_current_step_and_exit_cleanly(kill_sequence, name):
    stage = kill_sequence[name]
    assert stage["rc"] == 0, stage["out"][-2000:]
    match = re.search(r"Stopped by %s at step (\d+); checkpoint saved to (\S+)"
                      % name.upper(), stage["out"])
    assert match, stage["out"][-2000:]
    step, path = int(match.group(1)), match.group(2)
    assert step > stage["restored"]
    assert "step %d loss" % step in stage["out"] and "step %d loss" % (step + 1) not in stage["out"]
    assert path == os.path.join(os.path.dirname(path), "model.ckpt-%d" % step)
    assert stage["listed"][-1] == path
    assert int(tf.train.load_variable(path, "global_step")) == step
    assert stage["lock"] is None and "Traceback" not in stage["out"]


@pytest.mark.slow
def test_each_run_resumes_from_the_newest_complete_checkpoint(kill_sequence):
    sigint, sigterm, after_save = (kill_sequence[n] for n in ("sigint", "sigterm", "after_save"))
    assert sigterm["restored"] == sigint["steps"][-1]
    assert after_save["restored"] == sigterm["steps"][-1]
    assert after_save["rc"] == -signal.SIGKILL
    assert after_save["steps"][-1] == after_save["saved"]
    assert "Model restored from %s (step %d)" % (after_save["listed"][-1], after_save["saved"]) \
        in kill_sequence["nan"]["out"]


@pytest.mark.slow
def test_checkpoints_stay_listed_across_restarts_and_all_restore(kill_sequence):
    # A run's saver continues the list of the run before it: what a restart left stays listed
    # (and max_to_keep counts it), instead of being forgotten on disk.
    for earlier, later in (("during_save", "sigint"), ("sigint", "sigterm"),
                           ("sigterm", "after_save")):
        assert set(kill_sequence[earlier]["listed"]) <= set(kill_sequence[later]["listed"])
    listed = kill_sequence["listed"]
    assert len(listed) >= 4
    assert kill_sequence["restored_steps"] == [checkpoints.step_from_checkpoint_name(p)
                                               for p in listed]


@pytest.mark.slow
def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(kill_sequence):
    stage = kill_sequence["nan"]
    lines = error_lines(stage["out"])
    assert len(lines) == 1 and "Traceback" not in stage["out"]
    match = re.search(r"the training loss is (nan|inf|-inf) at step (\d+); stopped without "
                      r"saving, the last good checkpoint is (\S+);", lines[0])
    assert match, lines[0]
    step = int(match.group(2))
    assert "step %d loss" % (step - 1) in stage["out"] and "step %d loss" % step not in stage["out"]
    assert match.group(3) == stage["listed"][-1]
    # Nothing written, nothing overwritten, and the lock released.
    assert stage["after"] == stage["before"]
    assert stage["lock"] is None


# ---- bad data found before the first step, and during training ---------------------------------

def _set_label(path, value):
    label = imageio.imread(path)
    label[1, 1] = value
    imageio.imwrite(path, label)


@pytest.mark.parametrize("fault", ["value", "size"])
def test_bad_data_stops_training_before_its_first_step(fault, scene_data, model_dir,
                                                       tmp_path, capsys):
    data_dir = copy_dataset(scene_data, tmp_path)
    annotation = os.path.join(data_dir, "ADEChallengeData2016", "annotations", "training",
                              "ADE_train_00000002.png")
    if fault == "value":
        _set_label(annotation, 200)
        expected = "annotation %s holds the value 200, outside the classes 0..150" % annotation
    else:
        imageio.imwrite(annotation, np.zeros((33, 47), np.uint8))
        expected = "but its annotation %s is 33x47" % annotation
    logs = str(tmp_path / "logs")
    code, out, err = fcn_main(capsys, "--mode=train", "--logs_dir=" + logs,
                              "--data_dir=" + data_dir, "--model_dir=" + model_dir, *SMALL)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("FCN.py: error: ") and expected in err
    if fault == "size":
        assert "ADE_train_00000002.jpg is" in err  # both files named
    assert "step 1" not in out and "setting up vgg" not in out
    # No checkpoint, the lock released, and no settings.json or classes.json: a run whose checks
    # failed leaves nothing that describes a training that never happened.
    assert sorted(os.listdir(logs)) == []


@pytest.fixture(scope="module")
def reader_failure(module_tmp, model_dir):
    """A training run on 110 records: one truncated JPEG in its first batch, and an annotation
    with the value 200 in its fifth batch, past the 100 records validate_records decodes, so the
    reader's worker thread finds it after the checkpoint of step 4."""
    root = str(module_tmp("reader_failure"))
    make_scene_dataset(root, n_train=110, n_val=4, size_range=(40, 56), seed=2)
    dataset_dir = os.path.join(root, "ADEChallengeData2016")
    n = 110
    # A seed whose first epoch puts a record beyond the first 100 (sorted) at position 8.
    seed = next(s for s in range(1000) if reader.epoch_order(n, s, 0)[8] >= 100)
    order = reader.epoch_order(n, seed, 0)
    bad = os.path.join(dataset_dir, "annotations", "training", "ADE_train_%08d.png"
                       % (order[8] + 1))
    _set_label(bad, 200)
    truncated = os.path.join(dataset_dir, "images", "training", "ADE_train_%08d.jpg"
                             % (order[0] + 1))
    with open(truncated, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[:len(data) // 2])
    logs = os.path.join(root, "logs")
    model_args = ["--data_dir=" + root, "--model_dir=" + model_dir]
    proc = subprocess.run(
        [sys.executable, FCN_PY, "--mode=train", "--logs_dir=" + logs, "--max_iterations=1000",
         "--save_every=4", "--log_every=1", "--seed=%d" % seed] + SMALL + model_args,
        capture_output=True, text=True, timeout=HANG)
    try:
        yield dict(rc=proc.returncode, out=proc.stdout + proc.stderr, err=proc.stderr, bad=bad,
                   truncated=truncated, logs=logs, listed=listed_checkpoints(logs),
                   steps=check_listed_checkpoints_read(logs), lock=lock_owner(logs))
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def test_a_truncated_jpeg_is_skipped_with_a_warning_and_training_goes_on(reader_failure):
    out = reader_failure["out"]
    assert "Warning: %s is unreadable" % reader_failure["truncated"] in out
    assert "step 4 loss" in out


def test_bad_label_found_by_a_reader_thread_stops_with_one_line_and_keeps_the_checkpoint(
        reader_failure):
    out = reader_failure["out"]
    assert reader_failure["rc"] == 2, out[-3000:]
    lines = error_lines(out)
    assert len(lines) == 1 and "Traceback" not in out
    assert "annotation %s holds the value 200" % reader_failure["bad"] in lines[0]
    assert "step 4 validation loss" in out and "step 5 loss" not in out
    assert reader_failure["steps"] == [4]
    assert reader_failure["lock"] is None


# ---- bad use: exit code 2 and one line --------------------------------------------------------

def _refused(capsys, *args):
    code, out, err = fcn_main(capsys, *args)
    assert code == 2, out[-2000:] + err
    assert err.count("\n") == 1 and err.startswith("FCN.py: error: "), err
    return err


def test_logs_dir_that_cannot_be_written(scene_data, model_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    logs = str(tmp_path / "afile" / "logs")
    err = _refused(capsys, "--mode=train", "--logs_dir=" + logs, "--data_dir=" + scene_data,
                   "--model_dir=" + model_dir, *SMALL)
    assert "--logs_dir %s is not a writable folder" % logs in err and "pass one" in err


def test_data_dir_that_cannot_be_created(model_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    data_dir = str(tmp_path / "afile" / "data")
    err = _refused(capsys, "--mode=train", "--logs_dir=" + str(tmp_path / "logs"),
                   "--data_dir=" + data_dir, "--model_dir=" + model_dir, *SMALL)
    assert "--data_dir %s does not exist and cannot be created" % data_dir in err


def test_model_dir_that_cannot_be_created(scene_data, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    model = str(tmp_path / "afile" / "Model_zoo")
    err = _refused(capsys, "--mode=train", "--logs_dir=" + str(tmp_path / "logs"),
                   "--data_dir=" + scene_data, "--model_dir=" + model, *SMALL)
    assert "--model_dir %s does not exist and cannot be created" % model in err


@pytest.mark.parametrize("content", ["not_vgg19", "html"])
def test_a_mat_in_model_dir_that_is_not_vgg19_is_refused_and_kept(content, scene_data,
                                                                   tmp_path, capsys):
    model = tmp_path / "Model_zoo"
    model.mkdir()
    path = str(model / VGG_NAME)
    if content == "html":
        with open(path, "w") as f:
            f.write("<html><body>Moved</body></html>")
        expected = "%s cannot be read as a MATLAB .mat" % path
    else:
        write_conv_layers_mat(path, dict(vgg_weights.VGG19_CONV_SHAPES[:2]))  # stops at conv1_2
        expected = "%s is not VGG-19: it has no layer conv2_1" % path
    err = _refused(capsys, "--mode=train", "--logs_dir=" + str(tmp_path / "logs"),
                   "--data_dir=" + scene_data, "--model_dir=" + str(model), *SMALL)
    assert expected in err
    assert os.path.exists(path)  # the user's file: named, not deleted
    # Refused before the run recorded its settings: they describe runs that started.
    assert not os.path.exists(str(tmp_path / "logs" / "settings.json"))


# ---- downloads of VGG-19 (and a truncated dataset zip) from a local server --------------------

@pytest.fixture(scope="module")
def server(vgg_mat_paths, scene_dataset_zip):
    """http://127.0.0.1:<port>/<kind>/<name>: good, drop (a third of the promised bytes, then
    the connection closes), error (HTTP 500), html (a page, not a .mat), truncated (the first half
    of the file, as a complete response)."""
    with open(vgg_mat_paths["beta16"], "rb") as f:
        mat = f.read()
    with open(scene_dataset_zip, "rb") as f:
        archive = f.read()
    files = {VGG_NAME: mat, ZIP_NAME: archive}

    def answer(kind, name):
        body = files.get(name)
        if body is None or kind == "error":
            return 500
        if kind == "html":
            return b"<html><body>This file has moved</body></html>" * 20
        return body[:len(body) // 2] if kind == "truncated" else body

    with LocalServer(answer) as local:
        yield lambda kind, name=VGG_NAME: local.url(kind, name)


def _closed_port_url():
    return closed_port_url(VGG_NAME)


@pytest.mark.parametrize("kind, expected", [
    ("drop", r"failed \(|stopped at"),
    ("error", r"failed: HTTP 500"),
    ("closed", r"check the network"),
    ("html", r"cannot be read as a MATLAB \.mat .*removed: run again"),
    ("truncated", r"cannot be read as a MATLAB \.mat .*removed: run again"),
])
def test_vgg_download_fault_is_one_line_leaves_nothing_and_the_next_call_recovers(
        kind, expected, server, tmp_path):
    model = str(tmp_path / "Model_zoo")
    url = _closed_port_url() if kind == "closed" else server(kind)
    with pytest.raises(FCNError) as error:
        vgg_weights.get_model_data(model, url, timeout=20)
    message = str(error.value)
    assert "\n" not in message and re.search(expected, message), message
    assert url in message
    assert os.listdir(model) == []  # no .part, no file that would later pass for the .mat
    mat = vgg_weights.get_model_data(model, server("good"))
    assert vgg_weights.load_vgg19(mat)[0]["conv5_4"][0].shape == (3, 3, 512, 512)
    assert os.listdir(model) == [VGG_NAME]


def test_a_truncated_dataset_zip_is_refused_removed_and_the_next_call_recovers(server, tmp_path):
    import read_MITSceneParsingData as scene
    data_dir = str(tmp_path / "data")
    with pytest.raises(FCNError, match=r"is not a valid zip .*removed: run again"):
        scene.read_dataset(data_dir, data_url=server("truncated", ZIP_NAME))
    assert os.listdir(data_dir) == []
    training, validation = scene.read_dataset(data_dir, data_url=server("good", ZIP_NAME))
    assert (len(training), len(validation)) == (24, 8)
