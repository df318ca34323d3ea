"""`prep nuscenes` end to end: plan → per-sample work (in worker processes) → shards → manifest.

Per sample, each LiDAR file is read once and projected into all cameras at once; each worker
writes its samples' images straight into the Zarr store (one object per sample) and returns only
the kept rays, so the main process just assembles one Parquet shard per scene. Camera sweeps
(`--camera-sweeps N`, renderocc/prep/camera_sweeps.py) go through the same per-sample work and
belong to their keyframe's shard: its completion record covers both.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from renderocc import __version__
from renderocc import classes as vocab_mod
from renderocc.classes import IGNORE
from renderocc.errors import UserError
from renderocc.geometry import OCC3D_GRID
from renderocc.prep import camera_sweeps as csweeps
from renderocc.prep import checks
from renderocc.prep import freebeams as fbeams
from renderocc.prep import images as imgs
from renderocc.prep import nuscenes as nus
from renderocc.prep.camera_sweeps import SweepTask
from renderocc.prep.nuscenes import SampleTask
from renderocc.prep.projection import Projected, lidar_to_cam, occlusion_mask, project, zbuffer
from renderocc.safe_load import open_npz
from renderocc.store import fsio, jpeg_codec, layout, writer
from renderocc.store import manifest as manifest_mod
from renderocc.store.layout import SCHEMA_VERSION

POINT_BYTES = checks.POINT_BYTES  # float32 x, y, z, intensity, ring


@dataclass
class PrepOptions:
    dataroot: str
    version: str
    out: str
    scenes: list[str] | None = None
    cameras: list[str] | None = None
    image_size: tuple[int, int] = (704, 256)   # (W, H)
    adjacent: int = 3
    sweeps: int = 0
    min_depth: float = 1.0
    occlusion_filter: bool = False
    occ_gt: str | None = None
    workers: int = 1
    shard_index: int = 0
    num_shards: int = 1
    max_samples: int | None = None
    image_codec: str = layout.DEFAULT_IMAGE_CODEC   # layout.IMAGE_CODECS
    free_beams: bool = True   # store the key frame's no-return LiDAR beams (renderocc/prep/freebeams.py)
    jpeg_quality: int = layout.DEFAULT_JPEG_QUALITY
    on_bad_sample: str = "error"   # error: one line naming the record/file; skip: leave it out (manifest lists it)
    progress: bool = True
    class_map: str | None = None  # class-map file; default: <dataroot>/classes.toml, else Occ3D-nuScenes
    camera_sweeps: int = 0   # store up to N unlabelled camera frames per keyframe interval (prep/camera_sweeps.py)


def resolve_vocabulary(opts: PrepOptions) -> vocab_mod.Vocabulary:
    """--class-map, else the dataroot's classes.toml, else the default (Occ3D-nuScenes)."""
    if opts.class_map:
        return vocab_mod.load_class_map(opts.class_map)
    own = os.path.join(opts.dataroot, vocab_mod.CLASS_MAP_FILE)
    return vocab_mod.load_class_map(own) if os.path.isfile(own) else vocab_mod.default_vocabulary()


NO_OCC_GT = "none"  # --occ-gt none: no Occ3D GT even where <dataroot>/gts exists (GT of another vocabulary)


# ---------------------------------------------------------------- per-sample work (workers)

def load_cloud(path: str) -> np.ndarray:
    """(N, 5) float32 from a .pcd.bin; a size that is not a multiple of 20 bytes is corrupt, and so
    is a point with a non-finite coordinate (the sample is refused, or skipped and recorded with
    --on-bad-sample skip: dropping points would shift the lidarseg labels and the firing order)."""
    if not os.path.isfile(path):
        raise UserError(f"LiDAR file missing: {path}")
    if (problem := checks.cloud_problem(path)) is not None:
        raise UserError(problem)
    pts = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    if (problem := checks.points_problem(pts, path)) is not None:
        raise UserError(problem)
    return pts


def load_lidarseg(path: str, n_points: int, valid: np.ndarray | None = None) -> np.ndarray:
    """One label per point; with `valid` (bool (256,)) every index must be one category.json defines."""
    if not os.path.isfile(path):
        raise UserError(f"lidarseg file missing: {path}")
    lab = np.fromfile(path, dtype=np.uint8)
    if (problem := checks.lidarseg_values_problem(lab, n_points, valid, path)) is not None:
        raise UserError(problem)
    return lab


