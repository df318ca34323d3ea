"""`store validate`: schema, checksums and cross-references of a store, as a list of problems."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from renderocc.store import fsio, layout, writer
from renderocc.store import manifest as manifest_mod


def validate(root: str, data: bool = True) -> list[str]:
    """Problems found (empty = valid). `data=False` skips re-hashing images and occupancy."""
    from renderocc.store.reader import StoreReader

    m = manifest_mod.load(root)          # raises UserError for missing / other version / bad schema
    r = StoreReader(root)
    problems: list[str] = []
    if fsio.sha256_file(r.root, layout.SAMPLES) != m["samples"]["sha256"]:
        problems.append(f"{layout.SAMPLES}: checksum mismatch")
    fs, path = fsio.fs_path(r.root, layout.SAMPLES)
    with fs.open(path, "rb") as f:
        st = pq.read_table(f)
    if not st.schema.equals(layout.SAMPLES_SCHEMA, check_metadata=False):
        problems.append(f"{layout.SAMPLES}: schema differs from layout.SAMPLES_SCHEMA")
    n = len(r)
    if n != m["num_samples"] or n != m["samples"]["rows"]:
        problems.append(f"{layout.SAMPLES}: {n} rows, manifest says {m['num_samples']}")
    if st.column("sample_index").to_pylist() != list(range(n)):
        problems.append(f"{layout.SAMPLES}: sample_index is not 0..{n - 1}")
    if len(set(r.tokens())) != n:
        problems.append(f"{layout.SAMPLES}: duplicate sample tokens")
    img = r._array(layout.IMAGES)
    W, H = r.image_size
    want = (n, len(r.cameras)) + ((H, W, 3) if m["image"]["codec"] == "raw" else ())
    if img is None or img.shape != want:
        problems.append(f"{layout.IMAGES}: array missing or shape {getattr(img, 'shape', None)} != {want}")
        return problems
    if r.images(0).shape != (len(r.cameras), H, W, 3):
        problems.append(f"{layout.IMAGES}: sample 0 decodes to {r.images(0).shape}")
    problems += _check_adjacency(r)
    problems += _check_shards(r, m, st, data)
    problems += _check_free_beams(r, m)
    return problems


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
        if fsio.sha256_file(r.root, rel) != s.get("free_beams_sha256"):
            out.append(f"shard {name}: {rel} checksum mismatch")
        fs, path = fsio.fs_path(r.root, rel)
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            if not pf.schema_arrow.equals(layout.FREE_BEAM_SCHEMA, check_metadata=False):
                out.append(f"shard {name}: {rel} schema differs from layout.FREE_BEAM_SCHEMA")
            if pf.num_row_groups != k:
                out.append(f"shard {name}: {rel} has {pf.num_row_groups} row groups for {k} samples")
                continue
            n = sum(pf.metadata.row_group(g).num_rows for g in range(k))
        if n != s.get("num_free_beams"):
            out.append(f"shard {name}: {n} free beams, manifest says {s.get('num_free_beams')}")
        total += n
        for i in range(a, a + k):
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


def _check_shards(r, m: dict, st, data: bool) -> list[str]:
    out = []
    shard_col = st.column("shard").to_pylist()
    W0 = {c: v["original_size"] for c, v in m["image"]["per_camera"].items()}
    total = 0
    for s in m["shards"]:
        name, a, k = s["name"], s["first_sample"], s["num_samples"]
        if shard_col[a:a + k] != [name] * k:
            out.append(f"shard {name}: samples {a}..{a + k - 1} not all assigned to it in {layout.SAMPLES}")
        if not fsio.exists(r.root, s["rays_path"]):
            out.append(f"shard {name}: {s['rays_path']} missing")
            continue
        if fsio.sha256_file(r.root, s["rays_path"]) != s["rays_sha256"]:
            out.append(f"shard {name}: {s['rays_path']} checksum mismatch")
        pf = r._parquet(name)
        if pf.num_row_groups != k:
            out.append(f"shard {name}: {pf.num_row_groups} row groups for {k} samples")
            continue
        img_d, occ_d, mot_d, sem_d = [], [], [], []
        for i in range(a, a + k):
            lb = r.labels(i)
            total += len(lb["u"])
            toks = pf.read_row_group(int(r._row_group[i]), columns=["sample_token"]).column(0).unique()
            if len(lb["u"]) and toks.to_pylist() != [r.tokens()[i]]:
                out.append(f"shard {name}: row group of sample {i} holds other tokens")
            if len(lb["u"]) != r._ray_count[i]:
                out.append(f"sample {i}: {len(lb['u'])} rays, {layout.SAMPLES} says {r._ray_count[i]}")
            if len(lb["u"]):
                size = np.array([W0[c] for c in r.cameras], np.float64)[lb["camera"]]
                if ((lb["u"] <= 1) | (lb["u"] >= size[:, 0] - 1) | (lb["v"] <= 1)
                        | (lb["v"] >= size[:, 1] - 1)).any():
                    out.append(f"sample {i}: pixel outside the original image")
                if (lb["depth"] <= m["labels"]["min_depth"] * (1 - 1e-6)).any():
                    out.append(f"sample {i}: depth below min_depth")
                bad = (lb["label"] >= r.vocabulary.num_semantic) & (lb["label"] != 255)
                if bad.any() or (not r.has_semantics and (lb["label"] != 255).any()):
                    out.append(f"sample {i}: label values outside the contract")
            if data:
                img_d.append(writer.image_digest(r._stored_images(i)))
                occ = r.occ_gt(i)
                occ_d.append(writer.digest(*(occ[x] for x in layout.OCC_GT_ARRAYS)) if occ else "-")
                if s.get("motion_mask_sha256"):
                    mot_d.append(writer.digest(r.motion_mask(i)))
                if s.get("semantic_mask_sha256"):
                    sem_d.append(writer.digest(r.semantic_mask(i)))
        if data and writer.combine_digests(img_d) != s["images_sha256"]:
            out.append(f"shard {name}: images checksum mismatch")
        if data and s["occ_gt_sha256"] and writer.combine_digests(occ_d) != s["occ_gt_sha256"]:
            out.append(f"shard {name}: occ_gt checksum mismatch")
        if data and s.get("motion_mask_sha256") and writer.combine_digests(mot_d) != s["motion_mask_sha256"]:
            out.append(f"shard {name}: motion_mask checksum mismatch")
        if data and s.get("semantic_mask_sha256") and writer.combine_digests(sem_d) != s["semantic_mask_sha256"]:
            out.append(f"shard {name}: semantic_mask checksum mismatch")
        if r.has_motion_masks and not set(layout.MOTION_COLUMNS) <= set(pf.schema_arrow.names):
            out.append(f"shard {name}: manifest has motion masks but the rays lack {layout.MOTION_COLUMNS}")
    if total != m["num_rays"]:
        out.append(f"manifest num_rays {m['num_rays']} but shards hold {total}")
    return out
