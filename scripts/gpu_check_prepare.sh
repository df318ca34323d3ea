#!/usr/bin/env bash
# Build the folder scripts/gpu_check.sh carries to the bare GPU machine (default .gpu_carry/, git-ignored):
#   store/      a small synthetic ray store (1 scene x 8 keyframes, 704x256 as prep stores for occ3d,
#               motion masks), written here with `renderocc synth nuscenes` + `prep nuscenes` + `prep motion-masks`;
#   wheels/     every distribution the GPU stages import that the machine lacks, fetched with
#               `pip download --no-deps` for the machine's Python (default CPython 3.12, x86-64) at the
#               versions this checkout runs with;
#   needs.json  what the import probe found: each distribution, its version, the modules it gave, the
#               import that loaded it, and whether it is carried or expected on the machine (gpu_check.sh
#               checks the latter there, and in CPU mode hides everything else to imitate the machine).
#
# The wheel list is measured, not written by hand: a clean interpreter of this checkout imports what the
# GPU stages run (the modules and scripts below), then follows the lazy (function-level) imports of every
# checkout module that got loaded until nothing new loads, and maps every loaded module to its
# distribution (importlib.metadata.packages_distributions). What the machine's image already has
# (MACHINE, SEEN_ON_MACHINE) is not carried. Imports that fail here (timm, torchvision, safetensors on a
# CPU-only torch) are listed and skipped: the machine has them.
#
# Usage: scripts/gpu_check_prepare.sh [CARRY_DIR]        (then: run scripts/gpu_check.sh OUT, carry CARRY_DIR)
# Env: GPU_PYTHON_VERSION (3.12), GPU_CARRY_LIMIT_MB (50), PYTHON (.venv/bin/python), PIP_* as usual.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=${1:-.gpu_carry}
PY=${PYTHON:-.venv/bin/python}
PYVER=${GPU_PYTHON_VERSION:-3.12}
# 50 MiB: the store (~5 MiB) and the wheels (~32 MiB; matplotlib, numcodecs, fonttools and tensorboard the
# largest), under the device machine's 64 MiB limit on everything carried, with room for a new dependency.
LIMIT_MB=${GPU_CARRY_LIMIT_MB:-50}

# What the GPU stages run (scripts/gpu_check.sh): the build and the CUDA tests, the render and train
# benchmarks, `renderocc train` (also under torchrun), eval, predict and viz, and the report.
STAGE_MODULES="renderocc.cli renderocc.train.commands renderocc.eval.commands renderocc.train.trainer
  renderocc.eval.evaluate renderocc.eval.predict renderocc.eval.viz renderocc.store.reader renderocc.model.build
  renderocc.model.backbones renderocc.model.weights renderocc.cuda.loader renderocc.ops torch.distributed.run"
STAGE_SCRIPTS="benchmarks/train.py benchmarks/render.py tests/test_render_cuda.py tests/test_render_ops.py
  tests/conftest.py scripts/gpu_check_report.py"
# Lazy imports the stages never reach, one a line: PREFIX: why. Every other lazy import is followed.
NOT_FOLLOWED="nuscenes: the devkit (eval --split val on nuScenes scenes, eval --gt/--dataroot, prep); the stages \
pass --split all and a prepared store
scipy: the kd-tree fallback of ops.knn2d (qa; the extension has the op) and prep
renderocc.synth: benchmarks/train.py without --store (the stages pass one)
renderocc.prep.pipeline: benchmarks/train.py without --store (the stages pass one)"
# The GPU machine's image: CPython 3.12, torch (2.11, CUDA 13) and what it requires (its nvidia-*/cuda-*
# runtime wheels, triton, filelock, typing-extensions, sympy, mpmath, networkx, jinja2, markupsafe, fsspec,
# setuptools), numpy 2.x, torchvision, timm and what it requires (pyyaml, huggingface-hub, safetensors, and
# huggingface-hub's tqdm), pillow, pytest and what it requires, pip.
MACHINE="torch nvidia-* cuda-* triton filelock typing-extensions sympy mpmath networkx jinja2 markupsafe fsspec
  setuptools numpy torchvision timm pyyaml huggingface-hub safetensors tqdm pillow pytest iniconfig pluggy pygments
  packaging pip"
