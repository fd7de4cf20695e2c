"""What computes: the visible GPUs, the CPU's instruction sets, and whether bfloat16 is native.

Pure functions over what TensorFlow and /proc/cpuinfo report, so that each is testable without
a GPU or a particular CPU.
"""
import os

CPUINFO = "/proc/cpuinfo"
# CPU features that give bfloat16 matrix products in hardware (oneDNN uses them); without them
# TensorFlow emulates bfloat16 in float32, as slow or slower than fp32 itself.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo_text=None):
    """The set of feature flags of the first CPU in /proc/cpuinfo (empty where there is none,
    as on Windows and macOS)."""
    if cpuinfo_text is None:
        if not os.path.exists(CPUINFO):
            return set()
        try:
            with open(CPUINFO) as f:
                cpuinfo_text = f.read()
        except OSError:
            return set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def native_bf16(gpus, flags):
    """True where bfloat16 runs in hardware: on a GPU (Ampere and newer do; older ones are
    still faster in bf16 than a CPU emulating it), or on a CPU with AVX512_BF16 or AMX."""
    return bool(gpus) or any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


def gpu_names(tf):
    """['GPU:0 NVIDIA A100-SXM4-40GB', ...] of the GPUs TensorFlow sees (tf is tensorflow or its
    compat.v1 module)."""
    names = []
    for index, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, RuntimeError):
            details = {}
        label = details.get("device_name") or gpu.name
        names.append("GPU:%d %s" % (index, label))
    return names


def device_line(gpus):
    """The one line each mode prints about what computes."""
    if not gpus:
        return "Devices: CPU only (no GPU visible)"
    return "Devices: " + ", ".join(gpus)


def bf16_warning(precision, gpus, cpu_flags):
    """The warning line for --precision=bf16 where bfloat16 is not native, else None."""
    if precision != "bf16" or native_bf16(gpus, cpu_flags):
        return None
    return ("Warning: --precision=bf16 is emulated here (no GPU, and the CPU has none of %s): "
            "it is slower than fp32 on this machine; --precision=fp32 is the faster choice"
            % ", ".join(NATIVE_BF16_CPU_FLAGS))
