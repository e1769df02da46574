"""`rabench prepare`: tokenize sources into train/val shards and a meta.json.

Every document is tokenized with GPT-2 and preceded by <|endoftext|>. Which
split a document lands in depends only on its text (a stable hash), so the split
is reproducible, never cuts a document in two, and does not move when sources
are added or reordered.

Each split also gets a document index, {split}_docs.npy: one int64 row (start offset in
the split, source id) per document, the ids naming meta.json's "source_names" (see
`rabench.data.sources` for the labels), so evaluation can report loss per source.
What was written is read back and checked against the recorded SHA-256 before
meta.json is written; a val split without a token is refused. The dataset is built in a
hidden folder inside the output and swapped in only once complete and verified, so a prepare
that fails or is killed (an --overwrite included) leaves the old dataset as it was.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import shutil
import sys
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import rabench
from rabench.data.checks import file_sha256, verify_files
from rabench.data.meta import META_FILE
from rabench.data.shards import MAGIC, VERSION, write_shard
from rabench.data.sources import check_sources, iter_labelled_documents, spec_label
from rabench.data.tokenizer import EOT, TOKENIZER_NAME, VOCAB_SIZE, gpt2_encoding
from rabench.errors import RabenchError
from rabench.fileio import write_atomic, write_json_atomic

DOCS_SUFFIX = "_docs.npy"  # per split: the document index
SPLITS = ("train", "val")
VAL_RULE = (
    "a document goes to val when int.from_bytes(blake2b(text as UTF-8, digest_size=8), 'big') / 2**64 "
    "< val_fraction; if that leaves val empty and there are at least 2 documents, the last document goes to val"
)
FIRST_BLOCK_DOCS = 8  # documents read ahead at first; doubles up to MAX_BLOCK_DOCS
MAX_BLOCK_DOCS = 4096


def prepare(
    sources: list[str],
    out_dir: str | Path,
    max_tokens: int | None = None,
    val_fraction: float = 0.05,
    workers: int | None = None,
    shard_tokens: int = 100_000_000,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize `sources` into out_dir/{train,val}_NNNNNN.bin plus meta.json; return the meta dict.

    max_tokens caps the tokens written over both splits (the last document is cut
    short to hit it exactly, and reading stops there). workers defaults to all cores.
    """
    sources = [sources] if isinstance(sources, str) else list(sources)
    workers = available_cores() if workers is None else workers
    _check_arguments(sources, max_tokens, val_fraction, workers, shard_tokens)
    check_sources(sources)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    created = not out_dir.exists()
    staging = _staging_dir(out_dir)
    writers = {split: ShardWriter(staging, split, shard_tokens) for split in SPLITS}
    try:
        run = _write_splits(sources, writers, max_tokens, val_fraction, workers, progress)
        meta = _build_meta(sources, writers, max_tokens, val_fraction, shard_tokens, **run)
        verify_files(staging, meta)  # read back what was written: lengths, headers, SHA-256
        write_json_atomic(staging / META_FILE, meta, META_FILE)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the old dataset, if any, was never touched
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    _swap_in(staging, out_dir)
    return meta


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def document_goes_to_val(text: str, val_fraction: float) -> bool:
    """The split rule: a stable hash of the text under val_fraction (Python's hash() is salted)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < val_fraction * 2**64


def tokenize_labelled(item: tuple[str, str], val_fraction: float) -> tuple[bool, np.ndarray, str]:
    """(label, text) -> (goes to val, tokens, label); runs on the worker threads."""
    label, text = item
    goes_to_val, tokens = tokenize_document(text, val_fraction)
    return goes_to_val, tokens, label


def tokenize_document(text: str, val_fraction: float) -> tuple[bool, np.ndarray]:
    """(goes to val, [EOT] + tokens as uint16); runs on the worker threads."""
    ids = gpt2_encoding().encode_ordinary(text)  # "<|endoftext|>" inside a text stays plain text
    tokens = np.empty(len(ids) + 1, dtype=np.uint16)
    tokens[0] = EOT
    tokens[1:] = ids
    return document_goes_to_val(text, val_fraction), tokens


class ShardWriter:
    """Collects one split's documents and writes a shard each time shard_tokens have gathered."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int):
        self.out_dir = out_dir
        self.split = split
        self.shard_tokens = shard_tokens
        self.documents = 0
        self.tokens = 0
        self.shards: list[dict[str, Any]] = []
        self.index: dict[str, Any] | None = None  # the document index file, once written
        self._starts = array("q")  # each document's first token, as an offset in the split
        self._sources = array("q")  # each document's source id
        self._pending: list[np.ndarray] = []
        self._pending_tokens = 0

    def add_document(self, tokens: np.ndarray, source: int = 0) -> None:
        self._starts.append(self.tokens)
        self._sources.append(source)
        self.documents += 1
        self.tokens += len(tokens)
        self._pending.append(tokens)
        self._pending_tokens += len(tokens)
        while self._pending_tokens >= self.shard_tokens:
            joined = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._write(joined[: self.shard_tokens])
            self._pending = [joined[self.shard_tokens :]]
            self._pending_tokens = len(self._pending[0])

    def finish(self) -> None:
        """Write whatever is left as the last, shorter shard, then the document index."""
        if self._pending_tokens:
            self._write(np.concatenate(self._pending))
        self._pending, self._pending_tokens = [], 0
        self._write_index()

    def summary(self) -> dict[str, Any]:
        return {"documents": self.documents, "tokens": self.tokens, "shards": self.shards,
                "documents_index": self.index}

    def _write_index(self) -> None:
        """{split}_docs.npy: (documents, 2) int64 rows of (start offset, source id)."""
        rows = np.stack([np.frombuffer(self._starts, dtype=np.int64), np.frombuffer(self._sources, dtype=np.int64)],
                        axis=1) if self.documents else np.zeros((0, 2), dtype=np.int64)
        name = f"{self.split}{DOCS_SUFFIX}"
        buffer = io.BytesIO()
        np.save(buffer, rows)
        write_atomic(self.out_dir / name, buffer.getvalue(), "document index")
        self.index = {"file": name, "sha256": file_sha256(self.out_dir / name), "columns": ["start", "source_id"]}

    def _write(self, tokens: np.ndarray) -> None:
        name = f"{self.split}_{len(self.shards):06d}.bin"
        sha256 = write_shard(self.out_dir / name, tokens)
        self.shards.append({"file": name, "tokens": int(len(tokens)), "sha256": sha256})