# Seen importable on the machine, though not in the list above: a training stage there got past their
# module-level imports (errors.py: click, store/reader.py: pyarrow, store/jpeg_codec.py: cv2) with only
# zarr and its needs carried. gpu_check.sh's wheels stage checks every expected distribution is there.
SEEN_ON_MACHINE="click pyarrow opencv-python-headless"

fail() { echo "gpu_check_prepare: $*" >&2; exit 2; }
[ -x "$PY" ] || fail "no python at $PY (make install, or set PYTHON)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
tmp=$(mktemp -d) || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
staging="$tmp/carry"
mkdir -p "$staging/wheels"

echo "== store: synth 1 scene x 8 keyframes, prep 704x256, motion masks"
t0=$(date +%s)
"$PY" -m renderocc.cli synth nuscenes --out "$tmp/synth" --scenes 1 --samples-per-scene 8 --seed 0 \
  --sweeps-per-sample 1 --workers 1 >"$tmp/synth.log" 2>&1 || { cat "$tmp/synth.log"; fail "synth failed"; }
"$PY" -m renderocc.cli prep nuscenes --dataroot "$tmp/synth" --version v1.0-mini --out "$staging/store" \
  --image-size 704x256 >"$tmp/prep.log" 2>&1 || { cat "$tmp/prep.log"; fail "prep failed"; }
"$PY" -m renderocc.cli prep motion-masks --store "$staging/store" --dataroot "$tmp/synth" \
  >"$tmp/motion.log" 2>&1 || { cat "$tmp/motion.log"; fail "prep motion-masks failed"; }
tail -n 1 "$tmp/prep.log"
echo "store written in $(( $(date +%s) - t0 )) s ($(du -sm "$staging/store" | cut -f1) MiB)"

echo "== import probe: what the GPU stages load in a clean interpreter ($PY)"
cat >"$tmp/probe.py" <<'EOF'
"""Import what the GPU stages run, follow the lazy imports of every checkout module loaded, until nothing
new loads; map every loaded module to its distribution. argv: OUT_JSON MODULES SCRIPTS MACHINE SEEN NOT_FOLLOWED."""

from __future__ import annotations

import ast
import builtins
import fnmatch
import importlib
import importlib.metadata as md
import json
import os
import site
import sys
from pathlib import Path

ROOT = Path.cwd().resolve()
OUT = Path(sys.argv[1])
MODULES, SCRIPTS = sys.argv[2].split(), sys.argv[3].split()
MACHINE, SEEN = sys.argv[4].split(), sys.argv[5].split()
NOT_FOLLOWED = dict(map(str.strip, x.split(":", 1)) for x in sys.argv[6].splitlines() if x.strip())  # prefix -> why


def canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def top(name: str) -> str:
    return name.partition(".")[0]


