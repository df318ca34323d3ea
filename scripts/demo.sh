#!/usr/bin/env bash
# End-to-end demo on the embedded synthetic default (and the real fixture when present).
# Usage: scripts/demo.sh OUT_DIR   (make demo runs it with OUT_DIR=.demo)
set -euo pipefail
OUT=${1:-.demo}
REAL=${RENDEROCC_REAL_FIXTURE:-../shared/data/nuscenes-scene-0916}
STEPS=${DEMO_STEPS:-}
SIZE=${DEMO_IMAGE_SIZE:-192x108}   # stored WxH; the demo config feeds the network 96x176
mkdir -p "$OUT"
say() { printf '\n== %s\n' "$*"; }
t0=$(date +%s)
if [ -n "$STEPS" ]; then
  say "renderocc demo in $OUT, quick mode: DEMO_STEPS=$STEPS training steps (a wiring check, not a trained model); about 2 min on 2 cores"
else
  say "renderocc demo in $OUT: synthetic street -> ray store -> 300 training steps -> scores and figures; about 5 min on 2 cores (DEMO_STEPS=20 make demo: about 2 min)"
fi

say "1/8 synthetic world: train split (seed 0) and a held-out scene (seed 1)"
renderocc synth nuscenes --out "$OUT/synth-train" --scenes 2 --samples-per-scene 10 --seed 0 --overwrite
renderocc synth nuscenes --out "$OUT/synth-val" --scenes 1 --samples-per-scene 10 --seed 1 --overwrite

say "2/8 prep nuscenes: per-camera labels and the ray store"
rm -rf "$OUT/store-train" "$OUT/store-val" "$OUT/store-real" "$OUT/run"
renderocc prep nuscenes --dataroot "$OUT/synth-train" --version v1.0-mini --out "$OUT/store-train" --image-size "$SIZE"
renderocc prep nuscenes --dataroot "$OUT/synth-val" --version v1.0-mini --out "$OUT/store-val" --image-size "$SIZE"

say "3/8 prep motion-masks: moving objects from annotation tracks"
renderocc prep motion-masks --store "$OUT/store-train" --dataroot "$OUT/synth-train"
renderocc prep motion-masks --store "$OUT/store-val" --dataroot "$OUT/synth-val"

say "4/8 qa: label-coverage report"
renderocc qa --store "$OUT/store-train" --out "$OUT/qa-train"

say "5/8 train (demo config, ${STEPS:-300} steps)"
renderocc train --store "$OUT/store-train" --out "$OUT/run" --config demo ${STEPS:+--max-steps $STEPS}

say "6/8 eval on the held-out scene"
renderocc eval --store "$OUT/store-val" --ckpt "$OUT/run/last.pt" --out "$OUT/eval" --split all

say "7/8 viz"
renderocc viz --store "$OUT/store-val" --ckpt "$OUT/run/last.pt" --out "$OUT/viz" --samples 2

if [ -d "$REAL/v1.0-mini" ]; then
  say "8/8 real data: prep + motion masks + qa on $REAL (depth-only labels)"
  renderocc prep nuscenes --dataroot "$REAL" --version v1.0-mini --out "$OUT/store-real" --workers 2
  renderocc prep motion-masks --store "$OUT/store-real"
  renderocc qa --store "$OUT/store-real" --out "$OUT/qa-real" --ray-stride 4
else
  say "8/8 real data: no nuScenes dataroot at $REAL, skipped (RENDEROCC_REAL_FIXTURE=DATAROOT adds one)"
fi

say "done in $(( $(date +%s) - t0 )) s; artefacts:"
echo "  synthetic data     $OUT/synth-train  $OUT/synth-val"
echo "  ray stores         $OUT/store-train  $OUT/store-val"
echo "  QA report          $OUT/qa-train/qa.html"
echo "  checkpoint         $OUT/run/last.pt   (metrics log: $OUT/run/metrics.jsonl)"
echo "  evaluation         $OUT/eval/metrics.md"
echo "  figures            $OUT/viz/"
[ -d "$OUT/store-real" ] && echo "  real-data store    $OUT/store-real   (QA: $OUT/qa-real/qa.html)"
true
