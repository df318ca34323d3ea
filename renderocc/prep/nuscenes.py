"""Read a nuScenes dataroot through the devkit tables into picklable per-sample tasks.

Only the main process loads the devkit; workers get small `SampleTask`s (paths + 4×4s) so a
trainval-sized table never crosses a process boundary.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from renderocc.classes import lidarseg_index_to_occ3d
from renderocc.errors import UserError
from renderocc.prep.adjacency import cam_to_key_ego, neighbour_positions
from renderocc.prep.checks import BadSample, pose_matrix
from renderocc.store.layout import shard_name

REQUIRED_TABLES = (
    "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
    "log", "scene", "sample", "sample_data", "sample_annotation", "map",
)
# BEVDet/RenderOcc camera order; cameras not listed here follow, sorted.
CAMERA_ORDER = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK",
                "CAM_BACK_RIGHT")
LIDAR = "LIDAR_TOP"


@dataclass
class LidarFrame:
    token: str
    path: str
    lidar2key: np.ndarray            # LiDAR(t) → key-ego (4×4)
    lidarseg_path: str | None = None  # keyframe with lidarseg only


@dataclass
class CameraTask:
    name: str
    token: str
    path: str
    timestamp: int
    size: tuple[int, int]            # original (W, H)
    K: np.ndarray                    # 3×3, original image
    cam2global: np.ndarray
    cam2ego: np.ndarray              # camera → key-ego


@dataclass
class SampleTask:
    index: int
    token: str
    scene_name: str
    shard: str
    timestamp: int
    ego_pose: np.ndarray             # key-ego → global
    lidar2ego: np.ndarray
    frames: list[LidarFrame]         # keyframe first, then sweeps (newest first)
    cameras: list[CameraTask]
    occ_gt_path: str | None = None
    adjacent: list[dict] = field(default_factory=list)


def pose(record: dict, table: str = "pose") -> np.ndarray:
    """4×4 from a devkit rotation [w, x, y, z] + translation record (sensor→ego or ego→global),
    checked (finite, unit quaternion): a bad record is a `BadSample` naming the table and token."""
    return pose_matrix(record, f"{table} {record.get('token', '?')}")


def colormap(vdir: str, vocab=None) -> dict[str, tuple[int, int, int]]:
    """The devkit's lidarseg colormap, extended to the dataset's own category names (coloured by
    their class in `vocab`, else grey): the devkit refuses lidarseg categories it has no colour for."""
    from nuscenes.utils.color_map import get_colormap

    cmap = dict(get_colormap())
    try:
        with open(os.path.join(vdir, "category.json")) as f:
            names = [c["name"] for c in json.load(f)]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"nuScenes table unreadable: {os.path.join(vdir, 'category.json')}: {e}") from None
    for name in names:
        if name not in cmap:
            k = vocab.lidarseg.get(name) if vocab is not None else None
            cmap[name] = tuple(vocab.colors[k]) if k is not None else (128, 128, 128)
    return cmap


def load_nuscenes(dataroot: str, version: str, vocab=None):
    """The devkit's NuScenes, with a one-line UserError for a missing dataroot/version/table.
    Lidarseg categories beyond nuScenes' own load too (colours from `vocab`, see `colormap`)."""
    if not os.path.isdir(dataroot):
        raise UserError(f"dataroot not found: {dataroot}")
    vdir = os.path.join(dataroot, version)
    if not os.path.isdir(vdir):
        raise UserError(f"version folder not found: {vdir}")
    for t in REQUIRED_TABLES:
        if not os.path.isfile(os.path.join(vdir, f"{t}.json")):
            raise UserError(f"nuScenes table missing: {os.path.join(vdir, t + '.json')}")
    from nuscenes.nuscenes import NuScenes

    try:
        nusc = NuScenes(version=version, dataroot=dataroot, verbose=False, colormap=colormap(vdir, vocab))
    except UnicodeDecodeError as e:
        raise UserError(undecodable_table(vdir) or f"devkit cannot load {vdir}: {e}") from None
    except Exception as e:  # devkit asserts / KeyErrors on inconsistent tables
        raise UserError(f"devkit cannot load {vdir}: {type(e).__name__}: {e}".splitlines()[0]) from e
    for table in nusc.table_names:  # the devkit's token index keeps the last of two equal tokens, silently
        records = getattr(nusc, table, [])
        if len(nusc._token2ind.get(table, {})) != len(records):
            seen: set[str] = set()
            dup = next(r["token"] for r in records if r["token"] in seen or seen.add(r["token"]))
            raise UserError(f"{os.path.join(vdir, table + '.json')}: token {dup} appears twice")
    check_lidarseg_indices(nusc.category, os.path.join(vdir, "category.json"))
    return nusc


def undecodable_table(vdir: str) -> str | None:
    """The first table under `vdir` that is not valid UTF-8 (JSON's encoding), as an error line."""
    for name in sorted(os.listdir(vdir)):
        path = os.path.join(vdir, name)
        if not name.endswith(".json") or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"nuScenes table {path} is not valid UTF-8 (byte {e.start}: {data[e.start:e.start + 4]!r})"
    return None


