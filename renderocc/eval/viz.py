"""`renderocc viz`: PNG figures a person looks at to trust (or distrust) labels and predictions.

Per sample: every camera with its projected depth and semantic labels (and, with a checkpoint,
the rendered depth and semantics beside them); bird's-eye views of GT and predicted occupancy;
and a 3D perspective view of the voxels. Matplotlib only, no display needed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from renderocc.classes import IGNORE, Vocabulary, default_vocabulary  # noqa: E402
from renderocc.eval import infer  # noqa: E402
from renderocc.eval.common import open_store  # noqa: E402
from renderocc.geometry import Grid  # noqa: E402
from renderocc.outputs import path_component, prepare_out_dir  # noqa: E402

DEPTH_MAX = 50.0  # metres at the top of the depth colour map
UNSEEN = np.array([70, 70, 70], np.uint8)


def stored_pixels(cam_info: dict, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Original-image pixels → stored-image pixels (labels keep the original resolution)."""
    M = np.asarray(cam_info["K"], np.float64) @ np.linalg.inv(np.asarray(cam_info["K_orig"], np.float64))
    p = np.stack([u, v, np.ones_like(u)], -1).astype(np.float64) @ M.T
    return p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]


def class_rgb(cls: np.ndarray, vocab: Vocabulary | None = None) -> np.ndarray:
    """(…,) class ids → (…, 3) float RGB in the vocabulary's colours (default Occ3D); ignore/unknown grey."""
    table = (vocab or default_vocabulary()).color_table()
    return table[np.asarray(cls).astype(np.int64).clip(0, 255)] / 255.0


def bev(sem: np.ndarray, seen: np.ndarray | None = None, vocab: Vocabulary | None = None) -> np.ndarray:
    """Top-most non-free class per (x, y) column as an RGB image, forward up, left on the left.

    With `seen`, columns no voxel of which was observed are drawn dark grey ("unseen").
    """
    sem = np.asarray(sem)
    vocab = vocab or default_vocabulary()
    occ = (sem != vocab.free) & (sem != IGNORE)
    top = sem.shape[2] - 1 - np.argmax(occ[:, :, ::-1], axis=2)
    cls = np.take_along_axis(sem, top[..., None], 2)[..., 0]
    rgb = (class_rgb(cls, vocab) * 255).astype(np.uint8)
    rgb[~occ.any(2)] = 255
    if seen is not None:
        rgb[~np.asarray(seen, bool).any(2) & ~occ.any(2)] = UNSEEN
    return rgb[::-1, ::-1]


def _surface(sem: np.ndarray, free: int) -> np.ndarray:
    """Occupied voxels with at least one free/out-of-grid face neighbour (the visible shell)."""
    occ = (sem != free) & (sem != IGNORE)
    pad = np.pad(occ, 1, constant_values=False)
    inner = np.ones_like(occ)
    for ax in range(3):
        for sh in (-1, 1):
            inner &= np.roll(pad, sh, axis=ax)[1:-1, 1:-1, 1:-1]
    return occ & ~inner


def voxels_3d(ax, sem: np.ndarray, grid: Grid, title: str, max_points: int = 60000,
              vocab: Vocabulary | None = None) -> None:
    """Perspective scatter of the voxel shell, coloured by class, shaded by height."""
    vocab = vocab or default_vocabulary()
    surf = _surface(np.asarray(sem), vocab.free)
    idx = np.argwhere(surf)
    if len(idx) > max_points:
        idx = idx[np.linspace(0, len(idx) - 1, max_points).astype(np.int64)]
    p = grid.lo + (idx + 0.5) * np.asarray(grid.voxel)
    col = class_rgb(np.asarray(sem)[tuple(idx.T)], vocab)
    shade = 0.6 + 0.4 * (idx[:, 2] / max(np.asarray(sem).shape[2] - 1, 1))
    ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=col * shade[:, None], marker="s",
               s=max(1.0, 2000.0 / np.asarray(sem).shape[0]), depthshade=False, linewidths=0)
    ax.set_proj_type("persp", focal_length=0.6)
    ax.view_init(elev=38, azim=-160)
    r = grid.box
    ax.set_xlim(r[0], r[3])
    ax.set_ylim(r[1], r[4])
    ax.set_zlim(r[2], r[2] + (r[3] - r[0]) / 4)
    ax.set_box_aspect((1, (r[4] - r[1]) / (r[3] - r[0]), 0.25))
    ax.set_axis_off()
    ax.set_title(title)


