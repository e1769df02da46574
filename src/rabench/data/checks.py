"""Integrity checks of prepared data: token range (cheap, every run) and checksums (on request).

A shard holding ids the tokenizer never emits trains silently on garbage (ids 50257..50303
hit the padded rows of the embedding) or crashes deep in an index kernel (ids >= 50304);
either way the fault is the file's, so it is caught here with one line naming the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from rabench.data.meta import load_meta
from rabench.data.shards import open_shard
from rabench.data.tokenizer import VOCAB_SIZE
from rabench.errors import RabenchError

HASH_CHUNK = 1 << 24  # bytes read at a time when hashing


def check_token_range(split: Any, vocab_size: int = VOCAB_SIZE) -> None:
    """Every token of a TokenSplit below `vocab_size` (GPT-2's 50257, or a smaller model's: a toy
    vocabulary): a max over each memory map. An id past the embedding would be a device-side
    assert on a GPU, not a message."""
    vocab = "the GPT-2 vocabulary" if vocab_size == VOCAB_SIZE else f"the model's vocabulary of {vocab_size}"
    for path, tokens in zip(split.shard_files, split.shards):
        if len(tokens) == 0:
            continue
        top = int(tokens.max())
        if top >= vocab_size:
            raise RabenchError(
                f"shard {path} holds token id {top}, outside {vocab} (ids < {vocab_size}); "
                "it is corrupt or was not written by `rabench prepare`; re-run `rabench prepare` (with --overwrite)"
            )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def listed_files(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Every file meta.json lists with a checksum: the shards, then the document indexes."""
    entries: list[dict[str, Any]] = []
    for info in meta.get("splits", {}).values():
        entries.extend(info.get("shards", []))
        if info.get("documents_index"):
            entries.append(info["documents_index"])
    return entries


def verify_files(data_dir: str | Path, meta: dict[str, Any]) -> int:
    """Check that each listed file exists with its SHA-256 (shards: header and length too); returns the count."""
    data_dir = Path(data_dir)
    entries = listed_files(meta)
    for entry in entries:
        path = data_dir / entry["file"]
        if not path.is_file():
            raise RabenchError(f"missing file {path} listed in meta.json; re-run `rabench prepare` (with --overwrite)")
        if "tokens" in entry and len(open_shard(path)) != entry["tokens"]:
            raise RabenchError(f"corrupt shard {path}: its token count differs from meta.json's {entry['tokens']}; "
                               "re-run `rabench prepare` (with --overwrite)")
        if file_sha256(path) != entry["sha256"]:
            raise RabenchError(f"checksum mismatch for {path}: its SHA-256 differs from meta.json's; "
                               "the file changed since `rabench prepare` wrote it; re-run it (with --overwrite)")
    return len(entries)


def verify_checksums(data_dir: str | Path) -> int:
    """meta.json's SHA-256 of every shard and index file of a prepared folder (for `--verify`); returns the count."""
    return verify_files(data_dir, load_meta(data_dir))
