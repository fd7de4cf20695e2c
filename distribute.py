"""Training on several devices or machines with TensorFlow's own distribution engine, in graph
mode (tf.compat.v1.distribute): --distribute=mirrored (the devices of one machine) and
--distribute=multi_worker (several machines, described by the TF_CONFIG environment variable).

The parsing and the checks are pure functions, testable without a session or a cluster; the
strategy, the server and the session's target and configuration are made at the end of the
file. network.Model builds the replicas' graph and training.py's loop talks to the other
workers; --distribute=none never comes here.
"""
import collections
import json
import os
import re

from guards import FCNError, error_summary

MODES = ("none", "mirrored", "multi_worker")
ALL_REDUCES = ("auto", "nccl", "ring")
# The jobs of a TF_CONFIG cluster that train; "ps" and "evaluator" belong to other strategies.
TRAINING_JOBS = ("chief", "worker")
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')

_DEVICE = re.compile(r"^(?:/?device:|/)?(cpu|gpu):(\d+)$", re.IGNORECASE)

# What one worker knows of the cluster: the TF_CONFIG cluster ({job: [host:port, ...]}), its own
# job and index, its rank among the training tasks (the chief first) and their count.
Task = collections.namedtuple("Task", "cluster task_type task_index rank num_workers")


# ---- --devices -----------------------------------------------------------------------------------

def parse_devices(text):
    """'GPU:0,GPU:1' -> ['/device:GPU:0', '/device:GPU:1'] ('/gpu:0', 'gpu:0' and
    '/device:GPU:0' are the same device); '' -> []. FCNError for anything else or a repeat."""
    devices = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _DEVICE.match(item)
        if not match:
            raise FCNError("--devices=%s: %r is not a device; name them as GPU:0,GPU:1 (or "
                           "CPU:0,CPU:1 to split the CPU into that many devices)" % (text, item))
        name = "/device:%s:%d" % (match.group(1).upper(), int(match.group(2)))
        if name in devices:
            raise FCNError("--devices=%s names %s twice" % (text, name))
        devices.append(name)
    return devices


def cpu_device_count(devices):
    """How many CPU devices the session must offer for these devices: one more than the highest
    CPU index named (CPU:0,CPU:1 splits the CPU in two), 1 when none is named."""
    indices = [int(d.rsplit(":", 1)[1]) for d in devices if ":CPU:" in d]
    return max(indices) + 1 if indices else 1


def check_devices(devices, gpu_count):
    """FCNError when --devices names a GPU this machine does not have."""
    for device in devices:
        kind, index = device.split(":")[1:]
        if kind == "GPU" and int(index) >= gpu_count:
            raise FCNError("--devices names %s but %d GPU%s visible; name GPU:0 to GPU:%d, or "
                           "leave --devices out to use every visible GPU"
                           % (device, gpu_count, " is" if gpu_count == 1 else "s are",
                              max(gpu_count - 1, 0)))


# ---- TF_CONFIG -------------------------------------------------------------------------------

def parse_tf_config(text):
    """The Task this process is, from the text of TF_CONFIG; FCNError (one line, with an
    example) when it is missing, not JSON, or its cluster lacks this task."""
    hint = "set TF_CONFIG on every machine, e.g. TF_CONFIG='%s'" % TF_CONFIG_EXAMPLE
    if not text or not text.strip():
        raise FCNError("--distribute=multi_worker needs the TF_CONFIG environment variable "
                       "(the cluster and this machine's task); %s" % hint)
    try:
        config = json.loads(text)
    except ValueError as e:
        raise FCNError("TF_CONFIG is not valid JSON (%s); %s" % (e, hint))
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise FCNError("TF_CONFIG has no \"cluster\" object; %s" % hint)
    cluster = config["cluster"]
    for job, addresses in cluster.items():
        if job not in TRAINING_JOBS:
            raise FCNError("TF_CONFIG's cluster has the job %r; only %s train here"
                           % (job, " and ".join(TRAINING_JOBS)))
        if not isinstance(addresses, list) or not addresses or not all(
                isinstance(a, str) and re.match(r"^\S+:\d+$", a) for a in addresses):
            raise FCNError("TF_CONFIG's cluster job %r must be a list of \"host:port\" "
                           "addresses; %s" % (job, hint))
    if len(cluster.get("chief", [])) > 1:
        raise FCNError("TF_CONFIG's cluster has %d chiefs; it may have one"
                       % len(cluster["chief"]))
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise FCNError("TF_CONFIG has no \"task\" with a \"type\" and an \"index\" (which of "
                       "the cluster's machines this one is); %s" % hint)
    task_type, index = task["type"], task["index"]
    if task_type not in cluster or not isinstance(index, int) or isinstance(index, bool) \
            or not 0 <= index < len(cluster[task_type]):
        raise FCNError("TF_CONFIG's task %s %r is not in its cluster (%s); give each machine "
                       "its own type and index" % (task_type, index, json.dumps(cluster)))
    rank, count = worker_rank(cluster, task_type, index)
    return Task(cluster, task_type, index, rank, count)


