"""`prep motion-masks` work: flag store labels on moving boxes and write dense per-camera masks.

Labels are back-projected from (u, v, depth) with the stored intrinsics and camera→key-ego
transform, which recovers each LiDAR point exactly, so the store needs no point index.

Camera sweeps (unlabelled frames between keyframes) are flagged the same way, against the boxes the
devkit interpolates between the keyframe annotations around their LiDAR sample_data's time; their rays
and sweep_motion_mask/ are rewritten with their keyframes' shard.

A kill at any point leaves a store that says what it holds: the manifest is marked before the first
write (`writer.begin_motion_masks`) and every rewritten rays shard is recorded at once (its coming
checksum, then its new one), so every checksum stays true. Over a store without motion masks the
store reads as before (the new columns are not declared); over one that had them, readers refuse the
mix and `store validate` names it, until a rerun (which picks the store up as it is) finishes.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from renderocc import __version__
from renderocc.classes import IGNORE
from renderocc.errors import UserError
from renderocc.prep.motion import box_mask, moving_boxes, moving_boxes_at, points_in_boxes
from renderocc.prep.nuscenes import load_nuscenes
from renderocc.store import layout, writer
from renderocc.store.reader import StoreReader

MOTION_MASK_VERSION = 1


@dataclass
class MotionOptions:
    store: str
    dataroot: str | None = None
    speed_threshold: float = 0.5
    margin: float = 0.2
    progress: bool = True


def backproject(labels: dict[str, np.ndarray], sample: dict, cameras: list[str]) -> np.ndarray:
    """Global-frame points (n, 3) of a sample's labels: z · K_orig⁻¹ [u, v, 1] → key ego → global."""
    points = np.zeros((len(labels["u"]), 3))
    for j, name in enumerate(cameras):
        sel = labels["camera"] == j
        if not sel.any():
            continue
        cam = sample["cameras"][name]
        pix = np.stack([labels["u"][sel], labels["v"][sel], np.ones(sel.sum())], axis=1).astype(np.float64)
        p_cam = (pix @ np.linalg.inv(cam["K_orig"]).T) * labels["depth"][sel, None].astype(np.float64)
        cam2global = sample["ego_pose"] @ cam["cam2ego"]
        points[sel] = p_cam @ cam2global[:3, :3].T + cam2global[:3, 3]
    return points


def sample_masks(boxes, sample: dict, cameras: list[str], size_wh: tuple[int, int], margin: float) -> np.ndarray:
    """Dense (n_cams, H, W) mask of moving boxes, each moved to the camera's own timestamp."""
    out = np.zeros((len(cameras), size_wh[1], size_wh[0]), dtype=bool)
    for j, name in enumerate(cameras):
        cam = sample["cameras"][name]
        global_to_cam = np.linalg.inv(sample["ego_pose"] @ cam["cam2ego"])
        dt = (cam["timestamp"] - sample["timestamp"]) * 1e-6
        out[j] = box_mask(boxes, global_to_cam, cam["K"], size_wh, margin, dt=dt)
    return out


