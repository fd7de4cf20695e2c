"""devices.py: the CPU's flags, native bfloat16 and the device line, from made-up inputs."""
import devices

CPUINFO_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 avx avx2 fma
bogomips\t: 4890.85

processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 fma
"""
CPUINFO_BF16 = CPUINFO_AVX2.replace("avx2 fma", "avx2 fma avx512f avx512_bf16", 1)


def test_cpu_flags_reads_the_first_cpus_flags_line():
    assert devices.cpu_flags(CPUINFO_AVX2) == {"fpu", "vme", "sse", "sse2", "avx", "avx2", "fma"}
    assert devices.cpu_flags("processor : 0\n") == set()  # no flags line, as on some VMs


def test_bf16_is_native_on_a_gpu_or_a_cpu_with_bf16_instructions():
    assert not devices.native_bf16([], devices.cpu_flags(CPUINFO_AVX2))
    assert devices.native_bf16([], devices.cpu_flags(CPUINFO_BF16))
    assert devices.native_bf16([], {"amx_bf16"})
    assert devices.native_bf16(["GPU:0 NVIDIA T4"], set())


def test_device_line_names_the_gpus_or_says_cpu_only():
    assert devices.device_line([]) == "Devices: CPU only (no GPU visible)"
    assert (devices.device_line(["GPU:0 NVIDIA A100", "GPU:1 NVIDIA A100"])
            == "Devices: GPU:0 NVIDIA A100, GPU:1 NVIDIA A100")


def test_the_data_and_helper_modules_import_no_tensorflow():
    # docs/layout.md promises it: reading, checking and scoring data needs no TensorFlow.
    import subprocess
    import sys
    from tests.project import ROOT
    modules = ["datasets", "downloads", "guards", "metrics", "evaluation", "quiet_tensorflow",
               "tiles", "predict_files", "devices", "command_line", "run_settings",
               "BatchDatsetReader", "read_MITSceneParsingData", "read_PascalVOCData",
               "read_FolderData", "vgg_weights", "pictures", "image_files", "multi_scale",
               "progress", "confusion_report", "augment", "class_weights", "settings_checks",
               "memory_estimate", "optimizers"]
    code = ("import sys\nimport %s\nprint(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('tensorflow', 'keras')))" % ", ".join(modules))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