def _legend(fig, classes: list[int], outside: bool = False, vocab: Vocabulary | None = None) -> None:
    vocab = vocab or default_vocabulary()
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.asarray(vocab.colors[c]) / 255.0) for c in classes]
    fig.legend(handles, [vocab.names[c] for c in classes],
               loc="outside lower center" if outside else "lower center",
               ncol=min(9, max(1, len(classes))), fontsize=7, frameon=False)


def camera_figure(reader, i: int, rendered: dict | None = None):
    """Rows = cameras; columns = depth labels, semantic labels (, rendered depth, rendered sem)."""
    s = reader.sample(i)
    imgs = reader.images(i)
    lab = reader.labels(i)
    names = reader.cameras
    vocab = reader.vocabulary
    ncol = 4 if rendered else 2
    W, H = reader.image_size
    fig, axes = plt.subplots(len(names), ncol, figsize=(3.2 * ncol, 3.4 * len(names) * H / W + 1.0),
                             squeeze=False, layout="constrained")
    cam = np.asarray(lab["camera"], np.int64)
    msize = max(0.5, 4.0 * W / 1600)
    present = set()
    for c, name in enumerate(names):
        m = cam == c
        x, y = stored_pixels(s["cameras"][name], lab["u"][m], lab["v"][m])
        depth, label = np.asarray(lab["depth"])[m], np.asarray(lab["label"])[m]
        ax = axes[c, 0]
        ax.imshow(imgs[c])
        ax.scatter(x, y, c=depth, cmap="turbo", vmin=0, vmax=DEPTH_MAX, s=msize, linewidths=0)
        ax.set_title(f"{name}: depth labels ({m.sum()})", fontsize=8)
        ax = axes[c, 1]
        ax.imshow(imgs[c])
        sem = label != IGNORE
        present.update(np.unique(label[sem]).tolist())
        ax.scatter(x[sem], y[sem], c=class_rgb(label[sem], vocab), s=msize, linewidths=0)
        ax.set_title(f"{name}: semantic labels ({sem.sum()})", fontsize=8)
        if rendered:
            r = rendered[name]
            axes[c, 2].imshow(r["depth"], cmap="turbo", vmin=0, vmax=DEPTH_MAX,
                              extent=(-0.5, W - 0.5, H - 0.5, -0.5))
            axes[c, 2].set_title(f"{name}: rendered depth (z)", fontsize=8)
            axes[c, 3].imshow(imgs[c])
            axes[c, 3].imshow(class_rgb(r["semantics"], vocab), alpha=0.75 * r["opacity"].clip(0, 1),
                              extent=(-0.5, W - 0.5, H - 0.5, -0.5))
            axes[c, 3].set_title(f"{name}: rendered semantics", fontsize=8)
            present.update(np.unique(r["semantics"]).tolist())
        for ax in axes[c]:
            ax.set_xlim(-0.5, W - 0.5)
            ax.set_ylim(H - 0.5, -0.5)
            ax.set_axis_off()
    _legend(fig, sorted(int(c) for c in present if c < vocab.num_semantic), outside=True, vocab=vocab)
    fig.suptitle(f"{s['scene_name']} · sample {i} · {s['sample_token']} (depth colour 0–{DEPTH_MAX:g} m)",
                 fontsize=9)
    return fig


def render_cameras(reader, i: int, density, logits, grid: Grid, step: float, stride: int) -> dict:
    """Rendered z-depth, argmax class and opacity images per camera, at `stride` stored pixels."""
    s = reader.sample(i)
    out = {}
    for name in reader.cameras:
        o, d, scale, hw = infer.image_rays(reader, s, name, stride)
        r = infer.render(density, logits, o, d, grid, step)
        out[name] = {"depth": (r["depth"] / scale).reshape(hw),
                     "semantics": r["semantics"].argmax(-1).reshape(hw),
                     "opacity": r["opacity"].reshape(hw)}
    return out