def run(opts: MotionOptions, log=print) -> dict:
    """Compute motion for every stored label; commit columns, masks and manifest. Returns stats."""
    t0 = time.time()
    reader = StoreReader(opts.store, allow_interrupted=True)   # a killed run of this command: redo it
    source = reader.manifest["source"]
    dataroot = opts.dataroot or source["dataroot"]
    if not os.path.isdir(dataroot):
        raise UserError(f"dataroot not found: {dataroot} (pass --dataroot)")
    nusc = load_nuscenes(dataroot, source["version"])
    if not nusc.sample_annotation:
        raise UserError(f"no annotations in {dataroot}/{source['version']}: motion masks need sample_annotation")
    missing = [t for t in reader.tokens() if t not in nusc._token2ind["sample"]]
    if missing:
        raise UserError(f"sample {missing[0]} of the store is not in {dataroot}: wrong --dataroot?")
    instance_index = {rec["token"]: k for k, rec in enumerate(nusc.instance)}
    has_sweeps = layout.camera_sweeps(reader.manifest) is not None
    sweeps = reader.sweep_frames() if has_sweeps else None
    if sweeps is not None:
        lost = [s["lidar_token"] for s in map(sweeps.sample, range(len(sweeps)))
                if s["lidar_token"] not in nusc._token2ind["sample_data"]]
        if lost:
            raise UserError(f"LiDAR sample_data {lost[0]} of the store's camera sweeps is not in {dataroot}: "
                            "wrong --dataroot?")

    by_shard: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for i in range(len(reader)):
        shard, group = reader.ray_location(i)
        by_shard[shard].append((group, i))
    sweeps_by_shard: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for j in range(len(sweeps) if sweeps is not None else 0):
        shard, group = sweeps.ray_location(j)
        sweeps_by_shard[shard].append((group, j))

    writer.begin_motion_masks(reader.root)   # from here to the commit, the manifest says a rewrite is under way
    writer.create_motion_mask_array(reader.root)
    if sweeps is not None and len(sweeps):
        writer.create_motion_mask_array(reader.root, layout.SWEEP_FRAMES)
    class_names = reader.vocabulary.names  # free last
    static_categories = reader.vocabulary.static_categories()  # e.g. barrier, traffic cone
    counts = np.zeros((len(class_names) + 1, 2), np.int64)  # per class (last = unlabelled): [dynamic, all]
    cam_counts = np.zeros((len(reader.cameras), 2), np.int64)
    shard_updates, mask_digests, sweep_digests, n_boxes = {}, {}, {}, 0
    sweep_counts = np.zeros(3, np.int64)   # camera sweeps: [moving boxes, dynamic labels, labels]
    bar = tqdm(total=len(reader) + (len(sweeps) if sweeps is not None else 0), desc="motion masks",
               unit="frame" if sweeps is not None else "sample", disable=not opts.progress)
    for shard, members in sorted(by_shard.items()):
        dyn_groups, inst_groups, digests = [], [], []
        for _, i in sorted(members):
            sample = reader.sample(i)
            labels = reader.labels(i)
            boxes, _ = moving_boxes(nusc, sample["sample_token"], instance_index, opts.speed_threshold,
                                    static_categories)
            n_boxes += len(boxes)
            inst = points_in_boxes(backproject(labels, sample, reader.cameras), boxes, opts.margin)
            dyn = inst >= 0
            dyn_groups.append(dyn)
            inst_groups.append(inst)
            cls = np.where(labels["label"] == IGNORE, len(class_names), labels["label"]).astype(np.int64)
            np.add.at(counts, (cls, 0), dyn)
            np.add.at(counts, (cls, 1), 1)
            np.add.at(cam_counts, (labels["camera"].astype(np.int64), 0), dyn)
            np.add.at(cam_counts, (labels["camera"].astype(np.int64), 1), 1)
            masks = sample_masks(boxes, sample, reader.cameras, reader.image_size, opts.margin)
            digests.append(writer.write_motion_mask(reader.root, i, masks))
            bar.update(1)
        data, shard_updates[shard] = writer.ray_columns_data(reader.root, shard, dyn_groups, inst_groups)
        sweep_data = None
        if sweeps is not None:
            sweep_data, stats, sweep_digests[shard] = _sweep_columns(
                nusc, sweeps, shard, sorted(sweeps_by_shard.get(shard, [])), instance_index, opts, static_categories,
                sweep_counts, bar)
            shard_updates[shard].update(stats)
        writer.record_shard_rewrite(reader.root, shard, shard_updates[shard], pending=True)  # its coming checksums
        writer.write_rays_data(reader.root, shard, data)
        if sweep_data is not None:
            writer.write_rays_data(reader.root, shard, sweep_data, layout.SWEEP_FRAMES)
        writer.record_shard_rewrite(reader.root, shard, shard_updates[shard])  # a kill leaves checksums true
        mask_digests[shard] = writer.combine_digests(digests)
    bar.close()

    names = [*class_names, "unlabelled"]
    per_class = {names[k]: round(float(counts[k, 0] / counts[k, 1]), 6) for k in range(len(names)) if counts[k, 1]}
    per_camera = {c: round(float(cam_counts[j, 0] / cam_counts[j, 1]), 6)
                  for j, c in enumerate(reader.cameras) if cam_counts[j, 1]}
    info = {"version": MOTION_MASK_VERSION, "tool_version": __version__, "dataroot": os.path.abspath(dataroot),
            "speed_threshold": opts.speed_threshold, "margin": opts.margin,
            "static_categories": sorted(static_categories), "moving_boxes": n_boxes,
            "dynamic_labels": int(counts[:, 0].sum()), "labels": int(counts[:, 1].sum()),
            "dynamic_share_per_class": per_class, "dynamic_share_per_camera": per_camera}
    if sweeps is not None:
        info["camera_sweeps"] = {"frames": len(sweeps), "moving_boxes": int(sweep_counts[0]),
                                 "dynamic_labels": int(sweep_counts[1]), "labels": int(sweep_counts[2]),
                                 "boxes": "nuScenes devkit get_boxes at the LiDAR sample_data: each instance "
                                          "interpolated between the keyframe annotations around it"}
    writer.commit_motion_masks(reader.root, info, shard_updates, mask_digests,
                               sweep_digests if sweeps is not None else None)
    return {**info, "samples": len(reader), "sweeps": len(sweeps) if sweeps is not None else 0,
            "seconds": time.time() - t0, "root": reader.root}


def _sweep_columns(nusc, sweeps, shard: str, members: list[tuple[int, int]], instance_index: dict[str, int],
                   opts: MotionOptions, static_categories: frozenset[str], counts: np.ndarray, bar
                   ) -> tuple[bytes, dict, str]:
    """One shard's camera sweeps: their rays file with `dynamic`/`instance` (bytes, stats), their masks
    written, and the masks' combined digest. `counts` += [moving boxes, dynamic labels, labels]."""
    dyn_groups, inst_groups, digests = [], [], []
    for _, j in members:
        sample = sweeps.sample(j)
        labels = sweeps.labels(j)
        boxes, _ = moving_boxes_at(nusc, sample["lidar_token"], instance_index, opts.speed_threshold,
                                   static_categories)
        inst = points_in_boxes(backproject(labels, sample, sweeps.cameras), boxes, opts.margin)
        dyn_groups.append(inst >= 0)
        inst_groups.append(inst)
        counts += [len(boxes), int((inst >= 0).sum()), len(inst)]
        masks = sample_masks(boxes, sample, sweeps.cameras, sweeps.image_size, opts.margin)
        digests.append(writer.write_motion_mask(sweeps.root, j, masks, layout.SWEEP_FRAMES))
        bar.update(1)
    data, stats = writer.ray_columns_data(sweeps.root, shard, dyn_groups, inst_groups, layout.SWEEP_FRAMES)
    return data, stats, writer.combine_digests(digests)
