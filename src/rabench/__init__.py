"""rabench: does Reciprocal Attention beat standard attention per unit of wall-clock time?"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"


def hash_sources(root: Path) -> str:
    """The first 12 hex digits of a sha256 over the Python files under root (paths and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """This package's hash_sources: which code made a run. Runs record it because the version
    number does not change with every commit, and device machines get a copy of the working
    tree without its git history."""
    return hash_sources(Path(__file__).parent)
