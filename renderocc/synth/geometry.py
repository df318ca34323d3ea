"""Small rigid-transform helpers: the world is planar-yaw, so poses are (x, y, z, yaw)."""

from __future__ import annotations

import numpy as np


def yaw_quat(yaw: float) -> list[float]:
    """[w, x, y, z] quaternion of a rotation by `yaw` about +z (nuScenes convention)."""
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def rot_z(yaw: float) -> np.ndarray:
    """3x3 rotation about +z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pose_matrix(rotation: np.ndarray, translation) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation and a translation."""
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = translation
    return m


def yaw_pose(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    """4x4 transform of a planar pose."""
    return pose_matrix(rot_z(yaw), [x, y, z])


def matrix_to_quat(r: np.ndarray) -> list[float]:
    """[w, x, y, z] of a proper rotation matrix (w >= 0)."""
    from pyquaternion import Quaternion

    q = Quaternion(matrix=r, atol=1e-6)
    if q.w < 0:
        q = -q
    return [float(v) for v in q.elements]


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, 3) points."""
    return pts @ m[:3, :3].T + m[:3, 3]
