"""Independent runs in parallel on one host: one worker process per device.

`rabench suite --devices 0,1,2,3` keeps one training process per GPU busy until every run
is done: each run is a fresh `python -m rabench.suite.worker train CONFIG` process that sees
only its own GPU (CUDA_VISIBLE_DEVICES), writes its output to `train.log` in its run folder,
and resumes from its checkpoint like any run. A run that fails does not stop the others;
the failures are listed at the end and the suite exits non-zero (re-running the same
command retries them and skips what finished). `--devices cpu,cpu` runs CPU workers, which
is how the scheduling is tested without a GPU.

A process per run (not per device) keeps runs isolated: a crash, an out-of-memory or a
leaked CUDA context cannot reach the next run on that device.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rabench.errors import HANDLED, RabenchError, exit_status
from rabench.suite.deadline import Deadline, stop_message

LOG_NAME = "train.log"
POLL_S = 0.2
STATUS_EVERY_S = 60.0  # how often the suite prints where each running worker is
STOP_GRACE_S = 120.0  # how long stopped workers get to checkpoint before they are killed


class RunsFailed(RabenchError):
    """Some runs failed while the others finished; the message names them."""

    def __init__(self, message: str, failed: list[str]) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass
class Outcome:
    name: str
    device: str
    returncode: int
    started: float
    ended: float
    log: Path
    last_line: str


def parse_devices(text: str) -> list[str]:
    """'0,1,2,3' -> GPU indices, 'cpu,cpu' -> two CPU workers; checked against this machine."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not items:
        raise RabenchError(f"--devices {text!r}: give GPU indices like 0,1,2,3 or cpu slots like cpu,cpu")
    if all(i == "cpu" for i in items):
        return items
    if not all(i.isdigit() for i in items):
        raise RabenchError(f"--devices {text!r}: give GPU indices like 0,1,2,3 or cpu slots like cpu,cpu, not both")
    if len(set(items)) != len(items):
        raise RabenchError(f"--devices {text!r} names a GPU twice; one run per GPU")
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise RabenchError(f"--devices {text}: PyTorch sees no CUDA GPU (use --devices cpu,cpu for CPU workers)")
    bad = [i for i in items if int(i) >= count]
    if bad:
        raise RabenchError(f"--devices {text}: this machine has {count} GPU(s) (0..{count - 1}); no GPU {', '.join(bad)}")
    return items


def worker_env(device: str, n_workers: int) -> dict[str, str]:
    """The environment of a worker: its one GPU, or no GPU and a fair share of the CPU threads."""
    env = dict(os.environ)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):  # never a torchrun rank
        env.pop(var, None)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n_workers)))
    else:
        env["CUDA_VISIBLE_DEVICES"] = physical_gpu(device, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return env


def physical_gpu(index: str, visible: str | None) -> str:
    """What the suite's GPU `index` is called outside it: under CUDA_VISIBLE_DEVICES=2,3 (a SLURM
    allocation, say) index 0 is GPU 2, so the worker must be given "2", not "0"."""
    if not visible:
        return index
    names = [v.strip() for v in visible.split(",") if v.strip()]
    return names[int(index)] if int(index) < len(names) else index


def last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("rabench: error:")]
    return (errors or lines or [""])[-1]


def launch(cfg_dict: dict[str, Any], device: str, n_workers: int, log_path: Path) -> subprocess.Popen:
    """A training worker for one run."""
    return spawn(["rabench.suite.worker", "train", json.dumps(cfg_dict)], device, n_workers, log_path)


def spawn(module_args: list[str], device: str, n_workers: int, log_path: Path) -> subprocess.Popen:
    """`python -m MODULE ARGS...` on one device slot, in its own session, output to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:  # the child keeps its own descriptor
        log.write(f"[suite] {time.strftime('%Y-%m-%d %H:%M:%S')} starting on {device_label(device)}\n")
        log.flush()
        return subprocess.Popen([sys.executable, "-m", *module_args],
                                env=worker_env(device, n_workers), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def device_label(device: str) -> str:
    return "cpu" if device == "cpu" else f"cuda:{device}"


@dataclass
class SlotTask:
    """Work that holds the first device slot while the jobs train on the others: the suite's
    step-time calibration, which only the runs sized by its ratios wait for. `launch(device)`
    starts its process; `done(returncode)` returns the jobs that waited for it (or raises)."""

    name: str
    launch: Callable[[str], subprocess.Popen]
    done: Callable[[int], list]


def queue(job, pending: deque, say: Callable[..., None]) -> None:
    """Add a suite.jobs.RunJob to the queue, or say it is done."""
    if job.action == "skip":
        say(f"[suite] {job.run.name}: done, skipped")
        return
    job.cfg.resume = job.action == "resume"
    job.cfg.progress_bar = False
    pending.append(job)


def progress_of(job) -> str:
    """'name it 1200/8000' from the run's last metrics record (or 'starting' before its first)."""
    from rabench.rundir import RunFolder

    it = RunFolder(job.cfg.out).last_record().get("iter")
    if it is None:
        return f"{job.run.name} starting"
    total = f"/{job.cfg.max_iters}" if job.cfg.max_iters and not job.cfg.until_plateau else ""
    return f"{job.run.name} it {it}{total}"


