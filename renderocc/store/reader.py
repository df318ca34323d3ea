"""`StoreReader`: random access to a complete ray store, one sample at a time.

Cheap per sample: samples.parquet is loaded once into numpy; labels are one Parquet row group;
images are one Zarr shard object. Safe to use from DataLoader workers (handles open lazily, per
process).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from renderocc.classes import Vocabulary, vocabulary_of_manifest
from renderocc.errors import UserError
from renderocc.geometry import Grid, GridError
from renderocc.store import fsio, layout, writer
from renderocc.store import manifest as manifest_mod


def _flat(col: pa.ChunkedArray, depth: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Values and per-level offsets of a (nested) list column."""
    arr = col.combine_chunks()
    offsets = []
    for _ in range(depth):
        if isinstance(arr, pa.FixedSizeListArray):
            arr = arr.flatten()
        else:
            offsets.append(arr.offsets.to_numpy())
            arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False), offsets


class StoreReader:
    """Read a ray store written by `renderocc prep nuscenes` (see docs/ARCHITECTURE.md)."""

    def __init__(self, url_or_path: str | os.PathLike):
        root = str(url_or_path)
        self.root = os.path.abspath(fsio.local_path(root)) if fsio.is_local(root) else root.rstrip("/")
        self.manifest: dict = manifest_mod.load(self.root)
        m = self.manifest
        self.cameras: list[str] = list(m["cameras"])
        self.image_size: tuple[int, int] = tuple(m["image"]["stored_size"])  # (W, H)
        self.image_codec: str = m["image"]["codec"]   # jpeg (lossy) or raw (lossless); layout.IMAGE_CODECS
        try:
            self.grid: Grid = layout.manifest_grid(m)  # the label grid (Occ3D GT)
        except GridError as e:
            raise UserError(f"{self.root}: manifest grid: {e}") from None
        sup = m["supervision"]
        self.has_semantics: bool = bool(sup["semantics"])
        self.has_occ_gt: bool = bool(sup["occ_gt"]) or any(s["occ_gt_sha256"] for s in m["shards"])
        self.has_motion_masks: bool = bool(sup["motion_masks"])
        self.has_semantic_masks: bool = m.get("semantic_masks") is not None  # dense 2D classes (prep masks)
        # LiDAR beams without a return (schema 2, optional): False for version-1 stores
        self.has_free_beams: bool = m.get("free_beams") is not None
        # the class vocabulary prep used (Occ3D-nuScenes for stores that predate vocabularies)
        self.vocabulary: Vocabulary = vocabulary_of_manifest(m)
        self._load_samples()
        self._shard_records = {sh["name"]: sh for sh in m["shards"]}
        self._intact: set[tuple[str, str]] = set()  # (folder, shard) files whose checksum held
        self._pq: dict[str, pq.ParquetFile] = {}
        self._fb_pq: dict[str, pq.ParquetFile] = {}
        self._arrays: dict[str, zarr.Array | None] = {}
        self._pid = os.getpid()

    # -------------------------------------------------------------- samples table
    def _load_samples(self) -> None:
        t = fsio.read_parquet(self.root, layout.SAMPLES)   # by path or from bytes: never a live fsspec file
        C = len(self.cameras)
        n = t.num_rows
        self._tokens = t.column("sample_token").to_pylist()
        self._scenes = t.column("scene_name").to_pylist()
        self._timestamp = t.column("timestamp").to_numpy()
        self._ego = _flat(t.column("ego_pose"), 1)[0].reshape(n, 4, 4)
        self._lidar2ego = _flat(t.column("lidar2ego"), 1)[0].reshape(n, 4, 4)
        self._K = _flat(t.column("K"), 2)[0].reshape(n, C, 3, 3)
        self._K_orig = _flat(t.column("K_orig"), 2)[0].reshape(n, C, 3, 3)
        self._cam2ego = _flat(t.column("cam2ego"), 2)[0].reshape(n, C, 4, 4)
        self._cam_ts = _flat(t.column("cam_timestamp"), 1)[0].reshape(n, C)
        vals, (off,) = _flat(t.column("adj_offset"), 1)
        self._adj_off = (vals, off)
        self._adj_idx = _flat(t.column("adj_sample_index"), 1)[0]
        self._adj_tok = _flat(t.column("adj_sample_token"), 1)[0]
        self._adj_c2e = _flat(t.column("adj_cam2ego"), 3)[0].reshape(-1, C, 4, 4)
        self._shard = t.column("shard").to_pylist()
        self._row_group = t.column("ray_row_group").to_numpy()
        self._ray_count = t.column("ray_count").to_numpy()
        self._has_occ = t.column("has_occ_gt").to_numpy(zero_copy_only=False)
        self._index = {tok: i for i, tok in enumerate(self._tokens)}

    def __len__(self) -> int:
        return len(self._tokens)

    def tokens(self) -> list[str]:
        return list(self._tokens)

    def scene_names(self) -> list[str]:
        """Scene name of every sample, in sample order."""
        return list(self._scenes)

    def index_of(self, token: str) -> int:
        return self._index[token]

    def _check(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample index {i} out of range for {len(self)} samples")
        return i % len(self)

    def sample(self, i: int) -> dict:
        """Metadata and geometry of sample i (all 4×4 float64; see ARCHITECTURE.md)."""
        i = self._check(i)
        vals, off = self._adj_off
        a, b = off[i], off[i + 1]
        adjacent = [{"offset": int(vals[k]), "sample_index": int(self._adj_idx[k]),
                     "sample_token": str(self._adj_tok[k]),
                     "cam2ego": {c: self._adj_c2e[k, j].copy() for j, c in enumerate(self.cameras)}}
                    for k in range(a, b)]
        return {
            "sample_index": i, "sample_token": self._tokens[i], "scene_name": self._scenes[i],
            "timestamp": int(self._timestamp[i]), "ego_pose": self._ego[i].copy(),
            "lidar2ego": self._lidar2ego[i].copy(),
            "cameras": {c: {"K": self._K[i, j].copy(), "K_orig": self._K_orig[i, j].copy(),
                            "cam2ego": self._cam2ego[i, j].copy(), "timestamp": int(self._cam_ts[i, j])}
                        for j, c in enumerate(self.cameras)},
            "adjacent": adjacent,
        }

    # -------------------------------------------------------------- bulk arrays
    def _fresh(self) -> None:
        """Drop handles inherited through fork (DataLoader workers) so each process opens its own."""
        if os.getpid() != self._pid:
            self._pq.clear()
            self._fb_pq.clear()
            self._arrays.clear()
            self._pid = os.getpid()

    def _array(self, name: str) -> zarr.Array | None:
        self._fresh()
        if name not in self._arrays:
            try:
                store = fsio.zarr_store(self.root, name, read_only=True)
                self._arrays[name] = zarr.open_array(store, mode="r")
            except (FileNotFoundError, zarr.errors.ArrayNotFoundError, KeyError):
                self._arrays[name] = None
        return self._arrays[name]

    def images(self, i: int) -> np.ndarray:
        """uint8 (n_cams, H, W, 3) RGB at the stored size, cameras in `.cameras` order."""
        return self._read_sample(layout.IMAGES, self._check(i))

    def images_digest(self, i: int) -> str:
        """What the shard record holds for sample i's images (see `writer.write_images`)."""
        i = self._check(i)
        if self.image_codec != "jpeg":
            return writer.digest(self.images(i))
        return writer.object_digest(self.root, layout.IMAGES, self._sample_key(layout.IMAGES, i))

    def _sample_key(self, name: str, i: int) -> str:
        """Key of sample i's object in array `name`; one line naming it when it is missing."""
        arr = self._array(name)
        if arr is None:
            raise UserError(f"{fsio.fs_path(self.root, name)[1]}: array missing")
        key = writer.sample_key(arr, i)
        if not fsio.exists(self.root, name, key):
            raise UserError(f"{fsio.fs_path(self.root, name, key)[1]}: chunk of sample {i} missing "
                            "(the store is damaged; re-run prep)")
        return key

    def _read_sample(self, name: str, i: int) -> np.ndarray:
        """Sample i of a Zarr array. A missing chunk is an error, never zarr's fill value (a black
        image, all-"others" occupancy); an undecodable one is one line naming it."""
        key = self._sample_key(name, i)
        try:
            return np.asarray(self._array(name)[i])
        except Exception as e:  # noqa: BLE001 - any codec failure means a damaged chunk
            raise UserError(f"{fsio.fs_path(self.root, name, key)[1]}: chunk of sample {i} cannot be decoded "
                            f"({e.__class__.__name__}); the store is damaged") from None

    def _parquet(self, shard: str) -> pq.ParquetFile:
        self._fresh()
        if shard not in self._pq:
            self._verified(shard, layout.RAYS_DIR, "rays_sha256")
            self._pq[shard] = fsio.parquet_file(self.root, layout.RAYS_DIR, f"{shard}.parquet")
        return self._pq[shard]

    def _verified(self, shard: str, folder: str, key: str) -> None:
        """Read what the manifest checksums: a shard's Parquet file is hashed on first open and must
        match its record (flipped bytes inside a row group decode as wrong labels without a word
        otherwise). Costs one pass over the file: benchmarks/README.md."""
        problem = self.shard_checksum_problem(shard, folder, key)
        if problem is not None:
            raise UserError(f"{problem}; re-run prep")

    def shard_checksum_problem(self, shard: str, folder: str, key: str) -> str | None:
        """None when the shard's file in `folder` matches the manifest's `key` sha256 (or the manifest
        records none), else what differs. Each file is hashed once per reader: `store validate` and
        the readers it drives share the result."""
        want = self._shard_records.get(shard, {}).get(key)
        if not want or (folder, shard) in self._intact:
            return None
        got = fsio.sha256_file(self.root, folder, f"{shard}.parquet")
        if got != want:
            return (f"{fsio.fs_path(self.root, folder, f'{shard}.parquet')[1]}: sha256 {got[:12]} differs from "
                    f"the manifest's {want[:12]}: the file changed after prep (damaged?)")
        self._intact.add((folder, shard))
        return None

    def labels(self, i: int) -> dict[str, np.ndarray]:
        """Rays of sample i: camera (int16 into `.cameras`), u, v, depth, label (+ dynamic, instance)."""
        i = self._check(i)
        cols = list(layout.RAY_COLUMNS[1:]) + (list(layout.MOTION_COLUMNS) if self.has_motion_masks else [])
        if self._ray_count[i] == 0:
            t = pa.Table.from_batches([], schema=pa.schema([
                f for f in layout.RAY_SCHEMA_WITH_MOTION if f.name in cols]))
        else:
            t = self._parquet(self._shard[i]).read_row_group(int(self._row_group[i]), columns=cols)
        cam = t.column("camera").combine_chunks()
        if isinstance(cam, pa.DictionaryArray):
            lut = np.array([self.cameras.index(c) for c in cam.dictionary.to_pylist()] or [0], np.int16)
            cam_idx = lut[cam.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
        else:
            cam_idx = np.array([self.cameras.index(c) for c in cam.to_pylist()], np.int16)
        out = {"camera": cam_idx.astype(np.int16)}
        for c in cols[1:]:
            out[c] = t.column(c).to_numpy(zero_copy_only=False)
        return out

    def occ_gt(self, i: int) -> dict[str, np.ndarray] | None:
        """Occ3D GT of sample i (uint8 (200, 200, 16) each), or None."""
        i = self._check(i)
        if not self._has_occ[i]:
            return None
        return {a: self._read_sample(f"{layout.OCC_GT}/{a}", i) for a in layout.OCC_GT_ARRAYS}

    def motion_mask(self, i: int) -> np.ndarray | None:
        """bool (n_cams, H, W) at the stored size, or None when the store has no motion masks."""
        if not self.has_motion_masks:
            return None
        if self._array(layout.MOTION_MASK) is None:
            return None
        return np.asarray(self._read_sample(layout.MOTION_MASK, self._check(i)), bool)

    def semantic_mask(self, i: int) -> np.ndarray | None:
        """uint8 (n_cams, H, W) classes at the stored size (255 = unlabelled), or None without masks."""
        if not self.has_semantic_masks:
            return None
        if self._array(layout.SEMANTIC_MASK) is None:
            return None
        return np.asarray(self._read_sample(layout.SEMANTIC_MASK, self._check(i)), np.uint8)

    def free_beams(self, i: int) -> dict[str, np.ndarray] | None:
        """Key-frame LiDAR beams of sample i that returned nothing (free space along them), or None
        when the store has none (version 1, or prepped with --no-free-beams): `origin`, `direction`
        (M, 3) float32 in the key-ego frame (origin = the sensor, direction = unit), `ring` (M,) int16."""
        i = self._check(i)
        if not self.has_free_beams:
            return None
        shard = self._shard[i]
        self._fresh()
        if shard not in self._fb_pq:
            self._verified(shard, layout.FREE_BEAMS_DIR, "free_beams_sha256")
            self._fb_pq[shard] = fsio.parquet_file(self.root, layout.FREE_BEAMS_DIR, f"{shard}.parquet")
        t = self._fb_pq[shard].read_row_group(int(self._row_group[i]), columns=["ring", "origin", "direction"])
        out = {"ring": t.column("ring").to_numpy().astype(np.int16)}
        for c in ("origin", "direction"):
            out[c] = _flat(t.column(c), 1)[0].astype(np.float32).reshape(-1, 3) if t.num_rows else \
                np.zeros((0, 3), np.float32)
        return out

    def ray_location(self, i: int) -> tuple[str, int]:
        """(shard name, row group) holding sample i's rays: for writers that add ray columns."""
        i = self._check(i)
        return self._shard[i], int(self._row_group[i])

    def __getstate__(self) -> dict:
        """Picklable (spawned DataLoader workers): open file handles are not sent, only reopened."""
        state = self.__dict__.copy()
        state["_pq"], state["_fb_pq"], state["_arrays"] = {}, {}, {}
        return state

    def __repr__(self) -> str:
        return f"StoreReader({self.root!r}, {len(self)} samples, cameras={self.cameras})"
