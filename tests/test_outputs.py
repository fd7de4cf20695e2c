"""Every file the program writes, when the disk is full or another run writes beside it: the
validation metrics, images and settings through guards.writing, the training lock; a real small
tmpfs where the test runs as root; two predicts into one folder at once; inputs that share a
stem; settings kept across runs.

The model is a 3-class --dataset=folder network trained 2 steps at 64x64 (what it predicts does
not matter here, only which files appear).
"""
import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

import guards
import pictures
import run_settings
from guards import FCNError, TrainLock, ctrl_c_deferred
from tests.make_dataset import make_folder_dataset
from tests.project import FCN_PY, SMALL, mounted_tmpfs, run_fcn


def one_line(error):
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    return text


def no_space(path=None):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


@pytest.fixture(scope="module")
def folder_model(module_tmp, model_dir):
    """(logs_dir, data_dir) of a 3-class folder model after 2 steps."""
    root = module_tmp("outputs")
    data = make_folder_dataset(str(root / "mine"), n_train=4, n_val=3, seed=3)
    logs = str(root / "logs")
    run_fcn("--mode=train", "--dataset=folder", "--data_dir=" + data, "--model_dir=" + model_dir,
            "--logs_dir=" + logs, "--max_iterations=2", "--save_every=2", *SMALL)
    return logs, data


def folder_args(folder_model, model_dir, logs=None):
    return ["--dataset=folder", "--data_dir=" + folder_model[1], "--model_dir=" + model_dir,
            "--logs_dir=" + (logs or folder_model[0])] + SMALL


# ---- a full disk, injected at the write ------------------------------------------------------

def test_a_full_disk_writing_json_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "validation_metrics.json")
    guards.write_json_atomically(path, {"old": 1})
    real_dump = json.dump

    def dump_until_full(content, f, **kwargs):
        f.write('{"half": ')
        f.flush()
        raise no_space(f.name)

    monkeypatch.setattr(json, "dump", dump_until_full)
    with pytest.raises(FCNError) as caught:
        with guards.writing(path):
            guards.write_json_atomically(path, {"new": 2})
    message = one_line(caught.value)
    assert message.startswith("the disk is full: writing %s failed (No space left on device; "
                              % path) and " free); free space there" in message
    monkeypatch.setattr(json, "dump", real_dump)
    assert os.listdir(str(tmp_path)) == ["validation_metrics.json"]  # no .part-* left
    with open(path) as f:
        assert json.load(f) == {"old": 1}


def test_another_write_error_is_one_line_too(tmp_path):
    path = str(tmp_path / "gone" / "x.json")
    with pytest.raises(FCNError) as caught:
        with guards.writing(path):
            guards.write_json_atomically(path, {})
    message = one_line(caught.value)
    assert message.startswith("writing %s failed (No such file or directory)" % path)
    assert "disk is full" not in message


def test_a_full_disk_writing_an_image_is_one_line(tmp_path, monkeypatch):

    def write_until_full(part, image, format=None):
        with open(part, "wb") as f:
            f.write(b"\x89PNG half")
        raise no_space(part)

    monkeypatch.setattr(pictures.imageio, "imwrite", write_until_full)
    with pytest.raises(FCNError) as caught:
        pictures.save_image(np.zeros((4, 4), np.uint8), str(tmp_path), "x_pred")
    assert one_line(caught.value).startswith("the disk is full: writing %s failed"
                                             % os.path.join(str(tmp_path), "x_pred.png"))
    assert os.listdir(str(tmp_path)) == []


def lock_file_that(monkeypatch, on_write, on_close):
    """os.fdopen, as the train lock opens its file, giving a file whose write and close first
    call on_write(text) and on_close()."""
    real_fdopen = os.fdopen

    class LockFile:
        def __init__(self, fd):
            self.f = real_fdopen(fd, "w")

        def __enter__(self):
            return self

        def write(self, text):
            on_write(text)
            self.f.write(text)

        def __exit__(self, *exc_info):
            self.f.close()
            on_close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: LockFile(fd))
    return real_fdopen


