"""Sharded QA: each job writes the raw counts of its block of samples to OUT/parts/; the job
that completes the set (same store, options and count) merges them into the report.

Parts are JSON (no pickles) written to a temp name and renamed, so a reader never sees half a
part; a part from another store or other options is ignored (its shard is simply rerun).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from renderocc.qa.report import QAOptions, assemble, collect_part, shard_samples
from renderocc.shards import Shard
from renderocc.store.fsio import write_bytes_atomic

PARTS_DIR = "parts"


def part_name(index: int, count: int) -> str:
    return f"qa-part-{index:05d}-of-{count:05d}.json"


def fingerprint(reader, opts: QAOptions, count: int) -> str:
    """What a part's counts depend on: the store's identity, the QA options and the split."""
    m = getattr(reader, "manifest", None) or {}
    key = [m.get("created"), m.get("num_samples"), m.get("num_rays"), m.get("motion_masks"), asdict(opts), count]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_part(path: Path, fp: str) -> dict | None:
    """A finished part of this run, or None (absent, unreadable or from another run)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc["part"] if isinstance(doc, dict) and doc.get("fingerprint") == fp else None


def run_part(reader, opts: QAOptions, shard: Shard, out_dir: Path, progress: bool = True
             ) -> tuple[dict | None, int]:
    """Collect and write this shard's part; return (the merged report if every part is in, else
    None; how many parts are in)."""
    fp = fingerprint(reader, opts, shard.count)
    part = collect_part(reader, opts, shard_samples(len(reader), shard.index, shard.count), progress)
    doc = {"fingerprint": fp, "shard": [shard.index, shard.count], "part": part}
    write_bytes_atomic(json.dumps(doc).encode(), str(out_dir), PARTS_DIR, part_name(shard.index, shard.count))
    parts = [_read_part(out_dir / PARTS_DIR / part_name(i, shard.count), fp) for i in range(shard.count)]
    found = [p for p in parts if p is not None]
    return (assemble(reader, opts, found) if len(found) == shard.count else None), len(found)
