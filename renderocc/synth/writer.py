"""`write_dataset`: synthetic scenes -> a devkit-loadable nuScenes dataroot, atomically.

Layout written (DIR):
    <version>/*.json (13 tables + lidarseg.json), samples/, sweeps/, lidarseg/<version>/,
    maps/<token>.png, gts/<scene>/<sample>/labels.npz (Occ3D), synth_truth/ (points, beams,
    instances, gt.json: which truth gts/ holds). With camera sweeps, sweeps/CAM_*/ holds the
    unlabelled camera frames between keyframes (sample_data with is_key_frame false, their
    sample_token the next keyframe's, as in nuScenes) and sweeps/LIDAR_TOP/ a LiDAR sweep at each
    such instant.
Everything goes to a sibling temp dir first and is renamed into place at the end, so a
half-written dataset never looks complete.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from renderocc.errors import UserError
from renderocc.synth import airside
from renderocc.synth import camera as cam
from renderocc.synth import lidar as lid
from renderocc.synth import materials as mat
from renderocc.synth import tables as tb
from renderocc.synth.conditions import describe
from renderocc.synth.frame import FrameJob, TruthJob, run_frame, run_truth
from renderocc.synth.geometry import matrix_to_quat, yaw_quat
from renderocc.synth.populate import build_world
from renderocc.synth.world import World

DEFAULT_IMAGE_SIZE = (800, 450)
KEYFRAME_US = 500_000  # 2 Hz keyframes
BASE_TIMESTAMP = 1_600_000_000_000_000
SCENE_GAP_US = 3_600_000_000
GT_KINDS = ("occ3d", "world")
GT_DESCRIPTION = {
    "occ3d": "Occ3D-style: LiDAR returns (keyframes and sweeps) of the whole scene accumulated, static "
             "points through ego poses, annotated objects through their boxes; majority class per voxel",
    "world": "from the world's solids: class covering most of each voxel's 4x4x4 sub-samples",
}
MASK_DESCRIPTION = ("Occ3D ray casting: rays from the LiDAR (mask_lidar) or each camera (mask_camera, "
                    "voxels projecting into the image) to every occupied voxel centre; voxels observed up to "
                    "and including the first occupied voxel on the ray")


# Sane bounds: nuScenes has 1000 scenes of ~40 keyframes, 9 sweeps between keyframes, 1600x900 images.
MAX_SCENES = 1000
MAX_SAMPLES_PER_SCENE = 1000
MAX_SWEEPS = 20
MAX_CAMERA_SWEEPS = 5   # nuScenes' 12 Hz cameras: 5 frames between 2 Hz keyframes; keeps instants > 80 ms apart
MAX_IMAGE_SIDE = 4096
VERSION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"   # one path component: never escapes --out


def _check_args(out: Path, scenes: int, samples_per_scene: int, image_size, sweeps: int,
                overwrite: bool, gt: str, version: str = "v1.0-mini", camera_sweeps: int = 0) -> None:
    if gt not in GT_KINDS:
        raise UserError(f"--gt must be one of {', '.join(GT_KINDS)} (got {gt!r}).")
    if not 1 <= scenes <= MAX_SCENES:
        raise UserError(f"--scenes must be between 1 and {MAX_SCENES} (got {scenes}).")
    if not 1 <= samples_per_scene <= MAX_SAMPLES_PER_SCENE:
        raise UserError(f"--samples-per-scene must be between 1 and {MAX_SAMPLES_PER_SCENE} "
                        f"(got {samples_per_scene}).")
    if not 0 <= sweeps <= MAX_SWEEPS:
        raise UserError(f"--sweeps-per-sample must be between 0 and {MAX_SWEEPS} (got {sweeps}).")
    if isinstance(camera_sweeps, bool) or not isinstance(camera_sweeps, int) or \
            not 0 <= camera_sweeps <= MAX_CAMERA_SWEEPS:
        raise UserError(f"--camera-sweeps-per-sample must be between 0 and {MAX_CAMERA_SWEEPS} (got {camera_sweeps}).")
    w, h = image_size
    if w < 32 or h < 18:
        raise UserError(f"--image-size must be at least 32x18 (got {w}x{h}).")
    if w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE:
        raise UserError(f"--image-size sides must be at most {MAX_IMAGE_SIDE} pixels (got {w}x{h}).")
    if not re.fullmatch(VERSION_PATTERN, version) or version in (".", ".."):
        raise UserError(f"--version must be a plain folder name like v1.0-mini (got {version!r}).")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"--out {out} is not empty; pass --overwrite to replace it.")
        if not (out / "synth_truth").is_dir():
            raise UserError(f"refusing to replace {out}: it is not a dataset written by renderocc synth.")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write under {parent} (permission denied).")


def _scene_jobs(root: Path, seed: int, scene: int, world: World, k: int, sweeps: int,
                size: tuple[int, int], version: str, log_name: str, camera_sweeps: int = 0
                ) -> tuple[list[FrameJob], dict]:
    """Frame jobs and token/time plan of one scene. Camera sweeps of the interval before keyframe j
    are instants evenly spaced between keyframes j-1 and j; each camera fires at its keyframe offset
    from the instant, and a LiDAR sweep is written at the instant (unless one is already there)."""
    t0 = BASE_TIMESTAMP + scene * SCENE_GAP_US
    plan: dict = {"samples": [], "lidar": [], "cams": {c: [] for c in cam.CAMERA_NAMES}}
    jobs = []
    name = f"scene-{scene + 1:04d}"
    for j in range(k):
        ts = t0 + j * KEYFRAME_US
        sample = tb.make_token(seed, "sample", scene, j)
        plan["samples"].append({"token": sample, "timestamp": ts})
        sweep_recs, extra_recs, cam_sweeps = [], [], []
        if j > 0:
            for m in range(1, sweeps + 1):
                sts = t0 + (j - 1) * KEYFRAME_US + m * KEYFRAME_US // (sweeps + 1)
                tok = tb.make_token(seed, "sd", scene, "LIDAR_TOP", sts)
                sweep_recs.append({"token": tok, "timestamp": sts, "sample": sample, "key": False,
                                   "filename": f"sweeps/LIDAR_TOP/{log_name}__LIDAR_TOP__{sts}.pcd.bin"})
            lidar_times = {r["timestamp"] for r in sweep_recs}
            for m in range(1, camera_sweeps + 1):
                its = t0 + (j - 1) * KEYFRAME_US + m * KEYFRAME_US // (camera_sweeps + 1)
                if its not in lidar_times:
                    extra_recs.append({"token": tb.make_token(seed, "sd", scene, "LIDAR_TOP", its), "timestamp": its,
                                       "sample": sample, "key": False,
                                       "filename": f"sweeps/LIDAR_TOP/{log_name}__LIDAR_TOP__{its}.pcd.bin"})
                frame = {}
                for spec in cam.RIG:
                    frame[spec.name] = _camera_record(seed, scene, spec, its, sample, log_name, key=False)
                    plan["cams"][spec.name].append(frame[spec.name])
                cam_sweeps.append(frame)
        tok = tb.make_token(seed, "sd", scene, "LIDAR_TOP", ts)
        key = {"token": tok, "timestamp": ts, "sample": sample, "key": True,
               "filename": f"samples/LIDAR_TOP/{log_name}__LIDAR_TOP__{ts}.pcd.bin",
               "lidarseg": f"lidarseg/{version}/{tok}_lidarseg.bin"}
        plan["lidar"] += sorted(sweep_recs + extra_recs, key=lambda r: r["timestamp"]) + [key]
        cams = {}
        for spec in cam.RIG:
            cams[spec.name] = _camera_record(seed, scene, spec, ts, sample, log_name, key=True)
            plan["cams"][spec.name].append(cams[spec.name])
        jobs.append(FrameJob(str(root), seed, scene, j, world, t0, key, sweep_recs, cams, size,
                             str(root / "gts" / name / sample / "labels.npz"), extra_sweeps=extra_recs,
                             cam_sweeps=cam_sweeps))
    return jobs, plan


def _camera_record(seed: int, scene: int, spec, instant_us: int, sample: str, log_name: str, key: bool) -> dict:
    """One camera's sample_data record at an instant: it fires at its rig offset from the instant;
    keyframe images live under samples/, camera sweeps under sweeps/ (nuScenes' layout)."""
    ts = instant_us + spec.offset_us
    folder = "samples" if key else "sweeps"
    return {"token": tb.make_token(seed, "sd", scene, spec.name, ts), "timestamp": ts, "sample": sample, "key": key,
            "filename": f"{folder}/{spec.name}/{log_name}__{spec.name}__{ts}.jpg"}


def _map_jobs(fn, jobs: list, workers: int, progress: bool, desc: str) -> list:
    bar = tqdm(total=len(jobs), desc=desc, unit="frame", disable=not progress)
    results = []
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            for r in pool.imap(fn, jobs):
                results.append(r)
                bar.update()
    else:
        for job in jobs:
            results.append(fn(job))
            bar.update()
    bar.close()
    return results


def _truth_jobs(frames: list[FrameJob], results: list[dict], gt: str) -> list[TruthJob]:
    """One truth job per keyframe; needs every frame's annotations (which objects have boxes)."""
    jobs = []
    by_scene: dict[int, list[int]] = {}
    for i, f in enumerate(frames):
        by_scene.setdefault(f.scene, []).append(i)
    for idx in by_scene.values():
        world = frames[idx[0]].world
        n = len(world.instances)
        present = [np.zeros(n, bool) for _ in idx]
        for p, i in zip(present, idx, strict=True):
            p[[a["instance"] for a in results[i]["anns"]]] = True
        boxed = np.any(present, 0)
        clouds = [frames[i].cloud_path for i in idx]
        for p, i in zip(present, idx, strict=True):
            f = frames[i]
            jobs.append(TruthJob(world, f.t0_us, f.key["timestamp"],
                                 {c: r["timestamp"] for c, r in f.cams.items()}, f.image_size, f.gt_path, gt,
                                 clouds, boxed, p))
    return jobs


def _pose_record(token: str, ts: int, pose: dict) -> dict:
    return tb.ego_pose_record(token, ts, [pose["x"], pose["y"], 0.0], yaw_quat(pose["yaw"]))


def write_dataset(out: str | Path, scenes: int, samples_per_scene: int, seed: int,
                  image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, version: str = "v1.0-mini",
                  overwrite: bool = False, sweeps_per_sample: int = 4, workers: int | None = None,
                  progress: bool = False, camera_truth: bool = False, gt: str = "occ3d",
                  kind: str = "street", night: bool = False, wet: bool = False,
                  conditions: list[tuple[bool, bool]] | None = None, camera_sweeps_per_sample: int = 0) -> Path:
    """Write `scenes` synthetic scenes of `samples_per_scene` keyframes to `out`; return its path.

    Deterministic for a seed. Raises UserError for bad arguments or an unusable `out`.
    `camera_truth` also writes synth_truth/cameras/<camera_sample_data_token>.npz (per-pixel
    `depth` camera z in metres, 0 = sky; `label` lidarseg index, 255 = sky; `instance`).
    `gt` picks the occupancy of gts/ (see renderocc.synth.occ_gt): "occ3d" (accumulated LiDAR, as
    Occ3D builds it) or "world" (the world's solids); synth_truth/gt.json records which.
    `kind` "airside" writes the apron world (renderocc.synth.airside) with its class map
    (DIR/classes.toml), gts/ in its classes and dense GT masks under masks/. Its conditions
    (renderocc.synth.conditions): `conditions` [(night, wet), ...] cycled over the scenes, each
    also night with `night` and wet with `wet`; the scene description states them.
    `camera_sweeps_per_sample`: unlabelled camera frames between consecutive keyframes (sweeps/CAM_*/,
    rendered at their times, with a LiDAR sweep at each instant under sweeps/LIDAR_TOP/; those LiDAR
    sweeps stay out of the Occ3D accumulation, so keyframes and their truth do not depend on it).
    """
    out = Path(out).expanduser().absolute()
    image_size = (int(image_size[0]), int(image_size[1]))
    _check_args(out, scenes, samples_per_scene, image_size, sweeps_per_sample, overwrite, gt, version,
                camera_sweeps_per_sample)
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        for d in ["samples/LIDAR_TOP", "sweeps/LIDAR_TOP", f"lidarseg/{version}", version, "maps", "gts",
                  "synth_truth/points", "synth_truth/beams", ".cloud"] + [f"samples/{c}" for c in cam.CAMERA_NAMES] \
                + (["synth_truth/cameras"] if camera_truth else []) \
                + ([f"sweeps/{c}" for c in cam.CAMERA_NAMES] if camera_sweeps_per_sample else []):
            (tmp / d).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write to {out}: {e.strerror or e}.") from None

    worlds, plans, jobs, logs = [], [], [], []
    duration = (samples_per_scene - 1) * KEYFRAME_US * 1e-6
    for s in tqdm(range(scenes), desc="synth worlds", unit="scene", disable=not progress or scenes < 4):
        rng = np.random.default_rng([seed, s, 0])
        if kind == "airside":
            night_s, wet_s = conditions[s % len(conditions)] if conditions else (False, False)
            world = airside.build_airside_world(rng, duration, night or night_s, wet or wet_s)
        else:
            world = build_world(rng, duration)
        for k, inst in enumerate(world.instances):
            inst.token = tb.make_token(seed, "instance", s, k)
        log_name = f"synth-s{seed}-{s:04d}"
        sj, plan = _scene_jobs(tmp, seed, s, world, samples_per_scene, sweeps_per_sample, image_size, version,
                               log_name, camera_sweeps_per_sample)
        for job in sj:
            job.instance_offset = sum(len(w.instances) for w in worlds)
            job.camera_truth = camera_truth
            job.masks = kind == "airside"
            if gt == "occ3d":
                job.cloud_path = str(tmp / ".cloud" / f"{s:04d}-{job.index:04d}.npz")
        worlds.append(world)
        plans.append(plan)
        jobs += sj
        logs.append(log_name)
    try:
        results = _map_jobs(run_frame, jobs, workers, progress, "synth keyframes")
        _map_jobs(run_truth, _truth_jobs(jobs, results, gt), workers, progress, "synth occupancy truth")
        shutil.rmtree(tmp / ".cloud")
        _write_tables(tmp, seed, version, worlds, plans, results, samples_per_scene, image_size, logs, kind)
        if kind == "airside":
            (tmp / "classes.toml").write_text(airside.class_map_toml())
        with open(tmp / "synth_truth" / "gt.json", "w") as f:
            json.dump({"gt": gt, "semantics": GT_DESCRIPTION[gt], "masks": MASK_DESCRIPTION}, f, indent=1)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(trash)
        tmp.rename(out)
        shutil.rmtree(trash)
    else:
        tmp.rename(out)
    return out


def _write_tables(root: Path, seed: int, version: str, worlds: list[World], plans: list[dict],
                  results: list[dict], k: int, size: tuple[int, int], logs: list[str], kind: str = "street"
                  ) -> None:
    categories = tb.category_table(seed, mat.SYNTH_NAMES if kind == "airside" else None)
    cat_token = {c["name"]: c["token"] for c in categories}
    attributes = tb.attribute_table(seed)
    attr_token = {a["name"]: a["token"] for a in attributes}
    sensors = [tb.sensor_record(seed, "LIDAR_TOP", "lidar")] + [tb.sensor_record(seed, c, "camera")
                                                                 for c in cam.CAMERA_NAMES]
    sensor_token = {s["channel"]: s["token"] for s in sensors}
    t = {n: [] for n in ["calibrated_sensor", "ego_pose", "log", "scene", "sample", "sample_data",
                         "sample_annotation", "instance", "lidarseg"]}
    truth_instances = []
    map_token = tb.make_token(seed, "map")
    for s, (world, plan, log_name) in enumerate(zip(worlds, plans, logs, strict=True)):
        res = results[s * k:(s + 1) * k]
        poses = {tok: p for r in res for tok, p in r["poses"].items()}
        log_token = tb.make_token(seed, "log", s)
        t["log"].append({"token": log_token, "logfile": log_name, "vehicle": "synth",
                         "date_captured": "2020-09-13", "location": "synth-airport" if kind == "airside" else
                         "synth-town", "map_token": map_token})
        calib = {}
        lidar_cal = lid.lidar_to_ego()
        calib["LIDAR_TOP"] = tb.make_token(seed, "calib", s, "LIDAR_TOP")
        t["calibrated_sensor"].append(tb.calibrated_sensor_record(
            calib["LIDAR_TOP"], sensor_token["LIDAR_TOP"], lidar_cal[:3, 3],
            matrix_to_quat(lidar_cal[:3, :3]), []))
        for spec in cam.RIG:
            m = cam.cam_to_ego(spec)
            calib[spec.name] = tb.make_token(seed, "calib", s, spec.name)
            t["calibrated_sensor"].append(tb.calibrated_sensor_record(
                calib[spec.name], sensor_token[spec.name], m[:3, 3], matrix_to_quat(m[:3, :3]),
                cam.intrinsic(spec, size)))
        scene_token = tb.make_token(seed, "scene", s)
        samples = [{"token": p["token"], "timestamp": p["timestamp"], "prev": "", "next": "",
                    "scene_token": scene_token} for p in plan["samples"]]
        tb.link(samples)
        t["sample"] += samples
        t["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": k,
                           "first_sample_token": samples[0]["token"],
                           "last_sample_token": samples[-1]["token"],
                           "name": f"scene-{s + 1:04d}",
                           "description": (f"Synthetic airport apron (seed {seed}): stands, aircraft, GSE, "
                                           "jet bridges, ground crew, an aircraft under tow; "
                                           + describe(world.light < 1, world.wet)) if kind == "airside" else
                                          f"Synthetic street (seed {seed}): traffic, parked cars, "
                                          "pedestrians, cyclists, construction site"})
        chains = [("LIDAR_TOP", "pcd", (0, 0), plan["lidar"])]
        chains += [(c, "jpg", size, plan["cams"][c]) for c in cam.CAMERA_NAMES]
        for channel, fmt, sz, recs in chains:
            rows = [tb.sample_data_record(r["token"], r["sample"], calib[channel], r["timestamp"], fmt,
                                          r["key"], sz, r["filename"]) for r in recs]
            tb.link(rows)
            t["sample_data"] += rows
            t["ego_pose"] += [_pose_record(r["token"], r["timestamp"], poses[r["token"]]) for r in recs]
        t["lidarseg"] += [{"token": r["token"], "sample_data_token": r["token"], "filename": r["lidarseg"]}
                          for r in plan["lidar"] if r["key"]]
        _annotations(t, seed, s, world, plan, res, cat_token, attr_token, truth_instances)

    t["map"] = [{"token": map_token, "log_tokens": [r["token"] for r in t["log"]],
                 "category": "semantic_prior", "filename": f"maps/{map_token}.png"}]
    cv2.imwrite(str(root / "maps" / f"{map_token}.png"), np.zeros((8, 8), np.uint8))
    tables = {"category": categories, "attribute": attributes, "visibility": tb.visibility_table(),
              "sensor": sensors, **t}
    for name, rows in tables.items():
        if name == "log":
            rows = [{kk: v for kk, v in r.items() if kk != "map_token"} for r in rows]
        with open(root / version / f"{name}.json", "w") as f:
            json.dump(rows, f, indent=0)
    with open(root / "synth_truth" / "instances.json", "w") as f:
        json.dump(truth_instances, f, indent=0)


