"""The renderer's tests and benchmark need only torch, numpy and pytest: what a bare GPU machine has.

Each check runs a subprocess whose `sitecustomize` (first on PYTHONPATH) makes every other
dependency of the project unimportable, as if it were not installed: collecting the renderer
test files, running their tests that import inside the test body, and running
benchmarks/render.py end to end (kernel and reference, tiny ray count).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RENDERER_TESTS = ("tests/test_render.py", "tests/test_render_optical_depth.py", "tests/test_render_cuda.py",
                  "tests/test_render_ops.py")
# The project's dependencies (pyproject.toml) other than torch, numpy and the ninja build tool,
# as import names, plus zarr's compiled codecs.
BLOCKED = ("nuscenes", "pyquaternion", "scipy", "cv2", "pyarrow", "zarr", "numcodecs", "fsspec", "jsonschema",
           "click", "tqdm", "matplotlib", "tensorboard")

SITECUSTOMIZE = f'''
import sys
from importlib.machinery import PathFinder

BLOCKED = {BLOCKED!r}


class _BarePathFinder(PathFinder):
    """sys.path's finder, blind to the blocked packages: importing one raises ModuleNotFoundError
    and importlib.util.find_spec gives None, exactly as when they are not installed."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.partition(".")[0] in BLOCKED:
            return None
        return super().find_spec(fullname, path, target)


sys.meta_path[:] = [_BarePathFinder if finder is PathFinder else finder for finder in sys.meta_path]
'''


@pytest.fixture(scope="module")
def bare_env(tmp_path_factory) -> dict:
    """Environment for a subprocess that sees only torch, numpy, pytest (and the stdlib)."""
    site = tmp_path_factory.mktemp("bare_site")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), str(ROOT / "tests")])
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # installed packages' pytest plugins (zarr has one)
    return env


def _run(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_blocker_blocks(bare_env):
    """Otherwise every other check here would pass for nothing (they are installed here)."""
    probe = f"import importlib.util as u; print([m for m in {BLOCKED[-6:]!r} if u.find_spec(m) is None])"
    assert _run(["-c", probe], os.environ.copy()).stdout.strip() == "[]"
    assert _run(["-c", probe], bare_env).stdout.strip() == repr(list(BLOCKED[-6:]))
    proc = _run(["-c", "import zarr"], bare_env)
    assert proc.returncode != 0 and "No module named 'zarr'" in proc.stderr


def _tests_importing_in_body(path: Path) -> list[str]:
    """Names of the test functions with an import inside them (module-level imports are exercised
    by collecting the file)."""
    tree = ast.parse(path.read_text())
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
            and any(isinstance(n, ast.Import | ast.ImportFrom) or _is_importorskip(n) for n in ast.walk(node))]


def _is_importorskip(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip"


@pytest.mark.slow
def test_renderer_tests_collect_and_late_importers_run(bare_env):
    """Every renderer test file collects; the tests that import inside their body run (or skip, saying why)."""
    late = sorted({name for t in RENDERER_TESTS for name in _tests_importing_in_body(ROOT / t)})
    assert "test_build_ext_command_prints_library" in late  # the scan finds the one that needs click
    proc = _run(["-m", "pytest", "-rs", "-p", "no:cacheprovider", *RENDERER_TESTS, "-k", " or ".join(late)],
                bare_env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    deselected = re.search(r"(\d+) deselected", proc.stdout)
    assert deselected and int(deselected.group(1)) > 50, proc.stdout[-2000:]  # all collected
    assert "could not import 'click.testing'" in proc.stdout  # skipped, and says why


@pytest.mark.slow
def test_render_benchmark_runs_without_them(ops, bare_env, tmp_path):
    """The benchmark runs end to end in the bare environment, and its two sides rendered the same
    rays: the kernel's and the reference's mean opacity agree (a benchmark of two different
    computations would time nothing comparable)."""
    out = tmp_path / "render.json"
    proc = _run(["benchmarks/render.py", "--rays", "256", "--json", str(out)], bare_env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "forward+backward (s)" in proc.stdout
    figures = json.loads(out.read_text())
    kernel, reference = figures["kernel"], figures["reference"]
    assert figures["config"]["rays"] == 256 and kernel["mean_samples"] > 10 and kernel["marched"] > 0
    assert 0.05 < kernel["mean_opacity"] < 1 and abs(kernel["mean_opacity"] - reference["mean_opacity"]) < 1e-4
