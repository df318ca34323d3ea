"""How good are a DTS teacher's targets? A checkpoint scored as a teacher on a store with dense truth.

    python benchmarks/teacher_targets.py --store STORE --ckpt CKPT [--margins 2,4] [--confidences 0.5,0.8]

For every sample of the store (keyframes with LiDAR depth and Occ3D truth) the checkpoint runs twice:
as a Mean Teacher (its own lift) and as the depth-aware teacher (the LiDAR depth injected into the
lift, `dts.teacher_depth`). For each it prints the Occ3D scores of its prediction (mIoU and geometry
IoU inside mask_camera, at the checkpoint's threshold) and, for each (density margin, class
confidence), what `pseudo_targets` would hand the student: occupied targets per sample and the
share whose class is right, free targets per sample and the share truly free. DTS can only help
where the injected depth makes these targets better than the plain teacher's.
"""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

import numpy as np
import torch
from label_efficiency import code_version

from renderocc.eval.infer import classify, load_checkpoint_model, scoring_of, threshold_of
from renderocc.eval.metrics import OccMetrics
from renderocc.store.reader import StoreReader
from renderocc.train.dataset import RayDataset
from renderocc.train.dts import DEPTH_HINT, pseudo_targets
from renderocc.train.step import forward, to_device


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def score(reader, model, cfg, ckpt, hinted: bool, rules: list[tuple[float, float]]) -> dict:
    """Occ3D scores and per-rule target counts of the checkpoint as a teacher on every sample."""
    thr, scoring = threshold_of(ckpt), scoring_of(ckpt, reader.grid)
    n_cls = reader.vocabulary.num_semantic
    idx = list(range(len(reader)))
    ds = RayDataset(reader, cfg, idx, train=False, feature_stride=model.feature_stride, extra_needs=(DEPTH_HINT,))
    cpu = torch.device("cpu")
    occ = OccMetrics(n_cls + 1)
    counts = {rule: np.zeros(4) for rule in rules}
    for i in idx:
        batch = to_device(torch.utils.data.default_collate([ds[i]]), cpu)
        with torch.no_grad():
            out = forward(model, batch, cfg, cpu, batch[DEPTH_HINT] if hinted else None)
        density, logits = scoring.fields_to_labels(out.density[0].float(), out.semantics[0].float())
        pred = classify(density, logits, thr)
        gt = reader.occ_gt(i)
        occ.update(pred, gt["semantics"], gt["mask_camera"])
        truth = np.asarray(gt["semantics"])
        on_labels = SimpleNamespace(density=density[None], semantics=logits[None])
        for margin, confidence in rules:
            t = pseudo_targets(on_labels, thr, margin, confidence)[0].numpy()
            occupied, free = t < n_cls, t == n_cls
            counts[(margin, confidence)] += [occupied.sum(), (occupied & (t == truth)).sum(), free.sum(),
                                             (free & (truth == n_cls)).sum()]
    o = occ.compute()
    return {"miou": o["miou"], "geometry_iou": o["geometry_iou"], "threshold": thr, "samples": len(idx),
            "targets": counts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, help="a store with Occ3D truth (e.g. a synthetic held-out scene)")
    ap.add_argument("--ckpt", required=True, help="the teacher's weights (a run's last.pt: its EMA)")
    ap.add_argument("--margins", default="2,4", help="dts.density_margin values")
    ap.add_argument("--confidences", default="0.5,0.8", help="dts.confidence values")
    args = ap.parse_args()
    reader = StoreReader(args.store)
    model, ckpt = load_checkpoint_model(args.ckpt, "cpu", reader)
    model.eval()
    rules = [(m, c) for m in floats(args.margins) for c in floats(args.confidences)]
    print(f"teacher {args.ckpt} on {args.store} ({len(reader)} samples), commit {code_version()['commit']}")
    print("| teacher | mIoU % | geometry IoU % | margin | confidence | occupied targets/sample | class right % "
          "| free targets/sample | truly free % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for hinted in (False, True):
        s = score(reader, model, ckpt["config"], ckpt, hinted, rules)
        name = "LiDAR depth in the lift (DTS)" if hinted else "own lift (Mean Teacher)"
        for (margin, confidence), c in s["targets"].items():
            n = s["samples"]
            right, free = 100 * c[1] / max(c[0], 1), 100 * c[3] / max(c[2], 1)
            print(f"| {name} | {100 * s['miou']:.2f} | {100 * s['geometry_iou']:.2f} | {margin:g} | {confidence:g} "
                  f"| {c[0] / n:.0f} | {right:.1f} | {c[2] / n:.0f} | {free:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