def sample_rays(task: SampleTask, sizes: np.ndarray, table: np.ndarray | None, min_depth: float,
                occlusion: bool, valid: np.ndarray | None = None,
                key_cloud: np.ndarray | None = None) -> tuple[Projected, np.ndarray]:
    """Kept projections of the keyframe (+ sweeps) into all cameras and their Occ3D labels
    (`key_cloud`: the keyframe's points when the caller already read them)."""
    c2e = np.stack([c.cam2ego for c in task.cameras])
    K = np.stack([c.K for c in task.cameras])
    parts, labels = [], []
    for f, frame in enumerate(task.frames):
        pts = key_cloud if f == 0 and key_cloud is not None else load_cloud(frame.path)
        p = project(pts, lidar_to_cam(frame.lidar2key, c2e), K, sizes, min_depth)
        if f == 0 and frame.lidarseg_path and table is not None:
            lab = table[load_lidarseg(frame.lidarseg_path, len(pts), valid)[p.point]]
        else:
            lab = np.full(len(p.point), IGNORE, np.uint8)
        parts.append(p)
        labels.append(lab)
    if len(parts) == 1:
        p, lab = parts[0], labels[0]
    else:
        p = Projected(*(np.concatenate([getattr(q, k) for q in parts])
                        for k in ("cam", "point", "u", "v", "depth")))
        lab = np.concatenate(labels)
    if occlusion:
        keep = np.nonzero(occlusion_mask(p, sizes))[0]
        p, lab = p.take(keep), lab[keep]
    idx = zbuffer(p, sizes)
    if len(parts) > 1:   # group rows by camera (one frame's output already is)
        idx = idx[np.argsort(p.cam[idx], kind="stable")]
    elif len(idx) == len(p.depth):   # no pixel hit twice: nothing to drop
        return p, lab
    return p.take(idx), lab[idx]


def load_occ_gt(path: str, free: int = vocab_mod.FREE) -> dict[str, np.ndarray]:
    """An Occ3D labels.npz whose semantics are classes of the store vocabulary (0..free, 255)."""
    try:
        with open_npz(path, "Occ3D file", OCC3D_GRID.num_voxels * 8) as z:
            occ = {a: np.asarray(z[a], np.uint8) for a in layout.OCC_GT_ARRAYS}
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"bad Occ3D file {path}: {e}") from e
    shape = OCC3D_GRID.shape
    for a, v in occ.items():
        if v.shape != shape:
            raise UserError(f"Occ3D {path}: {a} has shape {v.shape}, expected {shape}")
    bad = occ["semantics"][(occ["semantics"] > free) & (occ["semantics"] != IGNORE)]
    if bad.size:
        raise UserError(f"Occ3D {path}: semantics hold class {int(bad.max())}, outside the class map "
                        f"(0..{free - 1}, free {free}): give the GT of this vocabulary (or --class-map)")
    return occ


_CFG: dict = {}


