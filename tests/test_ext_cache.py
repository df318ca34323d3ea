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


def _fake_compiler(tmp_path: Path, glibcxx: int) -> tuple[Path, Path]:
    """A C++ compiler whose libstdc++ (`-print-file-name`) is a library defining GLIBCXX_3.4.<glibcxx>;
    it compiles nothing (a build that got past the check would fail loudly)."""
    lib = tmp_path / f"gcc-{glibcxx}" / "libstdc++.so.6"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"\x00GLIBCXX_3.4\x00GLIBCXX_3.4.%d\x00" % glibcxx)
    cxx = tmp_path / f"gcc-{glibcxx}" / "c++"
    cxx.write_text(f'#!/bin/sh\ncase "$1" in\n  -print-file-name=*) echo "{lib}" ;;\n'
                   f'  --version) echo "fake c++ {glibcxx}" ;;\n  *) echo "not a compiler" >&2; exit 1 ;;\nesac\n')
    cxx.chmod(0o755)
    return cxx, lib


def test_a_compiler_with_a_newer_cxx_runtime_is_refused_in_one_line(tmp_path):
    """A compiler whose libstdc++ is newer than the process's is refused before anything is built or
    loaded (its inlined stream code crashed a process once): one line naming both libraries;
    render_rays falls back to the reference and the CLI prints that line and exits non-zero."""
    from renderocc.cuda import loader

    cxx, lib = _fake_compiler(tmp_path, 99)
    ours = loader.process_libstdcxx()
    assert ours is not None  # torch maps it
    with pytest.raises(loader.ExtensionUnavailable) as err:
        loader.check_cxx_runtime(str(cxx))
    assert str(lib) in str(err.value) and str(ours) in str(err.value) and "GLIBCXX_3.4.99" in str(err.value)

    env = {**os.environ, "CXX": str(cxx), "RENDEROCC_EXT_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    script = ("import warnings, torch\nfrom renderocc.geometry import Grid\nfrom renderocc.ops import render_rays\n"
              "with warnings.catch_warnings(record=True) as caught:\n    warnings.simplefilter('always')\n"
              "    out = render_rays(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2, 3), torch.zeros(1, 3),\n"
              "                      torch.ones(1, 3) / 3 ** 0.5, torch.zeros(1, dtype=torch.long),\n"
              "                      grid=Grid((0, 0, 0, 1, 1, 1), (0.5, 0.5, 0.5), (2, 2, 2)), step=0.1)\n"
              "print('opacity', round(float(out.opacity), 3))\nprint('warning', caught[0].message)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "opacity 0." in res.stdout and f"links against {lib}" in res.stdout and "PyTorch reference" in res.stdout
    assert not (tmp_path / "cache").exists()  # refused before a build folder was made

    cli = subprocess.run([sys.executable, "-m", "renderocc.cli", "build-ext"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert cli.returncode != 0
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and str(lib) in lines[0] and str(ours) in lines[0], cli.stderr


def test_a_compiler_with_the_same_or_an_older_cxx_runtime_is_accepted(tmp_path):
    """Older libstdc++ headers run on a newer runtime (libstdc++'s compatibility promise); a compiler
    naming no libstdc++ is not refused either."""
    from renderocc.cuda import loader

    loader.check_cxx_runtime(str(_fake_compiler(tmp_path, 1)[0]))
    loader.check_cxx_runtime(loader.cxx())  # the compiler the other tests build with
    loader.check_cxx_runtime(str(tmp_path / "no-such-compiler"))