def check_lidarseg_indices(categories: list[dict], path: str) -> None:
    """Each category's lidarseg `index` (a label value of the one-byte .bin files) is an integer
    0..255 that no other category has: anything else would index past the label table or make a
    label mean two classes."""
    owner: dict[int, str] = {}
    for c in categories:
        if "index" not in c:
            continue
        idx, name = c["index"], c.get("name", c.get("token"))
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx <= 255:
            raise UserError(f"{path}: category {name!r} has lidarseg index {idx!r}: lidarseg labels are one "
                            "byte, an integer 0..255")
        if idx in owner:
            raise UserError(f"{path}: categories {owner[idx]!r} and {name!r} both have lidarseg index {idx}: "
                            "a label would mean either")
        owner[idx] = name


MAX_SCENE_NAME_BYTES = 200   # a shard file is <name>.parquet, written via a temp name (255-byte file names)


def scene_name_problem(name: object) -> str | None:
    """Why a scene name cannot name a shard and an output folder (None when it can): not text, not
    valid UTF-8 (a lone surrogate from a JSON escape), empty, '.' or '..', a path separator, a control
    or format character (newline, NUL, a bidirectional override), or longer than a file name allows."""
    if not isinstance(name, str):
        return "is not a string"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 (a lone surrogate)"
    if name in ("", ".", ".."):
        return "is empty, '.' or '..'"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        return f"holds the control character U+{ord(bad):04X}"
    if size > MAX_SCENE_NAME_BYTES:
        return f"is {size} bytes long (at most {MAX_SCENE_NAME_BYTES})"
    return None


def camera_channels(nusc, wanted: list[str] | None) -> list[str]:
    present = sorted({s["channel"] for s in nusc.sensor if s["modality"] == "camera"})
    if wanted:
        unknown = [c for c in wanted if c not in present]
        if unknown:
            raise UserError(f"camera not in dataset: {unknown[0]} (has {', '.join(present)})")
        return list(wanted)
    return [c for c in CAMERA_ORDER if c in present] + [c for c in present if c not in CAMERA_ORDER]


def has_lidarseg(nusc) -> bool:
    return bool(getattr(nusc, "lidarseg", None))


def label_table(nusc) -> np.ndarray:
    return lidarseg_index_to_occ3d(nusc.category)


def scene_samples(nusc, scene: dict) -> list[dict]:
    """The scene's keyframes in order, by its `next` links, checked as it goes: a link back to a
    sample already seen (a cycle would be followed forever), a sample of another scene, a `prev` that
    does not point back, or a timestamp not after the previous one is one line naming the scene."""
    out, seen, tok, prev = [], set(), scene["first_sample_token"], None
    name = scene.get("name", scene.get("token"))
    while tok:
        if tok in seen:
            raise UserError(f"scene {name}: sample links form a cycle (back to {tok} after {len(out)} samples)")
        seen.add(tok)
        try:
            s = nusc.get("sample", tok)
        except KeyError:
            raise UserError(f"scene {name}: sample {tok} is linked but not in sample.json") from None
        if not isinstance(s.get("timestamp"), int):
            raise UserError(f"scene {name}: sample {tok} has no integer timestamp ({s.get('timestamp')!r})")
        if "scene_token" in s and "token" in scene and s["scene_token"] != scene["token"]:
            raise UserError(f"scene {name}: sample {tok} belongs to another scene ({s['scene_token']})")
        if prev is not None and s.get("prev") != prev["token"]:
            raise UserError(f"scene {name}: sample {tok} follows {prev['token']} but its prev link does not point back")
        if prev is not None and s["timestamp"] <= prev["timestamp"]:
            raise UserError(f"scene {name}: sample {tok} follows {prev['token']} but its timestamp is not after it")
        out.append(s)
        prev, tok = s, s["next"]
    return out


def select_scenes(nusc, names: list[str] | None) -> list[dict]:
    """The scenes to prep, by name. Scene names name the store's shards (and output folders later), so
    two scenes of one name, a name `scene_name_problem` refuses, or two names that make one shard
    name are each one line naming scene.json and the scenes."""
    table = os.path.join(getattr(nusc, "table_root", ""), "scene.json")
    by_name: dict[str, dict] = {}
    for sc in nusc.scene:
        name = sc.get("name")
        if not isinstance(name, str):
            raise UserError(f"{table}: scene {sc.get('token')} has no name (name {name!r})")
        if name in by_name:
            raise UserError(f"{table}: scene name {name!r} appears twice (scenes {by_name[name].get('token')} and "
                            f"{sc.get('token')}): each scene's name names its shard in the store")
        by_name[name] = sc
    if names:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise UserError(f"scene not in dataset: {missing[0]}")
        selected = [by_name[n] for n in sorted(set(names))]
    else:
        selected = [by_name[n] for n in sorted(by_name)]
    shards: dict[str, str] = {}
    for sc in selected:
        name = sc["name"]
        if (problem := scene_name_problem(name)) is not None:
            raise UserError(f"{table}: scene {sc.get('token')}: name {name!r} {problem}: scene names name "
                            "the store's shards and output folders")
        shard = shard_name(name)
        if shard in shards:
            raise UserError(f"{table}: scene names {shards[shard]!r} and {name!r} both make shard name {shard!r}: "
                            "rename one")
        shards[shard] = name
    return selected


