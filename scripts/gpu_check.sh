#!/usr/bin/env bash
# The one-call GPU check, on a bare H200 machine (python3 with torch + CUDA, numpy, timm, torchvision,
# pytest): install the carried wheels the machine lacks, build the renderer for sm_90, run the CUDA tests
# (a crash fails one test, not the stage), time the renderer against the reference, run its CUDA kernels
# under compute-sanitizer and Nsight Compute, time the occ3d
# training step in bf16 beside fp32 and with a timm ResNet-50, train under torchrun (NCCL), and run
# train -> eval -> predict -> viz. Writes OUTDIR/gpu_check.log (everything), OUTDIR/gpu_check.json (stage
# results, figures, targets), OUTDIR/viz/ (the viz stage's PNGs) and OUTDIR/ncu_render.txt (the render
# kernels' Nsight Compute profile).
#
#   scripts/gpu_check_prepare.sh            # on a CPU machine, once: .gpu_carry/ (store + wheels + needs.json)
#   scripts/gpu_check.sh OUTDIR             # on the GPU machine, in a checkout that holds .gpu_carry/
#   GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh OUTDIR   # a tiny version of every stage, no GPU
#
# Stages (time limit in s): env 60, wheels 120, build 360, cuda_tests 300, render_bench_38400 180,
# render_bench_384000 240, sanitizer 200, ncu_render 150, weights 120, train_step 240, timm_weights 120, train_timm_resnet50 240,
# torchrun_nccl 240, pipeline_train 240, pipeline_eval 180, pipeline_predict 180, pipeline_viz 120.
# Every stage logs PASS/FAIL/SKIP and the JSON records it; a failing stage never stops the later ones.
# The whole run fits GPU_CHECK_BUDGET_S: each stage's limit is cut to what is left of it, and no stage
# starts with less than 20 s left (SKIP: over budget).
# CPU mode runs the demo config for 2-4 steps, and hides every installed distribution that is neither
# carried nor expected on the GPU machine (.gpu_carry/needs.json), so a missing wheel fails here first
# (GPU_CHECK_SIMULATE=0: off).
# Env: GPU_CHECK_DEVICE (cuda), GPU_CHECK_CARRY (.gpu_carry), GPU_CHECK_BUDGET_S (540; CPU mode 1200),
# GPU_CHECK_SANITIZER / GPU_CHECK_NCU (1: 0 leaves the compute-sanitizer / ncu stage out),
# GPU_CHECK_TIME_SCALE (1: multiplies every stage's time limit, for a slow or shared machine),
# GPU_CHECK_SIMULATE (1), PYTHON (python3), TORCH_CUDA_ARCH_LIST (9.0).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
CARRY=${GPU_CHECK_CARRY:-.gpu_carry}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-$([ "$DEVICE" = cuda ] && echo 540 || echo 1200)}
SCALE=${GPU_CHECK_TIME_SCALE:-1}
MIN_LEFT=20
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
[ -d "$CARRY" ] && CARRY=$(cd "$CARRY" && pwd)
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

# stage NAME LIMIT_S CMD...: run CMD with a time limit (cut to the budget left), its output into the log;
# record the result.
stage() {
  local name=$1 limit=$(( $2 * SCALE )) left t0 rc status detail="" cut=""
  shift 2
  left=$(( BUDGET - ($(date +%s) - START) ))
  if (( left < MIN_LEFT )); then
    say "== [$name] SKIP: over the ${BUDGET} s budget"
    printf '%s\tSKIP\t0\t-1\tover budget\n' "$name" >>"$WORK/stages.tsv"
    return
  fi
  if (( limit > left )); then limit=$left; cut=" (cut to the budget)"; fi
  say "== [$name] $*"
  t0=$(date +%s.%N)
  STAGE_LIMIT=$limit timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  status=PASS
  if [ "$rc" -ne 0 ]; then status=FAIL; detail="exit $rc"; fi
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then detail="timed out after ${limit} s$cut"; fi
  say "== [$name] $status in ${secs} s${detail:+ ($detail)}"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$rc" "$detail" >>"$WORK/stages.tsv"
}

skip() { say "== [$1] SKIP: $2"; printf '%s\tSKIP\t0\t-1\t%s\n' "$1" "$2" >>"$WORK/stages.tsv"; }

