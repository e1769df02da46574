"""The one owner of run folders: config.json, metrics.jsonl, summary.json and checkpoints.

Everything else (trainer, suite, report) reads and writes a run folder through this module.

A folder moves through states that are read from its files, never from a separate flag:

    absent        no config.json
    created       config.json written, training not yet begun
    started       metrics.jsonl exists (the iteration-0 evaluation or later), no checkpoint
    checkpointed  ckpt.pt exists; `--resume` continues from it
    finished      summary.json says "finished"
    failed        summary.json says "failed"

What the trainer does with each (rabench.training.trainer.Trainer.open_folder):
  absent                              start the run (refused when run files lie there without a readable
                                      config.json: nothing identifies them, see check_identity)
  created / started / failed, no ckpt start it over from iteration 0, saying so in one line, with or
                                      without --resume: nothing in it is worth keeping, so the same
                                      command works again after a failure at start-up, and a suite's
                                      resume of a run killed before its first checkpoint just works.
                                      Nothing is deleted up front: each old file is replaced, atomically,
                                      when the new attempt writes its own
  checkpointed (or failed with ckpt)  --resume continues it (refused, naming the fields, when a setting
                                      that changes the curve differs); without --resume: refused
  finished                            --resume with the same settings returns its summary untouched;
                                      without --resume: refused
A process holds an flock on `.lock` while it trains, so two trainers never share a folder.

config.json is written once, when a run starts, so its machine_id and gpu_uuid are the first
machine's; summary.json's `machines` lists every segment's machine (`machine_segment`), so a run
resumed on another machine says which iterations each one trained.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rabench.errors import RabenchError
from rabench.fileio import disk_error, write_atomic, write_json_atomic

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
CHECKPOINT_NAME = "ckpt.pt"
LOCK_NAME = ".lock"
FINISHED, FAILED, INTERRUPTED = "finished", "failed", "interrupted"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file's contents; None when it is absent, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON-object lines of a file, and how many complete lines were skipped (not UTF-8, not
    JSON, not an object). A torn last line (no newline: a kill mid-write) is dropped uncounted."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return [], 0
    lines = data.split(b"\n")[:-1]  # the part after the last newline is torn (or empty)
    records: list[dict[str, Any]] = []
    skipped = 0
    for raw in lines:
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = None
        if isinstance(value, dict):
            records.append(value)
        else:
            skipped += 1
    return records, skipped


def in_chain(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` among exc and its causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def machine_segment(machine_id: str | None, gpu_uuid: str | None, from_iter: int) -> dict[str, Any]:
    """One stretch of a run on one machine, from iteration `from_iter` to the next segment's."""
    return {"machine_id": machine_id, "gpu_uuid": gpu_uuid, "from_iter": from_iter}