def tune_allocator() -> None:
    """Keep freed numpy buffers in the heap instead of returning them to the OS.

    Per sample we allocate ~20 short-lived arrays of 0.1–2 MB; glibc serves those with mmap and
    unmaps them on free, so every sample pays ~1500 fresh page faults, which on a VM cost more
    than the arithmetic (measured: 8.9 → 4.5 ms per sample). No-op where glibc is absent.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)    # M_MMAP_THRESHOLD (glibc's own dynamic maximum)
        libc.mallopt(-1, 64 << 20)    # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def one_blas_thread():
    """A context limiting BLAS/LAPACK to one thread (a no-op without threadpoolctl, which
    nuscenes-devkit's scikit-learn brings). Prep's matrices are tiny: an inverse of six 4×4s takes
    5 µs on one OpenBLAS thread and ~100 µs of CPU, up to 45 ms of wall on a loaded machine, with
    its default threads (measured); the one large GEMM has K = 4, so every result is the same."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _init_worker(cfg: dict, single_thread: bool = False) -> None:
    _CFG.clear()
    _CFG.update(cfg)
    tune_allocator()
    if single_thread:   # N worker processes on N cores: OpenCV's own threads would oversubscribe
        imgs.cv2.setNumThreads(1)
        one_blas_thread()   # for the worker process's life


def load_images(task: SampleTask, size_wh: tuple[int, int]) -> np.ndarray:
    """The sample's (n_cams, H, W, 3) uint8 RGB images at the stored size."""
    return np.stack([imgs.load_resized(c.path, c.size, size_wh) for c in task.cameras])


def read_images(task: SampleTask, size_wh: tuple[int, int], quality: int | None) -> tuple[np.ndarray, bytes | None]:
    """`load_images`, plus (quality not None) their store object, JPEG-encoded here so a reader
    thread does it (OpenCV's encoder releases the GIL too)."""
    images = load_images(task, size_wh)
    return images, (None if quality is None else jpeg_codec.shard_bytes(images, quality))


def compute_sample(task: SampleTask, quality: int | None, occ_codec=None) -> dict:
    """Everything one keyframe needs that touches no store: its images (and their store object,
    when `quality` is not None), its rays, its free beams and its Occ3D GT. Pure, so reader
    threads run it for the keyframes ahead (OpenCV and most numpy loops release the GIL). A camera
    sweep (`SweepTask`) gets the same images and rays (no lidarseg: label 255), nothing else."""
    cfg = _CFG
    sweep = isinstance(task, SweepTask)
    pixels, encoded = read_images(task, cfg["image_size"], quality)
    sizes = np.array([c.size for c in task.cameras], dtype=np.float64)
    key = task.frames[0]   # key frame only: its LiDAR frame → key-ego is lidar2ego
    key_cloud = load_cloud(key.path)
    p, lab = sample_rays(task, sizes, cfg["label_table"], cfg["min_depth"], cfg["occlusion"],
                         cfg.get("valid_lidarseg"), key_cloud)
    occ = load_occ_gt(task.occ_gt_path, cfg["free"]) if task.occ_gt_path else None
    occ_encoded = None if occ is None or occ_codec is None else writer.encode_occ_gt(occ, occ_codec)
    return {"index": task.index, "kind": "sweep" if sweep else "key", "cam": p.cam, "u": p.u.astype(np.float32),
            "v": p.v.astype(np.float32), "depth": p.depth.astype(np.float32), "label": lab, "pixels": pixels,
            "encoded": encoded, "occ": occ, "occ_encoded": occ_encoded,
            "free_beams": fbeams.free_beams(key_cloud, key.lidar2key) if cfg.get("free_beams") and not sweep
            else None}


def write_sample(computed: dict) -> dict:
    """Write a `compute_sample` result's images and Occ3D GT into Zarr; return its rays and the
    digests the shard record keeps."""
    root, res = _CFG["root"], dict(computed)
    i = res["index"]
    frames = layout.SWEEP_FRAMES if res["kind"] == "sweep" else layout.KEYFRAMES
    res["images"] = writer.write_images(root, i, res.pop("pixels"), _CFG["codec"], res.pop("encoded"), frames.images)
    occ, occ_encoded = res["occ"], res.pop("occ_encoded")
    res["occ"] = None if occ is None else writer.write_occ_gt(root, i, occ, occ_encoded)
    return res


def iter_samples(tasks: list[SampleTask]):
    """Each keyframe's `compute_sample` in reader threads, run ahead, and its `write_sample` here,
    in store order: this thread only writes. `readers` threads (config), each one sample ahead."""
    readers = max(1, int(_CFG.get("readers", 1)))
    quality = writer.prebuilt_image_quality(_CFG["root"], _CFG["codec"])
    occ_codec = writer.prebuilt_occ_codec(_CFG["root"]) if any(t.occ_gt_path for t in tasks) else None
    with ThreadPoolExecutor(readers, thread_name_prefix="prep-samples") as pool:
        ahead = deque(pool.submit(compute_sample, t, quality, occ_codec) for t in tasks[:readers])
        for k in range(len(tasks)):
            computed = ahead.popleft().result()
            if k + readers < len(tasks):
                ahead.append(pool.submit(compute_sample, tasks[k + readers], quality, occ_codec))
            yield write_sample(computed)


def process_samples(tasks: list[SampleTask]) -> list[dict]:
    """`iter_samples` of one worker job."""
    return list(iter_samples(tasks))


def batches(tasks: list[SampleTask], size: int) -> list[list[SampleTask]]:
    """Consecutive runs of `size` tasks: the unit a worker prefetches within."""
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]


BATCH = 4   # samples per worker job: prefetch needs a next sample; small keeps the workers balanced


# ---------------------------------------------------------------- plan, shards, manifest

def _fill_sizes(tasks: list[SampleTask], known: dict[str, tuple[int, int]] | None = None) -> None:
    """Tables with width/height 0 (allowed by the format): read the size from the image."""
    known = {} if known is None else known
    for t in tasks:
        for c in t.cameras:
            if c.size[0] <= 0 or c.size[1] <= 0:
                c.size = known.get(c.name) or imgs.image_size(c.path)
            known.setdefault(c.name, c.size)