say "gpu_check: device $DEVICE, carry $CARRY, out $OUT, $(date -u +%FT%TZ)," \
  "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), budget ${BUDGET} s"

# 1. What the machine is (and every distribution it has, for the next carry).
stage env 60 "$PY" -c "
import importlib.metadata as md, json, os, platform, shutil, sys, torch, numpy
info = {'python': platform.python_version(), 'torch': torch.__version__, 'torch_cuda': torch.version.cuda,
        'numpy': numpy.__version__, 'cuda_available': torch.cuda.is_available(), 'cpus': os.cpu_count(),
        'libc': ' '.join(platform.libc_ver()), 'nvcc': shutil.which('nvcc'), 'ninja': shutil.which('ninja')}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, capability=f'{p.major}.{p.minor}', sms=p.multi_processor_count,
                gpu_memory_gib=round(p.total_memory / 2**30, 1))
print(json.dumps(info))
info['packages'] = dict(sorted((d.metadata['Name'], d.version) for d in md.distributions() if d.metadata['Name']))
print('packages:', ' '.join(f'{k}=={v}' for k, v in info['packages'].items()))
open('$WORK/env.json', 'w').write(json.dumps(info))
if '$DEVICE' == 'cuda' and not torch.cuda.is_available(): sys.exit('torch sees no CUDA device')
"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi >>"$LOG" 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
fi

# 2. The carried wheels (gpu_check_prepare.sh: what the stages import) that this machine lacks, installed
#    into WORK/site, last on the path; what needs.json expects on the machine, checked; every installed
#    package imported beside the machine's numpy. CPU mode: the same choice, nothing installed, and the
#    distributions the GPU machine would not have hidden from the later stages.
cat >"$WORK/wheels.py" <<'EOF'
"""argv: CARRY SITE install|dry WORK. Writes WORK/wheels.json; exit 1 when something the stages need is missing."""
import fnmatch
import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

carry, site, mode, work = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


