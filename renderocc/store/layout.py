"""The one place that knows the ray store's paths, column names, Arrow schemas and version.

Everything else (prep writer, reader, validator, motion-mask writer) asks this module, so a
layout change is one edit plus a `SCHEMA_VERSION` bump.

    STORE/
      manifest.json            written LAST: a store without it is incomplete (`in_progress`: a multi-step
                               rewrite by prep motion-masks is under way, or was killed)
      samples.parquet          one row per keyframe; row i is sample index i
      rays/<shard>.parquet     one row group per sample (in sample order), shard = one scene
      free_beams/<shard>.parquet  LiDAR beams without a return (v2, optional): one row group per
                               sample, like rays/
      images/                  Zarr v3 array (N, n_cams, H, W, 3) uint8 RGB; chunk = one image, zarr
                               shard = one sample; inner serializer `renderocc.jpeg` (codec jpeg, the
                               default: each chunk is one baseline JPEG file) or bytes + zstd (raw)
      occ_gt/{semantics,mask_lidar,mask_camera}   Zarr v3 arrays (N, 200, 200, 16) uint8
      motion_mask/             Zarr v3 array (N, n_cams, H, W) bool (added by prep motion-masks)
      semantic_mask-<id>/      Zarr v3 array (N, n_cams, H, W) uint8 class, 255 = unlabelled (added by prep masks;
                               the manifest's `semantic_masks.array` names the current one: a re-import writes a
                               new one beside it and switches the manifest, so a kill leaves the old or the new set.
                               `semantic_mask/`: the array of stores whose manifest names none)
      sweeps.parquet           camera sweeps (v4, optional: prep --camera-sweeps N): one row per sweep frame,
                               row j is sweep index j; each follows keyframe `key_sample_index`
      sweep_rays/<shard>.parquet  the sweep frames' depth rays (label 255): one row group per sweep frame
      sweep_images/            Zarr v3 array (M, n_cams, H, W, 3), laid out and encoded as images/
      sweep_motion_mask/       Zarr v3 array (M, n_cams, H, W) bool (added by prep motion-masks)
      _plan.json               the prep plan (options + sample order) shared by all jobs
      _shards/<shard>.json     per-shard completion record, written after the shard's data
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pyarrow as pa

from renderocc.errors import UserError
from renderocc.geometry import Grid

SCHEMA_VERSION = 4
# Versions this code reads (schemas/README.md, "Migration"). 2 = 1 + the optional free_beams/ table:
# a version-1 store reads as a store without free beams. 3 = 2 with the `jpeg` image codec made a
# registered Zarr v3 codec (and the default); the version-1/2 `jpeg` layout (variable-length bytes,
# no Zarr v3 spec) is refused with one line, their `raw` images read unchanged. 4 = 3 + the optional
# camera sweeps (sweeps.parquet, sweep_rays/, sweep_images/): an older store reads as having none.
READABLE_VERSIONS = (1, 2, 3, 4)
LEGACY_JPEG_VERSIONS = (1, 2)
FORMAT_NAME = "renderocc-ray-store"

MANIFEST = "manifest.json"
SAMPLES = "samples.parquet"
RAYS_DIR = "rays"
FREE_BEAMS_DIR = "free_beams"
IMAGES = "images"
# Image codecs, both (N, n_cams, H, W, 3) uint8: "jpeg" = each image one baseline JPEG through the
# Zarr v3 codec JPEG_CODEC_NAME (lossy, ~9x smaller than raw); "raw" = bytes + zstd (lossless).
IMAGE_CODECS = ("jpeg", "raw")
DEFAULT_IMAGE_CODEC = "jpeg"
DEFAULT_JPEG_QUALITY = 90
JPEG_CODEC_NAME = "renderocc.jpeg"
OCC_GT = "occ_gt"
OCC_GT_ARRAYS = ("semantics", "mask_lidar", "mask_camera")
MOTION_MASK = "motion_mask"
SEMANTIC_MASK = "semantic_mask"
SWEEPS = "sweeps.parquet"
SWEEP_RAYS_DIR = "sweep_rays"
SWEEP_IMAGES = "sweep_images"
SWEEP_MOTION_MASK = "sweep_motion_mask"
CAMERA_SWEEPS = "camera_sweeps"   # manifest key: null/absent, or {per_sample, count, num_rays, ...}
PLAN = "_plan.json"
SHARDS_DIR = "_shards"
TMP_PREFIX = ".tmp-"
# manifest key of a rewrite that changes the store in several steps (`prep motion-masks`): present from
# its first write until its commit, so a killed run is named (`in_progress_state`), never taken as done
IN_PROGRESS = "in_progress"

# Declared sizes a reader checks before it reads (a crafted store must not make it allocate without
# bound): per row of a Parquet file, its uncompressed bytes at most this (+ SLACK per row group);
# measured: rays 16-21 B, free beams 29 B, samples ~3 kB with 6 cameras and 3 neighbours each side.
RAY_ROW_BYTES = 64
FREE_BEAM_ROW_BYTES = 64
PARQUET_SLACK_BYTES = 1 << 20
FREE_BEAMS_PER_SAMPLE_MAX = 1 << 22   # LiDAR beams of one key frame (nuScenes: ~35k firings)


def samples_row_bytes(n_cams: int, adjacent: int) -> int:
    """Upper bound on one samples.parquet row's uncompressed bytes (tokens, names, matrices)."""
    return 64 * 1024 + n_cams * 1024 + 2 * max(adjacent, 0) * (n_cams * 256 + 256)


