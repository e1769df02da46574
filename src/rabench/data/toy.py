"""A toy vocabulary: a prepared folder's tokens renumbered into a few hundred ids, for CPU demos.

On a CPU most of a small model's step is its output layer over GPT-2's 50,304 ids. Here the
`size - 1` most frequent tokens of the train split keep an id each (their frequency rank) and
every other token becomes one shared id (`size - 1`, "a rarer token"). The documents, their
order and the train/val split stay exactly as prepared; only the ids change, so the task is
the same text with rare words merged. Frequencies come from the train split alone, so nothing
about the val split leaks into the vocabulary.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from rabench.data.checks import file_sha256
from rabench.data.loader import TokenSplit, load_meta
from rabench.data.meta import META_FILE
from rabench.data.prepare import SPLITS
from rabench.data.shards import write_shard
from rabench.errors import RabenchError
from rabench.fileio import write_json_atomic


def toy_vocabulary(src: str | Path, out: str | Path, size: int) -> str:
    """`src` (a prepared folder) renumbered into `size` ids, written to `out` once (reused after)."""
    src, out = Path(src), Path(out)
    if (out / META_FILE).exists():
        return str(out)
    meta = load_meta(src)
    if not 2 <= size <= meta["vocab_size"]:
        raise RabenchError(f"a toy vocabulary needs 2 to {meta['vocab_size']} ids, got {size}")
    out.mkdir(parents=True, exist_ok=True)
    counts = token_counts(TokenSplit(src, "train"), meta["vocab_size"])
    table = rank_table(counts, size)
    splits = {split: _renumber_split(src, out, split, meta["splits"][split], table) for split in SPLITS}
    shared = float(counts[table == size - 1].sum() / max(1, counts.sum()))
    toy = {"size": size, "from": str(src), "source_tokenizer": meta["tokenizer"],
           "rule": f"the {size - 1} most frequent train tokens get ids 0..{size - 2} by frequency rank (ties: lower "
                   f"source id first); every other token gets id {size - 1}",
           "train_share_of_shared_id": round(shared, 4)}
    new_meta = meta | {"tokenizer": f"{meta['tokenizer']}, renumbered into a toy vocabulary of {size}",
                       "vocab_size": size, "eot_id": int(table[meta["eot_id"]]), "toy_vocabulary": toy,
                       "splits": splits}
    write_json_atomic(out / META_FILE, new_meta, "meta.json")  # last: a folder without it is unfinished
    return str(out)


def token_counts(split: TokenSplit, vocab: int) -> np.ndarray:
    counts = np.zeros(vocab, dtype=np.int64)
    for shard in split.shards:
        counts += np.bincount(np.asarray(shard), minlength=vocab)[:vocab]
    return counts


def rank_table(counts: np.ndarray, size: int) -> np.ndarray:
    """source id -> toy id: frequency rank for the size-1 most frequent tokens, size-1 for the rest."""
    order = np.argsort(-counts, kind="stable")  # stable: ties keep the lower source id first
    table = np.full(len(counts), size - 1, dtype=np.uint16)
    table[order[: size - 1]] = np.arange(size - 1, dtype=np.uint16)
    return table


def _renumber_split(src: Path, out: Path, split: str, info: dict[str, Any], table: np.ndarray) -> dict[str, Any]:
    shards = []
    for entry, tokens in zip(info["shards"], TokenSplit(src, split).shards):
        sha = write_shard(out / entry["file"], table[np.asarray(tokens)])
        shards.append(entry | {"sha256": sha})
    index = info.get("documents_index")
    if index:  # the documents keep their offsets: copy the index as it is
        shutil.copyfile(src / index["file"], out / index["file"])
        index = index | {"sha256": file_sha256(out / index["file"])}
    return info | {"shards": shards, "documents_index": index}


def check_vocabulary(data_dir: str | Path, model_vocab: int, preset_name: str) -> None:
    """Refuse data whose ids the model's embedding cannot hold (GPT-2 data with a toy-vocabulary preset)."""
    meta = load_meta(data_dir)
    data_vocab = int(meta.get("vocab_size", 0))
    if data_vocab > model_vocab:
        raise RabenchError(f"preset {preset_name} has a vocabulary of {model_vocab} ids but {data_vocab}-id data "
                           f"({meta.get('tokenizer')}) is in {data_dir}: choose a preset with a GPT-2 vocabulary "
                           f"(e.g. tiny) or data in the preset's toy vocabulary (rabench demo makes some)")