def make_plan(opts: PrepOptions, cameras: list[str], tasks: list[SampleTask], has_occ: bool,
              vocab: vocab_mod.Vocabulary | None = None, sweeps: list[SweepTask] | None = None) -> dict:
    options = {"version": opts.version, "cameras": cameras, "image_size_wh": list(opts.image_size),
               "image_codec": opts.image_codec,
               "jpeg_quality": opts.jpeg_quality if opts.image_codec == "jpeg" else None,
               "adjacent": opts.adjacent, "sweeps": opts.sweeps, "min_depth": opts.min_depth,
               "occlusion_filter": opts.occlusion_filter, "occ_gt": has_occ, "free_beams": opts.free_beams,
               "scenes": sorted(opts.scenes) if opts.scenes else None, "max_samples": opts.max_samples}
    if vocab is not None and vocab != vocab_mod.default_vocabulary():  # default stores keep their fingerprint
        options["class_map"] = {"name": vocab.name, "sha256": vocab.digest()}
    if opts.camera_sweeps:   # without them the options (and the fingerprint's inputs) are as before
        options["camera_sweeps"] = opts.camera_sweeps
    shards = []
    for t in tasks:
        if not shards or shards[-1]["name"] != t.shard:
            shards.append({"name": t.shard, "scene_name": t.scene_name, "first_sample": t.index,
                           "num_samples": 0})
        shards[-1]["num_samples"] += 1
    frames = "".join(t.token for t in tasks)
    if opts.camera_sweeps:   # each shard's sweep frames follow its keyframes: contiguous, in store order
        sweeps = sweeps or []
        per_shard, first = Counter(t.shard for t in sweeps), 0
        for sh in shards:
            sh.update(first_sweep=first, num_sweeps=per_shard[sh["name"]])
            first += per_shard[sh["name"]]
        frames += "|" + "".join(f"{t.token}:{t.frames[0].token}" for t in sweeps)
    tokens = hashlib.sha256(frames.encode()).hexdigest()
    fp = hashlib.sha256(json.dumps([SCHEMA_VERSION, options, shards, tokens]).encode()).hexdigest()
    plan = {"format": layout.FORMAT_NAME, "schema_version": SCHEMA_VERSION, "fingerprint": fp,
            "options": options, "shards": shards, "num_samples": len(tasks)}
    if opts.camera_sweeps:
        plan["num_sweeps"] = len(sweeps)
    return plan


def shard_frames(s: dict, tasks: list[SampleTask], sweeps: list[SweepTask]) -> list[SampleTask]:
    """The frames of plan shard `s`: its keyframes, then its camera sweeps."""
    first, n = s.get("first_sweep", 0), s.get("num_sweeps", 0)
    return tasks[s["first_sample"]:s["first_sample"] + s["num_samples"]] + sweeps[first:first + n]


def sweeps_table(sweeps: list[SweepTask], out: tuple[int, int], records: dict[str, dict]) -> pa.Table:
    """sweeps.parquet (`layout.SWEEPS_SCHEMA`): one row per camera sweep frame, in sweep order."""
    fr = layout.SWEEP_FRAMES
    rows: dict[str, list] = {f.name: [] for f in fr.schema}
    pos = {}
    for name, rec in records.items():
        for k in range(rec.get(fr.count, 0)):
            pos[rec[fr.first] + k] = (name, k, rec[fr.ray_counts][k])
    for t in sweeps:
        shard, rg, count = pos[t.index]
        r = {"sweep_index": t.index, "sample_token": t.token, "key_sample_index": t.key_index,
             "key_sample_token": t.key_token, "scene_name": t.scene_name, "timestamp": t.timestamp,
             "lidar_token": t.frames[0].token, "ego_pose": t.ego_pose.ravel(), "lidar2ego": t.lidar2ego.ravel(),
             "cam_token": [c.token for c in t.cameras], "cam_timestamp": [c.timestamp for c in t.cameras],
             "K": [imgs.fit(c.size, out).K(c.K).ravel() for c in t.cameras],
             "K_orig": [c.K.ravel() for c in t.cameras], "cam2ego": [c.cam2ego.ravel() for c in t.cameras],
             "shard": shard, "ray_row_group": rg, "ray_count": count}
        for k, v in r.items():
            rows[k].append(v)
    return pa.Table.from_pydict(rows, schema=fr.schema)