_SEMANTIC_MASK_NAME = re.compile(r"semantic_mask(-[0-9a-f]{8})?")


def new_semantic_mask_name() -> str:
    """A fresh folder name for a `prep masks` import, beside any earlier one."""
    return f"{SEMANTIC_MASK}-{uuid.uuid4().hex[:8]}"


def is_semantic_mask_name(name: str) -> bool:
    return bool(_SEMANTIC_MASK_NAME.fullmatch(name))


def semantic_mask_array(manifest: dict, where: str = MANIFEST) -> str | None:
    """The folder of the store's current dense 2D masks (None without masks): the manifest's
    `semantic_masks.array`, else `semantic_mask` (stores imported before the name was recorded).
    Only names `new_semantic_mask_name` makes are accepted: the manifest is data, never a path."""
    info = manifest.get("semantic_masks")
    if info is None:
        return None
    name = info.get("array", SEMANTIC_MASK) if isinstance(info, dict) else None
    if not isinstance(name, str) or not is_semantic_mask_name(name):
        raise UserError(f"{where}: semantic_masks.array {name!r} is not a mask array of this store "
                        f"({SEMANTIC_MASK} or {SEMANTIC_MASK}-<8 hex digits>)")
    return name


def in_progress_state(manifest: dict, root: str = "STORE") -> tuple[str, bool] | None:
    """What an unfinished multi-step rewrite (manifest `in_progress`) left: (what to tell, whether the
    store is still consistent), or None when there is none. `prep motion-masks` over a store without
    motion masks leaves the old state (its new ray columns are not declared, so not read); over a store
    that had them, rays and masks are a mix of the old and the new run: inconsistent until it is rerun."""
    ip = manifest.get(IN_PROGRESS)
    if not ip:
        return None
    if not isinstance(ip, dict):
        return f"manifest {IN_PROGRESS} is not a record ({ip!r})", False
    command = ip.get("command", "?")
    done, total = len(ip.get("shards_done") or []), len(manifest.get("shards") or [])
    rerun = f"run `renderocc {command} --store {root}` again to finish it"
    if ip.get("replaces"):
        return (f"an interrupted `{command}` (started {ip.get('started', '?')}) rewrote {done} of {total} "
                f"ray shards over the previous motion masks: the store mixes the two runs; {rerun}"), False
    return (f"an interrupted `{command}` (started {ip.get('started', '?')}) rewrote {done} of {total} ray "
            f"shards; the store reads as before it (no motion masks); {rerun}"), True

# The store's label grid is Occ3D's (`geometry.OCC3D_GRID`); the manifest's `grid` holds its record.
def manifest_grid(manifest: dict) -> Grid:
    """The store's label grid from its manifest (`grid`: pc_range, voxel_size, shape)."""
    return Grid.from_record(manifest["grid"])

# Ray (label) columns. `dynamic`/`instance` are optional: added later by prep motion-masks.
RAY_COLUMNS = ("sample_token", "camera", "u", "v", "depth", "label")
MOTION_COLUMNS = ("dynamic", "instance")