def test_a_full_disk_taking_the_lock_leaves_no_lock_and_a_later_run_takes_it(tmp_path,
                                                                              monkeypatch):
    def full():
        raise no_space()

    real_fdopen = lock_file_that(monkeypatch, lambda text: None, full)
    lock = TrainLock(str(tmp_path))
    with pytest.raises(FCNError) as caught:
        lock.acquire()
    assert one_line(caught.value).startswith("the disk is full: writing %s failed"
                                             % lock.path)
    assert os.listdir(str(tmp_path)) == [] and not lock.held
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    with TrainLock(str(tmp_path)) as again:
        with open(again.path) as f:
            assert f.read() == str(os.getpid())
    assert os.listdir(str(tmp_path)) == []


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raising KeyboardInterrupt in this process, as in a terminal: a suite started in
    the background by a shell (`... &`) has SIGINT ignored, and Python then leaves it so."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_the_lock_is_written_leaves_no_lock(tmp_path, monkeypatch, ctrl_c_raises):
    # Ctrl-C lands between the lock's creation and its holding our id: the with-block's
    # __exit__ never runs, so acquire itself must not leave the file behind.
    lock_file_that(monkeypatch, lambda text: signal.raise_signal(signal.SIGINT), lambda: None)
    lock = TrainLock(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        with lock:
            pass
    assert os.listdir(str(tmp_path)) == [] and not lock.held


def test_ctrl_c_in_a_deferred_block_takes_effect_at_its_end(ctrl_c_raises):
    reached = []
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_deferred():
            signal.raise_signal(signal.SIGINT)
            reached.append("after the signal")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is handler
    with ctrl_c_deferred():  # no signal, nothing raised
        reached.append("quiet")
    assert reached[-1] == "quiet"


def test_an_empty_lock_left_by_an_older_version_is_taken_over(tmp_path):
    open(str(tmp_path / "train.lock"), "w").close()
    with TrainLock(str(tmp_path)) as lock:
        assert lock.held
    assert os.listdir(str(tmp_path)) == []


# ---- a really full disk (a tmpfs, root only) ---------------------------------------------------

@pytest.fixture
def full_tmpfs(tmp_path):
    """A 4 MiB tmpfs (root only), which the test fills itself."""
    with mounted_tmpfs(str(tmp_path / "tmpfs"), "4m") as mount_point:
        yield mount_point


def logs_on(mount_point, folder_model):
    """A logs_dir in mount_point whose checkpoint files are links to folder_model's (they take
    no space there), then the rest of the tmpfs filled. Returns (logs_dir, filler path)."""
    logs = os.path.join(mount_point, "logs")
    os.makedirs(logs)
    for path in glob.glob(os.path.join(folder_model[0], "model.ckpt-*")):
        os.symlink(path, os.path.join(logs, os.path.basename(path)))
    for name in ("checkpoint", "classes.json"):
        shutil.copy(os.path.join(folder_model[0], name), logs)
    filler = os.path.join(mount_point, "filler")
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\1" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return logs, filler


def test_a_really_full_disk_at_validate_and_at_the_train_lock(full_tmpfs, folder_model,
                                                              model_dir):
    logs, filler = logs_on(full_tmpfs, folder_model)
    before = sorted(os.listdir(logs))
    out = run_fcn("--mode=validate", *folder_args(folder_model, model_dir, logs), expect=2)
    metrics = os.path.join(logs, "validation_metrics.json")
    assert "FCN.py: error: the disk is full: writing %s failed (No space left on device" \
        % metrics in out and "Traceback" not in out
    assert sorted(os.listdir(logs)) == before  # no validation_metrics.json.part-*

    out = run_fcn("--mode=train", "--max_iterations=2",
                  *folder_args(folder_model, model_dir, logs), expect=2)
    assert "FCN.py: error: the disk is full: writing %s failed" \
        % os.path.join(logs, "train.lock") in out and "Traceback" not in out
    assert sorted(os.listdir(logs)) == before  # no train.lock

    os.remove(filler)  # space freed: both run
    out = run_fcn("--mode=train", "--max_iterations=2", *folder_args(folder_model, model_dir, logs))
    assert "already reached --max_iterations=2" in out
    assert not os.path.exists(os.path.join(logs, "train.lock"))
    run_fcn("--mode=validate", *folder_args(folder_model, model_dir, logs))
    with open(metrics) as f:
        assert json.load(f)["num_images"] == 3


# ---- settings ----------------------------------------------------------------------------------

def test_settings_are_written_once_the_checks_pass_and_earlier_ones_kept(tmp_path):
    logs = str(tmp_path)
    run_settings.record(logs, {"run": 1})
    run_settings.record(logs, {"run": 2})
    with open(os.path.join(logs, "settings.json")) as f:
        assert json.load(f) == {"run": 2}
    with open(os.path.join(logs, "settings_history.json")) as f:
        assert json.load(f) == [{"run": 1}, {"run": 2}]
    assert sorted(os.listdir(logs)) == ["settings.json", "settings_history.json"]


def test_a_damaged_settings_history_is_kept_aside_not_overwritten(tmp_path, capsys):
    logs = str(tmp_path)
    with open(os.path.join(logs, "settings_history.json"), "w") as f:
        f.write("{not json")
    run_settings.record(logs, {"run": 3})
    with open(os.path.join(logs, "settings_history.json")) as f:
        assert json.load(f) == [{"run": 3}]
    kept = [n for n in os.listdir(logs) if ".unreadable-" in n]
    assert len(kept) == 1 and "is not a list of settings; kept as" in capsys.readouterr().out
    with open(os.path.join(logs, kept[0])) as f:
        assert f.read() == "{not json"


def test_a_training_run_appends_its_settings(folder_model):
    with open(os.path.join(folder_model[0], "settings_history.json")) as f:
        history = json.load(f)
    with open(os.path.join(folder_model[0], "settings.json")) as f:
        assert history[-1] == json.load(f)
    assert history[-1]["dataset"] == "folder" and history[-1]["max_iterations"] == 2


def write_images(folder, sizes, seed=0):
    """Random images {name: (h, w)} in folder; returns {name: array}."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    images = {}
    for name, (h, w) in sizes.items():
        images[name] = rng.randint(0, 255, (h, w, 3)).astype(np.uint8)
        imageio.imwrite(os.path.join(folder, name), images[name])
    return images


def test_inputs_that_share_a_stem_keep_their_extension(folder_model, model_dir, tmp_path):
    images = str(tmp_path / "in")
    write_images(images, {"same.jpg": (40, 70), "same.png": (50, 30), "solo.png": (33, 45)})
    out_dir = str(tmp_path / "out")
    run_fcn("--mode=predict", "--image=" + images, "--output_dir=" + out_dir,
            *folder_args(folder_model, model_dir))
    assert sorted(os.listdir(out_dir)) == sorted(
        ["same_jpg_pred.png", "same_jpg_pred_c.png", "same_png_pred.png", "same_png_pred_c.png",
         "solo_pred.png", "solo_pred_c.png"])
    # Each result is its own source's: the label maps have the sources' sizes.
    assert imageio.imread(os.path.join(out_dir, "same_jpg_pred.png")).shape == (40, 70)
    assert imageio.imread(os.path.join(out_dir, "same_png_pred.png")).shape == (50, 30)
    assert imageio.imread(os.path.join(out_dir, "solo_pred.png")).shape == (33, 45)


def test_two_predicts_into_one_folder_at_once_both_succeed(folder_model, model_dir, tmp_path):
    images = str(tmp_path / "in")
    names = ["p%02d.png" % k for k in range(12)]
    write_images(images, {name: (48, 64) for name in names})
    out_dir = str(tmp_path / "out")
    command = [sys.executable, FCN_PY, "--mode=predict", "--image=" + images,
               "--output_dir=" + out_dir] + folder_args(folder_model, model_dir)
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    for run, out in zip(runs, outputs):
        assert run.returncode == 0, out[-3000:]
        assert out.count(" -> ") == len(names)
    expected = sorted(n[:-4] + suffix for n in names for suffix in ("_pred.png", "_pred_c.png"))
    assert sorted(os.listdir(out_dir)) == expected  # nothing .part-* left
    for name in names:
        assert imageio.imread(os.path.join(out_dir, name[:-4] + "_pred.png")).shape == (48, 64)


def test_an_unreadable_image_is_skipped_and_none_readable_is_exit_2(folder_model, model_dir,
                                                                  tmp_path):
    images = str(tmp_path / "in")
    write_images(images, {"good.png": (40, 40)})
    with open(os.path.join(images, "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8 not a jpeg")
    out_dir = str(tmp_path / "out")
    out = run_fcn("--mode=predict", "--image=" + images, "--output_dir=" + out_dir,
                  *folder_args(folder_model, model_dir))
    assert "Warning: %s is unreadable" % os.path.join(images, "broken.jpg") in out
    assert sorted(os.listdir(out_dir)) == ["good_pred.png", "good_pred_c.png"]
    out = run_fcn("--mode=predict", "--image=" + os.path.join(images, "broken.jpg"),
                  "--output_dir=" + out_dir, *folder_args(folder_model, model_dir), expect=2)
    assert "FCN.py: error: none of the 1 images could be predicted (%s is unreadable" \
        % os.path.join(images, "broken.jpg") in out and "Traceback" not in out