def occupancy_figures(gt: dict | None, pred: np.ndarray | None, seen: np.ndarray | None,
                      grid: Grid, title: str, vocab: Vocabulary | None = None):
    """(BEV figure, 3D figure) of GT and/or prediction; `grid` is the GT (Occ3D) grid."""
    vocab = vocab or default_vocabulary()
    free = vocab.free
    panels = []
    if gt is not None:
        sem = np.asarray(gt["semantics"])
        masked = np.where(np.asarray(gt["mask_camera"], bool), sem, free)
        panels += [("GT (mask_camera)", masked, None), ("GT (all voxels)", sem, None)]
    if pred is not None:
        panels.append(("prediction", pred, None))
        if seen is not None:
            observed = np.where(np.asarray(seen, bool), pred, free)
            panels.append(("prediction, observed voxels (unseen grey)", observed, seen))
    r = grid.box
    fig_bev, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.6), squeeze=False)
    present = set()
    for ax, (name, sem, vis) in zip(axes[0], panels, strict=True):
        ax.imshow(bev(sem, vis, vocab), extent=(r[4], r[1], r[0], r[3]))  # left = +y, up = +x
        ax.plot([0], [0], marker="^", color="k", ms=6)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("y (m, left +)")
        ax.set_ylabel("x (m, forward)")
        present.update(int(c) for c in np.unique(sem) if c < vocab.num_semantic)
    _legend(fig_bev, sorted(present), vocab=vocab)
    fig_bev.suptitle(f"{title}: bird's-eye view (top-most occupied class)", fontsize=9)
    vox = [p for p in panels if p[0] != "GT (all voxels)"]
    fig3d = plt.figure(figsize=(5.5 * len(vox), 5.0))
    for k, (name, sem, _) in enumerate(vox):
        ax = fig3d.add_subplot(1, len(vox), k + 1, projection="3d")
        voxels_3d(ax, sem, grid, name.split(" (unseen")[0], vocab=vocab)
    _legend(fig3d, sorted(present), vocab=vocab)
    fig3d.suptitle(f"{title}: 3D voxels (perspective)", fontsize=9)
    return fig_bev, fig3d


def run(store: str, ckpt_path: str | None, out: str, samples: int, stride: int | None,
        progress: bool, device: str | None = "cpu") -> list[Path]:
    """Write the figures of `samples` evenly spaced samples; returns the PNG paths."""
    root = prepare_out_dir(out)
    reader = open_store(store)
    model = ckpt = None
    if ckpt_path:
        model, ckpt = infer.load_checkpoint_model(ckpt_path, device, reader)
    n = len(reader)
    picks = sorted(set(np.linspace(0, n - 1, min(samples, n)).round().astype(int).tolist())) if n else []
    W = reader.image_size[0]
    stride = stride or max(1, W // 200)
    written: list[Path] = []
    stems = {i: path_component(f"{i:04d}_{reader.sample(i)['scene_name']}_{reader.sample(i)['sample_token'][:8]}",
                               "scene name and token") for i in picks}  # names from the data, checked first
    for i in tqdm(picks, desc="viz", unit="sample", disable=not progress):
        s = reader.sample(i)
        stem = stems[i]
        rendered = pred = seen = None
        if model is not None:
            cfg = ckpt["config"]
            mg = infer.model_grid(ckpt, reader.grid)
            step = cfg.render.step
            density, logits = infer.run_model(model, reader, i, cfg)
            rendered = render_cameras(reader, i, density, logits, mg, step, stride)
            o, d = [], []
            for cam in reader.cameras:
                ro, rd, _, _ = infer.image_rays(reader, s, cam, stride)
                o.append(ro)
                d.append(rd)
            vis = infer.visibility(density, np.concatenate(o), np.concatenate(d), mg, step)
            scoring = infer.scoring_of(ckpt, reader.grid)
            pred = infer.classify_on_labels(density, logits, infer.threshold_of(ckpt), scoring)
            seen = scoring.to_labels_numpy(vis)
        fig = camera_figure(reader, i, rendered)
        written.append(_save(fig, root / f"{stem}_cameras.png"))
        gt = reader.occ_gt(i) if reader.has_occ_gt else None
        if gt is not None or pred is not None:
            fb, f3 = occupancy_figures(gt, pred, seen, reader.grid, f"{s['scene_name']} · sample {i}",
                                       reader.vocabulary)
            written.append(_save(fb, root / f"{stem}_bev.png"))
            written.append(_save(f3, root / f"{stem}_3d.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
