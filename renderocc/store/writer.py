"""Writing a ray store: plan check, Zarr arrays, ray shards, shard records, final manifest.

Completion protocol (so a killed run never looks complete):
1. `_plan.json` (options + sample order) is written once; a rerun or a second job must match it.
2. Per shard (one scene): images/occ into Zarr, rays to a temp Parquet then renamed (the same for
   the shard's camera sweeps: sweep_images/, sweep_rays/), and only then `_shards/<shard>.json`
   (the shard's completion record, with checksums of both).
3. When every shard has a record: `samples.parquet` (and `sweeps.parquet`), then `manifest.json`
   LAST. Readers open only stores with a manifest.

The motion-mask helpers at the bottom let `prep motion-masks` add `dynamic`/`instance` ray
columns and a dense mask array without touching images.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Sequence

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from renderocc.errors import UserError
from renderocc.geometry import OCC3D_GRID
from renderocc.store import fsio, jpeg_codec, layout
from renderocc.store import manifest as manifest_mod
from renderocc.store.jpeg_codec import JpegCodec

PARQUET_OPTS = dict(compression="zstd", use_dictionary=["sample_token", "camera"],
                    use_byte_stream_split=["u", "v", "depth"], write_statistics=False)

_ARRAYS: dict[tuple[str, str], zarr.Array] = {}


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def combine_digests(digests: Sequence[str]) -> str:
    return hashlib.sha256("".join(digests).encode()).hexdigest()


# ---------------------------------------------------------------- plan and shard records

def check_or_write_plan(root: str, plan: dict) -> None:
    """Refuse a store made by another schema version or other options; else record the plan."""
    for name in (layout.MANIFEST, layout.PLAN):
        if fsio.exists(root, name):
            try:
                old = fsio.read_json(root, name)
            except ValueError as e:
                raise UserError(f"{fsio.fs_path(root, name)[1]} is not valid JSON") from e
            manifest_mod.check_version(old, f"existing store {root}", write=True)
            if name == layout.PLAN and old.get("fingerprint") != plan["fingerprint"]:
                done = "a complete store" if fsio.exists(root, layout.MANIFEST) else "an unfinished prep"
                raise UserError(f"existing store {root} was prepared with other options or samples "
                                f"({_diff(old.get('options', {}), plan['options'])}); use a new --out"
                                + ("" if done.startswith("a complete") else
                                   f", or delete {root} ({done}: nothing else refers to it)"))
    if not fsio.exists(root, layout.PLAN):
        fsio.write_json_atomic(plan, root, layout.PLAN)


def _diff(a: dict, b: dict) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:3]) or "sample list differs"


def shard_records(root: str) -> dict[str, dict]:
    out = {}
    for name in fsio.listdir_names(root, layout.SHARDS_DIR):
        if name.endswith(".json") and not name.startswith(layout.TMP_PREFIX):
            out[name[:-5]] = fsio.read_json(root, layout.SHARDS_DIR, name)
    return out


def shard_done(root: str, shard: str, fingerprint: str) -> bool:
    """The shard has a completion record for this plan AND its files still have the recorded sizes
    and sha256 (a shard truncated after a kill is redone, never sealed into a store)."""
    if not fsio.exists(root, layout.SHARDS_DIR, f"{shard}.json"):
        return False
    try:
        rec = fsio.read_json(root, layout.SHARDS_DIR, f"{shard}.json")
    except ValueError:   # a damaged record: redo the shard
        return False
    return rec.get("fingerprint") == fingerprint and shard_files_intact(root, rec)


def shard_files_intact(root: str, rec: dict) -> bool:
    """Each file a shard record names exists with the recorded size (when recorded) and sha256."""
    sweeps = layout.SWEEP_FRAMES
    for path_key, sha_key, bytes_key in (("rays_path", "rays_sha256", "rays_bytes"),
                                         ("free_beams_path", "free_beams_sha256", "free_beams_bytes"),
                                         (sweeps.rays_path, sweeps.rays_sha256, sweeps.rays_bytes)):
        rel = rec.get(path_key)
        if rel is None:
            continue
        if not fsio.exists(root, rel):
            return False
        if rec.get(bytes_key) is not None and fsio.size(root, rel) != rec[bytes_key]:
            return False
        if fsio.sha256_file(root, rel) != rec.get(sha_key):
            return False
    return True


def clean_tmp(root: str, shard: str) -> None:
    """Remove temp files a killed run left for this shard (they are never read, only untidy)."""
    for sub_dir, suffix in ((layout.RAYS_DIR, f"-{shard}.parquet"), (layout.FREE_BEAMS_DIR, f"-{shard}.parquet"),
                            (layout.SWEEP_RAYS_DIR, f"-{shard}.parquet"), (layout.SHARDS_DIR, f"-{shard}.json")):
        fs, path = fsio.fs_path(root, sub_dir)
        for name in fsio.listdir_names(root, sub_dir):
            if name.startswith(layout.TMP_PREFIX) and name.endswith(suffix):
                fs.rm(f"{path}/{name}")


def write_shard_record(root: str, shard: str, record: dict) -> None:
    fsio.write_json_atomic(record, root, layout.SHARDS_DIR, f"{shard}.json")


# ---------------------------------------------------------------- Zarr arrays

def _create(root: str, name: str, shape: tuple, chunks: tuple, shards: tuple | None, dtype: str,
            dims: tuple[str, ...], serializer: JpegCodec | None = None) -> zarr.Array:
    store = fsio.zarr_store(root, name, read_only=False)
    codecs = {"serializer": serializer, "compressors": None} if serializer is not None else {}
    try:
        return zarr.create_array(store, shape=shape, chunks=chunks, shards=shards, dtype=dtype, fill_value=0,
                                 dimension_names=dims, overwrite=False, **codecs)
    except zarr.errors.ContainsArrayError:
        arr = zarr.open_array(store, mode="r+")
        if arr.shape != shape:
            raise UserError(f"existing array {name} in {root} has shape {arr.shape}, "
                            f"expected {shape}") from None
        return arr


def create_arrays(root: str, n: int, n_cams: int, size_wh: tuple[int, int], occ_gt: bool,
                  codec: str = layout.DEFAULT_IMAGE_CODEC, quality: int = layout.DEFAULT_JPEG_QUALITY,
                  sweeps: int = 0) -> None:
    """Create (or reopen, for a rerun or a parallel job) the store's Zarr arrays (`sweeps`: camera
    sweep frames, whose images get an array of their own laid out like the keyframes')."""
    W, H = size_wh
    for name, count, dim in ((layout.IMAGES, n, "sample"), (layout.SWEEP_IMAGES, sweeps, "sweep")):
        if name == layout.IMAGES or count:
            _create(root, name, (count, n_cams, H, W, 3), (1, 1, H, W, 3), (1, n_cams, H, W, 3), "uint8",
                    (dim, "camera", "y", "x", "rgb"), JpegCodec(quality=quality) if codec == "jpeg" else None)
    if occ_gt:
        X, Y, Z = OCC3D_GRID.shape
        for a in layout.OCC_GT_ARRAYS:
            _create(root, f"{layout.OCC_GT}/{a}", (n, X, Y, Z), (1, X, Y, Z), None, "uint8",
                    ("sample", "x", "y", "z"))


