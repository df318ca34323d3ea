"""`store validate`: schema, checksums and cross-references of a store, as a list of problems; and
`notes`: what an interrupted command left that does not make the store invalid (which state it holds)."""

from __future__ import annotations

import numpy as np

from renderocc.errors import UserError
from renderocc.store import fsio, layout, writer
from renderocc.store import manifest as manifest_mod
from renderocc.store.reader import StoreReader, _flat


def validate(root: str, data: bool = True, deep: bool = False) -> list[str]:
    """Problems found (empty = valid). `data=False` skips re-hashing images and occupancy;
    `deep` also decodes every image and reads every ray column."""
    m = manifest_mod.load(root)          # raises UserError for missing / other version / bad schema
    r = StoreReader(root, allow_interrupted=True)
    problems: list[str] = [] if r.consistent else [r.in_progress]
    if fsio.sha256_file(r.root, layout.SAMPLES) != m["samples"]["sha256"]:
        problems.append(f"{layout.SAMPLES}: checksum mismatch")
    st = fsio.read_parquet(r.root, layout.SAMPLES)
    if not st.schema.equals(layout.SAMPLES_SCHEMA, check_metadata=False):
        problems.append(f"{layout.SAMPLES}: schema differs from layout.SAMPLES_SCHEMA")
    n = len(r)
    if n != m["num_samples"] or n != m["samples"]["rows"]:
        problems.append(f"{layout.SAMPLES}: {n} rows, manifest says {m['num_samples']}")
    if st.column("sample_index").to_pylist() != list(range(n)):
        problems.append(f"{layout.SAMPLES}: sample_index is not 0..{n - 1}")
    if len(set(r.tokens())) != n:
        problems.append(f"{layout.SAMPLES}: duplicate sample tokens")
    W, H = r.image_size
    want = (n, len(r.cameras), H, W, 3)
    try:
        img = r._array(layout.IMAGES)
    except UserError as e:
        return problems + [e.message]
    if img is None or img.shape != want:
        problems.append(f"{layout.IMAGES}: array missing or shape {getattr(img, 'shape', None)} != {want}")
        return problems
    if (declared := writer.declared_image_codec(img)) != r.image_codec:
        problems.append(f"{layout.IMAGES}: its Zarr metadata declares codec {declared}, "
                        f"the manifest says {r.image_codec}")
        return problems
    problems += _check_matrices(st, len(r.cameras))
    problems += _check_chunks(r)
    if problems:
        return problems
    try:
        for i in range(n) if deep else range(min(n, 1)):
            if r.images(i).shape != (len(r.cameras), H, W, 3):
                problems.append(f"{layout.IMAGES}: sample {i} decodes to {r.images(i).shape}")
    except UserError as e:
        problems.append(e.message)
    problems += _check_adjacency(r)
    problems += _guard(_check_shards, r, m, st, data, deep)
    problems += _guard(_check_free_beams, r, m)
    problems += _guard(_check_sweeps, r, m, data, deep)
    return problems


def _guard(check, *args) -> list[str]:
    """A check's problems; a damaged file it meets (unreadable Parquet, missing chunk) is one more."""
    try:
        return check(*args)
    except UserError as e:
        return [e.message]


MATRIX_COLUMNS = {"ego_pose": 1, "lidar2ego": 1, "K": 2, "K_orig": 2, "cam2ego": 2, "adj_cam2ego": 3}


