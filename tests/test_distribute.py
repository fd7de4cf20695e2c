"""--distribute: the pure parts of distribute.py (devices, TF_CONFIG, ranks, the even split), the
reader's shard per worker, one mirrored step over 2 CPU devices against one device, checkpoint
round trips, and pairs of real `FCN.py --mode=train --distribute=multi_worker` processes on
127.0.0.1: equal weights, only the chief writing, a killed pair resuming, a SIGTERM on a worker
stopping both, a killed worker stopping the other within --worker_timeout, and the refusals.

Every subprocess is bounded by a timeout; at most 2 training processes run at once (each takes
about 2 GB).
"""
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import BatchDatsetReader as reader
import FCN
import distribute
import read_MITSceneParsingData as scene_parsing
from guards import FCNError, error_summary
from tests.project import FCN_PY, ROOT, main_in_this_process, run_program

HANG = 900  # seconds: only against a hang, never an assertion about speed


# ---- devices, TF_CONFIG, ranks, the split --------------------------------------------------------

def test_devices_are_named_in_any_of_tensorflows_spellings():
    assert distribute.parse_devices("GPU:0,/gpu:1, /device:GPU:2") == [
        "/device:GPU:0", "/device:GPU:1", "/device:GPU:2"]
    assert distribute.parse_devices("") == []
    assert distribute.cpu_device_count(distribute.parse_devices("CPU:0,CPU:1")) == 2
    assert distribute.cpu_device_count(distribute.parse_devices("GPU:0")) == 1
    for bad in ("TPU:0", "GPU", "GPU:0,GPU:0", "gpu:x"):
        with pytest.raises(FCNError, match="--devices"):
            distribute.parse_devices(bad)
    with pytest.raises(FCNError, match="names /device:GPU:2 but 2 GPUs are visible"):
        distribute.check_devices(["/device:GPU:0", "/device:GPU:2"], gpu_count=2)
    distribute.check_devices(["/device:CPU:1"], gpu_count=0)


def tf_config(cluster, task_type, index):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_tf_config_gives_the_rank_with_the_chief_first():
    workers = {"worker": ["a:1", "b:2", "c:3"]}
    task = distribute.parse_tf_config(tf_config(workers, "worker", 2))
    assert (task.task_type, task.task_index, task.rank, task.num_workers) == ("worker", 2, 2, 3)
    assert distribute.is_chief(distribute.parse_tf_config(tf_config(workers, "worker", 0)))
    assert not distribute.is_chief(task)
    with_chief = {"chief": ["m:1"], "worker": ["a:1", "b:2"]}
    assert distribute.worker_rank(with_chief, "chief", 0) == (0, 3)
    assert distribute.worker_rank(with_chief, "worker", 0) == (1, 3)
    assert distribute.worker_rank(with_chief, "worker", 1) == (2, 3)
    assert distribute.is_chief(None)  # one machine


@pytest.mark.parametrize("text, words", [
    ("", "needs the TF_CONFIG environment variable"),
    ("{'cluster': 1}", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["a:1"]}}', 'no "task"'),
    (tf_config({"worker": ["a:1", "b:2"]}, "worker", 2), "task worker 2 is not in its cluster"),
    (tf_config({"worker": ["a:1"]}, "chief", 0), "task chief 0 is not in its cluster"),
    (tf_config({"worker": ["a"]}, "worker", 0), '"host:port"'),
    (tf_config({"ps": ["a:1"], "worker": ["b:1"]}, "worker", 0), "the job 'ps'"),
])
def test_a_tf_config_that_cannot_work_is_one_line(text, words):
    with pytest.raises(FCNError) as error:
        distribute.parse_tf_config(text)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_the_global_batch_divides_among_replicas_and_workers():
    assert distribute.replica_batch(4, 2) == 2 and distribute.replica_batch(3, 1) == 3
    with pytest.raises(FCNError, match=r"--batch_size=5 does not divide among the 2 replicas; "
                                       r"use a multiple of 2 \(4 or 6\)"):
        distribute.replica_batch(5, 2)
    with pytest.raises(FCNError, match=r"use a multiple of 4 \(4\)"):
        distribute.replica_batch(3, 4)
    assert [reader.shard_positions(0, 6, r, 3) for r in range(3)] == [range(0, 2), range(2, 4),
                                                                       range(4, 6)]


def test_flag_checks():
    good = FCN.current_settings().replace(distribute="mirrored", all_reduce="auto",
                                          worker_timeout=10, devices="CPU:0,CPU:1")
    distribute.check_settings(good)
    for change, words in (({"distribute": "horovod"}, "--distribute=horovod"),
                          ({"all_reduce": "mpi"}, "--all_reduce=mpi"),
                          ({"worker_timeout": 0}, "--worker_timeout=0"),
                          ({"distribute": "multi_worker"}, "--devices is for"),
                          ({"devices": "CPU"}, "--devices=CPU")):
        with pytest.raises(FCNError, match=re.escape(words)):
            distribute.check_settings(good.replace(**change))


