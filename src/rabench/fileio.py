"""Writing files so that a reader never sees half of one: the project's one tmp-fsync-rename.

Run folders (rundir), prepared data folders (data.prepare) and bench tables all write through
here, and a failed write (a full disk, an unwritable folder) becomes one line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rabench.errors import RabenchError


def disk_error(what: str, path: Path, exc: OSError, keeps: str = "") -> RabenchError:
    """One line for an OSError while writing `what` at `path`; `keeps` says what survived."""
    reason = exc.strerror or str(exc)
    hint = " (the disk is full: free space, then re-run with --resume)" if exc.errno == errno.ENOSPC else ""
    return RabenchError(f"cannot write {what} {path}: {reason}{hint}{keeps}")


def write_atomic(path: Path, data: bytes, what: str) -> None:
    """Write to path.tmp, fsync, rename over path: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise disk_error(what, path, exc) from None


def write_json_atomic(path: Path, data: Any, what: str, default: Callable[[Any], Any] | None = None) -> None:
    """`data` as indented JSON with a final newline, through write_atomic."""
    write_atomic(path, (json.dumps(data, indent=2, default=default) + "\n").encode("utf-8"), what)


def json_form(value: Any) -> Any:
    """`value` as a JSON file written with default=str gives it back (tuples become lists, other
    types strings): compare a new setting with a stored one in this form, so only real changes show."""
    return json.loads(json.dumps(value, default=str))