def ours(path) -> bool:
    """A file of this checkout (not of its virtualenv)."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return False
    p = Path(path).resolve()
    return p.is_relative_to(ROOT) and not any(part.startswith(".venv") for part in p.relative_to(ROOT).parts)


for d in ("", "benchmarks", "tests"):  # what the scripts and tests find on their path
    sys.path.insert(0, str(ROOT / d))

importer: dict[str, str] = {}   # module -> the module whose import statement loaded it
entry: dict[str, str] = {}      # module -> the probe step that loaded it
failed: dict[str, str] = {}     # import -> why it does not import here
skipped: dict[str, str] = {}    # lazy import not followed -> why
_import = builtins.__import__


def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level:
        return _import(name, globals, locals, fromlist, level)
    parts = name.split(".")
    wanted = [".".join(parts[:i]) for i in range(1, len(parts) + 1)] + [f"{name}.{a}" for a in fromlist or ()]
    new = [m for m in wanted if m not in sys.modules]
    mod = _import(name, globals, locals, fromlist, level)
    by = (globals or {}).get("__name__") or "?"
    for m in new:
        if m in sys.modules:
            importer.setdefault(m, by)
    return mod


builtins.__import__ = recording_import


def try_import(name: str, step: str) -> None:
    if name in sys.modules or any(top(f) == top(name) for f in failed):
        return
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except BaseException as e:  # noqa: BLE001 - anything: reported, never fatal
        failed[name] = f"{step}: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    for m in set(sys.modules) - before:
        entry.setdefault(m, step)


def imports_of(path: Path, nested_only: bool) -> list[str]:
    """Absolute imports in `path`; with nested_only, only those inside functions and classes."""
    tree = ast.parse(path.read_text(), str(path))
    skip = set(map(id, tree.body)) if nested_only else set()
    out: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import submodule`
    return out


def follow(name: str, step: str) -> None:
    hit = next((p for p in NOT_FOLLOWED if name == p or name.startswith(p + ".")), None)
    if hit:
        skipped.setdefault(hit, f"{NOT_FOLLOWED[hit]} (in {step})")
        return
    parent = name.rpartition(".")[0]
    if name in sys.modules or (parent in sys.modules and not hasattr(sys.modules[parent], "__path__")):
        return  # loaded, or `from module import attribute`
    had = name in failed
    try_import(name, step)
    if not had and name in failed and parent in sys.modules:
        del failed[name]  # `from package import attribute`, not a submodule


for m in MODULES:
    try_import(m, m)
for s in SCRIPTS:
    for m in imports_of(ROOT / s, nested_only=False):
        follow(m, s)
scanned: set[str] = set()
while True:  # lazy imports of every checkout module loaded so far, until nothing new loads
    todo = sorted({f for mod in list(sys.modules.values()) if ours(f := getattr(mod, "__file__", None))
                   and f.endswith(".py")} - scanned)
    if not todo:
        break
    for f in todo:
        scanned.add(f)
        for m in imports_of(Path(f), nested_only=True):
            follow(m, str(Path(f).resolve().relative_to(ROOT)))
builtins.__import__ = _import


def why(t: str) -> str:
    """The import chain that loaded top-level module `t`, back to a checkout module or a probe step."""
    chain, cur = [], t
    while len(chain) < 20:
        by = importer.get(cur)
        if by is None or by == cur:
            if cur in entry and entry[cur] != cur:
                chain.append(entry[cur])
            break
        chain.append(by)
        if ours(getattr(sys.modules.get(by), "__file__", None)):
            break
        cur = by
    if len(chain) > 3:
        chain = [chain[0], "...", chain[-1]]
    return " <- ".join(chain) or "?"


site_dirs = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
by_top = md.packages_distributions()
stdlib = set(sys.stdlib_module_names) | {"__main__", "__mp_main__"}
dists: dict[str, dict] = {}
vendored: dict[str, str] = {}
for t in sorted({top(m) for m in sys.modules}):
    mod = sys.modules.get(t)
    where = getattr(mod, "__file__", None) or next(iter(getattr(mod, "__path__", None) or []), None)
    if t in stdlib or t.lstrip("_") in stdlib or ours(where):
        continue
    for name in by_top.get(t, []):
        dist = md.distribution(name)
        base = Path(dist.locate_file("")).resolve()
        if base not in site_dirs:   # metadata inside another package (setuptools/_vendor): part of that one
            vendored[name] = str(base)
            continue
        key = dist.metadata["Name"]
        if canon(key) == "renderocc":
            continue
        c = canon(key)
        row = dists.setdefault(key, {
            "version": dist.version, "modules": [], "why": why(t),
            "where": ("machine" if any(fnmatch.fnmatch(c, canon(p)) for p in MACHINE) else
                      "seen on the machine" if any(c == canon(p) for p in SEEN) else "carry"),
            "compiled": any(str(f).endswith((".so", ".pyd")) for f in dist.files or []),
            "requires_numpy": any(canon((r or "").split(";")[0]).startswith("numpy") for r in dist.requires or [])})
        row["modules"].append(t)

OUT.write_text(json.dumps({"probe_python": sys.version.split()[0], "machine": MACHINE, "seen_on_machine": SEEN,
                           "dists": dists, "not_importable_here": failed, "lazy_imports_not_followed": skipped,
                           "vendored": vendored}, indent=1) + "\n")
w = max(map(len, dists), default=10)
for k, r in sorted(dists.items(), key=lambda kv: (kv[1]["where"] != "carry", kv[1]["where"], kv[0].lower())):
    flags = (" [compiled, numpy ABI]" if r["compiled"] and r["requires_numpy"] else
             " [compiled]" if r["compiled"] else "")
    print(f"  {r['where']:19} {k:<{w}} {r['version']:<12} {','.join(r['modules'])}{flags}  <- {r['why']}")
for name, text in sorted(failed.items()):
    print(f"  not importable here, skipped: {name}  ({text})")
for name, text in sorted(skipped.items()):
    print(f"  lazy import not followed: {name}  ({text})")
EOF
"$PY" "$tmp/probe.py" "$tmp/probe.json" "$STAGE_MODULES" "$STAGE_SCRIPTS" "$MACHINE" "$SEEN_ON_MACHINE" \
  "$NOT_FOLLOWED" || fail "the import probe failed"

mapfile -t SPECS < <("$PY" -c "
import json, sys
for name, r in sorted(json.load(open(sys.argv[1]))['dists'].items()):
    if r['where'] == 'carry':
        print(f\"{name}=={r['version']}\")" "$tmp/probe.json")
echo "== wheels for CPython $PYVER x86-64 (this checkout's versions): ${SPECS[*]}"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
missing=()
for spec in "${SPECS[@]}"; do
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
      "${PLATFORMS[@]}" -d "$staging/wheels" "$spec" >"$tmp/pip.log" 2>&1; then
    missing+=("$spec")
    grep -v '^WARNING: Location' "$tmp/pip.log" | tail -n 2 | sed 's/^/    /'
  fi
done
"$PY" - "$tmp/probe.json" "$staging" "${missing[@]}" <<'EOF'
"""needs.json = the probe's findings + the wheel of each carried distribution; print the carry."""
import json
import re
import sys
from pathlib import Path

