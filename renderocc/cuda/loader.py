"""Build-on-first-use loader for the renderer extension.

The extension is compiled once with `torch.utils.cpp_extension.load` into a per-user cache
keyed by a hash of the sources, torch version, flags and CUDA-ness, so a new checkout or a
changed kernel rebuilds and everything else reuses the .so. `load` raises ExtensionUnavailable
without a compiler, when the build fails, or when the compiler's C++ runtime is newer than the one
this process runs (`check_cxx_runtime`); `renderocc.ops` decides what runs instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from renderocc.ext_cache import cache_root

_EXT_LOG = logging.getLogger("torch.utils.cpp_extension")
_level = _EXT_LOG.level
_EXT_LOG.setLevel(logging.ERROR)  # its import warns "no CUDA runtime" on every GPU-less machine: not news here
try:
    from torch.utils import cpp_extension
    from torch.utils.cpp_extension import CUDA_HOME, include_paths
finally:
    _EXT_LOG.setLevel(_level)


CSRC = Path(__file__).parent / "csrc"
OP_NAMESPACE = "renderocc_render"
CPU_SOURCES = ("bindings.cpp", "render_cpu.cpp", "render_emulate.cpp", "walk_cpu.cpp", "voxel_walk.cpp", "knn2d.cpp")
CUDA_SOURCES = ("render_cuda.cu", "render_lanes_forward.cu", "render_lanes_backward.cu", "cuda_stream.cpp")
HEADERS = ("render_core.h", "render_lanes.h", "cuda_lanes.cuh", "checks.h", "walk.h")
# -fopenmp: at::parallel_for is inline OpenMP in torch's headers; compiled without it, every
# CPU kernel ran on one thread whatever torch.get_num_threads() said. On Linux torch's own
# libgomp (same soname) serves the extension's parallel regions; elsewhere (Apple clang has no
# -fopenmp) the kernels build without it and run on one thread.
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
CFLAGS = ["-O3", *OPENMP]
LDFLAGS = [*OPENMP]
CUDA_CFLAGS = ["-O3"]

_lock = threading.Lock()
_state: dict[str, Any] = {}


class ExtensionUnavailable(RuntimeError):
    """The extension could not be built or loaded (no compiler, no ninja, build error)."""


def want_cuda() -> bool:
    """Build the CUDA kernels when torch is a CUDA build, nvcc is found and a GPU is there to run
    them: PyPI's standard torch is a CUDA build on machines without a GPU too, where compiling the
    kernels would only cost minutes (`build_spec(with_cuda=True)` still cross-builds on demand)."""
    return torch.version.cuda is not None and CUDA_HOME is not None and torch.cuda.is_available()


def source_hash(with_cuda: bool) -> str:
    """Everything that changes the binary: sources, flags, torch version, CUDA-ness."""
    h = hashlib.sha256()
    for name in sorted(CPU_SOURCES + CUDA_SOURCES + HEADERS):
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    h.update(repr((CFLAGS, LDFLAGS, CUDA_CFLAGS, torch.__version__, with_cuda, compiler_id())).encode())
    return h.hexdigest()[:16]


def cxx() -> str:
    """The host C++ compiler torch's extension builder uses."""
    return os.environ.get("CXX", "c++")