def _check_arguments(
    sources: list[str], max_tokens: int | None, val_fraction: float, workers: int, shard_tokens: int
) -> None:
    if not sources:
        raise RabenchError("no sources given; name at least one, e.g. `rabench prepare austen`")
    if max_tokens is not None and max_tokens < 1:
        raise RabenchError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0.0 < val_fraction < 1.0:
        raise RabenchError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if workers < 1:
        raise RabenchError(f"workers must be at least 1, got {workers}")
    if workers > available_cores():  # more tokenizer threads than cores only slows the machine down
        raise RabenchError(f"workers must be at most {available_cores()}, the cores this process may use; "
                           f"got {workers}")
    if not 1 <= shard_tokens < 2**31:
        raise RabenchError(f"shard_tokens must lie in [1, 2**31), got {shard_tokens}")


def is_dataset_file(name: str) -> bool:
    """Whether a file name is one `prepare` writes (meta.json, shards, document indexes)."""
    return name == META_FILE or any(
        (name.startswith(f"{split}_") and name.endswith(".bin")) or name == f"{split}{DOCS_SUFFIX}" for split in SPLITS)


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a file, and an existing dataset unless overwrite; nothing is deleted here (see _swap_in)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RabenchError(f"{out_dir} is a file; choose a folder for the prepared data")
    holds_data = out_dir.is_dir() and any(is_dataset_file(entry.name) for entry in out_dir.iterdir())
    if holds_data and not overwrite:
        raise RabenchError(f"{out_dir} already holds a prepared dataset; pass --overwrite or choose another folder")
    for left in sorted(out_dir.glob(".prepare-*")) if out_dir.is_dir() else []:  # never deleted: it may be the only copy
        print(f"rabench: note: {left} was left by a prepare that was stopped; it may hold a dataset's files "
              "(delete it once you have checked)", file=sys.stderr)


