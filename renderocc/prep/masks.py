"""`renderocc prep masks`: import dense 2D semantic masks (one PNG per camera image) into a store.

Input layout: DIR/<image path relative to the dataroot, .png for .jpg> (e.g.
DIR/samples/CAM_FRONT/<name>.png), uint8 class index of the store vocabulary per pixel, 255 =
unlabelled, at the image's original size: what a segmenter run over the dataset writes, and what
`renderocc synth airside` writes as its GT (DIR/masks). Each mask goes through the same fit as its
image (scale to cover, crop centred in x and from the top) with nearest-neighbour resizing, into
a new `semantic_mask-<id>` array beside the images; the manifest records it (version, source,
digests, array) last, in the one write that switches the store from the previous set (then deleted).
Every mask is checked before anything is written: a bad one stops the run with one line naming the
file and leaves the store as it was (never a half-imported set), and so does a kill at any point
(the old set or the new one; `store validate` names a folder a kill left behind).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from renderocc import __version__
from renderocc.classes import IGNORE
from renderocc.errors import UserError
from renderocc.prep import images as imgs
from renderocc.prep.nuscenes import load_nuscenes
from renderocc.store import layout, writer
from renderocc.store import manifest as manifest_mod
from renderocc.store.reader import StoreReader

MASKS_VERSION = 1


@dataclass
class MaskOptions:
    store: str
    masks: str
    dataroot: str | None = None  # for the image file names (default: the store's source)
    progress: bool = True


def mask_path(masks_dir: str, image_filename: str) -> str:
    """Where the mask of an image (path relative to the dataroot) lives under `masks_dir`."""
    return os.path.join(masks_dir, os.path.splitext(image_filename)[0] + ".png")


def load_mask(path: str, size_wh: tuple[int, int], num_classes: int) -> np.ndarray:
    """A mask file as (H, W) uint8, checked: present, single-channel 8-bit, the image's size, classes
    0..num_classes-1 or 255."""
    if not os.path.isfile(path):
        raise UserError(f"mask missing: {path}")
    m = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if m is None:
        raise UserError(f"mask cannot be decoded: {path}")
    if m.ndim != 2 or m.dtype != np.uint8:
        raise UserError(f"mask {path} is not a single-channel 8-bit image (shape {m.shape}, {m.dtype})")
    if (m.shape[1], m.shape[0]) != tuple(size_wh):
        raise UserError(f"mask {path} is {m.shape[1]}x{m.shape[0]}, its image is {size_wh[0]}x{size_wh[1]}")
    bad = m[(m >= num_classes) & (m != IGNORE)]
    if bad.size:
        raise UserError(f"mask {path} holds class {int(bad.max())}, outside the class map "
                        f"(0..{num_classes - 1}, 255 = unlabelled)")
    return m


def resize_mask(mask: np.ndarray, orig_wh: tuple[int, int], out_wh: tuple[int, int]) -> np.ndarray:
    """The stored-size mask: the image's fit (prep/images.py) with nearest-neighbour resizing."""
    f = imgs.fit(tuple(orig_wh), tuple(out_wh))
    m = mask if (mask.shape[1], mask.shape[0]) == f.resized else \
        cv2.resize(mask, f.resized, interpolation=cv2.INTER_NEAREST)
    x0, y0 = f.crop
    return np.ascontiguousarray(m[y0:y0 + out_wh[1], x0:x0 + out_wh[0]])


def run(opts: MaskOptions) -> dict:
    """Import every mask of the store's images; returns a summary."""
    t0 = time.time()
    if not os.path.isdir(opts.masks):
        raise UserError(f"--masks folder not found: {opts.masks}")
    reader = StoreReader(opts.store)
    m = reader.manifest
    dataroot = opts.dataroot or m["source"]["dataroot"]
    if not os.path.isdir(dataroot):
        raise UserError(f"dataroot not found: {dataroot} (pass --dataroot: the image names come from its tables)")
    nusc = load_nuscenes(dataroot, m["source"]["version"], reader.vocabulary)
    per_cam = m["image"]["per_camera"]
    files = []
    for i in range(len(reader)):
        tok = reader.sample(i)["sample_token"]
        if tok not in nusc._token2ind["sample"]:
            raise UserError(f"sample {tok} of the store is not in {dataroot}: wrong --dataroot?")
        data = nusc.get("sample", tok)["data"]
        files.append([mask_path(opts.masks, nusc.get("sample_data", data[c])["filename"]) for c in reader.cameras])
    missing = [p for row in files for p in row if not os.path.isfile(p)]
    if missing:
        raise UserError(f"mask missing: {missing[0]} ({len(missing)} of {len(files) * len(reader.cameras)} missing)")
    root, out_wh, n_cls = reader.root, tuple(m["image"]["stored_size"]), reader.vocabulary.num_semantic
    for row in tqdm(files, desc="check masks", unit="sample", disable=not opts.progress):
        for p, c in zip(row, reader.cameras, strict=True):
            load_mask(p, per_cam[c]["original_size"], n_cls)
    # The new set goes into a new array beside the current one; the manifest switches to it in one
    # write, and only then is the old one deleted: a kill leaves the old set or the new one, whole.
    for stale in writer.stale_semantic_mask_arrays(root, m):   # left by a killed import
        writer.remove_array(root, stale)
    name = layout.new_semantic_mask_name()
    try:
        digests, labelled = _write_masks(reader, files, name, opts.progress)
        info = {"version": MASKS_VERSION, "tool_version": __version__, "source": os.path.abspath(opts.masks),
                "layout": "<masks>/<image path relative to the dataroot>.png, uint8 class, 255 = unlabelled",
                "resize": "the image's fit (scale to cover, crop), nearest neighbour",
                "vocabulary": reader.vocabulary.name, "num_images": len(files) * len(reader.cameras),
                "labelled_share": labelled / max(1, len(files) * len(reader.cameras) * out_wh[0] * out_wh[1])}
        writer.set_semantic_masks(root, info, {s: writer.combine_digests(d) for s, d in digests.items()}, name)
    except BaseException:   # a failure (a full disk, Ctrl-C) before the switch leaves the store as it was
        with contextlib.suppress(Exception):
            if layout.semantic_mask_array(manifest_mod.load(root)) != name:
                writer.remove_array(root, name)
        raise
    if reader.semantic_mask_array is not None and reader.semantic_mask_array != name:
        writer.remove_array(root, reader.semantic_mask_array)   # the replaced set: nothing names it now
    return {"samples": len(reader), "images": info["num_images"], "labelled_share": info["labelled_share"],
            "seconds": time.time() - t0, "root": root}


def _write_masks(reader: StoreReader, files: list[list[str]], name: str, progress: bool) -> tuple[dict, int]:
    """Every sample's masks, resized to the stored size, into the new array `name`: (per-shard
    digests, labelled pixels)."""
    m, root = reader.manifest, reader.root
    per_cam, out_wh = m["image"]["per_camera"], tuple(m["image"]["stored_size"])
    n_cls = reader.vocabulary.num_semantic
    writer.create_semantic_mask_array(root, name)
    digests: dict[str, list[str]] = {}
    labelled = 0
    for i in tqdm(range(len(reader)), desc="masks", unit="sample", disable=not progress):
        stack = np.stack([resize_mask(load_mask(p, per_cam[c]["original_size"], n_cls),
                                      per_cam[c]["original_size"], out_wh)
                          for p, c in zip(files[i], reader.cameras, strict=True)])
        labelled += int((stack != IGNORE).sum())
        digests.setdefault(reader.ray_location(i)[0], []).append(writer.write_semantic_mask(root, i, stack, name))
    return digests, labelled