class RunFolder:
    """One run folder: read by anyone, written only by the trainer through the methods below."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._metrics_file = None
        self._lock_file = None
        self._made_dir = False  # lock() created the folder (release(tidy=True) may remove it)

    # ---- reading (the pinned API) ----------------------------------------------------
    def config(self) -> dict[str, Any] | None:
        return read_json(self.path / CONFIG_NAME)

    def metrics(self) -> list[dict[str, Any]]:
        return self.metrics_with_skips()[0]

    def metrics_with_skips(self, config: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], int]:
        """This run's records, and how many lines were skipped: unreadable ones and records of another
        run (a run_id other than config.json's; records without one predate run ids and are kept).
        `config`: config.json as the caller has just read it (read here when not given)."""
        records, skipped = read_records(self.path / METRICS_NAME)
        run_id = (config if config is not None else self.config() or {}).get("run_id")
        mine = [r for r in records if r.get("run_id", run_id) == run_id]
        return mine, skipped + len(records) - len(mine)

    def last_record(self) -> dict[str, Any]:
        """The latest metrics record ({} before the first): where a run has got to."""
        records = self.metrics()
        return records[-1] if records else {}

    def summary(self) -> dict[str, Any] | None:
        return read_json(self.path / SUMMARY_NAME)

    def machines(self) -> list[dict[str, Any]]:
        """Each segment's machine, first to last (machine_segment); for a folder written before
        segments were recorded, the one machine config.json names ([] without a config)."""
        recorded = (self.summary() or {}).get("machines")
        if isinstance(recorded, list) and recorded:
            return recorded
        config = self.config()
        return [machine_segment(config.get("machine_id"), config.get("gpu_uuid"), 0)] if config else []

    def state(self) -> str:
        """'absent' (no run), 'created', 'started', 'checkpointed', 'finished' or 'failed'."""
        if not (self.path / CONFIG_NAME).is_file():
            return "absent"
        status = (self.summary() or {}).get("status")
        if status in (FINISHED, "done"):  # "done": folders written before the state machine
            return "finished"
        if status in (FAILED, "stopped_nan"):
            return "failed"
        if self.has_checkpoint():
            return "checkpointed"
        return "started" if (self.path / METRICS_NAME).exists() else "created"

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT_NAME).is_file()

    # ---- creating --------------------------------------------------------------------
    def ensure_dir(self) -> None:
        """Create the folder; an --out that is a file or cannot be written is a one-line error."""
        if self.path.exists() and not self.path.is_dir():
            raise RabenchError(f"--out {self.path} is a file, not a folder; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RabenchError(f"cannot create run folder {self.path}: {exc.strerror or exc}") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise RabenchError(f"run folder {self.path} is not writable; choose another --out")

    def lock(self) -> None:
        """Hold an exclusive lock until release(), so two trainers never share a folder (held: no-op)."""
        if self._lock_file is not None:
            return
        self._made_dir = not self.path.exists()
        self.ensure_dir()
        try:
            self._lock_file = open(self.path / LOCK_NAME, "a")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise disk_error("lock file", self.path / LOCK_NAME, exc) from None
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise RabenchError(f"another process is training in {self.path}; wait for it or choose another --out") from None

    def release(self, tidy: bool = False) -> None:
        """Close the metrics file and drop the lock. tidy: a trainer that stopped before writing
        anything removes the folder lock() created, if it holds nothing but the lock file."""
        self.close_metrics()
        if self._lock_file is None:
            return
        if tidy and self._made_dir and [p.name for p in self.path.iterdir()] == [LOCK_NAME]:
            with contextlib.suppress(OSError):
                (self.path / LOCK_NAME).unlink()
                self.path.rmdir()
        self._lock_file.close()
        self._lock_file = None

    def check_identity(self) -> None:
        """Refuse a folder whose run files config.json cannot vouch for: it is missing, unreadable or
        has no run_id, or a run file is not a plain file. Resuming there would guess, and starting
        over would replace files that may be someone's work; nothing is changed."""
        for name in (CONFIG_NAME, METRICS_NAME, SUMMARY_NAME, CHECKPOINT_NAME):
            path = self.path / name
            if path.exists() and not path.is_file():
                raise RabenchError(f"{path} is not a file; move it away or choose another --out (nothing was changed)")
        present = [n for n in (CHECKPOINT_NAME, METRICS_NAME, SUMMARY_NAME) if (self.path / n).exists()]
        if not (self.path / CONFIG_NAME).exists():
            if present:
                raise RabenchError(f"{self.path} holds {', '.join(present)} but no {CONFIG_NAME}, so nothing says "
                                   f"which run they belong to; restore {CONFIG_NAME} or choose another --out "
                                   "(nothing was changed)")
            return
        config = self.config()
        if config is None:
            raise RabenchError(f"{self.path / CONFIG_NAME} cannot be read (not a JSON object); restore it or choose "
                               "another --out (nothing was changed)")
        if not config.get("run_id") and present:
            raise RabenchError(f"{self.path / CONFIG_NAME} has no run_id, so nothing ties {', '.join(present)} to "
                               "it; choose another --out (nothing was changed)")

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.path / CONFIG_NAME, config, "config", default=str)

    # ---- metrics ---------------------------------------------------------------------
    def open_metrics(self, keep_through_iter: int | None) -> None:
        """Start appending; on resume, first drop records past the checkpoint (they are redone), and
        unreadable lines and other runs' records with them."""
        path = self.path / METRICS_NAME
        kept = [] if keep_through_iter is None else [r for r in self.metrics() if r.get("iter", 0) <= keep_through_iter]
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept).encode(), "metrics")
        try:
            self._metrics_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close_metrics()
        except OSError as exc:
            raise disk_error("metrics", path, exc) from None

    def append_metrics(self, record: dict[str, Any]) -> None:
        path = self.path / METRICS_NAME
        try:
            self._metrics_file.write(json.dumps(record) + "\n")
            self._metrics_file.flush()
        except OSError as exc:
            raise disk_error("metrics", path, exc, "; the last good checkpoint is kept") from None

    def close_metrics(self) -> None:
        if self._metrics_file is not None:
            with contextlib.suppress(OSError):
                self._metrics_file.close()
            self._metrics_file = None

    # ---- summary ---------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.path / SUMMARY_NAME, summary, "summary")

    def clear_summary(self) -> None:
        """A run that trains again is no longer finished, failed or interrupted."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / SUMMARY_NAME).unlink()

    # ---- checkpoints -----------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], run_id: str, during_write: Callable[[], None] | None = None) -> None:
        """Atomic: ckpt.pt.tmp, fsync, rename. A stale .tmp from a killed save is removed first.
        A save that fails (a full disk, a file-size limit) or is cut short (a second Ctrl-C: it
        raises KeyboardInterrupt) removes its .tmp and keeps the last good ckpt.pt. torch.save
        wraps what the file's write raised in a RuntimeError, so the cause is read from its chain."""
        import torch

        path = self.path / CHECKPOINT_NAME
        tmp = path.with_name(path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            with open(tmp, "wb") as f:
                torch.save(state | {"run_id": run_id}, f)
                f.flush()
                if during_write is not None:  # the fault tests kill the process here
                    during_write()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if in_chain(exc, KeyboardInterrupt) is not None:
                raise KeyboardInterrupt from None
            keeps = "; the last good checkpoint is kept" if path.exists() else ""
            cause = in_chain(exc, OSError)
            if cause is not None:
                raise disk_error("checkpoint", path, cause, keeps) from None
            if isinstance(exc, RuntimeError):
                raise RabenchError(f"cannot write checkpoint {path}: {first_line(exc)}{keeps}") from None
            raise

    def load_checkpoint(self, run_id: str, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The checkpoint, or None when there is none; one written by another run is refused."""
        import torch

        path = self.path / CHECKPOINT_NAME
        if not path.is_file():
            return None
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # a truncated or foreign file
            raise RabenchError(f"checkpoint {path} cannot be read ({type(exc).__name__}); "
                               f"delete the folder {self.path} to start the run over") from None
        if not isinstance(ckpt, dict) or ckpt.get("run_id") != run_id:
            raise RabenchError(f"checkpoint {path} belongs to another run (its run_id does not match config.json); "
                               f"delete the folder {self.path} to start the run over")
        return ckpt