def samples_table(tasks: list[SampleTask], out: tuple[int, int], records: dict[str, dict]) -> pa.Table:
    rows: dict[str, list] = {f.name: [] for f in layout.SAMPLES_SCHEMA}
    pos = {}
    for name, rec in records.items():
        for k in range(rec["num_samples"]):
            pos[rec["first_sample"] + k] = (name, k, rec["ray_counts"][k], rec["has_occ_gt"][k])
    for t in tasks:
        shard, rg, count, has_occ = pos[t.index]
        r = {"sample_index": t.index, "sample_token": t.token, "scene_name": t.scene_name,
             "timestamp": t.timestamp, "lidar_token": t.frames[0].token,
             "ego_pose": t.ego_pose.ravel(), "lidar2ego": t.lidar2ego.ravel(),
             "cam_token": [c.token for c in t.cameras], "cam_timestamp": [c.timestamp for c in t.cameras],
             "K": [imgs.fit(c.size, out).K(c.K).ravel() for c in t.cameras],
             "K_orig": [c.K.ravel() for c in t.cameras], "cam2ego": [c.cam2ego.ravel() for c in t.cameras],
             "adj_offset": [a["offset"] for a in t.adjacent],
             "adj_sample_index": [a["sample_index"] for a in t.adjacent],
             "adj_sample_token": [a["sample_token"] for a in t.adjacent],
             "adj_cam2ego": [[m.ravel() for m in a["cam2ego"]] for a in t.adjacent],
             "shard": shard, "ray_row_group": rg, "ray_count": count, "has_occ_gt": has_occ}
        for k, v in r.items():
            rows[k].append(v)
    return pa.Table.from_pydict(rows, schema=layout.SAMPLES_SCHEMA)


def build_manifest(opts: PrepOptions, nusc, cameras: list[str], tasks: list[SampleTask], plan: dict,
                   records: dict[str, dict], samples_info: dict, occ_dir: str | None,
                   vocab: vocab_mod.Vocabulary | None = None, sweeps_info: dict | None = None) -> dict:
    seg = nus.has_lidarseg(nusc)
    first = tasks[0]
    per_cam = {}
    for c in first.cameras:
        f = imgs.fit(c.size, opts.image_size)
        per_cam[c.name] = {"original_size": list(c.size), "scale": [f.scale_x, f.scale_y],
                           "crop": list(f.crop)}
    vocab = vocab or vocab_mod.default_vocabulary()
    lid = {c["name"]: int(c["index"]) for c in nusc.category if seg and "index" in c}
    has_occ = any(any(r["has_occ_gt"]) for r in records.values())
    shard_keys = ("name", "scene_name", "first_sample", "num_samples", "num_rays", "rays_path",
                  "rays_sha256", "rays_bytes", "images_sha256", "occ_gt_sha256")
    shards = [{k: records[s["name"]][k] for k in shard_keys} for s in plan["shards"]]
    described = {sc["name"]: sc.get("description", "") for sc in nusc.scene}
    for sh in shards:   # conditions ("Night, rain", "conditions: night, wet") for QA to group by
        sh["scene_description"] = described.get(sh["scene_name"], "")
    if opts.free_beams:
        for sh in shards:
            sh.update({k: records[sh["name"]][k] for k in ("free_beams_path", "free_beams_sha256",
                                                            "num_free_beams")})
    if sweeps_info is not None:
        fr = layout.SWEEP_FRAMES
        for sh in shards:
            sh.update({k: records[sh["name"]][k] for k in (fr.first, fr.count, fr.num_rays, fr.rays_path,
                                                            fr.rays_sha256, fr.rays_bytes, fr.images_sha256)})
    return {
        "format": layout.FORMAT_NAME, "schema_version": SCHEMA_VERSION,
        "tool": {"name": "renderocc", "version": __version__, "command": "prep nuscenes"},
        "created": writer.now_iso(),
        "source": {"dataset": "nuscenes", "dataroot": os.path.abspath(opts.dataroot), "version": opts.version,
                   "lidarseg": seg, "occ_gt_dir": os.path.abspath(occ_dir) if occ_dir else None,
                   "scenes": plan["options"]["scenes"], "max_samples": opts.max_samples},
        "classes": vocab_mod.manifest_classes(vocab, lid),
        "cameras": cameras,
        "image": {"stored_size": list(opts.image_size), "size_order": "WH", "dtype": "uint8 RGB",
                  "codec": opts.image_codec,
                  "jpeg_quality": opts.jpeg_quality if opts.image_codec == "jpeg" else None,
                  "resize": "scale s=max(W/W0,H/H0) (JPEG decoded at 1/2, 1/4 or 1/8 when that still covers the "
                            "size, then bilinear; INTER_AREA below half scale), crop centred in x and from the "
                            "top in y; "
                            "pixel centres: u' + 0.5 = s (u + 0.5) - crop",
                  "per_camera": per_cam},
        "grid": OCC3D_GRID.to_record(),
        "labels": {"lidar_channel": nus.LIDAR, "min_depth": opts.min_depth, "sweeps": opts.sweeps,
                   "occlusion_filter": ({"cell_px": 4, "window_cells": 3, "ratio": 0.8}
                                        if opts.occlusion_filter else None),
                   "zbuffer": "nearest point per original-image pixel (floor(u), floor(v))",
                   "pixels": "devkit: u, v = (K p)_xy / z in the original image; "
                             "kept 1 < u < W-1, 1 < v < H-1",
                   "depth": "camera z in metres (ray distance = z * |K^-1 [u, v, 1]|)"},
        "adjacent": opts.adjacent,
        "supervision": manifest_mod.supervision(True, seg, has_occ and all(
            all(r["has_occ_gt"]) for r in records.values()), False),
        "motion_masks": None,
        "free_beams": free_beams_info(sum(r["num_free_beams"] for r in records.values()))
        if opts.free_beams else None,
        layout.CAMERA_SWEEPS: sweeps_info,
        "num_samples": len(tasks), "num_rays": int(sum(r["num_rays"] for r in records.values())),
        "skipped_samples": plan.get("skipped_samples", []),
        "samples": samples_info, "shards": shards,
    }