def run_parallel(jobs: list, devices: list[str], say: Callable[..., None] = print,
                 status_every_s: float = STATUS_EVERY_S, deadline: Deadline | None = None,
                 first: SlotTask | None = None) -> list[Outcome]:
    """Run the jobs (suite.jobs.RunJob) on the device slots, at most one per slot; returns each run's outcome.

    `first` (the calibration) holds slot 0 from the start; when it ends, the jobs it returns join
    the queue and its slot takes runs like the others. With a deadline, a run starts only if its
    estimate fits in the time left, and the runs still going at the deadline are stopped (each
    checkpoints; an unfinished `first` is stopped too and its jobs are never queued). Raises
    RunsFailed after every job has ended if any failed, else DeadlineReached if the deadline
    left runs undone.
    """
    slots = Scheduler(devices, say, deadline, first)
    slots.queue_all(jobs)
    slots.start_first()
    previous = sigterm_as_interrupt()
    try:
        while slots.busy():
            slots.start_runs()
            if slots.idle():  # runs are left, but none can finish before the deadline
                break
            time.sleep(POLL_S)
            slots.collect_first()
            slots.collect_runs()
            if slots.stop_at_deadline():
                break
            slots.report_status(status_every_s)
    except KeyboardInterrupt:
        stop_workers(slots.in_flight())
        raise RabenchError("interrupted; the workers saved checkpoints: run the same command to resume") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return slots.result()


@dataclass
class Scheduler:
    """run_parallel's state: the queue, the free device slots, the workers in flight and what ended.

    Slots are indices into `devices`; a run's worker holds its slot until it exits."""

    devices: list[str]
    say: Callable[..., None]
    deadline: Deadline | None = None
    first: SlotTask | None = None
    pending: deque = field(default_factory=deque)
    free: list[int] = field(default_factory=list)
    running: dict[int, tuple[Any, subprocess.Popen, float]] = field(default_factory=dict)  # slot -> job, worker, start
    task: subprocess.Popen | None = None  # `first`'s process while it runs
    task_slot: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    stopped: list = field(default_factory=list)  # the jobs the deadline stopped (a checkpoint each, if they had begun)
    left_out: list[str] = field(default_factory=list)  # a `first` stopped by the deadline
    expected_train_s: dict[str, float | None] = field(default_factory=dict)  # per run, estimated at its launch
    last_status: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.free = list(range(len(self.devices)))

    def queue_all(self, jobs: list) -> None:
        for job in jobs:
            queue(job, self.pending, self.say)

    def start_first(self) -> None:
        """`first` takes the first slot before any run does."""
        if self.first is None:
            return
        self.task_slot = self.free.pop(0)
        self.task = self.first.launch(self.devices[self.task_slot])
        self.say(f"[suite] {self.first.name}: running on {device_label(self.devices[self.task_slot])}; "
                 f"the runs that do not need it start on the other devices")

    def busy(self) -> bool:
        return bool(self.pending or self.running or self.task is not None)

    def idle(self) -> bool:
        return not self.running and self.task is None

    def in_flight(self) -> list[subprocess.Popen]:
        return [proc for _, proc, _ in self.running.values()] + ([self.task] if self.task is not None else [])

    def start_runs(self) -> None:
        """A worker on every free slot, for the first pending runs that can finish before the deadline."""
        while self.free and self.pending:
            job = take_next(self.pending, self.deadline)
            if job is None:
                return
            self.launch(job, self.free.pop(0))

    def launch(self, job, slot: int) -> None:
        if self.deadline is not None:
            self.expected_train_s[job.run.name] = self.deadline.training_s(job.cfg)
        log = Path(job.cfg.out) / LOG_NAME
        proc = launch(asdict(job.cfg), self.devices[slot], len(self.devices), log)
        self.running[slot] = (job, proc, time.time())
        self.say(f"[suite] {job.run.name}: {'resuming' if job.cfg.resume else 'starting'} on "
                 f"{device_label(self.devices[slot])} (log: {log})")

    def collect_first(self) -> None:
        """When `first` has ended: its slot is free and the jobs it returns join the queue."""
        if self.task is None or self.task.poll() is None:
            return
        returncode, self.task = self.task.returncode, None
        self.free.insert(0, self.task_slot)
        try:
            self.queue_all(self.first.done(returncode))
        except BaseException:
            stop_workers(self.in_flight())
            raise

    def collect_runs(self) -> None:
        """Each run whose worker has exited: its outcome, its slot freed, its duration taught to the deadline."""
        for slot, (job, proc, started) in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[slot]
            self.free.append(slot)
            outcome = record_outcome(job, proc, self.devices[slot], started, self.say)
            self.outcomes.append(outcome)
            if self.deadline is not None and proc.returncode == 0:
                self.deadline.learn(job.cfg, outcome.ended - started, self.expected_train_s.get(job.run.name))

    def stop_at_deadline(self) -> bool:
        """At the deadline, stop what is in flight (each run checkpoints); True when it did."""
        if self.deadline is None or not self.deadline.passed() or self.idle():
            return False
        names = [job.run.name for job, _, _ in self.running.values()] + ([self.first.name] if self.task else [])
        self.say(f"[suite] deadline reached: stopping {', '.join(names)} (each run saves a checkpoint once its "
                 "trainer has started)")
        stop_workers(self.in_flight())
        if self.task is not None:
            self.left_out.append(f"{self.first.name} and the runs it sizes")
            self.task = None
        for slot, (job, proc, started) in self.running.items():
            if proc.returncode == 0:  # it finished as the deadline came
                self.outcomes.append(record_outcome(job, proc, self.devices[slot], started, self.say))
            else:
                self.stopped.append(job)
        self.running.clear()
        return True

    def report_status(self, every_s: float) -> None:
        """Every `every_s` seconds, where each running worker is."""
        if not self.running or time.time() - self.last_status < every_s:
            return
        self.last_status = time.time()
        done = len(self.outcomes)
        self.say(f"[suite] {done} of {done + len(self.running) + len(self.pending)} runs ended; running: "
                 + ", ".join(progress_of(job) for job, _, _ in self.running.values()))

    def result(self) -> list[Outcome]:
        """The outcomes, once every run has ended; raises when a run failed or the deadline left runs undone."""
        failed = [o for o in self.outcomes if o.returncode != 0]
        if failed:
            names = ", ".join(o.name for o in failed)
            raise RunsFailed(f"{len(failed)} of {len(self.outcomes)} runs failed: {names} (see {LOG_NAME} in each "
                             "run folder; re-running the suite retries them and skips the finished ones)",
                             [o.name for o in failed])
        if self.pending or self.stopped or self.left_out:
            raise stop_message(self.deadline, list(self.pending), self.stopped, self.left_out)
        return self.outcomes


