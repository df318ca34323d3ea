"""Sense one keyframe of a scene (LiDAR keyframe + preceding sweeps, six cameras), then its truth.

Two passes, because Occ3D-style truth accumulates the LiDAR of the whole scene and needs to know
which objects are annotated: a frame job senses one keyframe, writes its files and returns the
small metadata the tables need (its returns go to a scratch file); a truth job then writes the
keyframe's Occ3D labels. Both are self-contained (world, times, tokens, paths) so they can run in
worker processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from renderocc.synth import camera as cam
from renderocc.synth import lidar as lid
from renderocc.synth import occ_gt
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
    cloud_path: str = ""  # where to keep this frame's returns for Occ3D-style truth ("" = don't)
    masks: bool = False  # write dense GT class masks under masks/ (a perfect 2D segmenter)
    # camera sweeps before the keyframe: LiDAR sweeps written only for them (kept out of the Occ3D
    # accumulation) and the camera instants, each {camera name: {"token", "timestamp", "filename"}}
    extra_sweeps: list[dict] = field(default_factory=list)
    cam_sweeps: list[dict[str, dict]] = field(default_factory=list)


@dataclass
class TruthJob:
    """Everything needed to write the Occ3D labels of one keyframe."""

    world: World
    t0_us: int
    key_us: int  # LiDAR keyframe timestamp
    cam_us: dict[str, int]  # camera name -> trigger timestamp
    image_size: tuple[int, int]
    gt_path: str
    gt: str  # "occ3d" | "world"
    clouds: list[str]  # the scene's frame cloud files (occ3d)
    boxed: np.ndarray  # (K,) bool: object annotated somewhere in the scene
    present: np.ndarray  # (K,) bool: object annotated at this keyframe


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
        # what every beam of the keyframe did: the truth free-beam detection is checked against
        np.savez_compressed(os.path.join(job.root, "synth_truth", "beams", rec["token"] + ".npz"),
                            status=s.beams, elevation=lid.ELEVATIONS, azimuth=lid.beam_azimuths(s.beams.shape[1]))


def _pixel_labels(world: World, hits, prims) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel lidarseg label (255 = sky) and object index (-1 = stuff or sky) of one image."""
    pid = hits.pid
    label = np.full(pid.shape, 255, np.uint8)
    k = np.full(pid.shape, -1, np.int32)
    obj = pid >= 0
    label[obj] = prims.label[pid[obj]]
    k[obj] = prims.obj[pid[obj]]
    g = pid == -1
    label[g] = world.ground(hits.points[g][:, 0], hits.points[g][:, 1])[0]
    return label, k