def free_beams_info(num_beams: int) -> dict:
    """manifest `free_beams`: how the no-return beams were found and which were kept."""
    return {"method": "LiDAR key frame: beams without a return (firing order when the cloud holds every "
                      "firing, else empty azimuth bins per ring); see renderocc/prep/freebeams.py",
            "frame": "key-ego; origin = LiDAR sensor, direction = unit vector",
            "min_elevation_deg": fbeams.MIN_ELEVATION_DEG, "erode": fbeams.ERODE,
            "no_return_range": fbeams.NO_RETURN_RANGE, "num_beams": int(num_beams)}


def normalise_root(out: str) -> str:
    if fsio.is_local(out):
        return os.path.abspath(fsio.local_path(out))
    return out.rstrip("/")


def run(opts: PrepOptions, log=print) -> dict:
    """Prepare (or resume) a store; returns a summary dict."""
    freeze = gc.get_freeze_count() == 0   # a caller's own gc.freeze is left as it was
    try:
        return _run(opts, log, freeze)
    finally:
        if freeze:
            gc.unfreeze()   # see _run: the devkit's tables are collected like anything else once dropped


def _run(opts: PrepOptions, log, freeze: bool) -> dict:
    t0 = time.perf_counter()
    if opts.num_shards < 1 or not 0 <= opts.shard_index < opts.num_shards:
        raise UserError(f"--shard-index {opts.shard_index} must be in [0, --num-shards {opts.num_shards})")
    if isinstance(opts.camera_sweeps, bool) or not isinstance(opts.camera_sweeps, int) or \
            not 0 <= opts.camera_sweeps <= csweeps.MAX_PER_SAMPLE:
        raise UserError(f"--camera-sweeps must be an integer 0..{csweeps.MAX_PER_SAMPLE} (got {opts.camera_sweeps!r})")
    root = normalise_root(opts.out)
    vocab = resolve_vocabulary(opts)
    # The devkit's tables are hundreds of thousands of long-lived objects (JSON: no cycles) that
    # every full pass of the cyclic GC walks again: 120-140 ms per pass for v1.0-mini's, measured
    # (two passes while they load, and one every few runs of 41 samples, ~0.7 s each); trainval's
    # are ~100x larger. No collection while they load, then frozen (exempt) until `run` returns.
    collecting = gc.isenabled()
    gc.disable()
    try:
        nusc = nus.load_nuscenes(opts.dataroot, opts.version, vocab)
    finally:
        if collecting:
            gc.enable()
    if freeze:
        gc.freeze()
    cameras = nus.camera_channels(nusc, opts.cameras)
    occ_dir = None if opts.occ_gt == NO_OCC_GT else opts.occ_gt
    if occ_dir and not os.path.isdir(occ_dir):
        raise UserError(f"--occ-gt folder not found: {occ_dir} (`--occ-gt {NO_OCC_GT}` preps without Occ3D GT)")
    if opts.occ_gt is None and os.path.isdir(os.path.join(opts.dataroot, "gts")):
        occ_dir = os.path.join(opts.dataroot, "gts")
    valid = checks.valid_lidarseg_indices(nusc.category) if nus.has_lidarseg(nusc) else None
    known: dict[str, tuple[int, int]] = {}

    def check(task: SampleTask) -> str | None:
        try:
            _fill_sizes([task], known)
        except UserError as e:
            return e.message
        return checks.sample_problem(task, valid, read_files=opts.on_bad_sample == "skip")

    skipped: list[dict] | None = [] if opts.on_bad_sample == "skip" else None
    tasks = nus.build_tasks(nusc, cameras, scenes=opts.scenes, sweeps=opts.sweeps, adjacent=opts.adjacent,
                            max_samples=opts.max_samples, occ_gt_dir=occ_dir, check=check, skipped=skipped)
    for sk in skipped or []:
        log(f"skipped sample {sk['sample_token']} (scene {sk['scene_name']}): {sk['reason']}")
    if not tasks:
        raise UserError("no samples selected" + (f" ({len(skipped)} skipped as bad)" if skipped else ""))
    _fill_sizes(tasks, known)
    sweeps, sweep_skipped, dropped = _camera_sweeps(opts, nusc, cameras, tasks, known, log)
    if opts.sweeps:   # sweeps/ is often not downloaded: say so before writing anything
        for t in tasks:
            for f in t.frames[1:]:
                if not os.path.isfile(f.path):
                    raise UserError(f"LiDAR file missing: {f.path} (needed by --sweeps {opts.sweeps})")
    has_occ = any(t.occ_gt_path for t in tasks)
    plan = make_plan(opts, cameras, tasks, has_occ, vocab, sweeps)
    plan["skipped_samples"] = skipped or []
    writer.check_or_write_plan(root, plan)
    writer.create_arrays(root, len(tasks), len(cameras), opts.image_size, has_occ, opts.image_codec,
                         opts.jpeg_quality, sweeps=len(sweeps))

    fp = plan["fingerprint"]
    mine = [s for k, s in enumerate(plan["shards"]) if k % opts.num_shards == opts.shard_index]
    # a sealed store is never rewritten (prep motion-masks may have changed its shards since)
    sealed = fsio.exists(root, layout.MANIFEST)
    todo = [] if sealed else [s for s in mine if not writer.shard_done(root, s["name"], fp)]
    todo_tasks = [t for s in todo for t in shard_frames(s, tasks, sweeps)]
    for s in todo:
        writer.clean_tmp(root, s["name"])
    with_sweeps = f" (+ {len(sweeps)} camera sweep frames)" if opts.camera_sweeps else ""
    log(f"store {root}: {len(tasks)} samples{with_sweeps} in {len(plan['shards'])} shards; this job: {len(mine)} "
        f"shards, {len(mine) - len(todo)} already complete, {len(todo_tasks)} {'frames' if with_sweeps else 'samples'}"
        " to do")
    cfg = {"root": root, "image_size": tuple(opts.image_size), "min_depth": opts.min_depth,
           "codec": opts.image_codec,
           "occlusion": opts.occlusion_filter, "free_beams": opts.free_beams,
           "label_table": vocab.lidarseg_table(nusc.category) if nus.has_lidarseg(nusc) else None,
           "valid_lidarseg": valid, "free": vocab.free}
    workers = opts.workers
    if workers > 1 and not fsio.is_local(root) and root.startswith("memory://"):
        log("memory:// stores live in one process: using --workers 1")
        workers = 1
    rays = _run_tasks(todo_tasks, todo, tasks, sweeps, cameras, cfg, workers, root, fp, opts.progress)
    done = writer.shard_records(root)
    complete = all(s["name"] in done and done[s["name"]].get("fingerprint") == fp for s in plan["shards"])
    if complete and not sealed:   # other jobs' shards too: re-check their files before sealing
        damaged = [s["name"] for s in plan["shards"] if not writer.shard_files_intact(root, done[s["name"]])]
        if damaged:
            raise UserError(f"store {root}: shard {damaged[0]} changed since it was written; "
                            "re-run prep to redo it")
    if complete and not sealed:
        records = {s["name"]: done[s["name"]] for s in plan["shards"]}
        info = writer.write_samples(root, samples_table(tasks, opts.image_size, records))
        sweeps_info = None
        if opts.camera_sweeps:   # sweeps.parquet before the manifest, like samples.parquet
            fr = layout.SWEEP_FRAMES
            table = writer.write_samples(root, sweeps_table(sweeps, opts.image_size, records), fr)
            sweeps_info = csweeps.info(opts.camera_sweeps, cameras, len(sweeps),
                                       sum(r[fr.num_rays] for r in records.values()), dropped, sweep_skipped, table)
        writer.write_manifest(root, build_manifest(opts, nusc, cameras, tasks, plan, records, info, occ_dir,
                                                   vocab, sweeps_info))
    nusc.__dict__.pop("explorer", None)   # its back-reference made the tables a cycle: now refcounting frees them
    dt = time.perf_counter() - t0
    n_sweeps = sum(isinstance(t, SweepTask) for t in todo_tasks)
    return {"root": root, "samples": len(todo_tasks) - n_sweeps, "sweeps": n_sweeps, "rays": rays[0],
            "sweep_rays": rays[1], "seconds": dt, "complete": complete,
            "shards_done": len(mine) - len(todo), "shards_written": len(todo)}


