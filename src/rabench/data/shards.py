"""Token shards in the llm.c / modded-nanogpt format.

A shard is a 1024-byte header of 256 little-endian int32 (magic 20240520,
version 1, token count, then zeros) followed by the tokens as little-endian
uint16. Keeping this exact format lets shards move between rabench, llm.c and
modded-nanogpt unchanged.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from rabench.errors import RabenchError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")


def write_shard(path: str | Path, tokens: np.ndarray) -> str:
    """Write tokens as one shard and return its SHA-256 (hex).

    Writes to a temporary name and renames, so a crash never leaves a
    half-written shard under the final name.
    """
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(TOKEN_DTYPE).max):
        raise ValueError("token ids must fit in uint16")
    if tokens.size >= 2**31:
        raise ValueError("a shard holds fewer than 2**31 tokens")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, tokens.size)
    payload = [header.tobytes(), tokens.astype(TOKEN_DTYPE, copy=False).tobytes()]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for chunk in payload:
            f.write(chunk)
    os.replace(tmp, path)
    digest = hashlib.sha256()
    for chunk in payload:
        digest.update(chunk)
    return digest.hexdigest()


def _corrupt(path: Path, problem: str) -> RabenchError:
    return RabenchError(f"corrupt shard {path}: {problem}; re-run `rabench prepare` (with --overwrite)")


def read_shard_header(path: str | Path) -> int:
    """Validate a shard's header (magic, version) and return its token count."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise RabenchError(f"missing shard {path}; re-run `rabench prepare` (with --overwrite)") from None
    if len(raw) < HEADER_BYTES:
        raise _corrupt(path, f"only {len(raw)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, count = (int(v) for v in np.frombuffer(raw, dtype="<i4", count=3))
    if magic != MAGIC:
        raise _corrupt(path, f"magic number {magic}, expected {MAGIC}")
    if version != VERSION:
        raise _corrupt(path, f"version {version}, expected {VERSION}")
    if count < 0:
        raise _corrupt(path, f"negative token count {count}")
    return count


def open_shard(path: str | Path) -> np.ndarray:
    """Memory-map a shard's tokens (uint16) after checking header and file size."""
    path = Path(path)
    count = read_shard_header(path)
    expected = HEADER_BYTES + TOKEN_DTYPE.itemsize * count
    actual = path.stat().st_size
    if actual != expected:
        raise _corrupt(path, f"{actual} bytes but the header promises {count} tokens ({expected} bytes)")
    if count == 0:
        return np.empty(0, dtype=TOKEN_DTYPE)  # np.memmap cannot map zero bytes
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))
