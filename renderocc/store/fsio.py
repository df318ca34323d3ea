"""Filesystem access for stores that are local paths or fsspec URLs (memory://, s3://, ...).

Writes go to a temporary name and are then moved into place, so a killed run never leaves a
file under its final name with partial content.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import known_implementations

from renderocc.errors import UserError, require_regular_file
from renderocc.store.layout import TMP_PREFIX


def is_local(root: str) -> bool:
    return "://" not in root or root.startswith("file://")


def local_path(root: str) -> str:
    return root[len("file://"):] if root.startswith("file://") else root


def protocol(root: str) -> str:
    return root.split("://", 1)[0] if "://" in root else "file"


def get_fs(root: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the fs-internal path of a store root; an unknown protocol, or one whose
    package is not installed, is one UserError line naming what to install."""
    try:
        fs, path = url_to_fs(root)
    except ImportError:
        proto = protocol(root)
        package = known_implementations.get(proto, {}).get("class", proto).split(".")[0]
        raise UserError(f"{proto}:// needs {package}: pip install {package}") from None
    except ValueError as e:
        if "Protocol not known" in str(e) or "protocol" in str(e).lower():
            raise UserError(f"unknown protocol {protocol(root)}:// in {root}") from None
        raise
    return fs, path.rstrip("/") if path not in ("/", "") else path


def check_persistent(root: str, option: str) -> None:
    """Refuse a URL whose data dies with the process (memory://) for results that must outlive it."""
    if protocol(root) == "memory":
        raise UserError(f"{option} {root}: memory:// does not persist after this process exits; "
                        "use a folder or a persistent URL (file://, s3://, ...)")
    get_fs(root)   # the protocol's package is installed


def fs_path(root: str, *parts: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = get_fs(root)
    return fs, "/".join([path.rstrip("/"), *parts]) if parts else path


def exists(root: str, *parts: str) -> bool:
    fs, path = fs_path(root, *parts)
    return fs.exists(path)


def check_regular(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """A local store file must be a regular file (`errors.require_regular_file`); missing files pass
    (the reader says "missing" itself)."""
    if isinstance(fs, LocalFileSystem):
        require_regular_file(path, missing_ok=True)


def read_bytes(root: str, *parts: str) -> bytes:
    fs, path = fs_path(root, *parts)
    check_regular(fs, path)
    with fs.open(path, "rb") as f:
        return f.read()


def read_json(root: str, *parts: str) -> Any:
    return json.loads(read_bytes(root, *parts))


def write_bytes_atomic(data: bytes, root: str, *parts: str) -> None:
    """Write to `.tmp-<uuid>-<name>` beside the target, then move it onto the final name.

    A failed write (full disk, no permission) removes its temp file and is one UserError line."""
    fs, path = fs_path(root, *parts)
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}"
    try:
        fs.makedirs(parent, exist_ok=True)
        with fs.open(tmp, "wb") as f:
            f.write(data)
        move_into_place(fs, tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            if fs.exists(tmp):
                fs.rm(tmp)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def parquet_file(root: str, *parts: str):
    """An open `pyarrow.parquet.ParquetFile`: by local path, or from bytes read into memory.

    Never through a live fsspec file object: a pyarrow I/O thread that still holds one at
    interpreter exit can abort the process (SIGABRT; apache/arrow#34314, #39162). A file that is
    not readable Parquet (truncated, overwritten) is one UserError line naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = fs_path(root, *parts)
    check_regular(fs, path)
    try:
        source = path if isinstance(fs, LocalFileSystem) else pa.BufferReader(read_bytes(root, *parts))
        return pq.ParquetFile(source)
    except FileNotFoundError:
        raise UserError(f"missing: {path}") from None
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not readable Parquet ({' '.join(str(e).split())[:100]})") from None


def read_parquet(root: str, *parts: str, columns: list[str] | None = None):
    """The whole table of a Parquet file (see `parquet_file`)."""
    import pyarrow as pa

    pf = parquet_file(root, *parts)
    try:
        return pf.read(columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{fs_path(root, *parts)[1]}: not readable Parquet "
                        f"({' '.join(str(e).split())[:100]})") from None


def parquet_bytes(tables, schema, **options) -> bytes:
    """One Parquet file (one row group per table) built in memory: written with
    `write_bytes_atomic`, so no pyarrow thread ever holds an fsspec file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema, **options) as w:
        for t in tables:
            w.write_table(t, row_group_size=max(len(t), 1))
    return sink.getvalue().to_pybytes()


def write_json_atomic(obj: Any, root: str, *parts: str) -> None:
    write_bytes_atomic((json.dumps(obj, indent=1, sort_keys=False) + "\n").encode(), root, *parts)


def move_into_place(fs: fsspec.AbstractFileSystem, tmp: str, path: str) -> None:
    """Rename (atomic on local disks; copy+delete on object stores, where markers guard readers)."""
    if isinstance(fs, LocalFileSystem):
        os.replace(tmp, path)
    else:
        if fs.exists(path):
            fs.rm(path)
        fs.mv(tmp, path)


def remove_tree(root: str, *parts: str) -> None:
    """Delete a folder and everything under it (nothing when absent). Only for folders the manifest
    does not name: a kill halfway leaves a partial folder that no reader opens."""
    fs, path = fs_path(root, *parts)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def sha256_file(root: str, *parts: str) -> str:
    fs, path = fs_path(root, *parts)
    check_regular(fs, path)
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def size(root: str, *parts: str) -> int:
    fs, path = fs_path(root, *parts)
    return int(fs.size(path))


def du(root: str, *parts: str) -> int:
    """Total bytes under a directory (0 if absent)."""
    fs, path = fs_path(root, *parts)
    if not fs.exists(path):
        return 0
    return int(sum(fs.du(path, total=False).values())) if fs.isdir(path) else int(fs.size(path))


def listdir_names(root: str, *parts: str) -> list[str]:
    fs, path = fs_path(root, *parts)
    if not fs.exists(path):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def listdir_recursive(root: str, *parts: str) -> list[str]:
    """Paths of all files under a directory, relative to it ('/'-separated)."""
    fs, path = fs_path(root, *parts)
    if not fs.exists(path):
        return []
    base = path.rstrip("/") + "/"
    return [p[len(base):] if p.startswith(base) else p for p in fs.find(path)]


def zarr_store(root: str, *parts: str, read_only: bool):
    """A zarr v3 store object for a sub-path of the store (LocalStore or FsspecStore)."""
    from zarr.storage import FsspecStore, LocalStore

    if is_local(root):
        path = os.path.join(local_path(root), *parts)
        return LocalStore(path, read_only=read_only)
    return FsspecStore.from_url("/".join([root.rstrip("/"), *parts]), read_only=read_only)