needs = json.loads((carry / "needs.json").read_text())
have = {canon(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}
res = {"installed": [], "machine_has": {}, "missing_expected": [], "import_failures": {}, "hidden": []}
wheels = {canon(w.name.split("-")[0]): w for w in sorted((carry / "wheels").glob("*.whl"))}
for name, w in wheels.items():
    if name in have:
        res["machine_has"][name] = have[name]
        print(f"  machine has {name} {have[name]}: carried {w.name.split('-')[1]} not installed")
    else:
        res["installed"].append(w.name)
        print(f"  install {w.name}")
for name, r in sorted(needs["dists"].items()):
    if canon(name) not in have and canon(name) not in wheels:
        res["missing_expected"].append(name)
        print(f"  MISSING: {name} ({','.join(r['modules'])} <- {r['why']}): neither here nor carried")
if mode == "install" and res["installed"]:
    files = [str(wheels[canon(w.split("-")[0])]) for w in res["installed"]]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--target", site, *files], check=True)
    mods = sorted({m for name, r in needs["dists"].items() if canon(name) in wheels and canon(name) not in have
                   for m in r["modules"]})
    probe = ("import importlib, json, sys\nbad = {}\nfor m in sys.argv[1:]:\n    try:\n"
             "        importlib.import_module(m)\n    except Exception as e:\n"
             "        bad[m] = f'{type(e).__name__}: {e}'\nprint(json.dumps(bad))")
    env = {**__import__("os").environ}
    env["PYTHONPATH"] = env.get("PYTHONPATH", "") + ":" + site
    out = subprocess.run([sys.executable, "-c", probe, *mods], env=env, capture_output=True, text=True)
    res["import_failures"] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {
        "(probe)": out.stderr[-2000:]}
    print(f"  imported beside numpy {__import__('numpy').__version__}: {len(mods)} modules, "
          f"{len(res['import_failures'])} failed")
    for m, e in res["import_failures"].items():
        print(f"  IMPORT FAILED: {m}: {e}")
if mode == "dry":  # what the GPU machine would not have: hidden from the later stages (sitecustomize)
    allowed = needs["machine"] + needs["seen_on_machine"] + list(wheels) + ["renderocc"]
    for t, dists in md.packages_distributions().items():
        if t in sys.stdlib_module_names or t.startswith("__editable__"):
            continue
        if not any(fnmatch.fnmatch(canon(d), canon(p)) for d in dists for p in allowed):
            res["hidden"].append(t)
    res["hidden"].sort()
    (work / "sim").mkdir(exist_ok=True)
    (work / "sim" / "hidden.json").write_text(json.dumps(res["hidden"]))
    print(f"  hidden in CPU mode (neither on the GPU machine nor carried): {' '.join(res['hidden'])}")
(work / "wheels.json").write_text(json.dumps(res, indent=1))
sys.exit(1 if res["missing_expected"] or res["import_failures"] else 0)
EOF
if [ ! -f "$CARRY/needs.json" ]; then
  skip wheels "no $CARRY/needs.json (run scripts/gpu_check_prepare.sh and carry $CARRY)"
elif [ "$DEVICE" = cuda ]; then
  stage wheels 120 "$PY" "$WORK/wheels.py" "$CARRY" "$WORK/site" install "$WORK"
  export PYTHONPATH="$PYTHONPATH:$WORK/site"   # only what the machine lacked: its own packages come first
else
  stage wheels 60 "$PY" "$WORK/wheels.py" "$CARRY" "$WORK/site" dry "$WORK"
  if [ "${GPU_CHECK_SIMULATE:-1}" != 0 ] && [ -f "$WORK/sim/hidden.json" ]; then
    cat >"$WORK/sim/sitecustomize.py" <<'EOF'
"""gpu_check CPU mode: the distributions the GPU machine lacks (and the carry does not bring) are not found."""
import json
import os
import sys

_HIDDEN = frozenset(json.load(open(os.path.join(os.path.dirname(__file__), "hidden.json"))))


class _Hide:
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _HIDDEN:
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


sys.meta_path[:] = [_Hide(f) if getattr(f, "__name__", "") == "PathFinder" else f for f in sys.meta_path]
EOF
    export PYTHONPATH="$WORK/sim:$PYTHONPATH"
    say "cpu mode: hiding what the GPU machine lacks ($WORK/sim/hidden.json; GPU_CHECK_SIMULATE=0: off)"
  fi
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
#    pytest runs until a test crashes the process; that test is recorded as crashed and pytest runs again
#    on the tests not yet run. WORK/cuda_tests.xml: every test's outcome, junit style.
cat >"$WORK/run_tests.py" <<'EOF'
"""argv: WORK PYTEST_ARGS... Writes WORK/cuda_tests.xml; exit 1 unless every test passed or skipped. Stops
before the stage's limit (env STAGE_LIMIT, s): the tests not run by then are recorded as such."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

work, args = Path(sys.argv[1]), sys.argv[2:]
deadline = time.time() + float(os.environ.get("STAGE_LIMIT", "240")) - 15
events = work / "pytest_events.jsonl"
(work / "gc_record.py").write_text('''import json, os
def _w(rec):
    with open(os.environ["GC_RECORD"], "a") as f:
        f.write(json.dumps(rec) + "\\n"); f.flush(); os.fsync(f.fileno())
def pytest_runtest_logstart(nodeid, location):
    _w({"start": nodeid})
def pytest_runtest_logfinish(nodeid, location):
    _w({"finish": nodeid})
def pytest_runtest_logreport(report):
    r = report.longrepr
    msg = r[2] if isinstance(r, tuple) and len(r) == 3 else str(r or "")
    _w({"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome, "message": msg[-1500:]})
''')
env = {**os.environ, "GC_RECORD": str(events), "PYTHONPATH": f"{work}:{os.environ.get('PYTHONPATH', '')}"}
base = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "gc_record"]
col = subprocess.run([*base, "--collect-only", "-q", *args], env=env, capture_output=True, text=True)
ids = [line.strip() for line in col.stdout.splitlines() if "::" in line]
print(f"{len(ids)} tests collected" + ("" if ids else f"; pytest said:\n{col.stdout[-3000:]}{col.stderr[-3000:]}"))
results: dict = {}  # nodeid -> (passed | failed | skipped | crashed | timed out | not run, message)
remaining, rounds = list(ids), 0
while remaining:
    rounds += 1
    events.unlink(missing_ok=True)
    try:
        rc = subprocess.run([*base, "-rs", *remaining], env=env, timeout=max(1.0, deadline - time.time())).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    started, outcome = None, {}
    for line in events.read_text().splitlines() if events.exists() else []:
        e = json.loads(line)
        if "start" in e:
            started = e["start"]
        elif "finish" in e:
            results[e["finish"]] = outcome.get(e["finish"], ("passed", ""))
            started = None
        elif e["outcome"] == "failed" or outcome.get(e["nodeid"], ("passed",))[0] == "passed":
            outcome[e["nodeid"]] = (e["outcome"], e["message"] if e["outcome"] != "passed" else "")
    if started:
        why = "timed out" if rc == "timeout" else f"crashed (pytest exit {rc})"
        results[started] = ("timed out" if rc == "timeout" else "crashed", f"{why} while this test ran")
        print(f"\n== {started}: {why}" + ("" if rc == "timeout" else "; running the tests not yet run"))
    left = [t for t in remaining if t not in results]
    if rc == "timeout" or len(left) == len(remaining):  # no progress: the rest will not run
        for t in left:
            results[t] = ("not run", f"pytest ended ({rc}) before it")
        left = []
    remaining = left
counts = {k: sum(1 for o, _ in results.values() if o == k)
          for k in ("passed", "failed", "skipped", "crashed", "timed out", "not run")}
print(f"tests: {counts} in {rounds} pytest run(s)")
cases = []
for t in ids:
    outcome, msg = results.get(t, ("not run", "no result"))
    path, _, name = t.partition("::")
    cls = path.removesuffix(".py").replace("/", ".")
    if "::" in name:
        inner, _, name = name.rpartition("::")
        cls += "." + inner.replace("::", ".")
    body = {"failed": f"<failure message={quoteattr(msg)}/>", "skipped": f"<skipped message={quoteattr(msg)}/>",
            "crashed": f'<error type="crash" message={quoteattr(msg)}/>',
            "timed out": f'<error type="timeout" message={quoteattr(msg)}/>',
            "not run": f'<error type="not-run" message={quoteattr(msg)}/>'}.get(outcome, "")
    cases.append(f"<testcase classname={quoteattr(cls)} name={quoteattr(name)}>{body}</testcase>")
(work / "cuda_tests.xml").write_text('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">\n'
                                     + "\n".join(cases) + "\n</testsuite></testsuites>\n")
sys.exit(0 if ids and counts["passed"] + counts["skipped"] == len(ids) else 1)
EOF
stage cuda_tests 300 env RENDEROCC_TEST_DEVICE="$DEVICE" RENDEROCC_COMPILE_BACKEND="${GPU_CHECK_COMPILE_BACKEND:-$([ "$DEVICE" = cuda ] && echo inductor || echo aot_eager)}" \
  "$PY" "$WORK/run_tests.py" "$WORK" -m "not slow" tests/test_render_cuda.py tests/test_render_ops.py

# 5. The renderer against the materialised reference on the same device: 38,400 rays and 10x.
if [ "$DEVICE" = cuda ]; then R1=38400; R2=384000; else R1=${GPU_CHECK_CPU_RAYS:-1000}; R2=$((R1 * 10)); fi
stage render_bench_${R1} 180 "$PY" benchmarks/render.py --device "$DEVICE" --rays "$R1" --json "$WORK/render_1.json"
stage render_bench_${R2} 240 "$PY" benchmarks/render.py --device "$DEVICE" --rays "$R2" --json "$WORK/render_10.json"

# 5b. The renderer's CUDA kernels under compute-sanitizer (memcheck: out-of-bounds and misaligned
#     accesses; racecheck: shared-memory hazards; synccheck: shuffles whose mask names lanes that do
#     not take part), on a subset of tests/test_render_cuda.py that reaches every lanes code path;
#     and an Nsight Compute profile of each render kernel (lanes and per-ray, forward and backward)
#     at 38,400 rays: OUTDIR/ncu_render.txt (to keep under benchmarks/results/). GPU_CHECK_SANITIZER=0
#     or GPU_CHECK_NCU=0 leaves a stage out.
SAN_TESTS='lanes and (part_filled or (slot_rays and 17) or float32_matches_cpu_on_slot_rays or refused)'
if [ "$DEVICE" != cuda ]; then
  skip sanitizer "no CUDA device"
elif [ "${GPU_CHECK_SANITIZER:-1}" = 0 ]; then
  skip sanitizer "GPU_CHECK_SANITIZER=0"
elif ! command -v compute-sanitizer >/dev/null; then
  skip sanitizer "no compute-sanitizer on PATH"
else
  stage sanitizer 200 env PY="$PY" SAN_TESTS="$SAN_TESTS" bash -c '
    for tool in memcheck racecheck synccheck; do
      echo "-- compute-sanitizer --tool $tool"
      compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 --target-processes all \
        "$PY" -m pytest -q -p no:cacheprovider -o addopts= tests/test_render_cuda.py -k "$SAN_TESTS" || exit 1
    done'
fi
if [ "$DEVICE" != cuda ]; then
  skip ncu_render "no CUDA device"
elif [ "${GPU_CHECK_NCU:-1}" = 0 ]; then
  skip ncu_render "GPU_CHECK_NCU=0"
elif ! command -v ncu >/dev/null; then
  skip ncu_render "no ncu on PATH"
else
  stage ncu_render 150 env PY="$PY" NCU_OUT="$WORK/ncu_render.txt" bash -c '
    : >"$NCU_OUT"
    for kernel in lanes per-ray; do
      echo "-- ncu, RENDEROCC_CUDA_KERNEL=$kernel" | tee -a "$NCU_OUT"
      RENDEROCC_CUDA_KERNEL=$kernel ncu --target-processes all -k "regex:(lanes|per_ray)_(forward|backward)_kernel" \
        --launch-skip 2 --launch-count 2 --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section WarpStateStats \
        "$PY" benchmarks/render.py --device cuda --rays 38400 --profile-once 2>&1 | tee -a "$NCU_OUT"
      [ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
    done'
  [ -f "$WORK/ncu_render.txt" ] && cp "$WORK/ncu_render.txt" "$OUT/ncu_render.txt"
fi

# 6-10. Training on the prepared store (.gpu_carry/store: 8 keyframes at 704x256). The occ3d config keeps
#    its frozen BatchNorm, so every run loads backbone weights: random ones written here (the weights
#    stage: the plain ResNet; timm_weights: timm's resnet50 as .safetensors, timm being on the machine).
#    On the CPU: the demo config (frozen BN too, to load the same way), 2-4 steps.
STORE="$CARRY/store"
W="$WORK/weights"
if [ "$DEVICE" = cuda ]; then
  CFG=(--config occ3d); SETS=()
  BENCH=(--steps 18 --loader-batches 4); TIMM_BENCH=(--steps 10 --loader-batches 2)
  DDP=(--max-steps 20 --set data.workers=4); PIPE=(--max-steps 30 --set train.val_every=15)
  EVAL=(--rays-per-sample 38400); PRED=(); VIZ=(--samples 2)
else
  CFG=(--config demo); SETS=(--set data.workers=1 --set model.norm=frozen_bn)
  BENCH=(--steps 2 --loader-batches 2); TIMM_BENCH=(--steps 1 --loader-batches 1)
  DDP=(--max-steps 2); PIPE=(--max-steps 4 --set train.val_every=2)
  EVAL=(--rays-per-sample 2000); PRED=(--vis-stride 8); VIZ=(--samples 1)
fi
if [ ! -f "$STORE/manifest.json" ]; then
  for s in weights train_step timm_weights train_timm_resnet50 torchrun_nccl pipeline_train pipeline_eval \
           pipeline_predict pipeline_viz; do
    skip "$s" "no store at $STORE (run scripts/gpu_check_prepare.sh)"
  done
else
  stage weights 120 "$PY" -c "
import sys, torch
from pathlib import Path
from renderocc.config import load_config
from renderocc.model.encoder import ResNet
out, name, overrides = Path(sys.argv[1]), sys.argv[2], [a for a in sys.argv[3:] if a != '--set']
cfg = load_config(name, overrides)
state = ResNet(cfg.model.encoder, cfg.model.width, 'frozen_bn').state_dict()
out.parent.mkdir(parents=True, exist_ok=True)
torch.save(state, out)
print(f'{out}: random {cfg.model.encoder} weights (width {cfg.model.width}, {len(state)} tensors)')
" "$W/resnet.pt" "${CFG[1]}" "${SETS[@]}"
  PRE=(--pretrained "$W/resnet.pt")

  # 7. The step: bf16 (the config's precision) beside fp32, the ratio, where a step's time goes.
  stage train_step 240 "$PY" benchmarks/train.py --store "$STORE" --device "$DEVICE" "${CFG[@]}" "${SETS[@]}" \
    "${BENCH[@]}" "${PRE[@]}" --compare-precision --json "$WORK/train_step.json"

  # 8. The step with timm's ResNet-50 (frozen BN, weights from a local .safetensors).
  timm_error=""   # on the GPU machine timm is expected: its failure to import fails the stage
  [ "$DEVICE" = cuda ] || timm_error=$("$PY" -c "import timm, torchvision, safetensors" 2>&1 | tail -n 1)
  if [ -n "$timm_error" ]; then
    skip timm_weights "timm, torchvision or safetensors does not import here ($timm_error)"
    skip train_timm_resnet50 "no timm here (see timm_weights)"
  else
    stage timm_weights 120 "$PY" -c "
import sys, timm
from safetensors.torch import save_file
m = timm.create_model('resnet50', pretrained=False)
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, sys.argv[1])
print(f'{sys.argv[1]}: random timm resnet50 weights, timm {timm.__version__}')
" "$W/resnet50.safetensors"
    if [ -f "$W/resnet50.safetensors" ]; then
      stage train_timm_resnet50 240 "$PY" benchmarks/train.py --store "$STORE" --device "$DEVICE" "${CFG[@]}" \
        "${SETS[@]}" --set model.encoder=timm:resnet50 --set model.norm=frozen_bn "${TIMM_BENCH[@]}" \
        --pretrained "$W/resnet50.safetensors" --json "$WORK/train_timm.json"
    else
      skip train_timm_resnet50 "no $W/resnet50.safetensors (timm_weights failed)"
    fi
  fi

  # 9. `renderocc train` under torchrun, one process (NCCL on the GPU, gloo on the CPU): exit 0 and last.pt.
  stage torchrun_nccl 240 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m renderocc.cli train \
    --store "$STORE" --out "$WORK/ddp" "${CFG[@]}" "${SETS[@]}" "${DDP[@]}" "${PRE[@]}" --device "$DEVICE" --quiet

  # 10. train (with validation) -> eval -> predict -> viz, each its own stage. Without the train stage's
  #     checkpoint, eval, predict and viz use the torchrun stage's.
  stage pipeline_train 240 "$PY" -m renderocc.cli train --store "$STORE" --out "$WORK/run" "${CFG[@]}" "${SETS[@]}" \
    "${PIPE[@]}" --set train.val_samples=2 "${PRE[@]}" --device "$DEVICE" --quiet
  CKPT="$WORK/run/last.pt"
  if [ ! -f "$CKPT" ] && [ -f "$WORK/ddp/last.pt" ]; then
    CKPT="$WORK/ddp/last.pt"; say "pipeline: no $WORK/run/last.pt; eval, predict and viz use $CKPT"
  fi
  if [ -f "$CKPT" ]; then
    stage pipeline_eval 180 "$PY" -m renderocc.cli eval --store "$STORE" --ckpt "$CKPT" --out "$WORK/eval" \
      --split all "${EVAL[@]}" --device "$DEVICE" --quiet
    stage pipeline_predict 180 "$PY" -m renderocc.cli predict --store "$STORE" --ckpt "$CKPT" --out "$WORK/pred" \
      --split all "${PRED[@]}" --device "$DEVICE" --quiet
    stage pipeline_viz 120 "$PY" -m renderocc.cli viz --store "$STORE" --ckpt "$CKPT" --out "$WORK/viz" \
      "${VIZ[@]}" --device "$DEVICE" --quiet
  else
    for s in pipeline_eval pipeline_predict pipeline_viz; do
      skip "$s" "no checkpoint from pipeline_train or torchrun_nccl"
    done
  fi
fi

# 11. gpu_check.json: stages, figures, targets (written whole, then renamed); the viz PNGs beside it.
"$PY" scripts/gpu_check_report.py "$WORK" "$OUT/gpu_check.json" "$DEVICE" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if compgen -G "$WORK/viz/*.png" >/dev/null; then
  rm -rf "$OUT/viz" && mkdir -p "$OUT/viz" && cp "$WORK"/viz/*.png "$OUT/viz/"
fi
rm -rf "$WORK"
exit "$rc"
