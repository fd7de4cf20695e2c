"""Progress lines for long work, with a rate and the time left: training's log lines, and the
counters of predict, validate and the downloads' tiles. No TensorFlow here."""
import sys
import time


def format_duration(seconds):
    """1d03h for a day or more, else 2h05m09s."""
    seconds = int(max(seconds, 0))
    if seconds >= 86400:
        return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)
    return "%dh%02dm%02ds" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def eta(done, total, elapsed):
    """The seconds left at the pace so far, None before anything is done."""
    if done <= 0:
        return None
    return elapsed * (total - done) / done


class ProgressLine:
    """One line rewritten in place: "<what> done/total <unit>, <rate> <unit>/s, eta <time>", at most
    every `every` seconds and for the last item; nothing at all for work that ends within
    `delay` seconds. end() finishes the line.

    clock: the time function (time.monotonic), a parameter so that a test can step it.
    """

    def __init__(self, what, total, unit, out=None, every=0.5, delay=0.0, clock=time.monotonic):
        self.what, self.total, self.unit = what, total, unit
        self.out, self.every, self.delay, self.clock = out, every, delay, clock
        self.started = clock()
        self.shown_at = None
        self.written = False

    def text(self, done):
        elapsed = self.clock() - self.started
        rate = done / elapsed if elapsed > 0 else float("nan")
        left = eta(done, self.total, elapsed)
        return "%s %d/%d %s, %.2f %s/s, eta %s" % (
            self.what, done, self.total, self.unit, rate, self.unit,
            "?" if left is None else format_duration(left))

    def update(self, done):
        now = self.clock()
        if now - self.started < self.delay:
            return
        if done < self.total and self.shown_at is not None and now - self.shown_at < self.every:
            return
        self.shown_at = now
        out = self.out or sys.stdout
        out.write("\r" + self.text(done))
        out.flush()
        self.written = True

    def end(self):
        if self.written:
            (self.out or sys.stdout).write("\n")
            self.written = False