def _staging_dir(out_dir: Path) -> Path:
    """A fresh hidden folder in out_dir (created if need be) where the new dataset is built."""
    staging = out_dir / f".prepare-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # left by an earlier process of this pid that was killed
        staging.mkdir()
    except OSError as exc:
        raise RabenchError(f"cannot create {staging}: {exc.strerror or exc}") from None
    return staging


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Move the complete, verified dataset from staging into out_dir. The old dataset's files first
    move to a hidden folder (meta.json first: the folder stops claiming a dataset), the new ones come
    in (meta.json last: it never names a file not yet there), and only then is the old one deleted.
    All renames in one folder: a kill leaves the old dataset or the new one, at worst under the
    hidden names, never neither; other files in out_dir are not touched."""
    old = staging.with_name(staging.name + ".old")
    old.mkdir()
    for entry in sorted(out_dir.iterdir(), key=lambda p: p.name != META_FILE):
        if is_dataset_file(entry.name):
            os.replace(entry, old / entry.name)
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == META_FILE):
        os.replace(entry, out_dir / entry.name)
    staging.rmdir()
    shutil.rmtree(old)


def _write_splits(
    sources: list[str],
    writers: dict[str, ShardWriter],
    max_tokens: int | None,
    val_fraction: float,
    workers: int,
    progress: bool,
) -> dict[str, Any]:
    """Stream documents through the tokenizer into the two writers, honouring the token cap."""
    tokenize = functools.partial(tokenize_labelled, val_fraction=val_fraction)
    gpt2_encoding()  # build it once, before the worker threads share it
    total_tokens = 0
    documents = 0
    truncated = False
    source_ids: dict[str, int] = {}  # label -> id, in order of first appearance
    held_back: tuple[np.ndarray, int] | None = None  # the latest train document, in case val ends up empty
    bar = tqdm(total=max_tokens, unit="tok", unit_scale=True, desc="tokenizing", disable=not progress)
    with bar, contextlib.closing(iter_labelled_documents(sources)) as texts, \
            _tokenized(texts, tokenize, workers) as results:
        for goes_to_val, tokens, label in results:
            if max_tokens is not None and total_tokens + len(tokens) > max_tokens:
                tokens = tokens[: max_tokens - total_tokens]
                truncated = True
            documents += 1
            total_tokens += len(tokens)
            source = source_ids.setdefault(label, len(source_ids))
            if goes_to_val:
                writers["val"].add_document(tokens, source)
            else:
                if held_back is not None:
                    writers["train"].add_document(*held_back)
                held_back = (tokens, source)
            bar.update(len(tokens))
            bar.set_postfix(docs=documents, refresh=False)
            if max_tokens is not None and total_tokens >= max_tokens:
                break
    if documents == 0:
        raise RabenchError(f"sources {', '.join(sources)} gave no documents; check them")
    val_fallback = held_back is not None and writers["val"].documents == 0 and documents >= 2
    if held_back is not None:
        writers["val" if val_fallback else "train"].add_document(*held_back)
    if writers["val"].tokens == 0:
        raise RabenchError(
            f"the val split would hold no tokens ({documents} document(s) read, none for val); "
            "give at least 2 documents (or a larger --max-tokens)"
        )
    for writer in writers.values():
        writer.finish()
    return {"truncated": truncated, "val_fallback": val_fallback, "source_names": list(source_ids)}


@contextlib.contextmanager
def _tokenized(
    texts: Iterator[str], tokenize: Callable[[str], tuple[bool, np.ndarray]], workers: int
) -> Iterator[Iterator[tuple[bool, np.ndarray]]]:
    """Tokenized documents in source order: in this thread for one worker, else on a thread pool.

    Threads, not processes: tiktoken encodes with the GIL released (two threads tokenize 1.7x as
    fast as one on two cores), and a fork of a process with threads, as a suite or a test that
    already ran PyTorch or a gloo group is, can deadlock in the child (a CI run hung there)."""
    if workers == 1:
        yield map(tokenize, texts)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="rabench-tokenize")
    try:
        yield _pipelined_map(pool, tokenize, texts)
    finally:  # an error, a reached cap or Ctrl-C drops the queued documents; running ones finish
        pool.shutdown(wait=True, cancel_futures=True)


def _pipelined_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterator) -> Iterator:
    """pool.map over items, reading only one block ahead of the consumer.

    A bare pool.map drains its whole input at once, which would read all of a
    streamed web corpus even when a token cap needs only a sliver of it. Blocks
    start small and double, so a small cap also reads little.
    """
    in_flight: Iterator = iter(())
    size = FIRST_BLOCK_DOCS
    while True:
        block, error = _take(items, size)
        submitted = pool.map(fn, block)
        yield from in_flight
        in_flight = submitted
        if error is not None or len(block) < size:  # source failed or ran out
            yield from in_flight
            if error is not None:
                raise error
            return
        size = min(2 * size, MAX_BLOCK_DOCS)


def _take(items: Iterator, n: int) -> tuple[list, Exception | None]:
    """Up to n items. A source error is returned, not raised, so the items before it still
    get tokenized and the cap decides, as in the one-worker path, whether it is ever reached."""
    block: list = []
    try:
        for item in items:
            block.append(item)
            if len(block) == n:
                break
    except Exception as e:
        return block, e
    return block, None


def _build_meta(
    sources: list[str],
    writers: dict[str, ShardWriter],
    max_tokens: int | None,
    val_fraction: float,
    shard_tokens: int,
    truncated: bool,
    val_fallback: bool,
    source_names: list[str],
) -> dict[str, Any]:
    splits = {split: writer.summary() for split, writer in writers.items()}
    return {
        "rabench_version": rabench.__version__,
        "sources": sources,
        "source_names": source_names,
        "sources_not_reached": unread_sources(sources, source_names),
        "tokenizer": TOKENIZER_NAME,
        "vocab_size": VOCAB_SIZE,
        "eot_id": EOT,
        "eot_placement": "before each document",
        "max_tokens": max_tokens,
        "last_document_truncated": truncated,
        "val_fraction": val_fraction,
        "val_rule": VAL_RULE,
        "val_fallback_used": val_fallback,
        "shard_format": f"llm.c: 256 int32 header (magic {MAGIC}, version {VERSION}, token count), then uint16 tokens",
        "shard_tokens": shard_tokens,
        "documents": sum(s["documents"] for s in splits.values()),
        "tokens": sum(s["tokens"] for s in splits.values()),
        "splits": splits,
    }


def unread_sources(sources: list[str], source_names: list[str]) -> list[str]:
    """The sources of which no document was written (a --max-tokens cap reached before them:
    sources are read in the order given)."""
    def reached(spec: str) -> bool:
        base = spec_label(spec)
        return any(name == base or name.startswith(base + "/") for name in source_names)
    return [spec for spec in sources if not reached(spec)]


def prepare_bundled_austen(out: str | Path) -> str:
    """The bundled Austen corpus prepared into `out`/data-austen (once; reused after): the
    default data of `rabench suite` and `rabench demo`."""
    data_dir = Path(out) / "data-austen"
    if not (data_dir / META_FILE).exists():
        prepare(["austen"], data_dir)
    return str(data_dir)