def _sweeps(nusc, lidar_sd: dict, n: int, key_pose_inv: np.ndarray) -> list[LidarFrame]:
    out, sd = [], lidar_sd
    for _ in range(n):
        if not sd["prev"]:
            break
        sd = nusc.get("sample_data", sd["prev"])
        T = key_pose_inv @ pose(nusc.get("ego_pose", sd["ego_pose_token"]), "ego_pose") @ pose(
            nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]), "calibrated_sensor")
        out.append(LidarFrame(sd["token"], os.path.join(nusc.dataroot, sd["filename"]), T))
    return out


def build_tasks(nusc, cameras: list[str], *, scenes: list[str] | None = None, sweeps: int = 0,
                adjacent: int = 3, max_samples: int | None = None,
                occ_gt_dir: str | None = None, check: Callable[[SampleTask], str | None] | None = None,
                skipped: list[dict] | None = None) -> list[SampleTask]:
    """One task per keyframe, in store order (scenes by name, samples in time order).

    A sample whose records are bad (`BadSample`) or for which `check` names a problem is an
    error naming it; with a `skipped` list it is left out instead and recorded there."""
    seg = has_lidarseg(nusc)
    tasks: list[SampleTask] = []
    per_scene: list[list[int]] = []
    for scene in select_scenes(nusc, scenes):
        idxs = []
        for s in scene_samples(nusc, scene):
            if max_samples is not None and len(tasks) >= max_samples:
                break
            try:
                task = _task(nusc, s, scene["name"], len(tasks), cameras, seg, sweeps, occ_gt_dir)
                problem = check(task) if check else None
            except BadSample as e:
                problem = e.message
            if problem is not None:
                if skipped is None:
                    raise UserError(f"bad sample {s['token']} (scene {scene['name']}): {problem} "
                                    "(--on-bad-sample skip leaves such samples out)")
                skipped.append({"sample_token": s["token"], "scene_name": scene["name"], "reason": problem})
                continue
            tasks.append(task)
            idxs.append(len(tasks) - 1)
        if idxs:
            per_scene.append(idxs)
    for idxs in per_scene:
        for pos, i in enumerate(idxs):
            key = tasks[i]
            for off, j in neighbour_positions(len(idxs), pos, adjacent):
                nb = tasks[idxs[j]]
                c2g = np.stack([c.cam2global for c in nb.cameras])
                key.adjacent.append({"offset": off, "sample_index": nb.index, "sample_token": nb.token,
                                     "cam2ego": cam_to_key_ego(key.ego_pose, c2g)})
    return tasks


def camera_task(nusc, sd: dict, name: str, ego_inv: np.ndarray) -> CameraTask:
    """Camera `name`'s sample_data `sd` (keyframe or sweep) as a task: camera → reference ego through
    the camera's own ego pose and global (`ego_inv`: global → the reference ego)."""
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    c2g = pose(nusc.get("ego_pose", sd["ego_pose_token"]), "ego_pose") @ pose(cs, "calibrated_sensor")
    return CameraTask(name, sd["token"], os.path.join(nusc.dataroot, sd["filename"]),
                      int(sd["timestamp"]), (int(sd["width"]), int(sd["height"])),
                      np.array(cs["camera_intrinsic"], dtype=np.float64), c2g, ego_inv @ c2g)


def _task(nusc, s: dict, scene_name: str, index: int, cameras: list[str], seg: bool, sweeps: int,
          occ_gt_dir: str | None) -> SampleTask:
    if LIDAR not in s["data"]:
        raise UserError(f"sample {s['token']} has no {LIDAR} data")
    lsd = nusc.get("sample_data", s["data"][LIDAR])
    ego = pose(nusc.get("ego_pose", lsd["ego_pose_token"]), "ego_pose")
    l2e = pose(nusc.get("calibrated_sensor", lsd["calibrated_sensor_token"]), "calibrated_sensor")
    ego_inv = np.linalg.inv(ego)
    seg_path = None
    if seg:
        seg_path = os.path.join(nusc.dataroot, nusc.get("lidarseg", lsd["token"])["filename"])
    frames = [LidarFrame(lsd["token"], os.path.join(nusc.dataroot, lsd["filename"]), l2e, seg_path)]
    frames += _sweeps(nusc, lsd, sweeps, ego_inv)
    cams = []
    for name in cameras:
        if name not in s["data"]:
            raise UserError(f"sample {s['token']} has no {name} image")
        cams.append(camera_task(nusc, nusc.get("sample_data", s["data"][name]), name, ego_inv))
    occ = None
    if occ_gt_dir:
        p = os.path.join(occ_gt_dir, scene_name, s["token"], "labels.npz")
        occ = p if os.path.isfile(p) else None
    return SampleTask(index, s["token"], scene_name, shard_name(scene_name), int(s["timestamp"]), ego, l2e,
                      frames, cams, occ)
