"""Input checks at prep: a record or file a reader would silently mis-use is named before any
store is written (a zero quaternion, NaN pose, zero focal length, truncated JPEG, empty cloud or an
out-of-vocabulary lidarseg index would otherwise produce a store that looks complete).

Metadata checks run while tasks are built (`pose_matrix`); file checks (`sample_problem`) read only
what they need (file sizes, the JPEG's last bytes, the lidarseg bytes), so a trainval plan stays
cheap. `prep nuscenes --on-bad-sample skip` leaves such samples out and lists them in the manifest.
"""

from __future__ import annotations

import os

import numpy as np
from pyquaternion import Quaternion

from renderocc.errors import UserError

QUATERNION_TOLERANCE = 1e-3    # | |q| - 1 | allowed (the devkit's tables are normalised to ~1e-7)
POINT_BYTES = 20               # float32 x, y, z, intensity, ring
JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
PNG_MAGIC, PNG_IEND = b"\x89PNG", b"IEND\xaeB`\x82"


class BadSample(UserError):
    """A sample whose records or files cannot give correct labels (skippable with --on-bad-sample skip)."""

    def __init__(self, what: str, problem: str):
        self.what, self.problem = what, problem
        super().__init__(f"{what}: {problem}")


def pose_matrix(record: dict, what: str) -> np.ndarray:
    """4×4 from a devkit rotation [w, x, y, z] + translation record, after checking it:
    finite numbers and a unit quaternion within `QUATERNION_TOLERANCE`."""
    rot, trans = record.get("rotation"), record.get("translation")
    try:
        q = np.asarray(rot, dtype=np.float64).reshape(4)
        t = np.asarray(trans, dtype=np.float64).reshape(3)
    except (TypeError, ValueError):
        raise BadSample(what, f"rotation/translation are not 4 and 3 numbers ({rot!r}, {trans!r})") from None
    if not (np.isfinite(q).all() and np.isfinite(t).all()):
        raise BadSample(what, f"non-finite pose (rotation {q.tolist()}, translation {t.tolist()})")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1) > QUATERNION_TOLERANCE:
        raise BadSample(what, f"rotation {q.tolist()} is not a unit quaternion (|q| = {norm:.6g})")
    T = np.eye(4)
    T[:3, :3] = Quaternion(q / norm).rotation_matrix
    T[:3, 3] = t
    return T


def intrinsics_problem(K: np.ndarray, size: tuple[int, int]) -> str | None:
    """Finite 3×3 K with positive focal lengths and the principal point inside the (W, H) image."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        return f"camera_intrinsic is not a finite 3x3 matrix ({K.tolist()})"
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if fx <= 0 or fy <= 0:
        return f"focal lengths must be positive (fx {fx:g}, fy {fy:g})"
    W, H = size
    if not (0 < cx < W and 0 < cy < H):
        return f"principal point ({cx:g}, {cy:g}) outside the {W}x{H} image"
    return None


def image_file_problem(path: str) -> str | None:
    """Missing, empty or truncated image: a truncated JPEG decodes with only a libjpeg warning and
    grey pixels, so its end-of-image marker is required (PNG: the IEND chunk)."""
    if not os.path.isfile(path):
        return f"image missing: {path}"
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(0, size - 64))
        tail = f.read()
    if head.startswith(JPEG_SOI):
        # the EOI marker ends the file (some writers pad a few bytes after it)
        if JPEG_EOI not in tail.rstrip(b"\x00"):
            return f"truncated JPEG (no end-of-image marker): {path}"
    elif head.startswith(PNG_MAGIC):
        if not tail.endswith(PNG_IEND):
            return f"truncated PNG (no IEND chunk): {path}"
    elif size == 0:
        return f"empty image file: {path}"
    return None


def cloud_problem(path: str) -> str | None:
    """Missing, empty or mis-sized .pcd.bin (float32 × 5 per point)."""
    if not os.path.isfile(path):
        return f"LiDAR file missing: {path}"
    size = os.path.getsize(path)
    if size == 0:
        return f"empty point cloud: {path}"
    if size % POINT_BYTES:
        return f"corrupt point cloud (size {size} is not a multiple of {POINT_BYTES} bytes): {path}"
    return None


def points_problem(points: np.ndarray, path: str) -> str | None:
    """A point with a non-finite coordinate: refused (dropping it would shift the lidarseg labels,
    one per point in file order, and the firing order the free beams read)."""
    bad = ~np.isfinite(points[:, :3]).all(1)
    if bad.any():
        return f"{path}: {int(bad.sum())} of {len(points)} LiDAR points have non-finite coordinates"
    return None


def lidarseg_problem(path: str, cloud_path: str, valid: np.ndarray) -> str | None:
    """One uint8 per point, each an `index` of category.json (`valid`: bool (256,))."""
    if not os.path.isfile(path):
        return f"lidarseg file missing: {path}"
    n_points = os.path.getsize(cloud_path) // POINT_BYTES
    return lidarseg_values_problem(np.fromfile(path, dtype=np.uint8), n_points, valid, path)


def lidarseg_values_problem(lab: np.ndarray, n_points: int, valid: np.ndarray | None, path: str) -> str | None:
    if len(lab) != n_points:
        return f"lidarseg {path} has {len(lab)} labels for {n_points} points"
    bad = np.unique(lab[~valid[lab]]) if valid is not None else []
    if len(bad):
        return f"lidarseg {path} holds indices {bad[:5].tolist()} that category.json does not define"
    return None


def valid_lidarseg_indices(categories: list[dict]) -> np.ndarray:
    """bool (256,): which lidarseg indices the dataset's category.json defines."""
    valid = np.zeros(256, bool)
    for c in categories:
        if "index" in c and 0 <= int(c["index"]) < 256:
            valid[int(c["index"])] = True
    return valid


def sample_problem(task, valid_lidarseg: np.ndarray | None, read_files: bool = False) -> str | None:
    """The first problem of a sample's cameras and files (None when it is fine). Reads the key
    cloud and lidarseg files only when `read_files` (--on-bad-sample skip; a trainval plan would read
    ~1 GB: by default the workers check what they load anyway)."""
    for c in task.cameras:
        if (p := intrinsics_problem(c.K, c.size)) is not None:
            return f"camera {c.name} ({c.token}): {p}"
        if (p := image_file_problem(c.path)) is not None:
            return p
    for k, f in enumerate(task.frames):   # a missing sweep file is named by prep's --sweeps check
        if (k == 0 or os.path.isfile(f.path)) and (p := cloud_problem(f.path)) is not None:
            return p
    key = task.frames[0]
    if read_files and (p := points_problem(np.fromfile(key.path, np.float32).reshape(-1, 5), key.path)):
        return p
    if key.lidarseg_path and valid_lidarseg is not None and read_files:
        return lidarseg_problem(key.lidarseg_path, key.path, valid_lidarseg)
    return None