def worker_rank(cluster, task_type, task_index):
    """(rank, number of training tasks): the chief (when the cluster has one) is rank 0, then the
    workers in their order. Rank 0 is the chief that writes."""
    order = [(job, i) for job in TRAINING_JOBS for i in range(len(cluster.get(job, [])))]
    return order.index((task_type, task_index)), len(order)


def is_chief(task):
    """Whether this task is the one that writes checkpoints, summaries and settings (rank 0: the
    chief, or worker 0 in a cluster without one; None, one machine, is its own chief)."""
    return task is None or task.rank == 0


# ---- the batch ---------------------------------------------------------------------------------

def replica_batch(global_batch, num_replicas):
    """Images per replica: --batch_size is the global batch and must divide evenly."""
    if global_batch % num_replicas:
        lower = global_batch // num_replicas * num_replicas
        choices = [n for n in (lower, lower + num_replicas) if n > 0]
        raise FCNError("--batch_size=%d does not divide among the %d replicas; use a multiple "
                       "of %d (%s)" % (global_batch, num_replicas, num_replicas,
                                       " or ".join(str(n) for n in choices)))
    return global_batch // num_replicas


def lost_worker_message(timeout, detail, last_checkpoint, starting=False):
    """The one line when the other workers did not answer within --worker_timeout seconds."""
    what = ("the other workers did not all start" if starting
            else "a worker stopped answering (it died, hangs or lost the network)")
    kept = ("the last checkpoint is %s; start every worker again to resume from it"
            % last_checkpoint if last_checkpoint else "no checkpoint was saved yet; start every "
            "worker again")
    return ("%s: no answer within --worker_timeout=%d s (%s); stopped without saving, %s"
            % (what, timeout, detail, kept))


def check_settings(settings):
    """FCNError for a --distribute, --all_reduce, --devices or --worker_timeout that cannot
    work (before anything is loaded)."""
    for name, choices in (("distribute", MODES), ("all_reduce", ALL_REDUCES)):
        value = getattr(settings, name)
        if value not in choices:
            raise FCNError("--%s=%s: use %s" % (name, value, ", ".join(choices)))
    if settings.worker_timeout < 1:
        raise FCNError("--worker_timeout=%d: it must be at least 1 (seconds)"
                       % settings.worker_timeout)
    if settings.devices and settings.distribute != "mirrored":
        raise FCNError("--devices is for --distribute=mirrored; with multi_worker each machine "
                       "uses all its GPUs (limit them with CUDA_VISIBLE_DEVICES)")
    parse_devices(settings.devices)


# ---- the strategy, the server, the session (TensorFlow from here on) ---------------------------