probe, staging, missing = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), sys.argv[3:]
wheels = {re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower(): w for w in (staging / "wheels").glob("*.whl")}
for name, r in probe["dists"].items():
    w = wheels.get(re.sub(r"[-_.]+", "-", name).lower())
    if r["where"] == "carry":
        r["wheel"] = w.name if w else None
        print(f"  {w.stat().st_size / 2**20 if w else 0:6.2f} MiB  {w.name if w else name + ': NO WHEEL'}"
              f"  ({','.join(r['modules'])} <- {r['why']})")
probe["download_failed"] = missing
(staging / "needs.json").write_text(json.dumps(probe, indent=1) + "\n")
numpy_abi = [n for n, r in probe["dists"].items() if r["where"] == "carry" and r["compiled"] and r["requires_numpy"]]
if numpy_abi:
    print(f"  compiled against numpy (gpu_check.sh imports them beside the machine's numpy 2.x): "
          f"{', '.join(numpy_abi)}")
EOF

size_mb=$(du -sm "$staging" | cut -f1)
echo "== carry: ${size_mb} MiB: store $(du -sm "$staging/store" | cut -f1) MiB," \
  "wheels $(du -sm "$staging/wheels" | cut -f1) MiB ($(find "$staging/wheels" -name '*.whl' | wc -l) files);" \
  "limit ${LIMIT_MB} MiB"
[ "$size_mb" -le "$LIMIT_MB" ] || fail "carry is ${size_mb} MiB, over ${LIMIT_MB} MiB"
rm -rf "$CARRY.new" && mv "$staging" "$CARRY.new" && rm -rf "$CARRY" && mv "$CARRY.new" "$CARRY" \
  || fail "could not move the carry into $CARRY"
echo "ready: $CARRY"
if [ ${#missing[@]} -gt 0 ]; then
  fail "no CPython $PYVER wheel found for: ${missing[*]} (the stages that import them will FAIL on the GPU; \
pip's indexes: $("$PY" -m pip config list 2>/dev/null | grep -i index | tr '\n' ' '))"
fi
