"""Running a table's jobs: finished ones skipped, the rest started as processes (``--resume auto`` continues an
interrupted run), at most ``jobs`` at a time, each on the next of the given devices, students only after the
teachers they need. One line of progress (cells done, epochs done, the time left at the rate so far) after every
job and every ``progress_every`` seconds; each job's output goes to its own log file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .cells import Cell
from .jobs import Job
from .runs import epochs_done
from .summary import progress_counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a job stopped by the runner (Ctrl-C, SIGTERM) saves its epoch and exits; after this long it is killed
STOP_GRACE_S = 120
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): the signal a process gets when its parent exits


@dataclass
class RunOptions:
    jobs: int = 1
    devices: Tuple[str, ...] = ()  # empty: every run picks its own (--device auto)
    log_dir: str = "."
    python: str = sys.executable
    progress_every: float = 60.0
    poll_s: float = 0.5
    cwd: str = ROOT
    threads: Optional[int] = None  # OMP_NUM_THREADS of every job (None: the environment's)


def cpu_threads(jobs: int, devices: Sequence[str], cuda_available: bool) -> Optional[int]:
    """Threads per job when several jobs share the CPU cores (on a GPU the cores feed the devices): the cores
    divided among the jobs, so that they do not oversubscribe the CPU; None when one job runs, when the jobs use
    GPUs, or when OMP_NUM_THREADS is set already."""
    on_cpu = all(d == "cpu" for d in devices) if devices else not cuda_available
    if jobs < 2 or not on_cpu or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // jobs)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min {seconds % 60:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Progress:
    """Cells and epochs done, and the time left at the rate of the epochs finished since the start."""

    def __init__(self, cells: Sequence[Cell], jobs: Sequence[Job], clock: Callable[[], float] = time.monotonic):
        self.cells = cells
        self.runs = list(dict.fromkeys(run for job in jobs for run in job.runs))
        self.clock = clock
        self.started = clock()
        self.total = sum(epochs for _, epochs in self.runs)
        self.done_at_start = self.epochs_done()

    def epochs_done(self) -> int:
        return sum(epochs_done(d, epochs) for d, epochs in self.runs if d)

    def line(self, running: int, waiting: int, failed: int = 0) -> str:
        cells_done, cells_total = progress_counts(self.cells)
        done = self.epochs_done()
        elapsed = self.clock() - self.started
        gained = done - self.done_at_start
        if done >= self.total:
            left = "nothing left"
        elif gained > 0 and elapsed > 0:
            left = f"about {duration((self.total - done) * elapsed / gained)} left"
        else:
            left = "time left known once an epoch finishes"
        failures = f", {failed} failed" if failed else ""
        return (f"{cells_done}/{cells_total} cells done, {running} jobs running, {waiting} waiting{failures}; "
                f"epochs {done:,}/{self.total:,}; {duration(elapsed)} elapsed, {left}")


def stop_with_parent() -> None:
    """In a job's process before it runs (Linux): SIGTERM when the runner dies, however it dies. A job left running
    after a killed runner would write into the run folder that the next runner's job of the same cell resumes."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: Ctrl-C and SIGTERM still stop the jobs (Runner.stop)
        pass


def last_lines(path: str, n: int = 3) -> List[str]:
    try:
        with open(path, errors="replace") as f:
            lines = [line.rstrip() for line in f if line.strip()]
    except OSError:
        return []
    errors = [line for line in lines if line.startswith("error:")]
    return errors[-1:] or lines[-n:]


