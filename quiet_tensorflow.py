"""TensorFlow's start-up noise held back from the terminal.

Importing TensorFlow, and its first look for devices, make its C++ code write straight to file
descriptor 2 ("All log messages before absl::InitializeLog() is called...", "Could not find cuda
drivers", "failed call to cuInit" on every machine without a GPU): neither Python's sys.stderr
nor TF_CPP_MIN_LOG_LEVEL stops these. held_stderr() points fd 2 at a temporary file for the
length of a block and keeps what was written, to be replayed on request (--verbose) and always
when the block fails. No TensorFlow import here: this module must be usable before it.
"""
import importlib
import os
import sys
import tempfile

# What every held block wrote, in order: replay_held() writes it out (FCN.py's --verbose).
HELD = []


class held_stderr:
    """with held_stderr() as held: fd 2 goes to a temporary file inside the block; held.text is
    what was written there. An Exception leaving the block replays it first (its cause may be in
    it); Ctrl-C and sys.exit do not."""

    def __init__(self):
        self.text = ""
        self._saved_fd = None
        self._file = None

    def __enter__(self):
        try:
            sys.stderr.flush()
            self._file = tempfile.TemporaryFile()
            self._saved_fd = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no fd 2 (pythonw), or no temp folder
            self._close()
        return self

    def __exit__(self, exc_type, exc, traceback):
        if self._saved_fd is not None:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(self._saved_fd, 2)
            self._file.seek(0)
            self.text = self._file.read().decode("utf-8", errors="replace")
            HELD.append(self.text)
        self._close()
        if exc_type is not None and issubclass(exc_type, Exception):
            write_to_stderr(self.text)
        return False

    def _close(self):
        if self._saved_fd is not None:
            os.close(self._saved_fd)
            self._saved_fd = None
        if self._file is not None:
            self._file.close()
            self._file = None


def write_to_stderr(text):
    if text:
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()


def replay_held():
    """Writes out, once, what the held blocks so far kept back."""
    write_to_stderr("".join(HELD))
    del HELD[:]


def import_quietly(name="tensorflow.compat.v1"):
    """The module `name` imported with fd 2 held (later imports of it are then silent too)."""
    with held_stderr():
        return importlib.import_module(name)
