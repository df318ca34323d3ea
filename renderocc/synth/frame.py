"""Sense one keyframe of a scene: LiDAR keyframe + preceding sweeps, six cameras, Occ3D truth.

A frame job is self-contained (world, times, tokens, paths) so frames can run in worker
processes; it writes its files and returns the small metadata the tables need.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from renderocc.synth import camera as cam
from renderocc.synth import lidar as lid
from renderocc.synth import occ_gt
from renderocc.synth.geometry import apply
from renderocc.synth.tables import visibility_token
from renderocc.synth.world import World

ANNOTATION_RANGE = 50.0  # metres from the ego; objects beyond are not annotated


@dataclass
class FrameJob:
    """Everything needed to produce keyframe `index` of a scene."""

    root: str
    seed: int
    scene: int
    index: int
    world: World
    t0_us: int
    key: dict  # {"token", "timestamp", "filename", "lidarseg"}
    sweeps: list[dict]  # [{"token", "timestamp", "filename"}] before the keyframe, in time order
    cams: dict[str, dict]  # name -> {"token", "timestamp", "filename"}
    image_size: tuple[int, int]
    gt_path: str
    instance_offset: int = 0  # index of this scene's first object in synth_truth/instances.json
    camera_truth: bool = False  # also write per-pixel depth/label/instance of every image


def _sec(job: FrameJob, ts: int) -> float:
    return (ts - job.t0_us) * 1e-6


def _global_pose(world: World, t: float) -> dict:
    m = world.to_global() @ world.ego_pose(t)
    return {"x": float(m[0, 3]), "y": float(m[1, 3]), "yaw": float(np.arctan2(m[1, 0], m[0, 0]))}


def _write_scan(job: FrameJob, rec: dict, s: lid.Scan, with_labels: bool) -> None:
    s.points.tofile(os.path.join(job.root, rec["filename"]))
    instance = np.where(s.instance >= 0, s.instance + job.instance_offset, -1).astype(np.int32)
    np.savez_compressed(os.path.join(job.root, "synth_truth", "points", rec["token"] + ".npz"),
                        moving=s.moving, instance=instance)
    if with_labels:
        s.label.tofile(os.path.join(job.root, rec["lidarseg"]))


def _write_camera_truth(job: FrameJob, token: str, hits, prims, local_to_cam: np.ndarray) -> None:
    """Per-pixel truth of one image: camera z depth (0 = sky), lidarseg label (255 = sky), instance."""
    pid = hits.pid
    label = np.full(pid.shape, 255, np.uint8)
    k = np.full(pid.shape, -1, np.int32)
    obj = pid >= 0
    label[obj] = prims.label[pid[obj]]
    k[obj] = prims.obj[pid[obj]]
    instance = np.where(k >= 0, k + job.instance_offset, -1).astype(np.int32)
    g = pid == -1
    label[g] = job.world.ground(hits.points[g][:, 0], hits.points[g][:, 1])[0]
    depth = np.where(pid >= -1, hits.t * (hits.dirs @ local_to_cam[2, :3].astype(np.float32)), 0.0)
    np.savez_compressed(os.path.join(job.root, "synth_truth", "cameras", token + ".npz"),
                        depth=depth.astype(np.float32), label=label, instance=instance)


def _cameras(job: FrameJob, rng: np.random.Generator, key_ego: np.ndarray, out: dict):
    """Render and write the six images; return (mask_camera, visible px, unoccluded px per object)."""
    w = job.world
    centres = occ_gt.voxel_centres()
    mask_cam = np.zeros(occ_gt.SHAPE, bool)
    n_obj = len(w.instances)
    seen, visible = np.zeros(n_obj), np.zeros(n_obj)
    for spec in cam.RIG:
        rec = job.cams[spec.name]
        t = _sec(job, rec["timestamp"])
        k = cam.intrinsic(spec, job.image_size)
        img, hits = cam.render(w, spec, cam.pinhole_grid(spec.name, job.image_size), t, rng)
        cv2.imwrite(os.path.join(job.root, rec["filename"]), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        out["poses"][rec["token"]] = _global_pose(w, t)
        cam_to_local = w.ego_pose(t) @ cam.cam_to_ego(spec)
        key_to_cam = np.linalg.inv(cam_to_local) @ key_ego
        half_fov = float(np.arctan2(max(k[0, 2], job.image_size[0] - k[0, 2]), k[0, 0]))
        cand = occ_gt.sector(tuple(spec.translation[:2]), float(np.deg2rad(spec.yaw_deg)), half_fov)
        mask_cam |= occ_gt.camera_mask(centres, key_to_cam, k, hits.t, cand)
        prims = w.prims_at(t)
        if job.camera_truth:
            _write_camera_truth(job, rec["token"], hits, prims, np.linalg.inv(cam_to_local))
        obj = prims.obj[hits.pid[hits.pid >= 0]]
        visible += np.bincount(obj[obj >= 0], minlength=n_obj)[:n_obj]
        seen[: len(hits.seen)] += hits.seen
    return mask_cam, visible, seen


def _annotated(job: FrameJob, t: float, key_ego: np.ndarray, n_pts: np.ndarray, visible: np.ndarray,
               seen: np.ndarray) -> list[dict]:
    """Objects annotated at this keyframe: within range and seen by the LiDAR or a camera."""
    poses = job.world.object_poses(t)
    dist = np.hypot(poses[:, 0] - key_ego[0, 3], poses[:, 1] - key_ego[1, 3])
    anns = []
    for k in np.flatnonzero((dist <= ANNOTATION_RANGE) & ((n_pts > 0) | (visible > 0))):
        frac = min(visible[k] / seen[k], 1.0) if seen[k] > 0 else 0.0
        anns.append({"instance": int(k), "num_lidar_pts": int(n_pts[k]),
                     "visibility": visibility_token(frac)})
    return anns


def run_frame(job: FrameJob) -> dict:
    """Write all files of one keyframe; return poses per sample_data and annotation stats."""
    w = job.world
    rng = np.random.default_rng([job.seed, job.scene, job.index, 1])
    grid = lid.LidarGrid()
    out: dict = {"poses": {}}
    for rec in job.sweeps:
        t = _sec(job, rec["timestamp"])
        _write_scan(job, rec, lid.scan(w, t, rng, grid), with_labels=False)
        out["poses"][rec["token"]] = _global_pose(w, t)
    t_key = _sec(job, job.key["timestamp"])
    key_scan = lid.scan(w, t_key, rng, grid)
    _write_scan(job, job.key, key_scan, with_labels=True)
    out["poses"][job.key["token"]] = _global_pose(w, t_key)

    key_ego = w.ego_pose(t_key)
    mask_cam, visible, seen = _cameras(job, rng, key_ego, out)
    lidar_to_ego = lid.lidar_to_ego()
    pts_ego = apply(lidar_to_ego, key_scan.points[:, :3].astype(np.float64))
    mask_lidar = occ_gt.lidar_mask(lidar_to_ego[:3, 3], pts_ego)
    os.makedirs(os.path.dirname(job.gt_path), exist_ok=True)
    np.savez_compressed(job.gt_path, semantics=occ_gt.semantics(w, t_key),
                        mask_lidar=mask_lidar.astype(np.uint8), mask_camera=mask_cam.astype(np.uint8))

    n_obj = len(w.instances)
    n_pts = np.bincount(key_scan.instance[key_scan.instance >= 0], minlength=n_obj)[:n_obj]
    out["anns"] = _annotated(job, t_key, key_ego, n_pts, visible, seen)
    return out
