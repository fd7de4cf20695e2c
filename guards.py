"""What keeps a run from losing work or leaving a mess: the user-facing error, atomic writes, the
training lock and the stop signals. No TensorFlow here: the data code imports it too.
"""
import contextlib
import errno
import json
import os
import secrets
import shutil
import signal
import sys
import threading


class FCNError(Exception):
    """A problem the user can fix. Its message is one line: what is wrong and what to do.

    The command line prints it without a traceback and exits with code 2.
    """


def remove_quietly(path):
    """Removes a file or a folder if it is there; a path that is already gone is no error."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except OSError:
        pass


def temporary_name(path):
    """'<path>.part-<pid>-<random>': unique per process and call, so that two runs writing the same
    file never share a temporary, and recognisable as unfinished by its '.part'."""
    return "%s.part-%d-%s" % (path, os.getpid(), secrets.token_hex(4))


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to path; when the block ends normally the file written there
    replaces path in one rename. On any error it is removed, so that path is either the old file
    or the complete new one, never a half-written one."""
    part = temporary_name(path)
    try:
        yield part
        os.replace(part, path)
    except BaseException:
        remove_quietly(part)
        raise


def write_json_atomically(path, content):
    with atomic_path(path) as part:
        with open(part, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=1)
    return path


def format_size(nbytes):
    """1234567 -> '1.2 MiB'."""
    size = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return "%d bytes" % nbytes if unit == "bytes" else "%.1f %s" % (size, unit)
        size /= 1024


def error_summary(error):
    """The line of a TensorFlow error that says what went wrong: its messages start with lines
    such as 'Graph execution error:' and carry the stack of the op that failed."""
    noise = ("Graph execution error", "Detected at node", "Node:", "File ", "[[", "Hint:",
             "Original stack trace", "Errors may have originated", "Caused by op")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(noise)]
    return (useful or lines or [type(error).__name__])[0]


DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def is_disk_full(error):
    """Whether a failed write failed for want of space (or of quota): an OSError's errno, or the
    text of another library's error (TensorFlow's name the cause only in their message)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(error) for text in DISK_FULL_TEXTS)


def free_space(folder):
    """'1.2 MiB free' where folder is, or 'free space unknown'."""
    try:
        return "%s free" % format_size(shutil.disk_usage(folder or ".").free)
    except OSError:
        return "free space unknown"


def write_error(path, error):
    """The one-line FCNError for a file of the program's output that could not be written."""
    if is_disk_full(error):
        cause = next((c for c in DISK_FULL_TEXTS if c in str(error)),
                     getattr(error, "strerror", None) or str(error))
        return FCNError("the disk is full: writing %s failed (%s; %s); free space there or "
                        "write elsewhere, and run again" % (path, cause,
                                                             free_space(os.path.dirname(path))))
    return FCNError("writing %s failed (%s); fix that and run again"
                    % (path, getattr(error, "strerror", None) or error))


@contextlib.contextmanager
def writing(path):
    """Turns an OSError raised in the block, which writes path (through atomic_path, so that
    nothing half-written stays), into write_error's one line."""
    try:
        yield
    except OSError as e:
        raise write_error(path, e) from None


def ensure_writable_dir(path, flag):
    """Creates the folder of --<flag> if needed and checks that files can be written into it."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = temporary_name(os.path.join(path, ".write-test"))
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise FCNError("--%s %s is not a writable folder (%s); pass one you can write to"
                       % (flag, path, e.strerror or e))


# ----------------------------------------------------------------------------------------------
# One training run per logs folder
# ----------------------------------------------------------------------------------------------

LOCK_NAME = "train.lock"


def process_is_alive(pid):
    """Whether a process with this id runs (on Windows without sending it anything: os.kill
    with signal 0 would be a Ctrl-C event there)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes
        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class TrainLock:
    """<logs_dir>/train.lock holds the training process's id, so that a second run on the same
    logs_dir refuses instead of overwriting the first one's checkpoints. A lock whose process is
    gone (killed, crashed) is taken over."""

    def __init__(self, logs_dir):
        self.path = os.path.join(logs_dir, LOCK_NAME)
        self.held = False

    def acquire(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except OSError as e:
                if not isinstance(e, FileExistsError):
                    raise write_error(self.path, e) from None
                owner = self._owner()
                if owner is not None and owner != os.getpid() and process_is_alive(owner):
                    raise FCNError(
                        "another training run (process %d) is using --logs_dir %s; wait for it, "
                        "stop it, or pass another --logs_dir" % (owner, os.path.dirname(self.path)))
                print("Removing the stale lock %s (process %s is gone)" % (self.path, owner))
                remove_quietly(self.path)
                continue
            try:
                with ctrl_c_deferred():  # the lock is whole, with our id, or removed
                    with os.fdopen(fd, "w") as f:
                        f.write(str(os.getpid()))
                    self.held = True
            except (OSError, KeyboardInterrupt) as e:
                # A full disk, or Ctrl-C as it was taken (__exit__ will not run): the file is
                # ours whatever it holds (O_EXCL created it), and none is left to puzzle the
                # next run.
                remove_quietly(self.path)
                self.held = False
                if isinstance(e, OSError):
                    raise write_error(self.path, e) from None
                raise
            return self
        raise FCNError("cannot take the lock %s; delete it if no training run is using "
                       "--logs_dir" % self.path)

    def _owner(self):
        try:
            with open(self.path) as f:
                return int(f.read().strip() or -1)
        except (OSError, ValueError):
            return None

    def release(self):
        with ctrl_c_deferred():
            if self.held and self._owner() == os.getpid():
                remove_quietly(self.path)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


@contextlib.contextmanager
def ctrl_c_deferred():
    """Ctrl-C (SIGINT) during the block takes effect when the block ends: for steps that must not
    be cut in half. Outside the main thread, where no signal is delivered, nothing changes."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield  # None: a handler not set from Python, which could not be put back
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)  # to the handler in force again


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM end training after the current step, with a checkpoint."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print("\n%s received: saving a checkpoint after this step" % self.signal_name)

    def __exit__(self, *exc_info):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# The exit code of a program ended by Ctrl-C, as shells report it (128 + SIGINT).
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT


@contextlib.contextmanager
def ctrl_c_exits(program):
    """Ctrl-C (KeyboardInterrupt) in the block ends the program with one line on stderr and exit
    code 130, not a traceback. The training loop's StopRequest, inside it, catches Ctrl-C first
    and saves a checkpoint."""
    try:
        yield
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.write("%s: interrupted (Ctrl-C)\n" % program)
        sys.exit(INTERRUPTED_EXIT_CODE)