def array(root: str, name: str) -> zarr.Array:
    """A cached writable handle (one per process: workers write their samples directly)."""
    key = (root, name)
    if key not in _ARRAYS:
        _ARRAYS[key] = zarr.open_array(fsio.zarr_store(root, name, read_only=False), mode="r+")
    return _ARRAYS[key]


def sample_key(arr: zarr.Array, index: int) -> str:
    """Store key (relative to the array) of sample `index`'s object: its zarr shard, or its chunk."""
    return arr.metadata.encode_chunk_key((index,) + (0,) * (arr.ndim - 1))


def declared_image_codec(arr: zarr.Array) -> str:
    """The image codec ("jpeg" or "raw") the images array's own Zarr metadata declares."""
    codecs = arr.metadata.codecs
    inner = getattr(codecs[0], "codecs", codecs)   # sharding_indexed wraps the per-image codecs
    return "jpeg" if any(c.to_dict()["name"] == layout.JPEG_CODEC_NAME for c in inner) else "raw"


def object_digest(root: str, name: str, key: str) -> str:
    """sha256 of one stored object of array `name` (a jpeg sample: its JPEG bytes + shard index)."""
    return hashlib.sha256(fsio.read_bytes(root, name, key)).hexdigest()


def prebuilt_image_quality(root: str, codec: str) -> int | None:
    """The JPEG quality at which a sample's images can be encoded ahead of `write_images` (by
    `jpeg_codec.shard_bytes`, e.g. in a reader thread), or None when they go through zarr."""
    return jpeg_codec.sharded_quality(array(root, layout.IMAGES)) if codec == "jpeg" else None