def take_next(pending: deque, deadline: Deadline | None):
    """The first pending job that can finish before the deadline (removed from `pending`), or None."""
    for job in list(pending):
        if deadline is None or deadline.fits(job.cfg):
            pending.remove(job)
            return job
    return None


def record_outcome(job, proc: subprocess.Popen, device: str, started: float, say: Callable[..., None]) -> Outcome:
    log = Path(job.cfg.out) / LOG_NAME
    outcome = Outcome(job.run.name, device, proc.returncode, started, time.time(), log, last_line(log))
    state = "finished" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
    say(f"[suite] {job.run.name}: {state} on {device_label(device)}: {outcome.last_line}")
    return outcome


def sigterm_as_interrupt():
    """From now on SIGTERM (SLURM, `timeout`, a deadline) raises KeyboardInterrupt, as Ctrl-C does,
    so it stops things cleanly; returns the previous handler, to restore."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each worker (it checkpoints and exits), wait, then kill what is left.

    Workers run in their own sessions, so a Ctrl-C in the terminal reaches the suite alone and
    each worker gets exactly one signal (a second one would make it stop without a checkpoint)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.time() + STOP_GRACE_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


ORPHAN_POLL_S = 1.0


def stop_when_orphaned(poll_s: float = ORPHAN_POLL_S) -> None:
    """A worker whose suite died without stopping it (SIGKILL, the OOM killer) stops as if the suite
    had: it sends itself SIGTERM, so the trainer checkpoints and exits instead of training on with
    nobody to schedule, report or stop it (and holding its run folder's lock)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="rabench-orphan-watch", daemon=True).start()


def worker_main(argv: list[str]) -> int:
    """One worker (`python -m rabench.suite.worker train CONFIG_JSON`): train the run described by
    the JSON TrainConfig in argv[0]."""
    from rabench.training.config import TrainConfig
    from rabench.training.trainer import train

    stop_when_orphaned()
    try:
        cfg = TrainConfig(**json.loads(argv[0]))
        summary = train(cfg)
    except HANDLED as exc:  # the CLI's lines and exit codes: a checkpointed stop is not an error
        return exit_status(exc)
    print(f"{cfg.out}: {summary['iters']} iters, {summary.get('ms_per_iter')} ms/iter, "
          f"final val_loss {summary.get('final_val_loss')} [{summary.get('stop_reason')}]", flush=True)
    return 0
