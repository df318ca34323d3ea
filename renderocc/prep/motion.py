"""Which annotated boxes move, and which labels and pixels they cover.

Auxiliary rays from adjacent keyframes are only right for static geometry: a car that moved
since that frame would supervise empty space as occupied. We decide motion per box from its
instance track (speed) and fall back on the motion attributes only when no velocity exists,
instead of the reference code's fixed class list.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pyquaternion import Quaternion

MOVING_ATTRIBUTES = frozenset({"vehicle.moving", "pedestrian.moving", "cycle.with_rider"})
MAX_TIME_DIFF = 1.5  # seconds, as the devkit's box_velocity
CORE_FLOOR = 0.01  # metres above a box's floor where points inside its footprint start to count
RING_FLOOR = 0.1  # the same for points in the margin ring around the footprint


@dataclass(frozen=True)
class MovingBox:
    """A box that moves at its sample's time, in the global frame."""

    instance_index: int
    category: str
    center: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3) box -> global
    size_lwh: np.ndarray  # (3,) length (box x), width (box y), height (box z)
    velocity: np.ndarray  # (3,) m/s, zeros when unknown
    speed: float  # NaN when unknown


def track_velocity(nusc, ann: dict) -> np.ndarray:
    """Velocity (3,) of an annotation from its track: centred difference, one-sided at the ends.

    NaN when the box is isolated or the gap between the used boxes exceeds 1.5 s, like the
    devkit's `box_velocity`.
    """
    has_prev, has_next = bool(ann["prev"]), bool(ann["next"])
    if not has_prev and not has_next:
        return np.full(3, np.nan)
    first = nusc.get("sample_annotation", ann["prev"]) if has_prev else ann
    last = nusc.get("sample_annotation", ann["next"]) if has_next else ann
    t0 = nusc.get("sample", first["sample_token"])["timestamp"] * 1e-6
    t1 = nusc.get("sample", last["sample_token"])["timestamp"] * 1e-6
    dt = t1 - t0
    limit = MAX_TIME_DIFF * (2.0 if has_prev and has_next else 1.0)
    if dt <= 0 or dt > limit:
        return np.full(3, np.nan)
    return (np.asarray(last["translation"]) - np.asarray(first["translation"])) / dt


def is_moving(speed: float, attributes: set[str], speed_threshold: float) -> bool:
    """Speed decides; attributes only when the track gives no usable velocity."""
    if np.isfinite(speed):
        return speed > speed_threshold
    return bool(attributes & MOVING_ATTRIBUTES)


def moving_boxes(nusc, sample_token: str, instance_index: dict[str, int],
                 speed_threshold: float, static_categories: frozenset[str] = frozenset()
                 ) -> tuple[list[MovingBox], int]:
    """Moving boxes of one sample and the number of annotated boxes it has; boxes of
    `static_categories` (classes the vocabulary says cannot move) never count as moving."""
    sample = nusc.get("sample", sample_token)
    boxes = []
    for ann_token in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        box = _moving(nusc, ann, ann["translation"], Quaternion(ann["rotation"]).rotation_matrix, instance_index,
                      speed_threshold, static_categories)
        if box is not None:
            boxes.append(box)
    return boxes, len(sample["anns"])


def moving_boxes_at(nusc, sample_data_token: str, instance_index: dict[str, int], speed_threshold: float,
                    static_categories: frozenset[str] = frozenset()) -> tuple[list[MovingBox], int]:
    """Moving boxes at a sample_data's time (a sweep: annotations exist at keyframes only): the devkit's
    `get_boxes`, which interpolates each instance's box between the keyframes around it (centre
    linearly, rotation by slerp; an instance only in the later keyframe keeps that box), moving or not
    as that later annotation's track says. Returns them and the number of boxes."""
    boxes = []
    devkit_boxes = nusc.get_boxes(sample_data_token)
    for b in devkit_boxes:
        ann = nusc.get("sample_annotation", b.token)
        box = _moving(nusc, ann, b.center, b.rotation_matrix, instance_index, speed_threshold, static_categories)
        if box is not None:
            boxes.append(box)
    return boxes, len(devkit_boxes)