def write_images(root: str, index: int, images: np.ndarray | None, codec: str = layout.DEFAULT_IMAGE_CODEC,
                 encoded: bytes | None = None, name: str = layout.IMAGES) -> str:
    """Write one sample's (n_cams, H, W, 3) uint8 RGB images (one Zarr shard object, encoded by the
    array's codec; `encoded`: that object already made by `jpeg_codec.shard_bytes` at
    `prebuilt_image_quality`, `images` then unused); return their digest: raw, of the pixels
    (independent of the zstd build); jpeg, of the stored object (decoders may differ in a pixel's
    last bit, the bytes do not). `name`: the images array (layout.SWEEP_IMAGES for camera sweeps)."""
    arr = array(root, name)
    if encoded is None:
        quality = jpeg_codec.sharded_quality(arr) if codec == "jpeg" else None
        if quality is None:
            arr[index] = images
            return object_digest(root, name, sample_key(arr, index)) if codec == "jpeg" else digest(images)
        # the array's own layout, written as one object (zarr's write path costs ~2x the JPEG encoding)
        encoded = jpeg_codec.shard_bytes(np.asarray(images, np.uint8), quality)
    fsio.write_bytes_atomic(encoded, root, name, sample_key(arr, index))
    return hashlib.sha256(encoded).hexdigest()


def prebuilt_occ_codec(root: str):
    """numcodecs' Zstd with the settings the Occ3D GT arrays declare when their codecs are exactly
    bytes + zstd (what `create_arrays` makes): their chunk objects can then be encoded ahead of
    `write_occ_gt`, e.g. in a reader thread. None otherwise (they go through zarr)."""
    from numcodecs import Zstd

    confs = []
    for a in layout.OCC_GT_ARRAYS:
        codecs = [c.to_dict() for c in array(root, f"{layout.OCC_GT}/{a}").metadata.codecs]
        if len(codecs) != 2 or codecs[0]["name"] != "bytes" or codecs[1]["name"] != "zstd":
            return None
        confs.append(codecs[1].get("configuration", {}))
    if any(c != confs[0] for c in confs):
        return None
    return Zstd(level=int(confs[0].get("level", 0)), checksum=bool(confs[0].get("checksum", False)))


def encode_occ_gt(occ: dict[str, np.ndarray], codec) -> dict[str, bytes | None]:
    """Each Occ3D GT array's chunk object, as zarr writes it (None: all fill value, which zarr
    leaves absent)."""
    return {a: None if not occ[a].any() else codec.encode(np.ascontiguousarray(occ[a], np.uint8).tobytes())
            for a in layout.OCC_GT_ARRAYS}


def write_occ_gt(root: str, index: int, occ: dict[str, np.ndarray],
                 encoded: dict[str, bytes | None] | None = None) -> str:
    """Write one sample's Occ3D GT (`encoded`: its `encode_occ_gt` objects); return its digest."""
    for a in layout.OCC_GT_ARRAYS:
        arr = array(root, f"{layout.OCC_GT}/{a}")
        if encoded is None:
            arr[index] = occ[a]
        elif encoded[a] is not None:
            fsio.write_bytes_atomic(encoded[a], root, layout.OCC_GT, a, sample_key(arr, index))
        elif fsio.exists(root, layout.OCC_GT, a, sample_key(arr, index)):
            arr[index] = occ[a]   # all fill value over an earlier object: zarr removes it
    return digest(*(occ[a] for a in layout.OCC_GT_ARRAYS))


# ---------------------------------------------------------------- rays