class Runner:
    def __init__(self, jobs: Sequence[Job], cells: Sequence[Cell], options: RunOptions,
                 say: Callable[[str], None] = print):
        if options.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {options.jobs}")
        self.options = options
        self.say = say
        self.done = {job.key for job in jobs if job.finished()}
        self.pending = [job for job in jobs if job.key not in self.done]
        self.skipped = len(jobs) - len(self.pending)
        self.failed: Dict[Tuple[str, ...], str] = {}
        self.running: Dict[int, Tuple[Job, subprocess.Popen, str]] = {}
        self.progress = Progress(cells, jobs)

    def device_of(self, slot: int) -> Optional[str]:
        devices = self.options.devices
        return devices[slot % len(devices)] if devices else None

    def ready(self, job: Job) -> Optional[bool]:
        """True: it may start; False: it waits; None: a job it needs failed."""
        if any(key in self.failed for key in job.requires):
            return None
        return all(key in self.done for key in job.requires)

    def start(self, job: Job, slot: int) -> None:
        device = self.device_of(slot)
        command = job.command(self.options.python) + (["--device", device] if device else [])
        os.makedirs(self.options.log_dir, exist_ok=True)
        log_path = os.path.join(self.options.log_dir, f"{job.name}.log")
        log = open(log_path, "a")
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n")
        log.flush()
        # its own session: a Ctrl-C in the terminal reaches the runner only, which stops each job once, cleanly
        env = None if self.options.threads is None else {**os.environ, "OMP_NUM_THREADS": str(self.options.threads)}
        proc = subprocess.Popen(command, cwd=self.options.cwd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, preexec_fn=stop_with_parent)
        log.close()
        self.running[slot] = (job, proc, log_path)
        where = f" on {device}" if device else ""
        self.say(f"started{where}: {describe(job)} (log: {log_path})")

    def finish(self, slot: int, code: int) -> None:
        job, _, log_path = self.running.pop(slot)
        if code == 0:
            self.done.add(job.key)
            self.say(f"finished: {describe(job)}")
        else:
            self.failed[job.key] = log_path
            detail = " | ".join(last_lines(log_path))
            self.say(f"failed (exit status {code}): {describe(job)}; {log_path}: {detail}")

    def start_ready(self) -> None:
        free = [s for s in range(self.options.jobs) if s not in self.running]
        for job in list(self.pending):
            if not free:
                return
            state = self.ready(job)
            if state is None:
                self.pending.remove(job)
                self.failed[job.key] = ""
                self.say(f"not started, a teacher it needs failed: {describe(job)}")
            elif state:
                self.pending.remove(job)
                self.start(job, free.pop(0))

    def wait(self) -> None:
        time.sleep(self.options.poll_s)

    def report(self) -> None:
        self.say(self.progress.line(len(self.running), len(self.pending), len(self.failed)))

    def stop(self) -> None:
        """Stop every running job the way Ctrl-C stops a run: it finishes writing and exits; kill after a grace."""
        for _, proc, _ in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for _, proc, _ in self.running.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def run(self) -> int:
        """Runs every pending job; returns the number that failed (or could not start)."""
        if self.skipped:
            self.say(f"{self.skipped} jobs already finished: skipped")
        self.report()
        last_report = time.monotonic()
        try:
            while self.pending or self.running:
                self.start_ready()
                if not self.running and self.pending:
                    # nothing runs and nothing can start: the jobs left wait for teachers that will never finish
                    for job in self.pending:
                        self.failed[job.key] = ""
                        self.say(f"not started, its teacher did not finish: {describe(job)}")
                    self.pending = []
                    break
                self.wait()
                ended = [(slot, proc.poll()) for slot, (_, proc, _) in self.running.items()]
                ended = [(slot, code) for slot, code in ended if code is not None]
                for slot, code in ended:
                    self.finish(slot, code)
                if ended or time.monotonic() - last_report >= self.options.progress_every:
                    self.report()
                    last_report = time.monotonic()
        except KeyboardInterrupt:
            self.say(f"interrupted: stopping {len(self.running)} running jobs (each saves its last epoch); "
                     "run the same command again to continue")
            self.stop()
            raise
        return len(self.failed)


def describe(job: Job) -> str:
    """A short description of what a job trains, for the console."""
    if not job.cells:
        return f"teacher {job.argv[job.argv.index('--model') + 1]}"
    first = job.cells[0]
    if first.kind == "teacher":
        return f"teacher {first.model}, trial {job.argv[job.argv.index('--trial') + 1]}"
    if first.kind == "vanilla":
        trial = job.argv[job.argv.index("--trial") + 1]
        return f"{first.row.label} {first.model}, trial {trial}"
    rows = ", ".join(dict.fromkeys(c.row.label for c in job.cells))
    columns = ", ".join(dict.fromkeys(c.column.name for c in job.cells))
    return f"{rows} | {columns} ({first.trials} trials)"


def run_table_jobs(jobs: Sequence[Job], cells: Sequence[Cell], options: RunOptions,
                   say: Callable[[str], None] = print) -> int:
    return Runner(jobs, cells, options, say).run()
