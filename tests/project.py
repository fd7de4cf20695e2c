"""The project under test: where it is, its source files, and running FCN.py as a user does."""
import contextlib
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FCN_PY = os.path.join(ROOT, "FCN.py")
SMALL = ["--image_size=64", "--batch_size=2"]  # the flags that keep a test's network small


def run_fcn(*args, expect=0):
    """Runs `python FCN.py args`; returns its output (stdout and stderr)."""
    proc = subprocess.run([sys.executable, FCN_PY] + list(args),
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == expect, out[-3000:]
    return out


def fcn_main(capsys, *args):
    """FCN.main in this process with these flags (only for runs that stop before building the
    network): returns (exit code, stdout, stderr). An exception other than SystemExit, the
    traceback a user would see, fails the test."""
    import FCN
    capsys.readouterr()
    FCN.FLAGS.unparse_flags()
    try:
        FCN.main(["FCN.py"] + list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        FCN.FLAGS.unparse_flags()  # main set them
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def project_sources(but=None):
    """Every .py of the project (top level, tests, benchmarks), except the file `but`."""
    paths = glob.glob(os.path.join(ROOT, "*.py"))
    for folder in ("tests", "benchmarks"):
        paths += glob.glob(os.path.join(ROOT, folder, "*.py"))
    return [p for p in paths if but is None or os.path.abspath(p) != os.path.abspath(but)]


@contextlib.contextmanager
def mounted_tmpfs(mount_point, size):
    """A tmpfs of `size` (mount's spelling, e.g. "2m") mounted at mount_point (created) for the
    block: a disk that really fills up. Skips the test where one cannot be mounted (not root,
    or no mount permission in this container)."""
    import pytest
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    os.makedirs(mount_point)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", mount_point],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % result.stderr.strip())
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", mount_point]).returncode != 0:
            subprocess.run(["umount", "-l", mount_point])
