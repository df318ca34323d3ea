"""`StoreReader`: random access to a complete ray store, one sample at a time.

Cheap per sample: samples.parquet is loaded once into numpy; labels are one Parquet row group;
images are one Zarr shard object. Safe to use from DataLoader workers (handles open lazily, per
process).

Sizes a file declares are checked against the manifest before its data is read (a Zarr array's shape,
dtype and chunking; a Parquet file's row groups, rows and uncompressed bytes): a crafted or damaged
store is one line naming the file, never an allocation it chose.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from renderocc.classes import Vocabulary, vocabulary_of_manifest
from renderocc.errors import UserError
from renderocc.geometry import Grid, GridError
from renderocc.store import fsio, layout, writer
from renderocc.store import manifest as manifest_mod

if TYPE_CHECKING:
    from renderocc.store.sweeps import SweepFrames


def declared_rows(pf: pq.ParquetFile, path: str, *, row_bytes: int, rows: int | None = None,
                  groups: int | None = None, what: str = "the manifest") -> np.ndarray:
    """Rows per row group a Parquet file declares (its footer, nothing else read), after checking them:
    `groups` row groups, `rows` rows in all, at most `row_bytes` uncompressed bytes a row (+ slack)."""
    md = pf.metadata
    if groups is not None and md.num_row_groups != groups:
        raise UserError(f"{path}: {md.num_row_groups} row groups, {what} says {groups} (one per sample)")
    n = np.array([md.row_group(g).num_rows for g in range(md.num_row_groups)], np.int64)
    b = np.array([md.row_group(g).total_byte_size for g in range(md.num_row_groups)], np.int64)
    if rows is not None and int(n.sum()) != rows:
        raise UserError(f"{path}: declares {int(n.sum())} rows, {what} says {rows}")
    over = np.nonzero((b > n * row_bytes + layout.PARQUET_SLACK_BYTES) | (n < 0))[0]
    if len(over):
        g = int(over[0])
        raise UserError(f"{path}: row group {g} declares {int(b[g])} bytes for {int(n[g])} rows (at most "
                        f"{row_bytes} a row): not a file prep wrote")
    return n


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_HEADER_MAX = 18   # magic, descriptor, window, dictionary id, content size
EMPTY_INNER_CHUNK = 2 ** 64 - 1   # a shard index entry of an absent inner chunk


def zstd_content_size(head: bytes) -> int | None:
    """The content size a zstd frame header declares (None: not a frame, or no size declared).
    numcodecs' decoder allocates this much before it decompresses."""
    if len(head) < 6 or head[:4] != ZSTD_MAGIC:
        return None
    fhd = head[4]
    single = (fhd >> 5) & 1
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    width = (single, 2, 4, 8)[fhd >> 6]
    if width == 0 or len(head) < pos + width:
        return None
    value = int.from_bytes(head[pos:pos + width], "little")
    return value + 256 if width == 2 else value


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
    """Read a ray store written by `renderocc prep nuscenes` (see docs/ARCHITECTURE.md).

    Indices are keyframes; the store's camera sweeps (if any) are read through `sweep_frames()`, a
    reader of the same kind over them (renderocc/store/sweeps.py), and `sweeps_of(i)`."""

    frames: layout.FrameSet = layout.KEYFRAMES   # which frames this reader's indices are

    def __init__(self, url_or_path: str | os.PathLike, allow_interrupted: bool = False):
        """`allow_interrupted`: open a store that an interrupted rewrite left inconsistent (for the
        commands that finish or report it); everything else refuses it with one line."""
        root = str(url_or_path)
        self.root = os.path.abspath(fsio.local_path(root)) if fsio.is_local(root) else root.rstrip("/")
        self.manifest: dict = manifest_mod.load(self.root)
        m = self.manifest
        state = layout.in_progress_state(m, self.root)
        self.in_progress: str | None = state[0] if state else None   # an unfinished rewrite, in words
        self.consistent: bool = state is None or state[1]
        if not self.consistent and not allow_interrupted:
            raise UserError(f"{self.root}: {self.in_progress}")
        bad = [sh["name"] for sh in m["shards"] if sh["name"] != layout.shard_name(sh["name"])]
        if bad:
            raise UserError(f"invalid {layout.MANIFEST} in {self.root}: shard name {bad[0]!r} is not a file name")
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
        self.semantic_mask_array: str | None = layout.semantic_mask_array(
            m, fsio.fs_path(self.root, layout.MANIFEST)[1])  # their folder (prep masks)
        # LiDAR beams without a return (schema 2, optional): False for version-1 stores
        self.has_free_beams: bool = m.get("free_beams") is not None
        # the class vocabulary prep used (Occ3D-nuScenes for stores that predate vocabularies)
        self.vocabulary: Vocabulary = vocabulary_of_manifest(m)
        # camera sweeps (schema 4, optional): unlabelled frames between keyframes (`sweep_frames()`)
        self.num_sweeps: int = layout.num_sweeps(m)
        self._shard_records = {sh["name"]: sh for sh in m["shards"]}
        ip = m.get(layout.IN_PROGRESS)
        pending = ip.get("pending") if isinstance(ip, dict) else None
        # a rays file an interrupted rewrite renamed into place before it could record it (writer.record_shard_rewrite)
        self._pending: dict[str, dict] = {k: v for k, v in (pending or {}).items() if isinstance(v, dict)}
        self._load_frames(m["num_samples"], m["adjacent"], "the manifest's num_samples")
        self._init_handles()

    def _init_handles(self) -> None:
        """Per-process file handles and per-reader caches, all opened lazily."""
        self._intact: set[tuple[str, str]] = set()  # (folder, shard) files whose checksum held
        self._pq: dict[str, pq.ParquetFile] = {}
        self._fb_pq: dict[str, pq.ParquetFile] = {}
        self._rows: dict[tuple[str, str], np.ndarray] = {}   # (folder, shard): declared rows per row group
        self._arrays: dict[str, zarr.Array | None] = {}
        self._inflation: dict[str, tuple | None] = {}   # array name: how its objects' zstd frames are checked
        self._sweep_view = None   # `sweep_frames()`, made on first use
        self._pid = os.getpid()

    # -------------------------------------------------------------- samples table
    def _load_frames(self, rows: int, adjacent: int, what: str) -> None:
        """The frame table (samples.parquet, or sweeps.parquet for a sweep view) into numpy, its declared
        size and columns checked first."""
        m = self.manifest
        C = len(self.cameras)
        table = self.frames.table
        path = fsio.fs_path(self.root, table)[1]
        pf = fsio.parquet_file(self.root, table)   # by path or from bytes: never a live fsspec file
        declared_rows(pf, path, rows=rows, row_bytes=layout.samples_row_bytes(C, adjacent), what=what)
        try:
            t = pf.read()
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: not readable Parquet ({' '.join(str(e).split())[:100]})") from None
        if not t.schema.equals(self.frames.schema, check_metadata=False):
            raise UserError(f"{path}: its columns are not those of the layout's schema for {table}: "
                            "not a file prep wrote")
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
        if "adj_offset" in t.column_names:
            vals, (off,) = _flat(t.column("adj_offset"), 1)
            self._adj_off = (vals, off)
            self._adj_idx = _flat(t.column("adj_sample_index"), 1)[0]
            self._adj_tok = _flat(t.column("adj_sample_token"), 1)[0]
            self._adj_c2e = _flat(t.column("adj_cam2ego"), 3)[0].reshape(-1, C, 4, 4)
        else:   # sweep frames: no neighbours
            self._adj_off = (np.zeros(0, np.int8), np.zeros(n + 1, np.int64))
            self._adj_idx, self._adj_tok = np.zeros(0, np.int32), np.zeros(0, object)
            self._adj_c2e = np.zeros((0, C, 4, 4))
        self._shard = t.column("shard").to_pylist()
        self._row_group = t.column("ray_row_group").to_numpy()
        self._ray_count = t.column("ray_count").to_numpy()
        self._has_occ = t.column("has_occ_gt").to_numpy(zero_copy_only=False) if "has_occ_gt" in t.column_names \
            else np.zeros(n, bool)
        if layout.SWEEP_KEY_COLUMNS[0] in t.column_names:   # sweep frames: the keyframe each follows
            self._key_index = t.column("key_sample_index").to_numpy()
            self._key_token = t.column("key_sample_token").to_pylist()
            self._lidar_token = t.column("lidar_token").to_pylist()
        self._index = {tok: i for i, tok in enumerate(self._tokens)}
        unknown = sorted(set(self._shard) - set(self._shard_records))
        if unknown:
            raise UserError(f"{path}: names shard {unknown[0]!r}, which the manifest does not list")
        # the z-buffer keeps at most one ray per original-image pixel
        per_cam = m["image"]["per_camera"]
        most = sum(int(np.prod(per_cam[c]["original_size"], dtype=np.int64)) for c in self.cameras if c in per_cam)
        bad = np.nonzero((self._ray_count < 0) | (self._ray_count > most))[0]
        if len(bad):
            i = int(bad[0])
            raise UserError(f"{path}: sample {i} declares {int(self._ray_count[i])} rays, more than the "
                            f"{most} pixels of its cameras")

    def __len__(self) -> int:
        return len(self._tokens)

    # -------------------------------------------------------------- camera sweeps
    def sweep_frames(self) -> SweepFrames:
        """The store's camera sweep frames as a reader of the same kind (`renderocc.store.sweeps.SweepFrames`:
        same methods and return shapes, `len` = `num_sweeps`, no semantics, GT or neighbours)."""
        if self._sweep_view is None:
            from renderocc.store.sweeps import SweepFrames

            self._sweep_view = SweepFrames(self)
        return self._sweep_view

    def sweeps_of(self, i: int) -> list[int]:
        """Sweep indices (into `sweep_frames()`) of the frames following keyframe i, in time order."""
        i = self._check(i)
        if not self.num_sweeps:
            return []
        return self.sweep_frames().following(i)

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
            self._inflation.clear()
            self._pid = os.getpid()

    def _array(self, name: str) -> zarr.Array | None:
        """Array `name` (None when absent), its declared shape, dtype and chunking checked first."""
        self._fresh()
        if name not in self._arrays:
            fs, meta = fsio.fs_path(self.root, name, "zarr.json")
            fsio.check_regular(fs, meta)   # a FIFO or /dev/zero would never end
            try:
                store = fsio.zarr_store(self.root, name, read_only=True)
                arr = zarr.open_array(store, mode="r")
            except (FileNotFoundError, zarr.errors.ArrayNotFoundError, KeyError):
                arr = None
            except Exception as e:  # noqa: BLE001 - any metadata zarr cannot parse
                raise UserError(f"{meta}: not a readable Zarr array ({e.__class__.__name__}: "
                                f"{' '.join(str(e).split())[:100]})") from None
            if arr is not None:
                self._check_declared(name, arr, meta)
            self._arrays[name] = arr
        return self._arrays[name]

    def expected_array(self, name: str) -> tuple[tuple[int, ...], str]:
        """(shape, dtype) the manifest implies for array `name`."""
        n, C = len(self), len(self.cameras)
        W, H = self.image_size
        if name == self.frames.images:
            return (n, C, H, W, 3), "uint8"
        if name.startswith(layout.OCC_GT + "/"):
            return (n, *self.grid.shape), "uint8"
        if name == self.frames.motion_mask:
            return (n, C, H, W), "bool"
        if layout.is_semantic_mask_name(name):
            return (n, C, H, W), "uint8"
        raise KeyError(name)

    def _check_declared(self, name: str, arr: zarr.Array, meta: str) -> None:
        """The array's zarr.json declares what the manifest implies, and one read (a chunk, or a shard
        of chunks) holds at most one sample: a crafted shape or chunk never sizes an allocation."""
        want, dtype = self.expected_array(name)
        if tuple(arr.shape) != want or str(arr.dtype) != dtype:
            raise UserError(f"{meta}: declares a {arr.dtype} array of shape {tuple(arr.shape)}, the manifest "
                            f"implies {dtype} {want}: the store is damaged")
        chunks, unit = tuple(arr.chunks), tuple(arr.shards or arr.chunks)
        too_big = any(c > max(w, 1) for shape in (chunks, unit) for c, w in zip(shape, want, strict=True))
        if unit[0] != 1 or too_big:
            raise UserError(f"{meta}: declares chunks {chunks}" + (f" in shards {unit}" if arr.shards else "")
                            + f": one read would exceed one sample of {want[1:]}: the store is damaged")
        if unit != (1, *want[1:]):
            raise UserError(f"{meta}: declares one object per {unit}, not per sample {(1, *want[1:])}: "
                            "not the layout prep writes")
        self._inflation[name] = self._inflation_plan(arr, meta)

    @staticmethod
    def _inflation_plan(arr: zarr.Array, meta: str) -> tuple | None:
        """Only the codecs prep writes (a codec that inflates without a declared size never runs):
        what `_check_inflation` reads of each object, or None when nothing can inflate."""
        codecs = [c.to_dict() for c in arr.metadata.codecs]
        names = [c["name"] for c in codecs]
        chunk_bytes = int(np.prod(arr.chunks, dtype=np.int64)) * arr.dtype.itemsize
        if names == ["sharding_indexed"]:
            conf = codecs[0].get("configuration", {})
            inner = [c["name"] for c in conf.get("codecs", [])]
            index = [c["name"] for c in conf.get("index_codecs", [])]
            if inner in (["bytes", "zstd"], ["bytes"], [layout.JPEG_CODEC_NAME]) and \
                    index in (["bytes"], ["bytes", "crc32c"]) and conf.get("index_location", "end") in ("start", "end"):
                n = int(np.prod(np.asarray(arr.shards) // np.asarray(arr.chunks), dtype=np.int64))
                return None if inner[-1] != "zstd" else \
                    ("shard", n, n * 16 + 4 * len(index[1:]), conf.get("index_location", "end"), chunk_bytes)
        elif names in (["bytes", "zstd"], ["bytes"]):
            return ("frame", chunk_bytes) if names[-1] == "zstd" else None
        raise UserError(f"{meta}: declares codecs {names}, not the ones prep writes")

    def _check_inflation(self, name: str, key: str, i: int) -> None:
        """Each zstd frame of sample object `key` declares exactly one chunk's bytes (read from its
        header and the shard index, before zarr decodes it): a crafted frame never sizes an allocation."""
        plan = self._inflation.get(name)
        if plan is None:
            return
        fs, path = fsio.fs_path(self.root, name, key)
        fsio.check_regular(fs, path)
        if plan[0] == "frame":
            heads, chunk_bytes = [(0, fs.cat_file(path, 0, ZSTD_HEADER_MAX))], plan[1]
        else:
            _, n, index_bytes, location, chunk_bytes = plan
            index = fs.cat_file(path, -index_bytes, None) if location == "end" else fs.cat_file(path, 0, index_bytes)
            if len(index) != index_bytes:
                raise UserError(f"{path}: chunk of sample {i} cannot be decoded (shard index of {len(index)} of "
                                f"{index_bytes} bytes): the store is damaged")
            entries = np.frombuffer(index[:n * 16], "<u8").reshape(n, 2)
            heads = [(int(o), fs.cat_file(path, int(o), int(o) + ZSTD_HEADER_MAX))
                     for o, _ in entries if o != EMPTY_INNER_CHUNK]
        for offset, head in heads:
            size = zstd_content_size(head)
            if size != chunk_bytes:
                what = "no zstd frame with a content size" if size is None else \
                    f"the zstd frame there declares {size} bytes"
                raise UserError(f"{path}: chunk of sample {i} cannot be decoded (at byte {offset}, {what}; a "
                                f"chunk is {chunk_bytes} bytes): the store is damaged")

    def images(self, i: int) -> np.ndarray:
        """uint8 (n_cams, H, W, 3) RGB at the stored size, cameras in `.cameras` order."""
        return self._read_sample(self.frames.images, self._check(i))

    def images_digest(self, i: int) -> str:
        """What the shard record holds for sample i's images (see `writer.write_images`)."""
        i = self._check(i)
        if self.image_codec != "jpeg":
            return writer.digest(self.images(i))
        return writer.object_digest(self.root, self.frames.images, self._sample_key(self.frames.images, i))

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
        self._check_inflation(name, key, i)
        try:
            return np.asarray(self._array(name)[i])
        except Exception as e:  # noqa: BLE001 - any codec failure means a damaged chunk
            raise UserError(f"{fsio.fs_path(self.root, name, key)[1]}: chunk of sample {i} cannot be decoded "
                            f"({e.__class__.__name__}); the store is damaged") from None

    def _parquet(self, shard: str) -> pq.ParquetFile:
        self._fresh()
        if shard not in self._pq:
            fr = self.frames
            self._verified(shard, fr.rays_dir, fr.rays_sha256)
            pf = fsio.parquet_file(self.root, fr.rays_dir, f"{shard}.parquet")
            rec = self._shard_records[shard]
            self._rows[(fr.rays_dir, shard)] = declared_rows(
                pf, fsio.fs_path(self.root, fr.rays_dir, f"{shard}.parquet")[1], row_bytes=layout.RAY_ROW_BYTES,
                rows=rec.get(fr.num_rays), groups=rec.get(fr.count), what=f"the manifest's shard {shard}")
            self._pq[shard] = pf
        return self._pq[shard]

    def _group_of(self, folder: str, i: int, rows: int | None) -> int:
        """Sample i's row group in its `folder` file (opened), checked: it exists and declares `rows`
        rows (None: any count the file's checks allowed)."""
        shard, g = self._shard[i], int(self._row_group[i])
        declared = self._rows[(folder, shard)]
        if 0 <= g < len(declared) and (rows is None or declared[g] == rows):
            return g
        path = fsio.fs_path(self.root, folder, f"{shard}.parquet")[1]
        if not 0 <= g < len(declared):
            raise UserError(f"{self.frames.table}: sample {i} points to row group {g} of {path}, which has "
                            f"{len(declared)}")
        raise UserError(f"{path}: row group {g} declares {int(declared[g])} rays, {self.frames.table} says "
                        f"{rows} for sample {i}")

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
        if got != want and folder in layout.RAY_DIRS and got == self._pending.get(shard, {}).get(key):
            self._intact.add((folder, shard))   # the interrupted rewrite's file, whole (same base columns)
            return None
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
            pf = self._parquet(self._shard[i])
            t = pf.read_row_group(self._group_of(self.frames.rays_dir, i, int(self._ray_count[i])), columns=cols)
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
        if self._array(self.frames.motion_mask) is None:
            return None
        return np.asarray(self._read_sample(self.frames.motion_mask, self._check(i)), bool)

    def semantic_mask(self, i: int) -> np.ndarray | None:
        """uint8 (n_cams, H, W) classes at the stored size (255 = unlabelled), or None without masks."""
        if not self.has_semantic_masks:
            return None
        if self._array(self.semantic_mask_array) is None:
            return None
        return np.asarray(self._read_sample(self.semantic_mask_array, self._check(i)), np.uint8)

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
            pf = fsio.parquet_file(self.root, layout.FREE_BEAMS_DIR, f"{shard}.parquet")
            rec = self._shard_records[shard]
            path = fsio.fs_path(self.root, layout.FREE_BEAMS_DIR, f"{shard}.parquet")[1]
            rows = declared_rows(pf, path, row_bytes=layout.FREE_BEAM_ROW_BYTES, rows=rec.get("num_free_beams"),
                                 groups=rec.get("num_samples"), what=f"the manifest's shard {shard}")
            if len(rows) and rows.max() > layout.FREE_BEAMS_PER_SAMPLE_MAX:
                raise UserError(f"{path}: row group {int(rows.argmax())} declares {int(rows.max())} free beams, "
                                f"more than the {layout.FREE_BEAMS_PER_SAMPLE_MAX} beams of a LiDAR key frame")
            self._rows[(layout.FREE_BEAMS_DIR, shard)] = rows
            self._fb_pq[shard] = pf
        g = self._group_of(layout.FREE_BEAMS_DIR, i, None)
        t = self._fb_pq[shard].read_row_group(g, columns=["ring", "origin", "direction"])
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
        state["_pq"], state["_fb_pq"], state["_arrays"], state["_rows"], state["_inflation"] = {}, {}, {}, {}, {}
        state["_sweep_view"] = None
        return state

    def __repr__(self) -> str:
        return f"StoreReader({self.root!r}, {len(self)} samples, cameras={self.cameras})"
