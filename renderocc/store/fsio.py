"""Filesystem access for stores that are local paths or fsspec URLs (memory://, s3://, ...).

Writes go to a temporary name and are then moved into place, so a killed run never leaves a
file under its final name with partial content.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from renderocc.store.layout import TMP_PREFIX


def is_local(root: str) -> bool:
    return "://" not in root or root.startswith("file://")


def local_path(root: str) -> str:
    return root[len("file://"):] if root.startswith("file://") else root


def get_fs(root: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the fs-internal path of a store root."""
    fs, path = url_to_fs(root)
    return fs, path.rstrip("/") if path not in ("/", "") else path


def fs_path(root: str, *parts: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = get_fs(root)
    return fs, "/".join([path.rstrip("/"), *parts]) if parts else path


def exists(root: str, *parts: str) -> bool:
    fs, path = fs_path(root, *parts)
    return fs.exists(path)


def read_bytes(root: str, *parts: str) -> bytes:
    fs, path = fs_path(root, *parts)
    with fs.open(path, "rb") as f:
        return f.read()


def read_json(root: str, *parts: str) -> Any:
    return json.loads(read_bytes(root, *parts))


def write_bytes_atomic(data: bytes, root: str, *parts: str) -> None:
    """Write to `.tmp-<uuid>-<name>` beside the target, then move it onto the final name."""
    fs, path = fs_path(root, *parts)
    parent, name = path.rsplit("/", 1)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    move_into_place(fs, tmp, path)


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


def tmp_name(path: str) -> str:
    parent, name = path.rsplit("/", 1)
    return f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}"


def sha256_file(root: str, *parts: str) -> str:
    fs, path = fs_path(root, *parts)
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


def zarr_store(root: str, *parts: str, read_only: bool):
    """A zarr v3 store object for a sub-path of the store (LocalStore or FsspecStore)."""
    from zarr.storage import FsspecStore, LocalStore

    if is_local(root):
        path = os.path.join(local_path(root), *parts)
        return LocalStore(path, read_only=read_only)
    return FsspecStore.from_url("/".join([root.rstrip("/"), *parts]), read_only=read_only)
