#!/usr/bin/env bash
# End-to-end airside demo: a synthetic apron by day and by floodlit night on wet pavement, its own
# classes and dense 2D masks, through prep, QA by condition, training and evaluation per condition.
# Usage: scripts/demo_airside.sh OUT_DIR   (make demo-airside runs it with OUT_DIR=.demo-airside)
set -euo pipefail
OUT=${1:-.demo-airside}
STEPS=${DEMO_STEPS:-200}             # short: the demo config's 300 steps cut for time
SIZE=${DEMO_IMAGE_SIZE:-192x108}     # stored WxH; the demo config feeds the network 96x176
SYNTH_SIZE=${DEMO_SYNTH_SIZE:-400x225}
CONDITIONS=day,night+wet             # scene-0001 by day, scene-0002 at night on wet pavement
mkdir -p "$OUT"
say() { printf '\n== %s\n' "$*"; }
t0=$(date +%s)
say "renderocc airside demo in $OUT: aprons by day and at night on wet pavement -> stores with 2D masks -> $STEPS training steps -> scores per condition; about 3 min on 2 cores"

say "1/8 synth airside: train (seed 0) and held-out (seed 1), each a day scene and a night+wet scene"
renderocc synth airside --out "$OUT/apron-train" --scenes 2 --samples-per-scene 6 --seed 0 \
  --image-size "$SYNTH_SIZE" --conditions "$CONDITIONS" --overwrite
renderocc synth airside --out "$OUT/apron-val" --scenes 2 --samples-per-scene 4 --seed 1 \
  --image-size "$SYNTH_SIZE" --conditions "$CONDITIONS" --overwrite

say "2/8 prep nuscenes: LiDAR labels in the apron's own classes (apron-*/classes.toml)"
rm -rf "$OUT/store-train" "$OUT/store-val" "$OUT/run"
for split in train val; do
  renderocc prep nuscenes --dataroot "$OUT/apron-$split" --out "$OUT/store-$split" --image-size "$SIZE" --no-progress
done

say "3/8 prep masks: dense 2D masks (here the synthetic world's GT masks, as a perfect segmenter gives)"
for split in train val; do
  renderocc prep masks --store "$OUT/store-$split" --masks "$OUT/apron-$split/masks" --no-progress
done

say "4/8 prep motion-masks: moving GSE, people and the aircraft under tow"
for split in train val; do
  renderocc prep motion-masks --store "$OUT/store-$split" --dataroot "$OUT/apron-$split" --no-progress
done

say "5/8 qa: label coverage, and depth labels by condition and surface class"
renderocc qa --store "$OUT/store-train" --out "$OUT/qa-train" --quiet

say "6/8 train (demo config, $STEPS steps)"
renderocc train --store "$OUT/store-train" --out "$OUT/run" --config demo --max-steps "$STEPS"

say "7/8 eval on the held-out apron, per condition"
renderocc eval --store "$OUT/store-val" --ckpt "$OUT/run/last.pt" --out "$OUT/eval-day" --split scene-0001
renderocc eval --store "$OUT/store-val" --ckpt "$OUT/run/last.pt" --out "$OUT/eval-night-wet" --split scene-0002

say "8/8 viz"
renderocc viz --store "$OUT/store-val" --ckpt "$OUT/run/last.pt" --out "$OUT/viz" --samples 2

say "done in $(( $(date +%s) - t0 )) s; artefacts:"
echo "  synthetic aprons   $OUT/apron-train  $OUT/apron-val   (scene-0001 day, scene-0002 night + wet)"
echo "  ray stores         $OUT/store-train  $OUT/store-val   (with 2D masks and motion masks)"
echo "  QA report          $OUT/qa-train/qa.html   (depth labels by condition: $OUT/qa-train/qa.json depth_labels)"
echo "  checkpoint         $OUT/run/last.pt"
echo "  evaluation         $OUT/eval-day/metrics.md  $OUT/eval-night-wet/metrics.md"
echo "  figures            $OUT/viz/"
