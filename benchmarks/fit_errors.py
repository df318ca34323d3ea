"""Where a fit's 3D errors lie, against the store's Occ3D truth inside mask_camera.

    renderocc fit --store STORE --out FIT --indices 0,3,6,9
    python benchmarks/fit_errors.py --store STORE --pred FIT

For the samples under FIT (OUT/<scene>/<token>/labels.npz and OUT/metrics.json, as `renderocc fit`
writes them; the fit's grid is brought to the store's by the scoring rule eval uses) it prints: how
far the false positives lie from the nearest truly occupied voxel (a blurred surface puts them at 1
voxel; floaters in open air far away); false positives and false negatives per height; false
negatives per class; and, where the file holds the fitted density, the density's quartiles in truly
occupied voxels per class against those in truly free ones (no threshold can separate classes whose
quartiles overlap the free ones').
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_cdt

from renderocc.geometry import Grid
from renderocc.store.reader import StoreReader

DISTANCES = (1, 2, 3, 6)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--pred", required=True, type=Path, help="folder of <scene>/<token>/labels.npz")
    args = ap.parse_args()
    reader = StoreReader(args.store)
    by_token = {reader.sample(i)["sample_token"]: i for i in range(len(reader))}
    files = sorted(args.pred.glob("*/*/labels.npz"))
    if not files:
        print(f"{args.pred}: no <scene>/<token>/labels.npz", file=sys.stderr)
        return 2
    metrics = args.pred / "metrics.json"
    if not metrics.is_file():
        print(f"{metrics}: missing (the fit's grid is recorded there)", file=sys.stderr)
        return 2
    scoring = Grid.from_record(json.loads(metrics.read_text())["grid"]).coarsens(reader.grid)
    names = reader.vocabulary.names
    free = len(names) - 1
    z_centres = reader.grid.axis_centres(2)
    fp_dist, fp_z, fn_z = [], np.zeros(len(z_centres), int), np.zeros(len(z_centres), int)
    fn_cls, tp_cls = np.zeros(free, int), np.zeros(free, int)
    dens_occ: dict[int, list[np.ndarray]] = {c: [] for c in range(free)}
    dens_free = []
    for f in files:
        i = by_token.get(f.parent.name)
        if i is None:
            print(f"{f}: token not in the store", file=sys.stderr)
            return 2
        z = np.load(f)
        gt = reader.occ_gt(i)
        sem, mask = np.asarray(gt["semantics"]), np.asarray(gt["mask_camera"], bool)
        pred = scoring.to_labels_numpy(np.asarray(z["semantics"]))
        p_occ, g_occ = pred != free, sem != free
        fp, fn, tp = p_occ & ~g_occ & mask, ~p_occ & g_occ & mask, p_occ & g_occ & mask
        fp_dist.append(distance_transform_cdt(~g_occ, metric="chessboard")[fp])
        fp_z += fp.sum((0, 1))
        fn_z += fn.sum((0, 1))
        fn_cls += np.bincount(sem[fn], minlength=free)[:free]
        tp_cls += np.bincount(sem[tp], minlength=free)[:free]
        if "density" in z.files:
            dens = scoring.to_labels_numpy(np.asarray(z["density"], np.float32))
            for c in range(free):
                dens_occ[c].append(dens[(sem == c) & mask])
            dens_free.append(dens[~g_occ & mask])
    d = np.concatenate(fp_dist)
    n_fp, n_fn, n_tp = len(d), int(fn_z.sum()), int(tp_cls.sum())
    iou = 100 * n_tp / max(1, n_tp + n_fp + n_fn)
    print(f"{len(files)} samples: TP {n_tp}, FP {n_fp}, FN {n_fn}, geometry IoU {iou:.1f} %")
    print("false positives within k voxels (chessboard) of a truly occupied voxel: "
          + ", ".join(f"{k}: {100 * (d <= k).mean():.1f} %" for k in DISTANCES))
    print("| voxel centre z (m) | FP | FN |\n|---:|---:|---:|")
    for k, zc in enumerate(z_centres):
        if fp_z[k] or fn_z[k]:
            print(f"| {zc:.1f} | {fp_z[k]} | {fn_z[k]} |")
    print("| class | TP | FN | density quartiles (truly occupied) |\n|---|---:|---:|---|")
    for c in range(free):
        if tp_cls[c] + fn_cls[c] == 0:
            continue
        vals = np.concatenate(dens_occ[c]) if dens_occ[c] else np.zeros(0)
        q = ", ".join(f"{v:.2f}" for v in np.quantile(vals, [0.25, 0.5, 0.75])) if len(vals) else "–"
        print(f"| {names[c]} | {tp_cls[c]} | {fn_cls[c]} | {q} |")
    if dens_free:
        q = np.quantile(np.concatenate(dens_free), [0.5, 0.75, 0.9, 0.99])
        print("density in truly free voxels: median {:.2f}, 75 % {:.2f}, 90 % {:.2f}, 99 % {:.2f}".format(*q))
    return 0


if __name__ == "__main__":
    sys.exit(main())