RAY_SCHEMA = pa.schema([
    pa.field("sample_token", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    pa.field("camera", pa.dictionary(pa.int8(), pa.string()), nullable=False),
    pa.field("u", pa.float32(), nullable=False),
    pa.field("v", pa.float32(), nullable=False),
    pa.field("depth", pa.float32(), nullable=False),
    pa.field("label", pa.uint8(), nullable=False),
], metadata={b"renderocc.schema_version": str(SCHEMA_VERSION).encode()})

MOTION_FIELDS = [
    pa.field("dynamic", pa.bool_(), nullable=False),
    pa.field("instance", pa.int32(), nullable=False),
]
RAY_SCHEMA_WITH_MOTION = pa.schema(list(RAY_SCHEMA) + MOTION_FIELDS, metadata=RAY_SCHEMA.metadata)

# Free beams (LiDAR beams that returned nothing; renderocc/prep/freebeams.py): per beam the
# sensor position and the unit direction in the key-ego frame, and the LiDAR ring.
FREE_BEAM_COLUMNS = ("sample_token", "ring", "origin", "direction")
FREE_BEAM_SCHEMA = pa.schema([
    pa.field("sample_token", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    pa.field("ring", pa.int16(), nullable=False),
    pa.field("origin", pa.list_(pa.float32(), 3), nullable=False),
    pa.field("direction", pa.list_(pa.float32(), 3), nullable=False),
], metadata={b"renderocc.schema_version": str(SCHEMA_VERSION).encode()})

_M4 = pa.list_(pa.float64(), 16)   # row-major 4x4
_M3 = pa.list_(pa.float64(), 9)    # row-major 3x3

# One row per keyframe. Per-camera columns are lists in manifest `cameras` order;
# adjacency columns are lists over present neighbours (offset order -K..-1, 1..K).
SAMPLES_SCHEMA = pa.schema([
    pa.field("sample_index", pa.int32(), nullable=False),
    pa.field("sample_token", pa.string(), nullable=False),
    pa.field("scene_name", pa.string(), nullable=False),
    pa.field("timestamp", pa.int64(), nullable=False),
    pa.field("lidar_token", pa.string(), nullable=False),
    pa.field("ego_pose", _M4, nullable=False),                      # key-ego -> global
    pa.field("lidar2ego", _M4, nullable=False),                     # LiDAR -> key-ego
    pa.field("cam_token", pa.list_(pa.string()), nullable=False),  # camera sample_data tokens
    pa.field("cam_timestamp", pa.list_(pa.int64()), nullable=False),
    pa.field("K", pa.list_(_M3), nullable=False),                   # stored image size
    pa.field("K_orig", pa.list_(_M3), nullable=False),              # original image size
    pa.field("cam2ego", pa.list_(_M4), nullable=False),             # camera -> key-ego
    pa.field("adj_offset", pa.list_(pa.int8()), nullable=False),
    pa.field("adj_sample_index", pa.list_(pa.int32()), nullable=False),
    pa.field("adj_sample_token", pa.list_(pa.string()), nullable=False),
    pa.field("adj_cam2ego", pa.list_(pa.list_(_M4)), nullable=False),  # [neighbour][camera]
    pa.field("shard", pa.string(), nullable=False),
    pa.field("ray_row_group", pa.int32(), nullable=False),          # row group in rays/<shard>
    pa.field("ray_count", pa.int64(), nullable=False),
    pa.field("has_occ_gt", pa.bool_(), nullable=False),
], metadata={b"renderocc.schema_version": str(SCHEMA_VERSION).encode()})

# One row per camera sweep frame (v4): one instant of every camera between two keyframes, its
# reference frame the ego of the LiDAR sample_data nearest in time ("sweep ego"), as a keyframe's is
# its LiDAR keyframe's ego. The samples columns that apply, with `sample_token` the frame's own token
# (its reference camera's sample_data token) and `lidar_token` that LiDAR sample_data; plus the
# keyframe the frame follows. No adjacency, no Occ3D GT, no semantics.
SWEEP_KEY_COLUMNS = ("key_sample_index", "key_sample_token")
SWEEPS_SCHEMA = pa.schema([
    pa.field("sweep_index", pa.int32(), nullable=False),
    pa.field("sample_token", pa.string(), nullable=False),            # the frame: reference camera sd token
    pa.field("key_sample_index", pa.int32(), nullable=False),         # the keyframe it follows
    pa.field("key_sample_token", pa.string(), nullable=False),
    pa.field("scene_name", pa.string(), nullable=False),
    pa.field("timestamp", pa.int64(), nullable=False),                # LiDAR sample_data timestamp
    pa.field("lidar_token", pa.string(), nullable=False),             # the nearest LiDAR sample_data
    pa.field("ego_pose", _M4, nullable=False),                        # sweep ego -> global
    pa.field("lidar2ego", _M4, nullable=False),                       # LiDAR -> sweep ego
    pa.field("cam_token", pa.list_(pa.string()), nullable=False),
    pa.field("cam_timestamp", pa.list_(pa.int64()), nullable=False),
    pa.field("K", pa.list_(_M3), nullable=False),
    pa.field("K_orig", pa.list_(_M3), nullable=False),
    pa.field("cam2ego", pa.list_(_M4), nullable=False),               # camera -> sweep ego
    pa.field("shard", pa.string(), nullable=False),
    pa.field("ray_row_group", pa.int32(), nullable=False),            # row group in sweep_rays/<shard>
    pa.field("ray_count", pa.int64(), nullable=False),
], metadata={b"renderocc.schema_version": str(SCHEMA_VERSION).encode()})


@dataclass(frozen=True)
class FrameSet:
    """Where one kind of frame lives (keyframes, or camera sweeps): its table, arrays and ray files,
    and the keys of its entries in a shard record. Reader, writer and validator take one of the two."""

    kind: str                 # "key" | "sweep"
    table: str                # samples.parquet | sweeps.parquet
    schema: pa.Schema
    index_column: str
    rays_dir: str
    images: str
    motion_mask: str
    first: str                # shard record: index of the shard's first frame
    count: str                # shard record: frames in the shard
    num_rays: str
    rays_path: str
    rays_sha256: str
    rays_bytes: str
    images_sha256: str
    motion_mask_sha256: str
    ray_counts: str           # shard completion record (_shards/): rays per frame


KEYFRAMES = FrameSet("key", SAMPLES, SAMPLES_SCHEMA, "sample_index", RAYS_DIR, IMAGES, MOTION_MASK,
                     "first_sample", "num_samples", "num_rays", "rays_path", "rays_sha256", "rays_bytes",
                     "images_sha256", "motion_mask_sha256", "ray_counts")
SWEEP_FRAMES = FrameSet("sweep", SWEEPS, SWEEPS_SCHEMA, "sweep_index", SWEEP_RAYS_DIR, SWEEP_IMAGES,
                        SWEEP_MOTION_MASK, "first_sweep", "num_sweeps", "num_sweep_rays", "sweep_rays_path",
                        "sweep_rays_sha256", "sweep_rays_bytes", "sweep_images_sha256",
                        "sweep_motion_mask_sha256", "sweep_ray_counts")
RAY_DIRS = (RAYS_DIR, SWEEP_RAYS_DIR)


def camera_sweeps(manifest: dict) -> dict | None:
    """The manifest's `camera_sweeps` record (None: a store without camera sweeps, e.g. version < 4)."""
    info = manifest.get(CAMERA_SWEEPS)
    return info if isinstance(info, dict) else None


def num_sweeps(manifest: dict) -> int:
    """Camera sweep frames the store holds (0 without them)."""
    info = camera_sweeps(manifest)
    return int(info["count"]) if info else 0


def join(root: str, *parts: str) -> str:
    """Join store-relative parts onto a root path or URL (always '/')."""
    return "/".join([root.rstrip("/"), *parts])


def rays_path(root: str, shard: str) -> str:
    return join(root, RAYS_DIR, f"{shard}.parquet")


def sweep_rays_path(root: str, shard: str) -> str:
    return join(root, SWEEP_RAYS_DIR, f"{shard}.parquet")


def free_beams_path(root: str, shard: str) -> str:
    return join(root, FREE_BEAMS_DIR, f"{shard}.parquet")


def shard_name(scene_name: str) -> str:
    """A filesystem- and URL-safe shard name for a scene."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in scene_name)
    return safe or "scene"