def test_each_worker_reads_its_part_of_the_same_seeded_batches(scene_data):
    records, _ = scene_parsing.read_dataset(scene_data)
    options = {"resize": True, "resize_size": 32, "seed": 3}
    with reader.BatchDatset(records, options) as whole:
        expected = [whole.next_batch(4) for _ in range(5)]  # past an epoch of 8 records
    for rank in range(2):
        with reader.BatchDatset(records, dict(options, shard=(rank, 2))) as part:
            for images, annotations in expected:
                got_images, got_annotations = part.next_batch(4)
                assert np.array_equal(got_images, images[2 * rank:2 * rank + 2])
                assert np.array_equal(got_annotations, annotations[2 * rank:2 * rank + 2])
    with pytest.raises(FCNError, match="image option shard"):
        reader.BatchDatset(records, dict(options, shard=(2, 2)))


def test_a_lost_worker_is_one_line_naming_the_timeout_and_the_checkpoint():
    line = distribute.lost_worker_message(30, "Operation timed out.", "logs/model.ckpt-4")
    assert line.startswith("a worker stopped answering (it died, hangs or lost the network): "
                           "no answer within --worker_timeout=30 s (Operation timed out.)")
    assert "the last checkpoint is logs/model.ckpt-4; start every worker again" in line
    line = distribute.lost_worker_message(30, "x", None, starting=True)
    assert line.startswith("the other workers did not all start")
    assert "no checkpoint was saved yet" in line and "\n" not in line


def test_a_step_that_waits_past_the_timeout_stops_with_the_lost_worker_line():
    # A dequeue from an empty queue waits as a step waits for a worker that never answers.
    settings = FCN.current_settings().replace(distribute="mirrored", devices="CPU:0",
                                              worker_timeout=1, batch_size=2)
    cluster = distribute.Cluster(tf, settings, 0)
    with tf.Graph().as_default():
        queue = tf.FIFOQueue(1, tf.float32, shapes=[])
        waiting, answered = queue.dequeue(), tf.constant(3.0) * 2
        with cluster.session(tf) as sess:
            assert cluster.run(tf, sess, answered, {}, None) == 6.0
            started = time.monotonic()
            with pytest.raises(FCNError) as caught:
                cluster.run(tf, sess, waiting, {}, "logs/model.ckpt-4")
            assert time.monotonic() - started < HANG
    line = str(caught.value)
    assert line.startswith("a worker stopped answering") and "\n" not in line
    assert "--worker_timeout=1 s (" in line and "the last checkpoint is logs/model.ckpt-4" in line
    # The cause is TensorFlow's own line, not its "Graph execution error:" header or op stack.
    assert "Graph execution error" not in line and "Detected at node" not in line


def test_the_summary_of_a_tensorflow_error_is_its_cause_line():
    with tf.Graph().as_default(), tf.Session() as sess:
        shape = tf.placeholder(tf.int32, [2])
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            sess.run(tf.reshape(tf.zeros([6]), shape), {shape: [2, 2]})
    assert str(caught.value).startswith("Graph execution error")
    assert error_summary(caught.value) == (
        "Input to reshape is a tensor with 6 values, but the requested shape has 4")


# ---- mirrored over 2 CPU devices ----------------------------------------------------------------

