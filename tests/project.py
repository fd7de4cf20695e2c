"""The project under test: where it is, its source files, and running FCN.py as a user does, in
this process (FCN.main) or, where the process itself is what a test is about, as a child."""
import contextlib
import io
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FCN_PY = os.path.join(ROOT, "FCN.py")
SMALL = ["--image_size=64", "--batch_size=2"]  # the flags that keep a test's network small


def run_fcn(*args, expect=0):
    """`python FCN.py args` as FCN.main in this process (no TensorFlow import, no .mat load per
    run): checks its exit code, returns what it printed, stdout and stderr in the order written.
    An exception other than SystemExit, the traceback a user would see, fails the test."""
    code, output = main_in_this_process(*args)
    assert code == expect, output[-3000:]
    return output


def fcn_main(capsys, *args):
    """FCN.main in this process with these flags: (exit code, stdout, stderr) apart, for the
    tests that tell the two streams apart."""
    import FCN
    capsys.readouterr()
    try:
        FCN.main(["FCN.py"] + list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        FCN.FLAGS.unparse_flags()  # main set them; the next test starts from the defaults
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def main_in_this_process(*args):
    """(exit code, what it printed) of FCN.main(["FCN.py", *args]) in this process."""
    import FCN
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            FCN.main(["FCN.py"] + list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        FCN.FLAGS.unparse_flags()
    return code, output.getvalue()


def run_program(*args, expect=0, timeout=900, **popen_args):
    """`python FCN.py args` as a child process, for what only a process shows: its file
    descriptors, signals, exit status, environment. Returns its stdout and stderr together."""
    proc = subprocess.run([sys.executable, FCN_PY] + list(args), capture_output=True, text=True,
                          timeout=timeout, **popen_args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == expect, out[-3000:]
    return out


# A child's ru_maxrss includes the peak of the memory it ran in before its exec: its parent's
# (Linux keeps it across exec), e.g. a test run's or a benchmark's that has held a network. So the
# command is started by a small Python that only waits for it and prints its exit code and peak.
WAITER = ("import os, subprocess, sys\n"
          "proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
          "_, status, usage = os.wait4(proc.pid, 0)\n"
          "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n")


def own_peak(command, timeout=None):
    """(exit code, stderr, peak RSS in bytes) of command (a list) run as a child process, the
    peak its own (see WAITER); its stdout is discarded."""
    proc = subprocess.run([sys.executable, "-c", WAITER] + list(command), capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:  # the waiter itself failed: say why
        return proc.returncode, proc.stderr, None
    code, kib = proc.stdout.split()
    return int(code), proc.stderr, int(kib) * 1024  # ru_maxrss is in KiB on Linux


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