def _write_mask(job: FrameJob, filename: str, label: np.ndarray) -> None:
    """masks/<image path>.png: uint8 class of the world's class table per pixel, 255 = unlabelled (sky)."""
    path = os.path.join(job.root, "masks", os.path.splitext(filename)[0] + ".png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, occ_gt.class_table(job.world).to_class[label])


def _write_camera_truth(job: FrameJob, token: str, hits, prims, local_to_cam: np.ndarray) -> None:
    """Per-pixel truth of one image: camera z depth (0 = sky), lidarseg label (255 = sky), instance."""
    pid = hits.pid
    label, k = _pixel_labels(job.world, hits, prims)
    instance = np.where(k >= 0, k + job.instance_offset, -1).astype(np.int32)
    depth = np.where(pid >= -1, hits.t * (hits.dirs @ local_to_cam[2, :3].astype(np.float32)), 0.0)
    np.savez_compressed(os.path.join(job.root, "synth_truth", "cameras", token + ".npz"),
                        depth=depth.astype(np.float32), label=label, instance=instance)


def _cameras(job: FrameJob, rng: np.random.Generator, out: dict, cams: dict[str, dict] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Render and write the six images (`cams`: of a camera sweep; default the keyframe's); return
    (visible px, unoccluded px) per object."""
    w = job.world
    cams = job.cams if cams is None else cams
    n_obj = len(w.instances)
    seen, visible = np.zeros(n_obj), np.zeros(n_obj)
    for spec in cam.RIG:
        rec = cams[spec.name]
        t = _sec(job, rec["timestamp"])
        img, hits = cam.render(w, spec, cam.pinhole_grid(spec.name, job.image_size), t, rng)
        cv2.imwrite(os.path.join(job.root, rec["filename"]), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        out["poses"][rec["token"]] = _global_pose(w, t)
        prims = w.prims_at(t)
        if job.camera_truth:
            cam_to_local = w.ego_pose(t) @ cam.cam_to_ego(spec)
            _write_camera_truth(job, rec["token"], hits, prims, np.linalg.inv(cam_to_local))
        if job.masks:
            _write_mask(job, rec["filename"], _pixel_labels(w, hits, prims)[0])
        obj = prims.obj[hits.pid[hits.pid >= 0]]
        visible += np.bincount(obj[obj >= 0], minlength=n_obj)[:n_obj]
        seen[: len(hits.seen)] += hits.seen
    return visible, seen


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
    """Write the sensor files of one keyframe; return poses per sample_data and annotation stats."""
    w = job.world
    rng = np.random.default_rng([job.seed, job.scene, job.index, 1])
    grid = lid.LidarGrid()
    out: dict = {"poses": {}}
    pieces = []
    for rec in [*job.sweeps, job.key]:
        t = _sec(job, rec["timestamp"])
        s = lid.scan(w, t, rng, grid)
        _write_scan(job, rec, s, with_labels=rec is job.key)
        out["poses"][rec["token"]] = _global_pose(w, t)
        if job.cloud_path:
            pieces.append(occ_gt.cloud_piece(w, t, w.ego_pose(t) @ lid.lidar_to_ego(), s.points[:, :3],
                                             s.label, s.instance))
    key_scan = s
    if pieces:
        np.savez(job.cloud_path, **{k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]})

    t_key = _sec(job, job.key["timestamp"])
    visible, seen = _cameras(job, rng, out)
    n_obj = len(w.instances)
    n_pts = np.bincount(key_scan.instance[key_scan.instance >= 0], minlength=n_obj)[:n_obj]
    out["anns"] = _annotated(job, t_key, w.ego_pose(t_key), n_pts, visible, seen)
    if job.extra_sweeps or job.cam_sweeps:   # their own random stream: the keyframe's files stay as without them
        rng = np.random.default_rng([job.seed, job.scene, job.index, 2])
        for rec in job.extra_sweeps:
            t = _sec(job, rec["timestamp"])
            _write_scan(job, rec, lid.scan(w, t, rng, grid), with_labels=False)
            out["poses"][rec["token"]] = _global_pose(w, t)
        for cams in job.cam_sweeps:
            _cameras(job, rng, out, cams)
    return out


def run_truth(job: TruthJob) -> None:
    """Write gts/<scene>/<sample>/labels.npz: semantics of the chosen truth and Occ3D's two masks."""
    w = job.world
    t_key = (job.key_us - job.t0_us) * 1e-6
    if job.gt == "world":
        sem = occ_gt.semantics(w, t_key)
    else:
        pieces = []
        for path in job.clouds:
            with np.load(path) as z:
                pieces.append({k: z[k] for k in z.files})
        sem = occ_gt.lidar_semantics(*occ_gt.accumulate(pieces, w, t_key, job.boxed, job.present),
                                     occ_gt.class_table(w))
    key_ego = w.ego_pose(t_key)
    free = occ_gt.class_table(w).num
    mask_lidar = occ_gt.lidar_mask(sem, lid.lidar_to_ego()[:3, 3], free)
    cams = []
    for spec in cam.RIG:
        cam_to_local = w.ego_pose((job.cam_us[spec.name] - job.t0_us) * 1e-6) @ cam.cam_to_ego(spec)
        cams.append((np.linalg.inv(cam_to_local) @ key_ego, cam.intrinsic(spec, job.image_size), job.image_size))
    mask_cam = occ_gt.camera_mask(sem, cams, free)
    os.makedirs(os.path.dirname(job.gt_path), exist_ok=True)
    np.savez_compressed(job.gt_path, semantics=sem, mask_lidar=mask_lidar.astype(np.uint8),
                        mask_camera=mask_cam.astype(np.uint8))
