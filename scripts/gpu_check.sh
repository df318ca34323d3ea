#!/usr/bin/env bash
# The one-call GPU check: on a bare H200 machine (python3 with torch + CUDA, numpy,
# pytest) build the renderer for sm_90, run the CUDA tests, time the renderer against the
# reference on the GPU, and time the occ3d training step with AMP on and off. Writes
# OUTDIR/gpu_check.log (everything) and OUTDIR/gpu_check.json (stage results and figures).
#
#   scripts/gpu_check_prepare.sh            # on a CPU machine, once: .gpu_carry/ (store + wheels)
#   scripts/gpu_check.sh OUTDIR             # on the GPU machine, in a checkout that holds .gpu_carry/
#   GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh OUTDIR   # a tiny version of every stage, no GPU
#
# Every stage logs PASS/FAIL/SKIP and the JSON records it; a failing stage never stops the later
# ones. Env: GPU_CHECK_DEVICE (cuda), GPU_CHECK_CARRY (.gpu_carry), GPU_CHECK_BUDGET_S (450: no
# stage starts after that), GPU_CHECK_TIME_SCALE (1: multiplies every stage's time limit, for a
# slow or shared machine), PYTHON (python3), TORCH_CUDA_ARCH_LIST (9.0).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
CARRY=${GPU_CHECK_CARRY:-.gpu_carry}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
SCALE=${GPU_CHECK_TIME_SCALE:-1}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
: >"$LOG"
: >"$WORK/stages.tsv"
START=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export RENDEROCC_EXT_DIR=${RENDEROCC_EXT_DIR:-$WORK/ext}
export PYTEST_ADDOPTS="-p no:cacheprovider"

say() { echo "$*" | tee -a "$LOG"; }

# stage NAME LIMIT_S CMD...: run CMD with a time limit, its output into the log; record the result.
stage() {
  local name=$1 limit=$(( $2 * SCALE )) t0 rc status
  shift 2
  if (( $(date +%s) - START > BUDGET )); then
    say "== [$name] SKIP: over the ${BUDGET} s budget"
    printf '%s\tSKIP\t0\t-1\tover budget\n' "$name" >>"$WORK/stages.tsv"
    return
  fi
  say "== [$name] $*"
  t0=$(date +%s.%N)
  timeout --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  status=PASS
  local detail=""
  if [ "$rc" -ne 0 ]; then status=FAIL; detail="exit $rc"; fi
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then detail="timed out after ${limit} s"; fi
  say "== [$name] $status in ${secs} s${detail:+ ($detail)}"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$rc" "$detail" >>"$WORK/stages.tsv"
}

skip() { say "== [$1] SKIP: $2"; printf '%s\tSKIP\t0\t-1\t%s\n' "$1" "$2" >>"$WORK/stages.tsv"; }

say "gpu_check: device $DEVICE, carry $CARRY, out $OUT, $(date -u +%FT%TZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# 1. What the machine is.
stage env 60 "$PY" -c "
import json, platform, sys, torch, numpy
info = {'python': platform.python_version(), 'torch': torch.__version__, 'torch_cuda': torch.version.cuda,
        'numpy': numpy.__version__, 'cuda_available': torch.cuda.is_available(), 'cpus': __import__('os').cpu_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, capability=f'{p.major}.{p.minor}', sms=p.multi_processor_count,
                gpu_memory_gib=round(p.total_memory / 2**30, 1))
print(json.dumps(info)); open('$WORK/env.json', 'w').write(json.dumps(info))
if '$DEVICE' == 'cuda' and not torch.cuda.is_available(): sys.exit('torch sees no CUDA device')
"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi >>"$LOG" 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
fi

# 2. Wheels the training step needs that the machine lacks (in .gpu_carry/wheels; see gpu_check_prepare.sh).
if [ "$DEVICE" != cuda ]; then
  skip wheels "cpu mode: this machine's environment has them"
elif compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
  stage wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$CARRY"/wheels/*.whl
  export PYTHONPATH="$PYTHONPATH:$WORK/site"   # only packages the machine lacks (gpu_check_prepare.sh's list)
else
  skip wheels "no $CARRY/wheels/*.whl (run scripts/gpu_check_prepare.sh and carry $CARRY)"
fi

# 3. Build the extension (CUDA kernels for sm_90 on a GPU machine).
stage build 360 "$PY" -c "
import json, time
from renderocc.cuda import loader
spec = loader.build_spec()
t = time.perf_counter(); loader.load(verbose=True); secs = time.perf_counter() - t
res = {'with_cuda': spec['with_cuda'], 'seconds': secs, 'library': str(loader.library_path()),
       'arch_list': '$TORCH_CUDA_ARCH_LIST'}
print(json.dumps(res)); open('$WORK/build.json', 'w').write(json.dumps(res))
assert spec['with_cuda'] == ('$DEVICE' == 'cuda'), 'the extension was built without CUDA (nvcc found? torch a CUDA build?)'
"
if [ "$DEVICE" = cuda ] && command -v cuobjdump >/dev/null; then
  so=$(find "$RENDEROCC_EXT_DIR" -name '*.so' | head -n 1)
  [ -n "$so" ] && cuobjdump --list-elf "$so" 2>&1 | tee -a "$LOG" | tee "$WORK/cuobjdump.txt" >/dev/null
fi

# 4. The CUDA tests (on the CPU: the same files, whose GPU tests then skip) and the op tests on the device.
stage cuda_tests 300 env RENDEROCC_TEST_DEVICE="$DEVICE" RENDEROCC_COMPILE_BACKEND="${GPU_CHECK_COMPILE_BACKEND:-$([ "$DEVICE" = cuda ] && echo inductor || echo aot_eager)}" \
  "$PY" -m pytest -rs -m "not slow" --junitxml="$WORK/cuda_tests.xml" tests/test_render_cuda.py tests/test_render_ops.py

# 5. The renderer against the materialised reference on the same device: 38,400 rays and 10x.
if [ "$DEVICE" = cuda ]; then R1=38400; R2=384000; else R1=${GPU_CHECK_CPU_RAYS:-1000}; R2=$((R1 * 10)); fi
stage render_bench_${R1} 180 "$PY" benchmarks/render.py --device "$DEVICE" --rays "$R1" --json "$WORK/render_1.json"
stage render_bench_${R2} 240 "$PY" benchmarks/render.py --device "$DEVICE" --rays "$R2" --json "$WORK/render_10.json"

# 6. 20 training steps (2 warm-up + 18 timed) of occ3d on the prepared store (.gpu_carry/store), AMP on and off.
#    On the CPU: the demo config, 2 + 2 steps (occ3d's ResNet-34 at 704x256 would take many minutes here).
if [ ! -f "$CARRY/store/manifest.json" ]; then
  skip train_amp "no store at $CARRY/store (run scripts/gpu_check_prepare.sh)"
  skip train_fp32 "no store at $CARRY/store"
else
  if [ "$DEVICE" = cuda ]; then TRAIN=(--config occ3d --steps 18 --loader-batches 4)
  else TRAIN=(--config demo --steps 2 --loader-batches 2 --set data.workers=1); fi
  for amp in true false; do
    name=$([ $amp = true ] && echo train_amp || echo train_fp32)
    stage "$name" 240 "$PY" benchmarks/train.py --store "$CARRY/store" --device "$DEVICE" "${TRAIN[@]}" \
      --set train.amp=$amp --json "$WORK/$name.json"
  done
fi

# 7. gpu_check.json: stages, figures, targets (written whole, then renamed).
"$PY" scripts/gpu_check_report.py "$WORK" "$OUT/gpu_check.json" "$DEVICE" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$rc"
