"""How much memory --mode=train needs, told before anything is built: the weights with their
gradients and the optimizer's slots, one step's activations (in proportion to batch x
image_size^2), and what a run holds whatever its batch; and the one warning line when that is
more than the memory available, since a run killed for memory dies without a message.

The coefficients are fitted to the peak resident memory of real runs
(benchmarks/training_memory.py; the figures and the formula: docs/performance.md, "Training's
memory"). Every setting is an argument. No TensorFlow here.
"""
import collections
import math
import os

from optimizers import OPTIMIZERS
from vgg_weights import VGG19_WIDTHS, conv_shapes, fc_shapes

REFERENCE, PAPER = "reference", "paper"
ADE20K_CLASSES = 151
FLOAT32_BYTES = 4  # the variables, their gradients and the optimizer's slots, in both precisions
# The coefficients below are fitted to real runs: docs/performance.md, "Training's memory".
# One step's activations, bytes per pixel of the batch (batch x image_size^2), by (variant,
# precision): (every pixel's part, the part per class); the per-class part is mostly the class
# scores at the input's size, float32 in both precisions. Fitted to the larger steps, whose
# peaks grow the fastest with the pixels, so that the estimate does not fall behind large runs.
PIXEL_BYTES = {
    (REFERENCE, "fp32"): (2898.0, 5.3),
    (REFERENCE, "bf16"): (1831.0, 9.2),
    (PAPER, "fp32"): (2897.0, 14.2),
    (PAPER, "bf16"): (1169.0, 12.7),
}
# What any run holds, whatever its network and batch: Python, TensorFlow's runtime and kernels,
# the reader's threads (the peak of the tests' narrow network, less its weights' part).
RUNTIME_BYTES = 714e6
# What a run holds in proportion to its parameters beyond the weights' part, in float32 copies
# of them, by (variant, precision): the .mat while it is read, the pretrained values the graph
# keeps to initialise its variables, the checkpoint being saved, under bf16 the weights'
# bfloat16 copies. Raised until no measured run is above the estimate: a small step's
# activations partly fit in memory that setting up left free, so it lies below the line of the
# large ones, and the estimate errs high there rather than low.
PARAMETER_COPIES = {
    (REFERENCE, "fp32"): 2.95,
    (REFERENCE, "bf16"): 3.02,
    (PAPER, "fp32"): 4.26,
    (PAPER, "bf16"): 4.97,
}
GB = 1e9


class Estimate(collections.namedtuple(
        "Estimate", "weights activations overhead batch_size image_size")):
    """A training run's peak memory in bytes, by part: weights (the variables, their gradients
    and the optimizer's slots), activations (one step's), overhead (the rest); and the batch
    and image size the activations are for."""
    __slots__ = ()

    @property
    def total(self):
        return self.weights + self.activations + self.overhead


# ---- the network's size ----------------------------------------------------------------------

def variable_shapes(variant=REFERENCE, num_classes=ADE20K_CLASSES, widths=VGG19_WIDTHS):
    """(name, shape) of every variable of the variant's network, as network.py builds it."""
    if variant not in (REFERENCE, PAPER):
        raise ValueError("variant is %r or %r, not %r" % (REFERENCE, PAPER, variant))
    vgg = []
    for name, shape in conv_shapes(widths):
        vgg += [(name + "_w", shape), (name + "_b", (shape[3],))]
    shapes = _reference_head if variant == REFERENCE else _paper_head
    return tuple(vgg) + shapes(num_classes, widths)


def _reference_head(num_classes, widths):
    (_, fc6), (_, fc7) = fc_shapes(widths)
    pool3, pool4 = widths.blocks[2], widths.blocks[3]
    return (("W6", fc6), ("b6", (widths.fc,)), ("W7", fc7), ("b7", (widths.fc,)),
            ("W8", (1, 1, widths.fc, num_classes)), ("b8", (num_classes,)),
            ("W_t1", (4, 4, pool4, num_classes)), ("b_t1", (pool4,)),
            ("W_t2", (4, 4, pool3, pool4)), ("b_t2", (pool3,)),
            ("W_t3", (16, 16, num_classes, pool3)), ("b_t3", (num_classes,)))


def _paper_head(num_classes, widths):
    fcs = []
    for name, shape in fc_shapes(widths):
        fcs += [(name + "_w", shape), (name + "_b", (shape[3],))]
    upscore = (4, 4, num_classes, num_classes)  # learned x2 upsamplings, no bias
    return tuple(fcs) + (
        ("score_fr_w", (1, 1, widths.fc, num_classes)), ("score_fr_b", (num_classes,)),
        ("upscore2_w", upscore),
        ("score_pool4_w", (1, 1, widths.blocks[3], num_classes)),
        ("score_pool4_b", (num_classes,)),
        ("upscore_pool4_w", upscore),
        ("score_pool3_w", (1, 1, widths.blocks[2], num_classes)),
        ("score_pool3_b", (num_classes,)))


def parameter_count(variant=REFERENCE, num_classes=ADE20K_CLASSES, widths=VGG19_WIDTHS):
    """The number of values in the variant's variables."""
    return sum(math.prod(shape) for _, shape in variable_shapes(variant, num_classes, widths))


# ---- the estimate ----------------------------------------------------------------------------