def _check_matrices(st, n_cams: int, table: str = layout.SAMPLES) -> list[str]:
    """Every stored matrix finite; rotations orthonormal; intrinsics with positive focal lengths."""
    out = []
    for col, depth in MATRIX_COLUMNS.items():
        if col not in st.column_names:   # sweeps.parquet: no neighbours
            continue
        vals = _flat(st.column(col), depth)[0].astype(np.float64)
        if not np.isfinite(vals).all():
            out.append(f"{table}: non-finite values in {col}")
            continue
        if col.startswith("K"):
            K = vals.reshape(-1, 3, 3)
            if (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
                out.append(f"{table}: {col} has a non-positive focal length")
        else:
            R = vals.reshape(-1, 4, 4)[:, :3, :3]
            if len(R) and np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max() > 1e-4:
                out.append(f"{table}: {col} holds a matrix whose rotation is not orthonormal")
    return out


def _check_chunks(r) -> list[str]:
    """Every frame's chunk of every Zarr array is present (a missing one reads as zeros)."""
    out = []
    arrays = [r.frames.images] + [f"{layout.OCC_GT}/{a}" for a in layout.OCC_GT_ARRAYS if r.has_occ_gt]
    arrays += [r.frames.motion_mask] if r.has_motion_masks else []
    arrays += [r.semantic_mask_array] if r.has_semantic_masks else []
    for name in arrays:
        try:
            arr = r._array(name)
        except UserError as e:
            out.append(e.message)
            continue
        if arr is None:
            out.append(f"{name}: array missing")
            continue
        present = set(fsio.listdir_recursive(r.root, name))
        for i in range(len(r)):
            if name.startswith(layout.OCC_GT) and not r._has_occ[i]:
                continue
            key = writer.sample_key(arr, i)
            if key not in present:
                out.append(f"{name}: chunk of sample {i} missing ({key})")
    return out[:20]


def _check_free_beams(r, m: dict) -> list[str]:
    """free_beams/ (schema 2, optional): files, checksums, one row group per sample, unit directions."""
    if m.get("free_beams") is None:
        return []
    out, total = [], 0
    for s in m["shards"]:
        name, a, k = s["name"], s["first_sample"], s["num_samples"]
        rel = s.get("free_beams_path")
        if not rel or not fsio.exists(r.root, rel):
            out.append(f"shard {name}: free beams missing ({rel or 'no free_beams_path'})")
            continue
        intact = r.shard_checksum_problem(name, layout.FREE_BEAMS_DIR, "free_beams_sha256") is None
        if not intact:
            out.append(f"shard {name}: {rel} checksum mismatch")
        pf = fsio.parquet_file(r.root, rel)
        if not pf.schema_arrow.equals(layout.FREE_BEAM_SCHEMA, check_metadata=False):
            out.append(f"shard {name}: {rel} schema differs from layout.FREE_BEAM_SCHEMA")
        if pf.num_row_groups != k:
            out.append(f"shard {name}: {rel} has {pf.num_row_groups} row groups for {k} samples")
            continue
        n = sum(pf.metadata.row_group(g).num_rows for g in range(k))
        if n != s.get("num_free_beams"):
            out.append(f"shard {name}: {n} free beams, manifest says {s.get('num_free_beams')}")
        total += n
        for i in range(a, a + k) if intact else ():  # a reader refuses a file that fails its checksum
            b = r.free_beams(i)
            if len(b["direction"]) and (not np.isfinite(b["origin"]).all() or np.abs(
                    np.linalg.norm(b["direction"], axis=1) - 1).max() > 1e-4):
                out.append(f"sample {i}: free beams with non-finite origins or non-unit directions")
    if total != m["free_beams"]["num_beams"]:
        out.append(f"manifest free_beams.num_beams {m['free_beams']['num_beams']} but shards hold {total}")
    return out


def _check_adjacency(r) -> list[str]:
    out = []
    scenes = r.scene_names()
    tokens = r.tokens()
    for i in range(len(r)):
        for a in r.sample(i)["adjacent"]:
            j = a["sample_index"]
            if not 0 <= j < len(r) or tokens[j] != a["sample_token"]:
                out.append(f"sample {i}: neighbour {a['offset']:+d} points to a missing sample")
            elif scenes[j] != scenes[i] or j == i:
                out.append(f"sample {i}: neighbour {a['offset']:+d} is from another scene or itself")
    return out[:20]


def _check_shards(r, m: dict, st, data: bool, deep: bool = False, total_rays: int | None = None) -> list[str]:
    """Each shard's rays file (size, checksum, one row group per frame, pixels, depths, labels) and,
    with `data`, the digests of its frames' images and arrays. `r` is the store's reader or its sweep
    view (`r.frames` names the files and shard-record keys); `total_rays`: what the manifest says."""
    out = []
    fr = r.frames
    what = "sample" if fr is layout.KEYFRAMES else "sweep frame"
    shard_col = st.column("shard").to_pylist()
    W0 = {c: v["original_size"] for c, v in m["image"]["per_camera"].items()}
    total = 0
    for s in m["shards"]:
        name, a, k = s["name"], s.get(fr.first, 0), s.get(fr.count, 0)
        path = s.get(fr.rays_path)
        if shard_col[a:a + k] != [name] * k:
            out.append(f"shard {name}: {fr.kind} frames {a}..{a + k - 1} not all assigned to it in {fr.table}")
        if path is None or not fsio.exists(r.root, path):
            out.append(f"shard {name}: {path or f'no {fr.rays_path}'} missing")
            continue
        if fsio.size(r.root, path) not in (s.get(fr.rays_bytes), r._pending.get(name, {}).get(fr.rays_bytes)):
            out.append(f"shard {name}: {path} is {fsio.size(r.root, path)} bytes, "
                       f"manifest says {s.get(fr.rays_bytes)}")
        if r.shard_checksum_problem(name, fr.rays_dir, fr.rays_sha256) is not None:
            out.append(f"shard {name}: {path} checksum mismatch")
            continue
        pf = r._parquet(name)
        if deep:
            pf.read()
        if pf.num_row_groups != k:
            out.append(f"shard {name}: {pf.num_row_groups} row groups for {k} samples")
            continue
        img_d, occ_d, mot_d, sem_d = [], [], [], []
        for i in range(a, a + k):
            lb = r.labels(i)
            total += len(lb["u"])
            toks = pf.read_row_group(int(r._row_group[i]), columns=["sample_token"]).column(0).unique()
            if len(lb["u"]) and toks.to_pylist() != [r.tokens()[i]]:
                out.append(f"shard {name}: row group of {what} {i} holds other tokens")
            if len(lb["u"]) != r._ray_count[i]:
                out.append(f"{what} {i}: {len(lb['u'])} rays, {fr.table} says {r._ray_count[i]}")
            if len(lb["u"]):
                size = np.array([W0[c] for c in r.cameras], np.float64)[lb["camera"]]
                if ((lb["u"] <= 1) | (lb["u"] >= size[:, 0] - 1) | (lb["v"] <= 1)
                        | (lb["v"] >= size[:, 1] - 1)).any():
                    out.append(f"{what} {i}: pixel outside the original image")
                if (lb["depth"] <= m["labels"]["min_depth"] * (1 - 1e-6)).any():
                    out.append(f"{what} {i}: depth below min_depth")
                bad = (lb["label"] >= r.vocabulary.num_semantic) & (lb["label"] != 255)
                if bad.any() or (not r.has_semantics and (lb["label"] != 255).any()):
                    out.append(f"{what} {i}: label values outside the contract")
            if data:
                img_d.append(r.images_digest(i))
                occ = r.occ_gt(i)
                occ_d.append(writer.digest(*(occ[x] for x in layout.OCC_GT_ARRAYS)) if occ else "-")
                if s.get(fr.motion_mask_sha256):
                    mot_d.append(writer.digest(r.motion_mask(i)))
                if s.get("semantic_mask_sha256") and fr is layout.KEYFRAMES:
                    sem_d.append(writer.digest(r.semantic_mask(i)))
        if data and writer.combine_digests(img_d) != s.get(fr.images_sha256):
            out.append(f"shard {name}: {fr.images} checksum mismatch")
        if data and fr is layout.KEYFRAMES and s["occ_gt_sha256"] and \
                writer.combine_digests(occ_d) != s["occ_gt_sha256"]:
            out.append(f"shard {name}: occ_gt checksum mismatch")
        if data and s.get(fr.motion_mask_sha256) and writer.combine_digests(mot_d) != s[fr.motion_mask_sha256]:
            out.append(f"shard {name}: {fr.motion_mask} checksum mismatch")
        if data and fr is layout.KEYFRAMES and s.get("semantic_mask_sha256") and \
                writer.combine_digests(sem_d) != s["semantic_mask_sha256"]:
            out.append(f"shard {name}: semantic_mask checksum mismatch")
        if r.has_motion_masks and not set(layout.MOTION_COLUMNS) <= set(pf.schema_arrow.names):
            out.append(f"shard {name}: manifest has motion masks but {path} lacks {layout.MOTION_COLUMNS}")
    want = m["num_rays"] if total_rays is None else total_rays
    if total != want:
        out.append(f"manifest {'num_rays' if total_rays is None else layout.CAMERA_SWEEPS + '.num_rays'} {want} "
                   f"but shards hold {total}")
    return out


def _check_sweeps(r, m: dict, data: bool, deep: bool) -> list[str]:
    """Camera sweeps (schema 4, optional): sweeps.parquet (checksum, rows, order, keyframes, matrices),
    sweep_images/ (shape, codec, chunks) and each shard's sweep_rays/ file, like the keyframes'."""
    info = layout.camera_sweeps(m)
    if info is None:
        return []
    fr = layout.SWEEP_FRAMES
    out = []
    per_shard = sum(s.get(fr.count, 0) for s in m["shards"])
    if per_shard != info["count"]:
        out.append(f"shards hold {per_shard} sweep frames, manifest {layout.CAMERA_SWEEPS}.count says {info['count']}")
    if not fsio.exists(r.root, fr.table):
        return out + [f"{fr.table}: missing"]
    if fsio.sha256_file(r.root, fr.table) != info["sweeps"]["sha256"]:
        out.append(f"{fr.table}: checksum mismatch")
    st = fsio.read_parquet(r.root, fr.table)
    if not st.schema.equals(fr.schema, check_metadata=False):
        return out + [f"{fr.table}: schema differs from layout.SWEEPS_SCHEMA"]
    v = r.sweep_frames()
    n = len(v)
    if n != info["sweeps"]["rows"]:
        out.append(f"{fr.table}: {n} rows, manifest says {info['sweeps']['rows']}")
    if st.column(fr.index_column).to_pylist() != list(range(n)):
        out.append(f"{fr.table}: {fr.index_column} is not 0..{n - 1}")
    if len(set(v.tokens())) != n:
        out.append(f"{fr.table}: duplicate frame tokens")
    keys = st.column("key_sample_index").to_pylist()
    tokens, scenes = r.tokens(), r.scene_names()
    for j, (k, tok, scene) in enumerate(zip(keys, st.column("key_sample_token").to_pylist(), v.scene_names(),
                                            strict=True)):
        if tokens[k] != tok or scenes[k] != scene:
            out.append(f"{fr.table}: sweep frame {j} names keyframe {k} ({tok}), which the store holds otherwise")
            break
    out += _check_matrices(st, len(r.cameras), fr.table)
    if n:
        try:
            img = v._array(fr.images)
        except UserError as e:
            return out + [e.message]
        if img is None:
            return out + [f"{fr.images}: array missing"]
        if (declared := writer.declared_image_codec(img)) != r.image_codec:
            return out + [f"{fr.images}: its Zarr metadata declares codec {declared}, "
                          f"the manifest says {r.image_codec}"]
        out += _check_chunks(v)
        if out:
            return out
        try:
            for j in range(n) if deep else range(1):
                v.images(j)
        except UserError as e:
            out.append(e.message)
    return out + _check_shards(v, m, st, data, deep, total_rays=info["num_rays"])


def notes(root: str) -> list[str]:
    """What interrupted commands left in a store that does not make it invalid: which state it holds
    (the old or the new), and folders nothing reads (safe to delete; the next run of the command does)."""
    m = manifest_mod.load(root)
    r = StoreReader(root, allow_interrupted=True)
    out = [r.in_progress] if r.in_progress and r.consistent else []
    stale = writer.stale_semantic_mask_arrays(r.root, m)
    if stale:
        holds = (f"the masks imported {m['semantic_masks'].get('created', '?')} ({r.semantic_mask_array}/)"
                 if r.has_semantic_masks else "no 2D masks")
        out.append(f"{', '.join(n + '/' for n in stale)}: left by an interrupted `prep masks` and not named by "
                   f"the manifest, so never read; the store holds {holds}; the next `prep masks` deletes "
                   "it (deleting it is safe)")
    return out