def _camera_sweeps(opts: PrepOptions, nusc, cameras: list[str], tasks: list[SampleTask],
                   known: dict[str, tuple[int, int]], log) -> tuple[list[SweepTask], list[dict] | None, Counter]:
    """The camera sweep frames to store (`--camera-sweeps`), their records and files checked like a
    keyframe's before anything is written; (frames, those `--on-bad-sample skip` left out, instants
    dropped by reason)."""
    dropped: Counter = Counter()
    if not opts.camera_sweeps:
        return [], None, dropped
    skip = opts.on_bad_sample == "skip"

    def check(task: SampleTask) -> str | None:
        try:
            _fill_sizes([task], known)
        except UserError as e:
            return e.message
        return checks.sample_problem(task, None, read_files=skip)

    skipped: list[dict] | None = [] if skip else None
    sweeps = csweeps.build_sweep_tasks(nusc, cameras, tasks, opts.camera_sweeps, check=check, skipped=skipped,
                                       dropped=dropped)
    for sk in skipped or []:
        log(f"skipped camera sweep {sk['frame_token']} (scene {sk['scene_name']}): {sk['reason']}")
    for why, n in sorted(dropped.items()):
        log(f"camera sweeps: {n} instant(s) left out ({why})")
    return sweeps, skipped, dropped