def process_libstdcxx() -> Path | None:
    """The libstdc++ mapped into this process (torch loads it), resolved; None when none is."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)  # address perms offset device inode [path]
                path = fields[5].strip() if len(fields) == 6 else ""
                if "/libstdc++.so" in path:
                    return Path(os.path.realpath(path))
    except OSError:
        pass
    return None


def compiler_libstdcxx(compiler: str) -> Path | None:
    """The libstdc++ `compiler` links against (`-print-file-name`), resolved; None when it names none
    (a compiler without libstdc++, or none at all)."""
    try:
        out = subprocess.run([compiler, "-print-file-name=libstdc++.so.6"], capture_output=True, text=True,
                             timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(os.path.realpath(out)) if out and os.path.isabs(out) and os.path.exists(out) else None


_GLIBCXX = re.compile(rb"GLIBCXX_3\.4(?:\.(\d+))?\x00")


def glibcxx_version(lib: Path) -> int | None:
    """N of the newest GLIBCXX_3.4.N symbol version a libstdc++ defines (None if unreadable)."""
    try:
        found = [int(m.group(1) or 0) for m in _GLIBCXX.finditer(lib.read_bytes())]
    except OSError:
        return None
    return max(found) if found else None


def check_cxx_runtime(compiler: str | None = None) -> None:
    """Refuse to build or load with a compiler whose libstdc++ is newer than the one this process runs.

    Code compiled against newer libstdc++ headers (inlined stream and locale code, for one) can
    crash on the older runtime the process has already loaded: a message formatting a number
    killed the process once. The same library, or two copies of one version, is fine; so is an older
    one (libstdc++ keeps running code built against older headers). Raises ExtensionUnavailable
    naming both libraries; a compiler or process without libstdc++ is not refused.
    """
    compiler = compiler or cxx()
    ours, theirs = process_libstdcxx(), compiler_libstdcxx(compiler)
    if ours is None or theirs is None or ours == theirs:
        return
    v_ours, v_theirs = glibcxx_version(ours), glibcxx_version(theirs)
    if v_ours is not None and v_theirs is not None and v_theirs <= v_ours:
        return

    def name(v: int | None) -> str:
        return "version unknown" if v is None else f"GLIBCXX_3.4.{v}"

    raise ExtensionUnavailable(
        f"the C++ compiler {compiler} links against {theirs} ({name(v_theirs)}) but this process runs "
        f"{ours} ({name(v_ours)}); an extension built with it can crash here: set CXX to a compiler "
        f"whose C++ runtime is this process's")


def compiler_id() -> str:
    """The host C++ compiler's first `--version` line: part of the cache key, so a checkout built by
    another compiler (or two checkouts sharing the cache with different ones) never load each other's."""
    try:
        out = subprocess.run([cxx(), "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def build_spec(with_cuda: bool | None = None) -> dict[str, Any]:
    """Name, directory, sources and flags of the build (what `build-ext` prints)."""
    with_cuda = want_cuda() if with_cuda is None else with_cuda
    digest = source_hash(with_cuda)
    name = f"{OP_NAMESPACE}_{'cuda' if with_cuda else 'cpu'}_{digest}"
    sources = [str(CSRC / s) for s in CPU_SOURCES + (CUDA_SOURCES if with_cuda else ())]
    defines = ["-DRENDEROCC_WITH_CUDA"] if with_cuda else []
    return {
        "name": name,
        "build_dir": cache_root() / name,
        "sources": sources,
        "cflags": CFLAGS + defines,
        "cuda_cflags": CUDA_CFLAGS + defines,
        "ldflags": LDFLAGS,
        "with_cuda": with_cuda,
    }


def _build(verbose: bool) -> Path:
    """Load the cached library, or build it. A build runs in a folder of its own and the library is
    moved into the cache by rename: a killed build leaves no lock or half-written library where
    another process looks, and a cached library that does not load (truncated, corrupt) is rebuilt."""
    check_cxx_runtime()
    spec = build_spec()
    final = spec["build_dir"] / f"{spec['name']}.so"
    seal = final.with_name(final.name + ".sha256")  # written after the library: a whole build's digest
    if final.exists():
        if seal.exists() and seal.read_text().strip() == _sha256(final):
            torch.ops.load_library(str(final))
            return final
        # dlopen of a truncated library can kill the process (SIGBUS): never load an unsealed one
        _say(f"renderocc: the cached renderer extension {final} is incomplete or damaged (no matching "
             f"{seal.name}); rebuilding it")
    _say(f"renderocc: compiling the renderer extension once for this source, torch and compiler "
         f"({len(spec['sources'])} files; a few minutes on a small machine)...")
    # One compile job per source at most; more only costs memory on small machines.
    os.environ.setdefault("MAX_JOBS", str(max(1, min(len(spec["sources"]), os.cpu_count() or 1))))
    work = spec["build_dir"].with_name(f"{spec['name']}.build-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    work.mkdir(parents=True)
    try:
        cpp_extension.load(
            name=spec["name"],
            sources=spec["sources"],
            extra_cflags=spec["cflags"],
            extra_cuda_cflags=spec["cuda_cflags"],
            extra_ldflags=spec["ldflags"],
            extra_include_paths=[str(CSRC)],
            build_directory=str(work),
            with_cuda=spec["with_cuda"],
            is_python_module=False,
            verbose=verbose,
        )
        spec["build_dir"].mkdir(parents=True, exist_ok=True)
        staged = spec["build_dir"] / f".{final.name}.{os.getpid()}.tmp"
        shutil.copy2(work / final.name, staged)
        os.replace(staged, final)  # readers see the old library or the whole new one, never a part
        staged.with_suffix(".seal").write_text(_sha256(final) + "\n")
        os.replace(staged.with_suffix(".seal"), seal)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _say(message: str) -> None:
    """A note on a terminal while a build runs (a first step's progress bar would otherwise sit for
    minutes with no word); logs and captured outputs stay as the commands' own lines."""
    if sys.stderr.isatty() or os.environ.get("RENDEROCC_VERBOSE_BUILD"):
        print(message, file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(verbose: bool = False) -> Any:
    """The op namespace (torch.ops.renderocc_render), building it if needed; raises ExtensionUnavailable."""
    if "ops" in _state:  # loaded: no lock (torch.compile traces this path without a graph break)
        return _state["ops"]
    with _lock:
        if "ops" in _state:
            return _state["ops"]
        if "error" in _state:
            raise ExtensionUnavailable(_state["error"])
        if os.environ.get("RENDEROCC_NO_EXT"):
            _state["error"] = "disabled by RENDEROCC_NO_EXT"
            raise ExtensionUnavailable(_state["error"])
        try:
            _state["path"] = _build(verbose)
            import renderocc.cuda.op_registrations  # noqa: F401 - fake kernels + autograd on the ops
            _state["ops"] = getattr(torch.ops, OP_NAMESPACE)
        except ExtensionUnavailable as exc:  # already one line that says why
            _state["error"] = str(exc)
            raise
        except Exception as exc:  # noqa: BLE001 - any build/load failure means "fall back"
            _state["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
            raise ExtensionUnavailable(_state["error"]) from exc
        return _state["ops"]


def library_path() -> Path | None:
    """Where the loaded .so lives (None before a successful load)."""
    return _state.get("path")


def find_nvcc() -> str | None:
    """nvcc from $CUDA_HOME, torch's idea of CUDA_HOME, or PATH."""
    for home in (os.environ.get("CUDA_HOME"), CUDA_HOME):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def nvcc_include_dirs(nvcc: str) -> list[str]:
    """The CUDA runtime's include folders as nvcc itself uses them (works through wrapper scripts)."""
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True).stderr
    dirs = []
    for line in out.splitlines():
        if line.startswith(("#$ INCLUDES=", "#$ SYSTEM_INCLUDES=")):
            words = shlex.split(line.split("=", 1)[1])
            dirs += [w[2:] if w.startswith("-I") else w for w in words if w not in ("-isystem", "-I")]
    return dirs


def _cmake_macros_shim(out_dir: Path) -> list[str]:
    """A CPU build of torch ships the c10/cuda headers but not the one CMake generates for CUDA
    builds (c10/cuda/impl/cuda_cmake_macros.h): for a compile-only check, supply what a CUDA
    wheel's says (c10_cuda is a shared library). Empty when torch has the real header."""
    if any((Path(p) / "c10/cuda/impl/cuda_cmake_macros.h").exists() for p in include_paths()):
        return []
    shim = out_dir / "shim"
    (shim / "c10/cuda/impl").mkdir(parents=True, exist_ok=True)
    (shim / "c10/cuda/impl/cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    return [f"-isystem{shim}"]


def compile_check_cuda(out_dir: Path, arch: str = "sm_80") -> dict[str, Any]:
    """Compile (never run) the CUDA side: every .cu with nvcc, and the bindings' CUDA glue and the
    stream/guard file with the host compiler, side by side; then check that every CUDA symbol the
    bindings and the .cu files call is defined by one of them.

    Returns {"ok", "seconds", "steps": [(command, returncode, output)]}; raises
    ExtensionUnavailable if nvcc is absent. Needs no GPU and no CUDA build of torch.
    """
    nvcc = find_nvcc()
    if nvcc is None:
        raise ExtensionUnavailable("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    out_dir.mkdir(parents=True, exist_ok=True)
    cu_objs = [out_dir / f"{Path(name).stem}.o" for name in CUDA_SOURCES if name.endswith(".cu")]
    cpp_obj, stream_obj = out_dir / "bindings_cuda.o", out_dir / "cuda_stream.o"
    torch_inc = [f"-isystem{p}" for p in include_paths()]
    cuda_inc = [f"-isystem{d}" for d in nvcc_include_dirs(nvcc)] + _cmake_macros_shim(out_dir)
    host = cxx()
    commands = [
        *([nvcc, "-std=c++17", "-O3", f"-arch={arch}", f"-I{CSRC}", "-c", str(CSRC / f"{obj.stem}.cu"),
           "-o", str(obj)] for obj in cu_objs),
        [host, "-std=c++20", "-O1", "-fPIC", "-DRENDEROCC_WITH_CUDA", f"-I{CSRC}", *torch_inc, "-c",
         str(CSRC / "bindings.cpp"), "-o", str(cpp_obj)],
        [host, "-std=c++20", "-O1", "-fPIC", "-DRENDEROCC_WITH_CUDA", f"-I{CSRC}", *torch_inc, *cuda_inc, "-c",
         str(CSRC / "cuda_stream.cpp"), "-o", str(stream_obj)],
    ]
    start = time.perf_counter()
    procs = [(cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
             for cmd in commands]  # independent: run side by side
    outputs = [(cmd, proc.communicate()[0], proc.returncode) for cmd, proc in procs]
    steps = [(" ".join(cmd), code, out.strip()) for cmd, out, code in outputs]
    if any(code != 0 for _, code, _ in steps):
        return {"ok": False, "seconds": time.perf_counter() - start, "steps": steps}
    providers = [*cu_objs, stream_obj]
    missing = sorted({s for user in (cpp_obj, *cu_objs) for s in _undefined_cuda_symbols(user, providers)})
    steps.append(("symbol check", int(bool(missing)), "missing: " + ", ".join(missing) if missing else "ok"))
    return {"ok": not missing, "seconds": time.perf_counter() - start, "steps": steps}


def _undefined_cuda_symbols(user: Path, providers: list[Path]) -> list[str]:
    """The project's `*_cuda` symbols `user` needs that none of `providers` defines (via nm)."""
    needed = {s for s in _nm(user, undefined=True) if "_cuda" in s and s.startswith("renderocc::")}
    return sorted(needed - set().union(*(_nm(p, undefined=False) for p in providers)))


def _nm(path: Path, undefined: bool) -> set[str]:
    """Demangled symbol names (undefined ones, or defined ones) of an object file."""
    args = ["nm", "-C", "--undefined-only" if undefined else "--defined-only", str(path)]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split(maxsplit=2) if not undefined else line.split(maxsplit=1)
        if len(parts) >= 2:
            names.add(parts[-1].strip())
    return names