def ray_table(sample_token: str, cameras: list[str], cam: np.ndarray, u: np.ndarray, v: np.ndarray,
              depth: np.ndarray, label: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> pa.Table:
    """One sample's rays as a table of `layout.RAY_SCHEMA` (+ motion columns when given)."""
    n = len(u)
    cols = [
        pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([sample_token])),
        pa.DictionaryArray.from_arrays(pa.array(np.asarray(cam, np.int8)), pa.array(cameras)),
        pa.array(np.asarray(u, np.float32)), pa.array(np.asarray(v, np.float32)),
        pa.array(np.asarray(depth, np.float32)), pa.array(np.asarray(label, np.uint8)),
    ]
    schema = layout.RAY_SCHEMA
    if extra:
        schema = layout.RAY_SCHEMA_WITH_MOTION
        cols += [pa.array(np.asarray(extra["dynamic"], bool)),
                 pa.array(np.asarray(extra["instance"], np.int32))]
    return pa.Table.from_arrays(cols, schema=schema)


def write_ray_shard(root: str, shard: str, tables: list[pa.Table],
                    frames: layout.FrameSet = layout.KEYFRAMES) -> dict:
    """Write rays/<shard>.parquet (sweep_rays/ for `layout.SWEEP_FRAMES`), one row group per frame,
    via a temp name; return its stats under the frame set's shard-record keys."""
    schema = tables[0].schema if tables else layout.RAY_SCHEMA
    data = fsio.parquet_bytes(tables, schema, **PARQUET_OPTS)
    fsio.write_bytes_atomic(data, root, frames.rays_dir, f"{shard}.parquet")
    return _ray_stats(data, shard, tables, frames)


def _ray_stats(data: bytes, shard: str, tables: list[pa.Table], frames: layout.FrameSet) -> dict:
    return {frames.rays_path: f"{frames.rays_dir}/{shard}.parquet",
            frames.rays_sha256: hashlib.sha256(data).hexdigest(), frames.rays_bytes: len(data),
            frames.num_rays: int(sum(len(t) for t in tables))}


# ---------------------------------------------------------------- free beams

FREE_BEAM_PARQUET_OPTS = dict(compression="zstd", use_dictionary=["sample_token"], write_statistics=False)


def free_beam_table(sample_token: str, beams: dict[str, np.ndarray]) -> pa.Table:
    """One sample's free beams (`origin`, `direction` (M, 3), `ring` (M,)) as `layout.FREE_BEAM_SCHEMA`."""
    n = len(beams["ring"])
    vec = pa.list_(pa.float32(), 3)
    cols = [
        pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([sample_token])),
        pa.array(np.asarray(beams["ring"], np.int16)),
        pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(beams["origin"], np.float32).reshape(-1)), 3)
        .cast(vec),
        pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(beams["direction"], np.float32).reshape(-1)), 3)
        .cast(vec),
    ]
    return pa.Table.from_arrays(cols, schema=layout.FREE_BEAM_SCHEMA)


def write_free_beam_shard(root: str, shard: str, tables: list[pa.Table]) -> dict:
    """Write free_beams/<shard>.parquet (one row group per sample, also empty ones); return its stats."""
    rel = f"{layout.FREE_BEAMS_DIR}/{shard}.parquet"
    data = fsio.parquet_bytes(tables, layout.FREE_BEAM_SCHEMA, **FREE_BEAM_PARQUET_OPTS)
    fsio.write_bytes_atomic(data, root, layout.FREE_BEAMS_DIR, f"{shard}.parquet")
    return {"free_beams_path": rel, "free_beams_sha256": hashlib.sha256(data).hexdigest(),
            "free_beams_bytes": len(data), "num_free_beams": int(sum(len(t) for t in tables))}


# ---------------------------------------------------------------- finalisation