@pytest.fixture(scope="module")
def mirrored_step(module_tmp, model_dir):
    work = str(module_tmp("mirrored_step"))
    result = os.path.join(work, "result.json")
    proc = subprocess.run([sys.executable, "-m", "tests.distribute_step", model_dir, work, result],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(result) as f:
        return json.load(f)


def test_one_step_on_two_replicas_is_one_devices_step_on_the_whole_batch(mirrored_step):
    step = mirrored_step
    assert step["devices"] == ["/job:localhost/replica:0/task:0/device:CPU:0",
                               "/job:localhost/replica:0/task:0/device:CPU:1"]
    # Adam's first moment is 0.1 x the gradient: the replicas' merged gradient is one device's
    # (a loss left undivided by the 2 replicas would give twice it: a difference of 1.0).
    for name, difference in step["slot_difference"].items():
        assert step["slot_largest"][name] > 0, name
        assert difference < 1e-3, (name, difference)
    assert step["weight_difference"] < 1e-3
    assert all(moved > 0 for moved in step["moved"].values())
    assert step["copies_equal"]
    # The reduced loss is the mean over the whole batch, as one device's.
    assert abs(step["losses"][0] - step["losses"][1]) < 1e-4 * abs(step["losses"][0])


def test_the_recipes_sgd_step_on_two_replicas_is_one_devices(mirrored_step):
    # SGD with momentum, weight decay, class weights and poly: the update is the gradient itself,
    # so a merged gradient or a weight decay off by the replica count would show as a factor 2.
    assert mirrored_step["recipe_update_largest"] > 0
    assert mirrored_step["recipe_update_difference"] < 1e-3


def test_checkpoints_go_from_one_device_to_mirrored_and_back_unchanged(mirrored_step):
    assert mirrored_step["plain_to_mirrored"] == 0.0
    assert mirrored_step["mirrored_to_plain"] == 0.0
    assert mirrored_step["names_equal"]  # the 44 weights, Adam's slots, global_step: no others


# ---- multi_worker: pairs of FCN.py processes on 127.0.0.1 ---------------------------------------

def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Worker:
    """`python -u FCN.py --mode=train --distribute=multi_worker args` as task `index` of the
    cluster; its output goes to a file that wait_for reads."""

    def __init__(self, cluster, index, args, folder):
        self.log = os.path.join(folder, "worker%d-%d.log" % (index, time.time() * 1e6))
        env = dict(os.environ, TF_CONFIG=tf_config(cluster, "worker", index))
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-u", FCN_PY, "--mode=train", "--distribute=multi_worker"]
                + list(args), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    @property
    def output(self):
        with open(self.log) as f:
            return f.read()

    def wait_for(self, pattern):
        deadline = time.time() + HANG
        while time.time() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError("worker ended before %r:\n%s" % (pattern,
                                                                     self.output[-3000:]))
            time.sleep(0.05)
        raise AssertionError("no %r after %d s" % (pattern, HANG))

    def finish(self):
        return self.proc.wait(timeout=HANG)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def checksum(out):
    return re.findall(r"Weights checksum: ([0-9a-f]{16})", out)


def stored_steps(logs):
    return sorted(int(m) for p in glob.glob(os.path.join(logs, "model.ckpt-*.index"))
                  for m in re.findall(r"model\.ckpt-(\d+)\.index$", p))


@pytest.fixture(scope="module")
def pairs(module_tmp, dirs):
    """Pairs of workers run one after the other (at most 2 processes at once):
    1. fresh, each with its own empty logs_dir, 2 steps;
    2. on a shared logs_dir: both SIGKILLed once the chief saved step 2 and both logged step 3;
    3. restarted: both resume from the chief's model.ckpt-2; SIGTERM to worker 1 after step 3;
    4. restarted with --worker_timeout=90: worker 1 SIGKILLed after a step; the chief must stop.
    """
    folder = str(module_tmp("multi_worker"))
    shared = os.path.join(folder, "shared")
    # The narrow network at 512x512: steps of about a second, so that a worker seen at a step
    # is stopped before the step after the next.
    common = ["--image_size=512", "--batch_size=2"] + dirs + ["--log_every=1", "--save_every=2"]
    stages, running = {"shared": shared}, []

    def start(args_for):
        ports = free_ports(2)
        cluster = {"worker": ["127.0.0.1:%d" % p for p in ports]}
        pair = [Worker(cluster, i, common + args_for(i), folder) for i in range(2)]
        running.extend(pair)
        return pair

    try:
        own = [os.path.join(folder, "own%d" % i) for i in range(2)]
        pair = start(lambda i: ["--logs_dir=" + own[i], "--max_iterations=2"])
        stages["fresh"] = dict(rc=[w.finish() for w in pair], out=[w.output for w in pair],
                               files=[sorted(os.listdir(d)) if os.path.isdir(d) else []
                                      for d in own], steps=stored_steps(own[0]))

        args = ["--logs_dir=" + shared, "--max_iterations=1000"]
        pair = start(lambda i: args)
        pair[0].wait_for(r"step 2 validation loss .* saved")
        for w in pair:
            w.wait_for(r"step 3 loss")
        for w in pair:
            w.stop()
        stages["killed"] = dict(rc=[w.proc.returncode for w in pair], steps=stored_steps(shared))

        pair = start(lambda i: args)
        for w in pair:
            w.wait_for(r"step 3 loss")
        pair[1].proc.send_signal(signal.SIGTERM)
        stages["sigterm"] = dict(rc=[w.finish() for w in pair], out=[w.output for w in pair],
                                 steps=stored_steps(shared))

        pair = start(lambda i: args + ["--worker_timeout=90", "--save_every=1000"])
        restored = int(pair[0].wait_for(r"Model restored from .* \(step (\d+)\)").group(1))
        for w in pair:
            w.wait_for(r"step %d loss" % (restored + 1))
        pair[1].stop()
        killed_at = time.time()
        rc = pair[0].finish()
        stages["lost"] = dict(rc=rc, seconds=time.time() - killed_at, out=pair[0].output)
        yield stages
    finally:
        for w in running:
            w.stop()


@pytest.mark.slow
def test_two_workers_train_to_the_same_weights_and_only_the_chief_writes(pairs):
    fresh = pairs["fresh"]
    assert fresh["rc"] == [0, 0], fresh["out"][0][-2000:] + fresh["out"][1][-2000:]
    sums = [checksum(out) for out in fresh["out"]]
    assert len(sums[0]) == 1 and sums[0] == sums[1]
    for out in fresh["out"]:
        assert re.search(r"step 2 loss [\d.]+ images/s [\d.]+ on 2 replicas", out)
    assert "the chief saves" in fresh["out"][1] and " saved " not in fresh["out"][1]
    assert fresh["steps"] == [2]
    assert {"settings.json", "classes.json", "checkpoint", "train", "validation"} <= set(
        fresh["files"][0])
    assert fresh["files"][1] == []  # worker 1 wrote nothing into its --logs_dir


@pytest.mark.slow
def test_a_killed_pair_resumes_from_the_chiefs_last_checkpoint(pairs):
    assert pairs["killed"]["rc"] == [-signal.SIGKILL, -signal.SIGKILL]
    assert pairs["killed"]["steps"][-1] == 2
    restored = "Model restored from %s (step 2)" % os.path.join(pairs["shared"], "model.ckpt-2")
    for out in pairs["sigterm"]["out"]:
        assert restored in out, out[-2000:]


@pytest.mark.slow
def test_a_sigterm_on_one_worker_stops_both_after_the_same_step(pairs):
    stage = pairs["sigterm"]
    assert stage["rc"] == [0, 0], stage["out"][0][-2000:] + stage["out"][1][-2000:]
    chief = re.search(r"Stopped by a Ctrl-C or SIGTERM on another worker at step (\d+); "
                      r"checkpoint saved to (\S+)", stage["out"][0])
    worker = re.search(r"Stopped by SIGTERM at step (\d+); the chief saves the checkpoint",
                       stage["out"][1])
    assert chief and worker, stage["out"][0][-1500:] + stage["out"][1][-1500:]
    assert chief.group(1) == worker.group(1)
    step = int(chief.group(1))
    assert stage["steps"][-1] == step and chief.group(2).endswith("model.ckpt-%d" % step)
    assert int(tf.train.load_variable(chief.group(2), "global_step")) == step
    sums = [checksum(out) for out in stage["out"]]
    assert len(sums[0]) == 1 and sums[0] == sums[1]


@pytest.mark.slow
def test_a_killed_worker_stops_the_other_within_the_timeout(pairs):
    stage = pairs["lost"]
    lines = [line for line in stage["out"].splitlines() if line.startswith("FCN.py: error:")]
    assert stage["rc"] == 2 and len(lines) == 1, stage["out"][-3000:]
    assert "a worker stopped answering" in lines[0]
    assert "--worker_timeout=90 s" in lines[0] and "the last checkpoint is" in lines[0]
    assert "Traceback" not in stage["out"]
    assert stage["seconds"] < 90 + 120, stage["seconds"]  # a bound against a hang


# ---- refusals: one line, exit 2 ----------------------------------------------------------------

def refused(args, monkeypatch, tf_config_text=None):
    """The one error line of --mode=train with args (in this process), TF_CONFIG set to
    tf_config_text or unset."""
    if tf_config_text is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config_text)
    code, out = main_in_this_process("--mode=train", *args)
    lines = [line for line in out.splitlines() if line.startswith("FCN.py: error:")]
    assert code == 2 and len(lines) == 1, out[-3000:]
    return lines[0]


def test_an_uneven_batch_and_a_bad_tf_config_are_refused(dirs, tmp_path, monkeypatch):
    logs = ["--logs_dir=" + str(tmp_path / "logs"), "--image_size=64"] + dirs
    # A process of its own: a MirroredStrategy over 2 CPU devices is made before TensorFlow
    # has set up its devices, which this process's earlier tests have done.
    out = run_program("--mode=train", "--batch_size=3", "--distribute=mirrored",
                      "--devices=CPU:0,CPU:1", *logs, expect=2, cwd=ROOT)
    assert "FCN.py: error: --batch_size=3 does not divide among the 2 replicas" in out
    multi = logs + ["--batch_size=2", "--distribute=multi_worker"]
    assert "TF_CONFIG is not valid JSON" in refused(multi, monkeypatch, "{cluster: }")
    assert "task worker 5 is not in its cluster" in refused(
        multi, monkeypatch, tf_config({"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "worker", 5))
    assert not os.path.exists(str(tmp_path / "logs" / "settings.json"))