def weights_bytes(parameter_count, slots_per_variable):
    """The variables, one gradient each and the optimizer's slots, all float32."""
    return parameter_count * FLOAT32_BYTES * (2 + slots_per_variable)


def overhead_bytes(parameter_count, precision, variant=REFERENCE):
    """What a run holds whatever its batch, beyond the weights' part: the runtime, and the copies
    of the parameters."""
    return RUNTIME_BYTES + PARAMETER_COPIES[variant, precision] * FLOAT32_BYTES * parameter_count


def pixel_bytes(precision, variant=REFERENCE, num_classes=ADE20K_CLASSES):
    """One step's activations per pixel of the batch, in bytes."""
    every_pixel, per_class = PIXEL_BYTES[variant, precision]
    return every_pixel + per_class * num_classes


def training_estimate(parameter_count, batch_size, image_size, precision, slots_per_variable,
                      variant=REFERENCE, num_classes=ADE20K_CLASSES):
    """The Estimate of --mode=train's peak memory on one device. parameter_count: the network's
    (parameter_count()); slots_per_variable: the optimizer's (optimizers.OPTIMIZERS);
    precision 'fp32' or 'bf16'."""
    pixels = batch_size * image_size * image_size
    return Estimate(weights=weights_bytes(parameter_count, slots_per_variable),
                    activations=pixels * pixel_bytes(precision, variant, num_classes),
                    overhead=overhead_bytes(parameter_count, precision, variant),
                    batch_size=batch_size, image_size=image_size)


def largest_batch(estimate, available):
    """The largest batch whose estimate at the same image size fits in available bytes; 0
    when not even one image does."""
    per_image = estimate.activations / estimate.batch_size
    room = available - estimate.weights - estimate.overhead
    return max(0, int(room // per_image))


def warning_line(estimate, available):
    """One warning line when the estimate is more than available bytes, else None (and None
    when available is None: unknown)."""
    if available is None or estimate.total <= available:
        return None
    size = "%dx%d" % (estimate.image_size, estimate.image_size)
    fits = largest_batch(estimate, available)
    if fits:
        advice = "lower --batch_size (at most %d fits at %s) or --image_size" % (fits, size)
    elif estimate.weights + estimate.overhead < available:
        advice = "lower --image_size (not even batch 1 fits at %s)" % size
    else:  # no batch or image size helps
        advice = ("even without activations it does not fit: free memory, or train where there "
                  "is more")
    return ("Warning: this run needs about %.1f GB of memory (weights, gradients and optimizer "
            "slots %.1f GB, activations %.1f GB at batch %d of %s, the rest %.1f GB) but %.1f GB "
            "is available: it may be killed without a message (exit 137 or 139); %s"
            % (estimate.total / GB, estimate.weights / GB, estimate.activations / GB,
               estimate.batch_size, size, estimate.overhead / GB, available / GB, advice))


def training_warning(available, variant, precision, optimizer, batch_size, image_size,
                     num_classes, widths=VGG19_WIDTHS):
    """warning_line of a training run of these settings against available bytes (None:
    unknown). optimizer: a key of optimizers.OPTIMIZERS; batch_size: the images this machine
    holds at a step; widths: the network's (vgg_weights.Widths)."""
    estimate = training_estimate(parameter_count(variant, num_classes, widths), batch_size,
                                 image_size, precision, OPTIMIZERS[optimizer].slots, variant,
                                 num_classes)
    return warning_line(estimate, available)


# ---- the memory available --------------------------------------------------------------------

MEMINFO = "/proc/meminfo"
# A container's memory limit as it sees it, cgroup v2 then v1: (limit, usage, stat, the stat
# line of reclaimable file cache, which the usage counts).
CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat",
     "inactive_file"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
     "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"),
)
NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2^63


def meminfo_available(text):
    """MemAvailable of /proc/meminfo's text in bytes, or None when it has none (before Linux
    3.14)."""
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["MemAvailable:"] and len(fields) >= 2:
            return int(fields[1]) * 1024  # the kernel's "kB" are KiB
    return None


def cgroup_headroom(limit_text, usage_text, stat_text, inactive_key):
    """What a memory cgroup lets its processes still take, in bytes: its limit less its usage,
    plus the inactive file cache the kernel reclaims first; None when it sets no limit."""
    limit = limit_text.strip()
    if limit == "max" or int(limit) >= NO_LIMIT:
        return None
    reclaimable = 0
    for line in stat_text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == inactive_key:
            reclaimable = int(fields[1])
    return max(0, int(limit) - int(usage_text.strip()) + reclaimable)


def _read(path):
    with open(path, encoding="ascii") as f:
        return f.read()


def available_bytes():
    """The memory a new run can take, in bytes: Linux's MemAvailable, or a container's cgroup
    headroom when smaller; elsewhere the free physical pages where the system tells them; None
    when nothing tells."""
    try:
        found = [meminfo_available(_read(MEMINFO))]
    except (OSError, ValueError):
        found = [_sysconf_available()]
    for limit, usage, stat, inactive_key in CGROUP_FILES:
        try:
            found.append(cgroup_headroom(_read(limit), _read(usage), _read(stat), inactive_key))
        except (OSError, ValueError):
            pass
    found = [value for value in found if value is not None]
    return min(found) if found else None


def _sysconf_available():
    """Free physical memory from sysconf where it has the names (some Unixes; not macOS or
    Windows), else None. It leaves out the file cache, so it errs low."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