def write_samples(root: str, table: pa.Table, frames: layout.FrameSet = layout.KEYFRAMES) -> dict:
    """samples.parquet (sweeps.parquet for `layout.SWEEP_FRAMES`); its manifest record."""
    sink = pa.BufferOutputStream()
    pq.write_table(table.cast(frames.schema), sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    fsio.write_bytes_atomic(data, root, frames.table)
    return {"path": frames.table, "rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest()}


def write_manifest(root: str, manifest: dict) -> None:
    """Validate against the JSON Schema, then write manifest.json (always the last write)."""
    errs = manifest_mod.schema_errors(manifest)
    if errs:
        raise RuntimeError(f"internal error, manifest invalid: {errs[0]}")
    fsio.write_json_atomic(manifest, root, layout.MANIFEST)


# ---------------------------------------------------------------- motion masks (prep motion-masks)

def _create_camera_mask_array(root: str, name: str, dtype: str, n: int | None = None) -> zarr.Array:
    """A dense (N, n_cams, H, W) per-pixel array beside the images, with their chunking (`n`: frames,
    default the keyframes)."""
    m = manifest_mod.load(root)
    c, (W, H) = len(m["cameras"]), m["image"]["stored_size"]
    n = m["num_samples"] if n is None else n
    return _create(root, name, (n, c, H, W), (1, 1, H, W), (1, c, H, W), dtype, ("sample", "camera", "y", "x"))


def create_motion_mask_array(root: str, frames: layout.FrameSet = layout.KEYFRAMES) -> zarr.Array:
    """Create the dense (N, n_cams, H, W) bool mask array beside the images (same chunking); for
    `layout.SWEEP_FRAMES`, the (M, ...) one beside the sweep images."""
    n = None if frames is layout.KEYFRAMES else layout.num_sweeps(manifest_mod.load(root))
    return _create_camera_mask_array(root, frames.motion_mask, "bool", n)


def write_motion_mask(root: str, index: int, mask: np.ndarray, frames: layout.FrameSet = layout.KEYFRAMES) -> str:
    """Write one frame's (n_cams, H, W) bool mask (stored image size); return its digest."""
    _write_camera_mask(root, frames.motion_mask, index, mask)
    return digest(mask.astype(bool))


def _write_camera_mask(root: str, name: str, index: int, mask: np.ndarray) -> None:
    """One sample of a camera-mask array. zarr stores no object for a shard that is all fill value
    (a sample with no moving box in view), which readers rightly take for a lost chunk: such a sample
    gets an explicit shard of empty chunks (its index alone), which zarr reads back as fill value."""
    arr = array(root, name)
    arr[index] = mask
    if np.asarray(mask).any():
        return
    sh = arr.metadata.codecs[0]
    index_codecs = [c.to_dict()["name"] for c in getattr(sh, "index_codecs", ())]
    if getattr(sh, "index_location", None) is None or sh.index_location.value != "end" or \
            index_codecs != ["bytes", "crc32c"]:
        raise RuntimeError(f"internal error: {name} is not laid out as _create_camera_mask_array makes it")
    n = int(np.prod(np.asarray(arr.shards) // np.asarray(arr.chunks)))
    entries = np.full((n, 2), 2 ** 64 - 1, "<u8").tobytes()
    fsio.write_bytes_atomic(entries + google_crc32c.value(entries).to_bytes(4, "little"), root, name,
                            sample_key(arr, index))


# ---------------------------------------------------------------- dense 2D semantic masks (prep masks)
#
# An import writes a NEW array (`layout.new_semantic_mask_name`) beside the current one; one manifest
# write then names it (`set_semantic_masks`, the switch) and only after that is the old one deleted. A
# kill before the switch leaves the old masks (and an unnamed folder); after it, the new masks (and
# perhaps the old folder): `stale_semantic_mask_arrays` lists such folders, the next import deletes them.

def create_semantic_mask_array(root: str, name: str) -> zarr.Array:
    """Create the dense (N, n_cams, H, W) uint8 class-mask array `name` beside the images (same chunking)."""
    if not layout.is_semantic_mask_name(name):
        raise ValueError(f"not a semantic mask array name: {name!r}")
    return _create_camera_mask_array(root, name, "uint8")


def write_semantic_mask(root: str, index: int, mask: np.ndarray, name: str = layout.SEMANTIC_MASK) -> str:
    """Write one sample's (n_cams, H, W) uint8 class masks (stored image size) into array `name`;
    return their digest."""
    _write_camera_mask(root, name, index, mask)
    return digest(mask.astype(np.uint8))


def set_semantic_masks(root: str, info: dict | None, mask_digests: dict[str, str] | None = None,
                       array_name: str | None = None) -> dict:
    """Record (info, per-shard digests, the array `array_name` holding them) or withdraw (info None)
    dense masks in the manifest, written last: the one write that switches a store to new masks."""
    m = manifest_mod.load(root)
    for s in m["shards"]:
        s.pop("semantic_mask_sha256", None)
        if info is not None and mask_digests:
            s["semantic_mask_sha256"] = mask_digests[s["name"]]
    m["semantic_masks"] = None if info is None else \
        {**info, "array": array_name or layout.SEMANTIC_MASK, "created": now_iso()}
    lidarseg = bool(m["source"].get("lidarseg"))
    m["supervision"]["semantic_source"] = ("both" if lidarseg else "masks") if info is not None else \
        ("lidarseg" if lidarseg else "none")
    write_manifest(root, m)
    return m


def stale_semantic_mask_arrays(root: str, manifest: dict) -> list[str]:
    """Mask array folders the manifest does not name: left by a killed or failed `prep masks` (its
    new set, before the switch, or the replaced set, after it). Never read; safe to delete."""
    current = layout.semantic_mask_array(manifest, fsio.fs_path(root, layout.MANIFEST)[1])
    return [n for n in fsio.listdir_names(root) if layout.is_semantic_mask_name(n) and n != current]


def remove_array(root: str, name: str) -> None:
    """Delete array folder `name` (one the manifest does not name) and forget its cached handle."""
    _ARRAYS.pop((root, name), None)
    fsio.remove_tree(root, name)


# ---------------------------------------------------------------- ray columns (prep motion-masks)

def ray_columns_data(root: str, shard: str, dynamic: Sequence[np.ndarray], instance: Sequence[np.ndarray],
                     frames: layout.FrameSet = layout.KEYFRAMES) -> tuple[bytes, dict]:
    """rays/<shard>.parquet (sweep_rays/ for `layout.SWEEP_FRAMES`) with `dynamic` (bool) and
    `instance` (int32) columns, built in memory: (the file's bytes, its stats under the frame set's
    shard-record keys: `rays_sha256`/`rays_bytes`/`num_rays`/`rays_path` for keyframes).

    One array per row group (= per frame of the shard, in order), each as long as that row group."""
    pf = fsio.parquet_file(root, frames.rays_dir, f"{shard}.parquet")
    if pf.num_row_groups != len(dynamic) or len(dynamic) != len(instance):
        raise ValueError(f"{shard}: {pf.num_row_groups} row groups, got {len(dynamic)} mask arrays")
    tables = []
    for g in range(pf.num_row_groups):
        t = pf.read_row_group(g, columns=list(layout.RAY_COLUMNS))
        if len(dynamic[g]) != len(t) or len(instance[g]) != len(t):
            raise ValueError(f"{shard} row group {g}: {len(t)} rays, mask arrays differ in length")
        cols = {c: t.column(c) for c in layout.RAY_COLUMNS}
        cols["dynamic"] = pa.array(np.asarray(dynamic[g], bool))
        cols["instance"] = pa.array(np.asarray(instance[g], np.int32))
        tables.append(pa.Table.from_pydict(cols, schema=layout.RAY_SCHEMA_WITH_MOTION))
    data = fsio.parquet_bytes(tables, layout.RAY_SCHEMA_WITH_MOTION, **PARQUET_OPTS)
    return data, _ray_stats(data, shard, tables, frames)


def write_rays_data(root: str, shard: str, data: bytes, frames: layout.FrameSet = layout.KEYFRAMES) -> None:
    """Replace rays/<shard>.parquet (sweep_rays/ for `layout.SWEEP_FRAMES`) by `data` (temp name, then rename)."""
    fsio.write_bytes_atomic(data, root, frames.rays_dir, f"{shard}.parquet")


def add_ray_columns(root: str, shard: str, dynamic: Sequence[np.ndarray],
                    instance: Sequence[np.ndarray], frames: layout.FrameSet = layout.KEYFRAMES) -> dict:
    """Rewrite rays/<shard>.parquet with `dynamic` and `instance` columns (`ray_columns_data`; temp
    name, then rename; images are not touched). Returns the new stats for `commit_motion_masks`."""
    data, stats = ray_columns_data(root, shard, dynamic, instance, frames)
    write_rays_data(root, shard, data, frames)
    return stats


def begin_motion_masks(root: str) -> dict:
    """Mark the manifest (before anything is written) with the rewrite `prep motion-masks` starts:
    until `commit_motion_masks`, readers and `store validate` know a kill left it half done
    (`layout.in_progress_state`). `replaces`: the store already had motion masks, which the run
    overwrites in place (a kill leaves a mix, refused until rerun)."""
    m = manifest_mod.load(root)
    old = m.get(layout.IN_PROGRESS) if isinstance(m.get(layout.IN_PROGRESS), dict) else {}
    by_name = {s["name"]: s for s in m["shards"]}
    pending = old.get("pending") if isinstance(old.get("pending"), dict) else {}
    for shard, stats in pending.items():   # a killed run's file renamed, not yet recorded
        for fr in (layout.KEYFRAMES, layout.SWEEP_FRAMES):
            rel = f"{fr.rays_dir}/{shard}.parquet"
            if shard in by_name and isinstance(stats, dict) and stats.get(fr.rays_sha256) and \
                    fsio.exists(root, rel) and fsio.sha256_file(root, rel) == stats.get(fr.rays_sha256):
                by_name[shard].update({k: stats[k] for k in (fr.rays_sha256, fr.rays_bytes, fr.num_rays)
                                       if k in stats})
    m[layout.IN_PROGRESS] = {"command": "prep motion-masks", "started": now_iso(),
                             "replaces": m.get("motion_masks") is not None, "shards_done": [], "pending": {}}
    write_manifest(root, m)
    return m


def record_shard_rewrite(root: str, shard: str, update: dict, pending: bool = False) -> None:
    """Record one rewritten rays shard in the manifest at once (atomic rewrite). `pending`: before the
    file is replaced, its coming checksum (a kill between the file's rename and the record leaves a
    file readers still accept); else after: the shard's new checksum. Every checksum stays true at any
    kill, so readers (which verify them) and a re-run both work, on the columns the manifest declares."""
    m = manifest_mod.load(root)
    ip = m.get(layout.IN_PROGRESS)
    if pending:
        if isinstance(ip, dict):
            ip.setdefault("pending", {})[shard] = dict(update)
        write_manifest(root, m)
        return
    for s in m["shards"]:
        if s["name"] == shard:
            s.update(update)
    if isinstance(ip, dict):
        (ip.get("pending") or {}).pop(shard, None)
        if shard not in ip.setdefault("shards_done", []):
            ip["shards_done"].append(shard)
    write_manifest(root, m)


def commit_motion_masks(root: str, info: dict, shard_updates: dict[str, dict],
                        mask_digests: dict[str, str] | None = None,
                        sweep_mask_digests: dict[str, str] | None = None) -> dict:
    """Record motion masks in the manifest (written last): method `info`, new ray checksums; the
    rewrite is then complete (`in_progress` dropped).

    `shard_updates` maps shard name → the dict(s) `add_ray_columns` returned (keyframe and sweep
    stats merged); `mask_digests` (`sweep_mask_digests`) maps shard name → `combine_digests` of its
    keyframes' (sweep frames') `write_motion_mask` digests. With camera sweeps, `sweep_mask_digests`
    marks them flagged too (`camera_sweeps.motion_masks`).
    """
    m = manifest_mod.load(root)
    for s in m["shards"]:
        if s["name"] in shard_updates:
            s.update(shard_updates[s["name"]])
        if mask_digests and s["name"] in mask_digests:
            s["motion_mask_sha256"] = mask_digests[s["name"]]
        if sweep_mask_digests and s["name"] in sweep_mask_digests:
            s[layout.SWEEP_FRAMES.motion_mask_sha256] = sweep_mask_digests[s["name"]]
    if layout.camera_sweeps(m) is not None:
        m[layout.CAMERA_SWEEPS]["motion_masks"] = sweep_mask_digests is not None
    m["motion_masks"] = {**info, "created": now_iso()}
    m["supervision"]["motion_masks"] = True
    m.pop(layout.IN_PROGRESS, None)
    write_manifest(root, m)
    return m
