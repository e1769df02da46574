"""A prepared data folder's meta.json: its name and its checked reader.

`prepare` writes it; the loader and the checksum check read it. Owning it here, below all three,
keeps the imports of `rabench.data` one way (checks and loader need it, prepare needs checks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rabench.errors import RabenchError

META_FILE = "meta.json"


def load_meta(data_dir: str | Path) -> dict[str, Any]:
    """meta.json of a prepared data folder, its shape checked (readers index into it freely)."""
    path = Path(data_dir) / META_FILE
    if not path.is_file():
        raise RabenchError(f"{data_dir} is not a prepared data folder (no {META_FILE}); run `rabench prepare`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RabenchError(f"{path} is corrupt ({e}); re-run `rabench prepare` (with --overwrite)") from None
    problem = meta_shape_problem(meta)
    if problem:
        raise RabenchError(f"{path} is malformed ({problem}); re-run `rabench prepare` (with --overwrite)")
    return meta


def meta_shape_problem(meta: Any) -> str | None:
    """What is wrong with the structure of a meta.json's contents, or None: the fields readers use
    (splits -> shards -> file, tokens, sha256; documents_index; source_names) with their types."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    splits = meta.get("splits")
    if not isinstance(splits, dict):
        return f"splits is {type(splits).__name__}, not a table of splits"
    for name, info in splits.items():
        shards = info.get("shards") if isinstance(info, dict) else None
        if not isinstance(shards, list):
            return f"splits.{name}.shards is not a list"
        for entry in shards:
            if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)
                    and isinstance(entry.get("tokens"), int) and not isinstance(entry["tokens"], bool)
                    and entry["tokens"] >= 0):
                return f"splits.{name}.shards holds {entry!r:.60}, not a file entry"
            if Path(entry["file"]).name != entry["file"]:
                return f"splits.{name} names a file outside the folder: {entry['file']!r}"
        index = info.get("documents_index")
        if index is not None and not (isinstance(index, dict) and isinstance(index.get("file"), str)
                                      and Path(index["file"]).name == index["file"]):
            return f"splits.{name}.documents_index is not a file entry"
    names = meta.get("source_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return "source_names is not a list of names"
    return None