def _annotations(t: dict, seed: int, s: int, world: World, plan: dict, res: list[dict], cat_token: dict,
                 attr_token: dict, truth_instances: list[dict]) -> None:
    """sample_annotation and instance rows of one scene, and its synth_truth instance list."""
    to_global = world.to_global()
    origin_yaw = world.origin[2]
    tracks: dict[int, list[dict]] = {}
    for j, r in enumerate(res):
        sample = plan["samples"][j]
        tsec = (sample["timestamp"] - plan["samples"][0]["timestamp"]) * 1e-6
        for a in r["anns"]:
            k = a["instance"]
            inst = world.instances[k]
            x, y, yaw = inst.pose(tsec)
            ox, oy, oz = inst.box_offset
            c, sn = np.cos(yaw), np.sin(yaw)
            centre = to_global @ np.array([x + c * ox - sn * oy, y + sn * ox + c * oy, oz, 1.0])
            tracks.setdefault(k, []).append({
                "token": tb.make_token(seed, "ann", s, j, k), "sample_token": sample["token"],
                "instance_token": inst.token, "visibility_token": a["visibility"],
                "attribute_tokens": [attr_token[inst.attribute]] if inst.attribute else [],
                "translation": [float(v) for v in centre[:3]], "size": [float(v) for v in inst.size],
                "rotation": yaw_quat(yaw + origin_yaw), "prev": "", "next": "",
                "num_lidar_pts": a["num_lidar_pts"], "num_radar_pts": 0})
    for k, inst in enumerate(world.instances):
        anns = tracks.get(k, [])
        if anns:
            tb.link(anns)
            t["sample_annotation"] += anns
            t["instance"].append({"token": inst.token, "category_token": cat_token[inst.category],
                                  "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"],
                                  "last_annotation_token": anns[-1]["token"]})
        truth_instances.append({"token": inst.token, "category": inst.category, "moving": bool(inst.moving),
                                "speed": float(inst.speed), "annotated": bool(anns), "scene": s})