class Cluster:
    """What a distributed run is on this process: the strategy, this task (None for mirrored),
    the session's target and configuration, and the server that multi_worker starts."""

    def __init__(self, tf, settings, gpu_count):
        self.mode = settings.distribute
        self.timeout = settings.worker_timeout
        self.task, self.server, self.target = None, None, ""
        self.config = tf.ConfigProto()
        if self.mode == "mirrored":
            devices = parse_devices(settings.devices)
            check_devices(devices, gpu_count)
            self.config.device_count["CPU"] = cpu_device_count(devices)
            self.strategy = tf.distribute.MirroredStrategy(
                devices or None, cross_device_ops=_mirrored_all_reduce(tf, settings.all_reduce))
        else:
            self.task = parse_tf_config(os.environ.get("TF_CONFIG", ""))
            # Made in graph mode: made eagerly, it would start a server of its own on this
            # task's port, and the session's server could not take it.
            with tf.Graph().as_default():
                self.strategy = tf.distribute.experimental.MultiWorkerMirroredStrategy(
                    communication=_collective_communication(tf, settings.all_reduce))
            self.config = self.strategy.update_config_proto(self.config)
        self.replicas = self.strategy.num_replicas_in_sync
        self.local_replicas = len(self.strategy.extended.worker_devices)
        self.num_workers = 1 if self.task is None else self.task.num_workers
        self.rank = 0 if self.task is None else self.task.rank
        self.is_chief = is_chief(self.task)
        replica_batch(settings.batch_size, self.replicas)

    def start(self, tf):
        """Starts this worker's server (multi_worker); the session target to open."""
        if self.task is not None and self.server is None:
            address = self.task.cluster[self.task.task_type][self.task.task_index]
            try:
                self.server = tf.distribute.Server(
                    tf.train.ClusterSpec(self.task.cluster), job_name=self.task.task_type,
                    task_index=self.task.task_index, config=self.config, start=True)
            except tf.errors.OpError as e:
                raise FCNError("cannot start this worker's server on port %s of TF_CONFIG's "
                               "%s (%s); is another program using the port?"
                               % (address.rsplit(":", 1)[1], address, e.message))
            self.target = self.server.target
        return self.target

    def session(self, tf):
        """A session with the strategy's configuration, on this worker's server (multi_worker)."""
        return tf.Session(self.start(tf), config=self.config)

    def run(self, tf, sess, fetches, feed_dict, last_checkpoint, starting=False):
        """sess.run waiting at most --worker_timeout seconds for the other workers: a step that
        waits longer (one died, hangs, or never started) stops this one with an FCNError naming
        last_checkpoint."""
        try:
            return sess.run(fetches, feed_dict=feed_dict,
                            options=tf.RunOptions(timeout_in_ms=self.timeout * 1000))
        except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
                tf.errors.AbortedError, tf.errors.CancelledError) as e:
            raise FCNError(lost_worker_message(self.timeout, error_summary(e), last_checkpoint,
                                               starting))

    def describe(self):
        where = ("worker %d of %d (%s %d)" % (self.rank, self.num_workers, self.task.task_type,
                                              self.task.task_index)
                 if self.task is not None else "one machine")
        return "Distributed: %s, %d replica%s (%d here), %s%s" % (
            self.mode, self.replicas, "" if self.replicas == 1 else "s", self.local_replicas,
            where, ", the chief" if self.is_chief else "")


def _mirrored_all_reduce(tf, name):
    if name == "nccl":
        return tf.distribute.NcclAllReduce()
    if name == "ring":  # no ring within one machine: the copies are summed on one device
        return tf.distribute.ReductionToOneDevice()
    return None  # TensorFlow's choice: NCCL between GPUs where it is available


def _collective_communication(tf, name):
    kinds = tf.distribute.experimental.CollectiveCommunication
    return {"auto": kinds.AUTO, "nccl": kinds.NCCL, "ring": kinds.RING}[name]


def local_slice(tf, tensor, strategy):
    """Inside a replica: this replica's equal part of a tensor fed to the whole worker (the
    worker's images are split along the batch among its local replicas)."""
    local = len(strategy.extended.worker_devices)
    if local == 1:
        return tensor
    context = tf.distribute.get_replica_context()
    index = tf.math.floormod(tf.cast(context.replica_id_in_sync_group, tf.int32), local)
    size = tf.shape(tensor)[0] // local
    return tensor[index * size:(index + 1) * size]