def _moving(nusc, ann: dict, center, rotation: np.ndarray, instance_index: dict[str, int], speed_threshold: float,
            static_categories: frozenset[str]) -> MovingBox | None:
    """Annotation `ann` placed at (center, rotation) as a `MovingBox`, or None when it does not move."""
    if ann["category_name"] in static_categories:
        return None
    velocity = track_velocity(nusc, ann)
    speed = float(np.linalg.norm(velocity[:2])) if np.all(np.isfinite(velocity)) else float("nan")
    attributes = {nusc.get("attribute", a)["name"] for a in ann["attribute_tokens"]}
    if not is_moving(speed, attributes, speed_threshold):
        return None
    w, length, h = ann["size"]
    return MovingBox(
        instance_index=instance_index[ann["instance_token"]],
        category=ann["category_name"],
        center=np.asarray(center, dtype=np.float64),
        rotation=np.asarray(rotation, dtype=np.float64),
        size_lwh=np.array([length, w, h], dtype=np.float64),
        velocity=np.nan_to_num(velocity) if np.isfinite(speed) else np.zeros(3),
        speed=speed,
    )


def points_in_boxes(points_global: np.ndarray, boxes: list[MovingBox], margin: float,
                    core_floor: float = CORE_FLOOR, ring_floor: float = RING_FLOOR) -> np.ndarray:
    """Instance index (int32) of the moving box each point lies in; -1 if none.

    Boxes grow by `margin` sideways and upwards but not downwards: boxes stand on the road, and
    the road under and beside a moving car is static. Inside the footprint a point counts from
    `core_floor` above the box floor (wheels, feet), in the margin ring from `ring_floor`.
    """
    result = np.full(len(points_global), -1, dtype=np.int32)
    for box in boxes:
        local = (points_global - box.center) @ box.rotation
        half = box.size_lwh / 2.0
        flat = np.abs(local[:, :2])
        height = local[:, 2] + half[2]  # above the box floor
        core = np.all(flat <= half[:2], axis=1) & (height >= core_floor)
        ring = np.all(flat <= half[:2] + margin, axis=1) & (height >= ring_floor)
        inside = (core | ring) & (local[:, 2] <= half[2] + margin) & (result < 0)
        result[inside] = box.instance_index
    return result


def _box_surface_points(box: MovingBox, margin: float, per_edge: int = 9) -> np.ndarray:
    """Points on the six faces of the enlarged box (global frame), dense enough to clip cleanly."""
    g = np.linspace(-1.0, 1.0, per_edge)
    a, b = np.meshgrid(g, g, indexing="ij")
    a, b = a.ravel(), b.ravel()
    faces = []
    for axis in range(3):
        others = [i for i in range(3) if i != axis]
        for sign in (-1.0, 1.0):
            p = np.empty((len(a), 3))
            p[:, axis] = sign
            p[:, others[0]] = a
            p[:, others[1]] = b
            faces.append(p)
    unit = np.concatenate(faces)
    return box.center + (unit * (box.size_lwh / 2.0 + margin)) @ box.rotation.T


def box_mask(boxes: list[MovingBox], global_to_cam: np.ndarray, K: np.ndarray, size_wh: tuple[int, int],
             margin: float, dt: float = 0.0, near: float = 0.1) -> np.ndarray:
    """Dense mask (H, W) bool of the moving boxes seen by one camera.

    Each box is moved by its velocity over `dt` (camera time minus annotation time), its surface
    is clipped at the near plane, projected with K, and its convex hull is filled.
    """
    w, h = size_wh
    mask = np.zeros((h, w), dtype=np.uint8)
    for box in boxes:
        pts = _box_surface_points(box, margin) + box.velocity * dt
        cam = pts @ global_to_cam[:3, :3].T + global_to_cam[:3, 3]
        cam = cam[cam[:, 2] > near]
        if len(cam) < 3:
            continue
        uv = cam @ K.T
        uv = uv[:, :2] / uv[:, 2:3]
        uv = np.clip(uv, -4.0 * w, 5.0 * w)
        hull = cv2.convexHull(np.round(uv).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)
