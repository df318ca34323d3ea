"""Which threshold rule a 2D-trained model should use: the 2D depth agreement it was given, or the
3D IoU against its held-out samples' label voxels (still 2D labels only), on finished runs.

    python benchmarks/label_efficiency.py --work WORK --variants 2d,3d ...
    python benchmarks/threshold_rules.py --work WORK --variant 2d

For every WORK/world-*/runs/<variant>-s*/last.pt: the threshold its run chose (the checkpoint's), and
the one that maximises occupied/free IoU against `targets.label_voxel_target` of the same held-out
training samples (key and auxiliary rays, on the model grid); each scored like `renderocc eval` on
the world's held-out store. Only the threshold differs, so this is what a run with the other rule
would report. Prints per world and overall, mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from renderocc.eval.evaluate import evaluate
from renderocc.eval.infer import load_checkpoint_model, run_model
from renderocc.store.reader import StoreReader
from renderocc.train.threshold import LABEL_VOXEL_METRIC, LabelVoxels, candidate_counts, pick_threshold

KEYS = ("miou", "geometry_iou")


def label_voxel_threshold(model, ckpt: dict, reader: StoreReader) -> dict:
    """τ maximising 3D IoU against the label voxels of the samples the run chose its threshold on."""
    cfg = ckpt["config"]
    samples = ckpt["threshold_info"]["samples"]
    voxels = LabelVoxels(reader, cfg, samples)  # training's rule: the same targets
    num = den = 0
    for i in samples:
        with torch.no_grad():
            density, _ = run_model(model, reader, i, cfg)
        n, d = candidate_counts(density, cfg, occ_target=voxels.target(i), free=reader.vocabulary.free)
        num, den = num + n, den + d
    return pick_threshold(num, den, False, samples, "held-out training samples", LABEL_VOXEL_METRIC)


def score(reader: StoreReader, model, ckpt: dict, threshold: float) -> dict:
    m = evaluate(reader, model, {**ckpt, "threshold": threshold}, list(range(len(reader))), progress=False,
                 rayiou=False)
    return {"miou": m["miou"], "geometry_iou": m["geometry_iou"],
            "floaters": m["floaters_above_2m"]["per_sample_mask_camera"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--variant", default="2d")
    args = ap.parse_args()
    runs = sorted(args.work.glob(f"world-*/runs/{args.variant}-s*/last.pt"))
    if not runs:
        print(f"{args.work}: no world-*/runs/{args.variant}-s*/last.pt", file=sys.stderr)
        return 2
    rows = []
    for ckpt_path in runs:
        world = ckpt_path.parents[2].name
        train = StoreReader(str(ckpt_path.parents[2] / "store-train"))
        val = StoreReader(str(ckpt_path.parents[2] / "store-val"))
        model, ckpt = load_checkpoint_model(str(ckpt_path), "cpu", train)
        new = label_voxel_threshold(model, ckpt, train)
        row = {"world": world, "run": ckpt_path.parent.name, "tau_2d": ckpt["threshold"],
               "tau_voxels": new["threshold"], "2d_rule": score(val, model, ckpt, ckpt["threshold"]),
               "voxel_rule": score(val, model, ckpt, new["threshold"])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| world | rule | τ | mIoU % | geometry IoU % | floaters > 2 m per sample |\n|---|---|---:|---:|---:|---:|")
    for world in sorted({r["world"] for r in rows}) + ["overall"]:
        sel = [r for r in rows if world in ("overall", r["world"])]
        for rule, tau in (("2d_rule", "tau_2d"), ("voxel_rule", "tau_voxels")):
            def pm(key: str, f: float = 100.0, sel=sel, rule=rule) -> str:
                v = np.array([r[rule][key] for r in sel], float) * f
                return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f}"
            taus = ", ".join(f"{r[tau]:.2f}" for r in sel)
            print(f"| {world} | {rule.replace('_', ' ')} | {taus} | {pm('miou')} | {pm('geometry_iou')} | "
                  f"{pm('floaters', 1.0)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
