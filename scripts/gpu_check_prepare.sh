#!/usr/bin/env bash
# Build the folder scripts/gpu_check.sh carries to the bare GPU machine (default .gpu_carry/, git-ignored):
#   store/   a small synthetic ray store (1 scene x 8 keyframes, 704x256 as prep stores for occ3d,
#            motion masks), written here with `renderocc synth nuscenes` + `prep nuscenes` + `prep motion-masks`;
#   wheels/  the packages the training step imports that the machine lacks (zarr and its needs),
#            fetched with `pip download --no-deps` for the machine's Python (default 3.12, x86-64),
#            at the versions this checkout runs with.
# Usage: scripts/gpu_check_prepare.sh [CARRY_DIR]        (then: run scripts/gpu_check.sh OUT, carry CARRY_DIR)
# Env: GPU_PYTHON_VERSION (3.12), GPU_CARRY_LIMIT_MB (50), PYTHON (.venv/bin/python), PIP_* as usual.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=${1:-.gpu_carry}
PY=${PYTHON:-.venv/bin/python}
PYVER=${GPU_PYTHON_VERSION:-3.12}
LIMIT_MB=${GPU_CARRY_LIMIT_MB:-50}
WHEELS=(zarr numcodecs donfig google-crc32c)   # what `import zarr` needs beyond torch/numpy/pyarrow/fsspec/...
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
echo "store written in $(( $(date +%s) - t0 )) s"

echo "== wheels for CPython $PYVER x86-64: ${WHEELS[*]} (this checkout's versions)"
missing=()
for name in "${WHEELS[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") \
    || fail "$name is not installed here: its version is unknown"
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$staging/wheels" "$name==$version" >"$tmp/pip-$name.log" 2>&1; then
    missing+=("$name==$version")
    tail -n 2 "$tmp/pip-$name.log" | sed 's/^/    /'
  fi
done
ls "$staging/wheels"

size_mb=$(du -sm "$staging" | cut -f1)
echo "== carry: ${size_mb} MiB (limit ${LIMIT_MB} MiB)"
[ "$size_mb" -le "$LIMIT_MB" ] || fail "carry is ${size_mb} MiB, over ${LIMIT_MB} MiB"
rm -rf "$CARRY.new" && mv "$staging" "$CARRY.new" && rm -rf "$CARRY" && mv "$CARRY.new" "$CARRY" \
  || fail "could not move the carry into $CARRY"
echo "ready: $CARRY"
if [ ${#missing[@]} -gt 0 ]; then
  fail "no CPython $PYVER wheel found for: ${missing[*]} (the training stage on the GPU will FAIL without them; \
pip's indexes: $("$PY" -m pip config list 2>/dev/null | grep -i index | tr '\n' ' '))"
fi
