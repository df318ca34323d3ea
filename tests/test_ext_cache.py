"""The extension cache: a library is loaded from the cache when it is whole, rebuilt when it is not,
and a build leaves nothing half-made (no lock, no partial library) where another process looks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOAD = ("from renderocc.cuda import loader; ops = loader.load(); print('path', loader.library_path()); "
        "import torch; print('sum', float(ops.visibility(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3), "
        "torch.ones(1, 3) / 3 ** 0.5, torch.zeros(1, dtype=torch.long), [0., 0., 0., 1., 1., 1.], "
        "[0.5, 0.5, 0.5], 0.0, 0.1).sum()))")


def _load_in(cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RENDEROCC_EXT_DIR": str(cache), "PYTHONPATH": str(ROOT), "RENDEROCC_VERBOSE_BUILD": "1"}
    return subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_a_whole_cached_library_loads_without_a_build(ops, tmp_path):
    from renderocc.cuda import loader

    built = loader.library_path()
    cache = tmp_path / "cache"
    (cache / built.parent.name).mkdir(parents=True)
    shutil.copy2(built, cache / built.parent.name / built.name)
    shutil.copy2(built.with_name(built.name + ".sha256"), cache / built.parent.name / (built.name + ".sha256"))
    res = _load_in(cache)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "compiling" not in res.stderr and f"path {cache / built.parent.name / built.name}" in res.stdout


@pytest.mark.slow
def test_a_truncated_cached_library_is_rebuilt_whole(ops, tmp_path):
    from renderocc.cuda import loader

    built = loader.library_path()
    cache = tmp_path / "cache"
    lib = cache / built.parent.name / built.name
    lib.parent.mkdir(parents=True)
    lib.write_bytes(built.read_bytes()[: built.stat().st_size // 3])  # a build killed mid-copy, say
    shutil.copy2(built.with_name(built.name + ".sha256"), lib.with_name(lib.name + ".sha256"))
    res = _load_in(cache)
    assert res.returncode == 0, res.stderr[-2000:]  # never dlopen'ed: a truncated library can SIGBUS
    assert "incomplete or damaged" in res.stderr and "rebuilding" in res.stderr and "sum" in res.stdout
    assert lib.stat().st_size == built.stat().st_size
    assert sorted(p.name for p in cache.iterdir()) == [built.parent.name]  # the build folder is gone
    assert sorted(p.name for p in lib.parent.iterdir()) == [built.name, built.name + ".sha256"]  # no lock
