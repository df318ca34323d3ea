"""Camera sweeps: which unlabelled camera frames between two keyframes prep stores, and their geometry.

Cameras record at ~12 Hz, LiDAR at 20 Hz, labels exist at the 2 Hz keyframes only. A sweep frame is
one instant of every camera: the reference camera's (CAM_FRONT's) non-keyframe sample_data after a
keyframe, up to N of them per keyframe interval, evenly spaced along its `next` chain; each other
camera contributes its own non-keyframe sample_data nearest in time. Its reference frame is the ego
of the LIDAR_TOP sample_data (sweep or keyframe) nearest to the frame's mean camera time, exactly as
a keyframe's is its LiDAR keyframe's ego, and its depth labels come from that LiDAR sample_data
through the keyframes' projection (`pipeline.sample_rays`), with no semantics.

Tasks are `SweepTask`s (a `SampleTask` plus the keyframe it follows), so the per-sample work of prep
runs on them unchanged.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from renderocc.errors import UserError
from renderocc.prep.checks import BadSample
from renderocc.prep.nuscenes import LIDAR, LidarFrame, SampleTask, camera_task, pose

REFERENCE_CAMERA = "CAM_FRONT"
MAX_CAMERA_GAP_US = 50_000   # another camera's sweep within this of the reference's (12 Hz: 83 ms apart)
MAX_LIDAR_GAP_US = 50_000    # the LiDAR sample_data within this of the frame's mean camera time (20 Hz: 50 ms)
MAX_PER_SAMPLE = 20          # --camera-sweeps: nuScenes cameras give ~5 per keyframe interval
SELECTION = (f"up to N non-keyframe sample_data of the reference camera per keyframe interval, evenly spaced "
             f"along its chain (floor((k + 1/2) n / N) of n); each other camera: its non-keyframe sample_data "
             f"nearest in time (within {MAX_CAMERA_GAP_US} us); reference frame and depth: the LIDAR_TOP "
             f"sample_data nearest to the mean camera time (within {MAX_LIDAR_GAP_US} us)")


@dataclass
class SweepTask(SampleTask):
    """One camera sweep frame: `token` is its reference camera's sample_data token, `timestamp`,
    `ego_pose` and `lidar2ego` are those of its LiDAR sample_data (`frames[0]`, no lidarseg)."""

    key_index: int = -1        # the keyframe (sample index) it follows
    key_token: str = ""


def reference_camera(cameras: list[str]) -> str:
    """The camera whose frames define the sweep instants: CAM_FRONT, else the first stored camera."""
    return REFERENCE_CAMERA if REFERENCE_CAMERA in cameras else cameras[0]


def evenly(available: int, n: int) -> list[int]:
    """Up to n of `available` positions, evenly spaced (all of them when there are no more than n)."""
    if available <= n:
        return list(range(available))
    return [int(np.floor((k + 0.5) * available / n)) for k in range(n)]


def chain_after(nusc, sd: dict, stop_us: int | None) -> tuple[list[dict], dict | None]:
    """(the non-keyframe sample_data after `sd` along `next`, the keyframe sample_data that ends them or
    None), stopping before `stop_us` too. A cycle, a dangling link or a time going back is one line."""
    out, seen, prev = [], {sd["token"]}, sd
    while prev["next"]:
        tok = prev["next"]
        if tok in seen:
            raise UserError(f"sample_data {sd['token']}: its next links form a cycle (back to {tok})")
        seen.add(tok)
        try:
            cur = nusc.get("sample_data", tok)
        except KeyError:
            raise UserError(f"sample_data {prev['token']} links to {tok}, which is not in sample_data.json") from None
        if not isinstance(cur.get("timestamp"), int) or cur["timestamp"] <= prev["timestamp"]:
            raise UserError(f"sample_data {tok} follows {prev['token']} but its timestamp is not after it")
        if cur.get("is_key_frame"):
            return out, cur
        if stop_us is not None and cur["timestamp"] >= stop_us:
            return out, None
        out.append(cur)
        prev = cur
    return out, None


def nearest(records: list[dict], t_us: float) -> tuple[dict | None, float]:
    """The record nearest in time to t_us, and how far (µs); (None, inf) for none."""
    if not records:
        return None, float("inf")
    gaps = [abs(r["timestamp"] - t_us) for r in records]
    k = int(np.argmin(gaps))
    return records[k], float(gaps[k])


def group(chains: dict[str, list[dict]], t_us: int) -> dict[str, dict] | None:
    """Each camera's sweep nearest to t_us (the reference camera's time), or None when one has none
    within MAX_CAMERA_GAP_US."""
    out = {}
    for c, chain in chains.items():
        out[c], gap = nearest(chain, t_us)
        if gap > MAX_CAMERA_GAP_US:
            return None
    return out


def build_sweep_tasks(nusc, cameras: list[str], tasks: list[SampleTask], per_sample: int, *,
                      check: Callable[[SampleTask], str | None] | None = None, skipped: list[dict] | None = None,
                      dropped: Counter | None = None) -> list[SweepTask]:
    """The sweep frames following each keyframe task, in store order (keyframe, then time); indices
    0..M-1. A frame whose records are bad (`BadSample`) or for which `check` names a problem is an
    error naming it; with a `skipped` list it is left out and recorded there. Instants some camera or
    the LiDAR has no frame near enough for are left out and counted in `dropped` by reason."""
    if per_sample < 1:
        return []
    dropped = Counter() if dropped is None else dropped
    ref = reference_camera(cameras)
    out: list[SweepTask] = []
    for key in tasks:
        s = nusc.get("sample", key.token)
        stop = nusc.get("sample", s["next"])["timestamp"] if s["next"] else None
        chains = {c: chain_after(nusc, nusc.get("sample_data", s["data"][c]), stop)[0] for c in cameras}
        lidar_sd = nusc.get("sample_data", s["data"][LIDAR])
        lidar_chain, lidar_end = chain_after(nusc, lidar_sd, stop)
        lidars = [lidar_sd, *lidar_chain] + ([lidar_end] if lidar_end is not None else [])
        for pos in evenly(len(chains[ref]), per_sample):
            ref_sd = chains[ref][pos]
            sds = group(chains, ref_sd["timestamp"])
            if sds is None:
                dropped["a camera has no sweep near enough"] += 1
                continue
            lsd, gap = nearest(lidars, float(np.mean([sd["timestamp"] for sd in sds.values()])))
            if gap > MAX_LIDAR_GAP_US:
                dropped["no LiDAR sample_data near enough"] += 1
                continue
            task, problem = _sweep_task(nusc, key, len(out), ref_sd["token"], lsd, sds, cameras, check)
            if problem is not None:
                if skipped is None:
                    raise UserError(f"bad camera sweep {ref_sd['token']} (scene {key.scene_name}, after sample "
                                    f"{key.token}): {problem} (--on-bad-sample skip leaves such frames out)")
                skipped.append({"frame_token": ref_sd["token"], "scene_name": key.scene_name, "reason": problem})
                continue
            out.append(task)
    return out


def _sweep_task(nusc, key: SampleTask, index: int, token: str, lsd: dict, sds: dict[str, dict], cameras: list[str],
                check: Callable[[SampleTask], str | None] | None) -> tuple[SweepTask | None, str | None]:
    """(the frame's task, None) or (None, the problem with its records or files)."""
    try:
        ego = pose(nusc.get("ego_pose", lsd["ego_pose_token"]), "ego_pose")
        l2e = pose(nusc.get("calibrated_sensor", lsd["calibrated_sensor_token"]), "calibrated_sensor")
        ego_inv = np.linalg.inv(ego)
        cams = [camera_task(nusc, sds[c], c, ego_inv) for c in cameras]
        task = SweepTask(index, token, key.scene_name, key.shard, int(lsd["timestamp"]), ego, l2e,
                         [LidarFrame(lsd["token"], os.path.join(nusc.dataroot, lsd["filename"]), l2e)], cams,
                         key_index=key.index, key_token=key.token)
        return task, (check(task) if check else None)
    except BadSample as e:
        return None, e.message


def info(per_sample: int, cameras: list[str], count: int, num_rays: int, dropped: Counter,
         skipped: list[dict] | None, table: dict) -> dict:
    """manifest `camera_sweeps`: how the frames were chosen and what the store holds."""
    return {"per_sample": per_sample, "count": count, "num_rays": int(num_rays),
            "reference_camera": reference_camera(cameras), "selection": SELECTION,
            "max_camera_gap_us": MAX_CAMERA_GAP_US, "max_lidar_gap_us": MAX_LIDAR_GAP_US,
            "dropped": {k: int(v) for k, v in sorted(dropped.items())}, "skipped": list(skipped or []),
            "motion_masks": False, "sweeps": table}