def _run_tasks(todo_tasks, todo, tasks, sweeps, cameras, cfg, workers, root, fp, progress) -> tuple[int, int]:
    """Process samples (then each shard's camera sweeps) in store order; write each shard as soon as
    its last frame is in. Returns (keyframe rays, sweep rays) written."""
    if not todo_tasks:
        return 0, 0
    by_shard = {s["name"]: s for s in todo}
    pending: dict[str, list[dict]] = {s["name"]: [] for s in todo}
    total = [0, 0]
    bar = tqdm(total=len(todo_tasks), unit="frame" if sweeps else "sample", disable=not progress, file=sys.stderr,
               desc="prep nuscenes")
    pool = None
    if workers > 1:
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(cfg, True))
        results = pool.imap(process_samples, batches(todo_tasks, BATCH))
    else:   # one stream: the readers run ahead across batch ends; two of them keep both cores busy
        _init_worker({**cfg, "readers": 2})
        results = [iter_samples(todo_tasks)]
    limits = contextlib.ExitStack()   # in this process: one BLAS thread while it does the work
    if pool is None:
        limits.enter_context(one_blas_thread())
    try:
        for res in (r for batch in results for r in batch):
            t = (sweeps if res["kind"] == "sweep" else tasks)[res["index"]]
            pending[t.shard].append(res)
            bar.update(1)
            s = by_shard[t.shard]
            if len(pending[t.shard]) == s["num_samples"] + s.get("num_sweeps", 0):
                key_rays, sweep_rays = _write_shard(root, s, pending.pop(t.shard), tasks, sweeps, cameras, fp)
                total[0] += key_rays
                total[1] += sweep_rays
    finally:
        limits.close()
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return total[0], total[1]


def _write_shard(root: str, s: dict, results: list[dict], tasks, sweeps, cameras, fp: str) -> tuple[int, int]:
    """The shard's ray files, then its completion record (with the checksums of both frame kinds)."""
    frames = [r for r in results if r["kind"] == "sweep"]
    results = sorted((r for r in results if r["kind"] != "sweep"), key=lambda r: r["index"])
    tables = [writer.ray_table(tasks[r["index"]].token, cameras, r["cam"], r["u"], r["v"], r["depth"],
                               r["label"]) for r in results]
    stats = writer.write_ray_shard(root, s["name"], tables)
    if "num_sweeps" in s:   # camera sweeps (also none in this shard: an empty file, checked like any)
        fr = layout.SWEEP_FRAMES
        frames.sort(key=lambda r: r["index"])
        stats.update(writer.write_ray_shard(root, s["name"], [
            writer.ray_table(sweeps[r["index"]].token, cameras, r["cam"], r["u"], r["v"], r["depth"], r["label"])
            for r in frames], fr))
        stats.update({fr.images_sha256: writer.combine_digests([r["images"] for r in frames]),
                      fr.ray_counts: [len(r["u"]) for r in frames]})
    if results[0].get("free_beams") is not None:
        stats.update(writer.write_free_beam_shard(root, s["name"], [
            writer.free_beam_table(tasks[r["index"]].token, r["free_beams"]) for r in results]))
    occ = [r["occ"] for r in results]
    rec = {**s, **stats, "fingerprint": fp, "created": writer.now_iso(),
           "images_sha256": writer.combine_digests([r["images"] for r in results]),
           "occ_gt_sha256": writer.combine_digests([o or "-" for o in occ]) if any(occ) else None,
           "ray_counts": [len(r["u"]) for r in results], "has_occ_gt": [o is not None for o in occ]}
    writer.write_shard_record(root, s["name"], rec)
    return stats["num_rays"], stats.get(layout.SWEEP_FRAMES.num_rays, 0)
