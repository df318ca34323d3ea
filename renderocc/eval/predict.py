"""`renderocc predict`: Occ3D-format occupancy per sample, plus what a planner needs beyond it.

`labels.npz` keeps Occ3D's layout (`semantics` uint8 [x, y, z], free = 17) at the model's grid,
and adds `density`, `occupancy_prob` and `visibility`: free space the cameras actually saw
is not the same as space behind a wall, and only the visibility mask tells them apart.
"""

from __future__ import annotations

import json

import numpy as np
from tqdm import tqdm

from renderocc.eval import infer
from renderocc.eval.common import clean_json, open_store
from renderocc.eval.evaluate import describe_supervision, select_samples
from renderocc.eval.tta import TTA_TEXT
from renderocc.geometry import Scoring
from renderocc.outputs import prepare_out_dir, sample_dirs, savez_atomic, write_atomic

KEYS = {
    "semantics": "uint8 [x, y, z] Occ3D class (0-16), 17 = free: argmax class where density > threshold",
    "density": "float16 predicted volume density σ (1/m)",
    "occupancy_prob": "float16 1 - exp(-σ · voxel edge): opacity of one voxel crossing, in [0, 1]",
    "visibility": "uint8 1 where some camera pixel ray's rendering weighs the voxel by >= min_transmittance "
                  "(transmittance before a sample × its trilinear weight, through the predicted density, at "
                  "the checkpoint's render step); 0 = unseen (not free)",
}


def predict_sample(model, reader, i: int, ckpt: dict, vis_stride: int, min_transmittance: float,
                   tta: str = "none", on_labels: Scoring | None = None) -> dict[str, np.ndarray]:
    """The arrays of one sample's labels.npz, on the model's grid, or on the store's label grid
    when `on_labels` says how the two meet."""
    cfg = ckpt["config"]
    grid = infer.model_grid(ckpt, reader.grid)
    density, logits = infer.run_model(model, reader, i, cfg, tta=tta)
    s = reader.sample(i)
    rays = [infer.image_rays(reader, s, cam, vis_stride) for cam in reader.cameras]
    o = np.concatenate([r[0] for r in rays])
    d = np.concatenate([r[1] for r in rays])
    step = cfg.render.step
    vis = infer.visibility(density, o, d, grid, step, min_transmittance)
    thr = infer.threshold_of(ckpt)
    if on_labels is not None:
        density, logits = on_labels.fields_to_labels(density, logits)
        vis = on_labels.to_labels_numpy(vis)
    sem = infer.classify(density, logits, thr)
    dens = density.cpu().numpy()
    return {
        "semantics": sem,
        "density": dens.astype(np.float16),
        "occupancy_prob": (1 - np.exp(-dens * grid.edge)).astype(np.float16),  # over one model voxel
        "visibility": vis.astype(np.uint8),
    }


def run(store: str, ckpt_path: str, out: str, split: tuple[str, ...], vis_stride: int,
        min_transmittance: float, progress: bool, device: str | None = "cpu",
        store_grid: bool = False, tta: str = "none") -> dict:
    """Write OUT/<scene>/<token>/labels.npz for the selected samples and OUT/predict.json."""
    root = prepare_out_dir(out)
    reader = open_store(store)
    model, ckpt = infer.load_checkpoint_model(ckpt_path, device, reader)  # a bad checkpoint: its line first
    indices, label = select_samples(reader, split or ("val",))
    on_labels = infer.scoring_of(ckpt, reader.grid) if store_grid else None  # Occ3D tools expect 200×200×16
    dirs = sample_dirs(reader, indices, root)  # names from the data checked before any work
    seen_share = []
    for i in tqdm(indices, desc="predict", unit="sample", disable=not progress):
        arrays = predict_sample(model, reader, i, ckpt, vis_stride, min_transmittance, tta, on_labels)
        d = dirs[i]
        d.mkdir(parents=True, exist_ok=True)
        savez_atomic(d / "labels.npz", **arrays)
        seen_share.append(float(arrays["visibility"].mean()))
    info = {
        "checkpoint": str(ckpt_path), "supervision": describe_supervision(ckpt),
        "threshold": infer.threshold_of(ckpt), "tta": TTA_TEXT[tta],
        "grid": (reader.grid if store_grid else infer.model_grid(ckpt, reader.grid)).to_record(),
        "model_grid": infer.model_grid(ckpt, reader.grid).to_record(),
        "store": str(store), "split": label, "samples": len(indices),
        "classes": list(ckpt["classes"]),  # semantics: index = class, free last
        "layout": "<scene_name>/<sample_token>/labels.npz (Occ3D gts/ layout)", "keys": KEYS,
        "visibility": {"pixel_stride": vis_stride, "min_transmittance": min_transmittance,
                       "render_step": ckpt["config"].render.step,
                       "rule": "ray_visibility >= min_transmittance (transmittance before a sample × "
                               "its trilinear weight on the voxel, max over samples)",
                       "mean_visible_share": float(np.mean(seen_share)) if seen_share else None},
    }
    write_atomic(root / "predict.json", json.dumps(clean_json(info), indent=1))   # last: the set is complete
    return info
