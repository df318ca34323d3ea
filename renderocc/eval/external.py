"""Scoring any model's Occ3D-format predictions: finding the files, ground truth and poses.

Predictions: `DIR/<sample_token>.npz` (key `semantics`, or `pred`, or a single unnamed array as
`np.savez` writes it) or Occ3D's `DIR/<scene>/<sample_token>/labels.npz`, each an integer
(X, Y, Z) grid of Occ3D classes 0..17 indexed [x, y, z] on the GT's grid. Ground truth: a ray
store, or an Occ3D `gts/` directory (`<scene>/<token>/labels.npz` with `semantics`,
`mask_lidar`, `mask_camera`). Poses for RayIoU: the store, or a nuScenes dataroot (devkit).
Files are read with `allow_pickle=False`: a prediction directory is untrusted input.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from renderocc.classes import FREE
from renderocc.errors import UserError
from renderocc.eval.rayiou import scene_origins
from renderocc.geometry import OCC3D_GRID
from renderocc.prep.nuscenes import scene_samples
from renderocc.safe_load import open_npz

PRED_KEYS = ("semantics", "pred", "arr_0")


def find_predictions(root: str | Path) -> dict[str, Path]:
    """{sample_token: file} for both layouts under `root` (a token found twice is an error)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--pred: prediction directory not found: {root}")
    found: dict[str, Path] = {}
    for p in [*root.glob("*.npz"), *root.glob("*/*/labels.npz")]:
        if p.name.startswith("."):  # a writer's temporary file, not a prediction
            continue
        token = p.stem if p.parent == root else p.parent.name
        if token in found:
            raise UserError(f"--pred: sample {token} has two predictions: {found[token]} and {p}")
        found[token] = p
    if not found:
        raise UserError(f"--pred: no predictions in {root} (expected <token>.npz or "
                        "<scene>/<token>/labels.npz)")
    return found


MAX_GRID_BYTES = OCC3D_GRID.num_voxels * 8  # a class grid of the Occ3D size, even as int64


def load_prediction(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 class grid in `path`; a wrong key, shape, dtype or class is one UserError line."""
    with open_npz(path, "prediction", math.prod(shape) * 8) as z:
        keys = list(z.files)
        key = next((k for k in PRED_KEYS if k in keys), None)
        if key is None:
            raise UserError(f"prediction {path}: no `semantics` or `pred` array (keys: {', '.join(keys)})")
        try:
            arr = z[key]
        except ValueError as e:  # object arrays need pickle: refused
            raise UserError(f"prediction {path}: {key} is not a plain numeric array ({e})") from None
    if arr.shape != tuple(shape):
        raise UserError(f"prediction {path}: {key} has shape {arr.shape}, expected {tuple(shape)} "
                        "(the GT grid, indexed [x, y, z]; `renderocc predict --store-grid` writes it)")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise UserError(f"prediction {path}: {key} has dtype {arr.dtype}, expected integer classes 0..{FREE}")
    if arr.size and (arr.min() < 0 or arr.max() > FREE):
        raise UserError(f"prediction {path}: {key} holds class {int(arr.max() if arr.max() > FREE else arr.min())}"
                        f", outside 0..{FREE}")
    return arr.astype(np.uint8)


class GtDir:
    """An Occ3D `gts/` directory: samples, scenes and GT arrays, sorted by scene then token."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"--gt: directory not found: {self.root}")
        files = sorted(self.root.glob("*/*/labels.npz"))
        if not files:
            raise UserError(f"--gt: no <scene>/<token>/labels.npz under {self.root}")
        self.tokens = [f.parent.name for f in files]
        self.scenes = [f.parent.parent.name for f in files]
        self._files = dict(zip(self.tokens, files, strict=True))

    def occ_gt(self, token: str) -> dict[str, np.ndarray]:
        path = self._files[token]
        with open_npz(path, "GT", MAX_GRID_BYTES) as z:
            missing = [k for k in ("semantics", "mask_camera") if k not in z.files]
            if missing:
                raise UserError(f"GT {path}: no `{missing[0]}` array")
            return {k: z[k] for k in ("semantics", "mask_lidar", "mask_camera") if k in z.files}


def scene_poses_from_store(reader) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """{scene: (tokens, ego_poses (N,4,4), lidar2ego (N,4,4))} of every store keyframe, in time order."""
    by_scene: dict[str, list[int]] = {}
    for i, name in enumerate(reader.scene_names()):
        by_scene.setdefault(name, []).append(i)
    out = {}
    for scene, idx in by_scene.items():
        samples = sorted((reader.sample(i) for i in idx), key=lambda s: s["timestamp"])
        out[scene] = ([s["sample_token"] for s in samples], np.stack([s["ego_pose"] for s in samples]),
                      np.stack([s["lidar2ego"] for s in samples]))
    return out


def scene_poses_from_dataroot(dataroot: str) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """The same as `scene_poses_from_store`, from a nuScenes dataroot through the devkit."""
    from nuscenes.nuscenes import NuScenes
    from pyquaternion import Quaternion

    root = Path(dataroot)
    versions = sorted(p.name for p in root.glob("v1.0-*") if (p / "scene.json").is_file())
    if not versions:
        raise UserError(f"--dataroot {dataroot}: no v1.0-*/scene.json (not a nuScenes dataroot)")
    try:
        nusc = NuScenes(version=versions[0], dataroot=str(root), verbose=False)
    except Exception as e:  # noqa: BLE001 - any devkit failure is a bad dataroot for the user
        raise UserError(f"--dataroot {dataroot}: the nuScenes devkit cannot load it ({e})".splitlines()[0]) from None

    def mat(rec: dict) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = Quaternion(rec["rotation"]).rotation_matrix
        m[:3, 3] = rec["translation"]
        return m

    out = {}
    for scene in nusc.scene:
        tokens, ego, l2e = [], [], []
        for sample in scene_samples(nusc, scene):  # links checked: a cycle is an error, not a hang
            sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            tokens.append(sample["token"])
            ego.append(mat(nusc.get("ego_pose", sd["ego_pose_token"])))
            l2e.append(mat(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])))
        out[scene["name"]] = (tokens, np.stack(ego), np.stack(l2e))
    return out


def origins_by_token(poses: dict[str, tuple[list[str], np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """{sample_token: RayIoU origins (T, 3)} for every keyframe of every scene."""
    out = {}
    for tokens, ego, l2e in poses.values():
        for k, tok in enumerate(tokens):
            out[tok] = scene_origins(ego, l2e, k)
    return out
