"""Decode a band of rows of a JPEG at a DCT-scaled size with the system's libjpeg(-turbo).

Prep keeps only the bottom ~2/3 of each camera image; OpenCV's imread decodes all of it and
allocates a fresh buffer per image. This small C helper (`csrc/jpeg_rows.c`, built on first use
with the C compiler, `-ljpeg`, cached beside the renderer extension) skips the IDCT of the rows
above the band and writes into the caller's array, and ctypes releases the GIL while it runs.
Its rows are byte-identical to OpenCV's decode of the same rows (same library, same IDCT and
upsampling: tests/test_jpeg_rows.py). Without a compiler or libjpeg's headers, `available()`
is False and callers keep OpenCV (same pixels, slower).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sysconfig
import threading
import uuid
from pathlib import Path

import numpy as np

from renderocc.ext_cache import cache_root

SOURCE = Path(__file__).parent / "csrc" / "jpeg_rows.c"
OK, OPEN, DECODE, SIZE, UNSUPPORTED, BAND, CORRUPT = range(7)

_lock = threading.Lock()
_state: dict = {}


def compiler() -> str | None:
    """$CC, else the C compiler Python was built with, else cc / gcc / clang on PATH."""
    for cand in (os.environ.get("CC"), (sysconfig.get_config_var("CC") or "").split(" ")[0], "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _build() -> ctypes.CDLL:
    if os.environ.get("RENDEROCC_NO_EXT"):
        raise OSError("disabled by RENDEROCC_NO_EXT")
    cc = compiler()
    if cc is None:
        raise OSError("no C compiler")
    flags = ["-O2", "-shared", "-fPIC"]
    digest = hashlib.sha256(SOURCE.read_bytes() + repr((cc, flags)).encode()).hexdigest()[:16]
    so = cache_root() / f"jpeg_rows_{digest}.so"
    if not so.exists():
        so.parent.mkdir(parents=True, exist_ok=True)
        tmp = so.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{so.name}")
        try:   # -ljpeg after the source: the linker resolves in order
            res = subprocess.run([cc, *flags, str(SOURCE), "-o", str(tmp), "-ljpeg"], capture_output=True,
                                 text=True)
            if res.returncode != 0:
                raise OSError((res.stderr.strip().splitlines() or ["compiler failed"])[-1])
            os.replace(tmp, so)   # other processes see a whole .so or none
        finally:
            tmp.unlink(missing_ok=True)
    lib = ctypes.CDLL(str(so))
    _state["path"] = so
    p_int, p_char = ctypes.POINTER(ctypes.c_int), ctypes.c_char_p
    lib.renderocc_jpeg_size.argtypes = [p_char, p_int, p_char, ctypes.c_int]
    lib.renderocc_jpeg_rows.argtypes = [p_char, ctypes.c_int, p_int, ctypes.c_int, ctypes.c_int,
                                        ctypes.c_void_p, p_int, p_char, ctypes.c_int]
    lib.renderocc_jpeg_size.restype = lib.renderocc_jpeg_rows.restype = ctypes.c_int
    return lib


def library() -> ctypes.CDLL | None:
    """The helper, built on first use; None (and `why_unavailable()` says why) without one."""
    if "lib" in _state:
        return _state["lib"]
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"] = _build()
            except OSError as exc:
                _state["lib"], _state["error"] = None, str(exc)
    return _state["lib"]


def available() -> bool:
    return library() is not None


def library_path() -> Path | None:
    """Where the built helper lives (None without one)."""
    library()
    return _state.get("path")


def why_unavailable() -> str | None:
    library()
    return _state.get("error")


def size(path: str) -> tuple[int, int] | None:
    """(width, height) from the JPEG header alone; None when this path cannot say (not a JPEG,
    unreadable, no helper): callers then decode the image."""
    lib = library()
    if lib is None:
        return None
    dims, err = (ctypes.c_int * 2)(), ctypes.create_string_buffer(256)
    if lib.renderocc_jpeg_size(os.fsencode(path), dims, err, len(err)) != OK:
        return None
    return dims[0], dims[1]


def decode_rows(path: str, reduce: int, expect: tuple[int, int], row0: int,
                rows: int) -> tuple[int, np.ndarray | tuple[int, int] | None]:
    """(OK, (rows, W / reduce, 3) uint8 RGB) for rows [row0, row0 + rows) of the 1/reduce-size
    decode; (SIZE, header (W, H)) when the header disagrees with `expect`; (other status, None)
    when this path cannot decode it (the caller falls back to OpenCV, which names the problem);
    (CORRUPT, libjpeg's warning) when the data is corrupt: a decoder would fill the damage with grey."""
    lib = library()
    if lib is None:
        return UNSUPPORTED, None
    W, H = expect
    if reduce not in (1, 2, 4, 8) or W % reduce or H % reduce:
        return UNSUPPORTED, None
    out = np.empty((rows, W // reduce, 3), np.uint8)
    want, dims, err = (ctypes.c_int * 2)(W, H), (ctypes.c_int * 2)(), ctypes.create_string_buffer(256)
    status = lib.renderocc_jpeg_rows(os.fsencode(path), reduce, want, row0, rows, out.ctypes.data, dims, err,
                                     len(err))
    if status == OK:
        return OK, out
    if status == SIZE:
        return SIZE, (dims[0], dims[1])
    if status == CORRUPT:
        return CORRUPT, err.value.decode(errors="replace")
    return status, None
