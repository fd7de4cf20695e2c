"""How benchmarks/bench.py and benchmarks/reader_bench.py time and weigh a run: timed runs after
warm-up, their median, best and spread, runs paired with a reference timed in turn, this
process's share of the cores, its memory; and a result written for later reading."""
import json
import os
import resource
import statistics
import time


def summarize_times(seconds, work_per_run):
    """{'best': work/s of the fastest run, 'median': work/s of the median run} for timed runs."""
    return {"best": work_per_run / min(seconds),
            "median": work_per_run / statistics.median(seconds)}


def spread(seconds):
    """(slowest - fastest) / median of timed runs: how much the runs disagreed."""
    return (max(seconds) - min(seconds)) / statistics.median(seconds)


def process_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_share(cpu_seconds, wall_seconds, cores):
    """The fraction of the machine this process used: 1.0 when it kept every core busy. Well
    below 1 during a compute-bound measurement means others took cores from it (the load)."""
    return cpu_seconds / (wall_seconds * cores)


def time_runs(run, warmup, repeats):
    """(seconds of each of `repeats` calls of run(), cpu_share over them), after `warmup`
    untimed calls: graph optimisation and oneDNN primitive creation happen on the first call of
    a shape, and a training step is still slower on the second (the README gives the figures)."""
    for _ in range(warmup):
        run()
    seconds = []
    started = _start_share()
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds, _share_since(started)


def time_runs_in_turn(run, reference, warmup, repeats):
    """time_runs of run() with one call of reference() timed just before each timed call:
    (run's seconds, cpu_share over both, reference's seconds). On a shared machine whose speed
    drifts, each pair sees the same moment (paired_fraction)."""
    for _ in range(warmup):
        reference()
        run()
    seconds, reference_seconds = [], []
    started = _start_share()
    for _ in range(repeats):
        start = time.perf_counter()
        reference()
        middle = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - middle)
        reference_seconds.append(middle - start)
    return seconds, _share_since(started), reference_seconds


def _start_share():
    return process_cpu_seconds(), time.perf_counter()


def _share_since(started):
    """cpu_share of this process over the cores since _start_share() gave `started`."""
    cpu_start, wall_start = started
    return cpu_share(process_cpu_seconds() - cpu_start, time.perf_counter() - wall_start,
                     len(os.sched_getaffinity(0)))


def paired_fraction(seconds, work, reference_seconds, reference_work):
    """The median over pairs of (work/s of a run) / (reference work/s just before it)."""
    return statistics.median((work / run) / (reference_work / reference)
                             for run, reference in zip(seconds, reference_seconds))


def rss_mb():
    """This process's resident set now, from /proc/self/status (MB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


def write_result(result, json_path):
    """result written to json_path when one is given (a benchmark's --json); returns result."""
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    return result
