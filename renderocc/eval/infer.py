"""Running a checkpoint on store samples: inputs, occupancy grids, rendered rays, visibility.

Shared by eval, predict and viz so the three agree on one thing each: how images are fed
(the trainer's deterministic, no-augmentation path), how a class grid is decided
(density > checkpoint threshold, else free), and how depth is rendered (metric distance along
the ray, unstopped mass at the box exit, as the trainer's loss sees it).
"""

from __future__ import annotations

import numpy as np
import torch

from renderocc.config import Config
from renderocc.errors import UserError
from renderocc.eval.tta import TTA_MODES
from renderocc.geometry import Grid, GridError, Scoring, pixel_rays
from renderocc.geometry import label_rays as grid_label_rays
from renderocc.ops import ray_visibility, render_rays
from renderocc.options import resolve_device
from renderocc.safe_load import require_file
from renderocc.train.checkpoint import load_model
from renderocc.train.dataset import prepare_images

OPACITY_CAP = 1 - 1e-7  # TTA: a mean opacity of 1 would give an infinite density


def load_checkpoint_model(path: str, device: str | None = "cpu", reader=None):
    """(model, ckpt) via the trainer's contract; a missing file is a one-line UserError, and so is
    a checkpoint trained on other classes than `reader`'s store vocabulary."""
    device = resolve_device(device)
    require_file(path, "checkpoint")
    try:
        model, ckpt = load_model(path, device)
    except RuntimeError as e:  # load_state_dict: weights of another model version
        if "alloc" in str(e).lower() or "out of memory" in str(e).lower():
            raise UserError(f"{path}: not enough memory to build its model ({' '.join(str(e).split())[:120]})") \
                from None
        detail = " ".join(str(e).split())
        detail = detail if len(detail) < 160 else detail[:157] + "..."
        raise UserError(f"{path}: weights do not fit this renderocc's model ({detail})") from None
    if reader is not None:
        reader.vocabulary.check_compatible(ckpt["classes"], f"checkpoint {path}", f"store {reader.root}")
    return model, ckpt


def model_grid(ckpt: dict, store_grid: Grid) -> Grid:
    """The grid the model predicts on: its config's resolved grid (the store's when none is loaded)."""
    return ckpt["config"].grid.spec if ckpt else store_grid


def scoring_of(ckpt: dict, store_grid: Grid) -> Scoring:
    """How the checkpoint's grid is scored against the store's label grid; one line when it cannot be."""
    try:
        return model_grid(ckpt, store_grid).coarsens(store_grid)
    except GridError as e:
        raise UserError(f"checkpoint: {e}") from None


def model_inputs(reader, i: int, cfg: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (1,N,3,h,w), intrinsics (1,N,3,3), cam2ego (1,N,4,4)) exactly as the trainer
    builds them without augmentation (centre-crop fit to `data.input_size`, ImageNet norm)."""
    s = reader.sample(i)
    w, h = cfg.data.input_size
    x, Ks = prepare_images(reader.images(i), [s["cameras"][n]["K"] for n in reader.cameras], (w, h),
                           [1, 1], False, None)
    c2e = np.stack([np.asarray(s["cameras"][n]["cam2ego"], np.float64) for n in reader.cameras])
    return (x[None].contiguous(), torch.from_numpy(Ks).float()[None],
            torch.from_numpy(c2e).float()[None])


@torch.no_grad()
def run_model(model, reader, i: int, cfg: Config, tta: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """(density (X,Y,Z), logits (X,Y,Z,C)) of sample i, on the model's device, float32.

    `tta` "flip" / "flip-bev" averages 2 / 4 passes (see `tta.TTA_TEXT`); the logits returned are
    then the log of the mean probabilities, and the density the one whose voxel opacity is the
    mean opacity. A non-finite output (a checkpoint with NaN weights) is one line, not scores.
    """
    density, logits = _run_model(model, reader, i, cfg, tta)
    if not (torch.isfinite(density).all() and torch.isfinite(logits).all()):
        raise UserError(f"the model's output for sample {i} is not finite (NaN or inf): the checkpoint's "
                        "weights are broken (did training diverge?)")
    return density, logits


def _run_model(model, reader, i: int, cfg: Config, tta: str) -> tuple[torch.Tensor, torch.Tensor]:
    dev = next(model.parameters()).device
    imgs, K, c2e = (t.to(dev) for t in model_inputs(reader, i, cfg))
    if tta == "none":
        out = model(imgs, K, c2e)
        return out.density[0].float(), out.semantics[0].float()
    if tta not in TTA_MODES:
        raise UserError(f"--tta {tta}: use one of {', '.join(TTA_MODES)}")
    grid = cfg.grid.spec
    w = imgs.shape[-1]
    mirror_u = torch.tensor([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]], device=dev)  # the trainer's flip
    passes = [(imgs, K, c2e, None), (imgs.flip(-1), mirror_u @ K, c2e, None)]
    if tta == "flip-bev":
        lo, hi = grid.box[:2], grid.box[3:5]
        if any(abs(a + b) > 1e-6 for a, b in zip(lo, hi, strict=True)):
            raise UserError(f"--tta flip-bev: the BEV flips need a grid symmetric about the ego origin in x "
                            f"and y (box {list(grid.box)})")
        for axis in (0, 1):  # mirror the ego frame: cam2ego' = M·cam2ego, then flip the grid back
            m = torch.eye(4, device=dev)
            m[axis, axis] = -1
            passes.append((imgs, K, m @ c2e, axis))
    vox = grid.edge
    opacity, probs = 0.0, 0.0
    for x, k, c, axis in passes:
        out = model(x, k, c)
        d, logit = out.density[0].float(), out.semantics[0].float()
        if axis is not None:
            d, logit = d.flip(axis), logit.flip(axis)
        opacity = opacity + (1 - torch.exp(-d * vox))
        probs = probs + torch.softmax(logit, -1)
    opacity, probs = opacity / len(passes), probs / len(passes)
    density = -torch.log1p(-opacity.clamp(max=OPACITY_CAP)) / vox
    return density, torch.log(probs.clamp_min(1e-12))


def threshold_of(ckpt: dict) -> float:
    """The checkpoint's density threshold (0.5 when a run saved none; callers report it)."""
    thr = ckpt.get("threshold")
    return 0.5 if thr is None else float(thr)


def classify(density: torch.Tensor, logits: torch.Tensor, threshold: float) -> np.ndarray:
    """uint8 class grid: argmax class where density > threshold, free (C = the logits' classes;
    Occ3D: 17) elsewhere."""
    cls = logits.argmax(-1)
    cls = torch.where(density > threshold, cls, torch.full_like(cls, logits.shape[-1]))
    return cls.to(torch.uint8).cpu().numpy()


def classify_on_labels(density: torch.Tensor, logits: torch.Tensor, threshold: float, scoring: Scoring
                       ) -> np.ndarray:
    """`classify` on the label grid: a finer model's density and logits interpolated to the label
    voxels' centres first, a coarser one's repeated over its label voxels (`Scoring.fields_to_labels`)."""
    return classify(*scoring.fields_to_labels(density, logits), threshold)


def render(density: torch.Tensor, logits: torch.Tensor, origins: np.ndarray, directions: np.ndarray,
           grid: Grid, step: float, chunk: int = 16384) -> dict[str, np.ndarray]:
    """Render rays through one sample's grid: distance (with box-exit background), semantic
    logits, opacity. Chunked so memory stays bounded whatever the backend."""
    dev = density.device
    outs = {"depth": [], "semantics": [], "opacity": []}
    with torch.no_grad():
        for s in range(0, len(origins), chunk):
            o = torch.from_numpy(origins[s:s + chunk]).float().to(dev)
            d = torch.from_numpy(directions[s:s + chunk]).float().to(dev)
            b = torch.zeros(len(o), dtype=torch.int64, device=dev)
            r = render_rays(density[None], logits[None], o, d, b, grid=grid, step=step, background_depth=True)
            outs["depth"].append(r.depth.double().cpu().numpy())
            outs["semantics"].append(r.semantics.float().cpu().numpy())
            outs["opacity"].append(r.opacity.double().cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in outs.items()}


def label_rays(reader, i: int, sample: dict, labels: dict) -> dict[str, np.ndarray]:
    """Key-frame label rays: origins, dirs, scale (distance per metre of z), camera index."""
    cams = sample["cameras"]
    K = {c: cams[n]["K_orig"] for c, n in enumerate(reader.cameras)}
    c2e = {c: cams[n]["cam2ego"] for c, n in enumerate(reader.cameras)}
    r = grid_label_rays(labels, K, c2e)
    return {"origins": r["origins"], "directions": r["directions"], "scale": r["scale"],
            "camera": np.asarray(labels["camera"], np.int64)}


def image_rays(reader, sample: dict, cam: str, stride: int) -> tuple[np.ndarray, ...]:
    """Rays through every `stride`-th pixel centre of a stored image: (origins, dirs, scale, (h, w))."""
    W, H = reader.image_size
    us, vs = np.meshgrid(np.arange(stride / 2 - 0.5, W, stride), np.arange(stride / 2 - 0.5, H, stride))
    info = sample["cameras"][cam]
    o, d, sc = pixel_rays(us.ravel(), vs.ravel(), info["K"], info["cam2ego"])
    return o, d, sc, us.shape


def visibility(density: torch.Tensor, origins: np.ndarray, directions: np.ndarray, grid: Grid, step: float,
               min_transmittance: float = 0.1, chunk: int = 65536) -> np.ndarray:
    """bool grid: voxels whose content some camera ray's rendering depends on with weight ≥ `min_transmittance`.

    Uses the renderer's own model of a ray (`ray_visibility`: the samples and trilinear density of
    `render_rays` at `step`), so "seen" means seen through the field the renderer draws: per voxel
    v = max over samples of transmittance-before × the sample's trilinear weight on the voxel, and
    the voxel is seen when v ≥ min_transmittance. Conservative on purpose (a planner must not take
    unobserved space for free): a voxel only grazed by samples far from its centre stays unseen.
    Voxels behind an opaque surface, or outside every camera frustum, stay unobserved: "unseen",
    not "free". Rays are chunked so memory stays bounded.
    """
    dens = density.detach().float()
    vis = torch.zeros_like(dens)
    kw = {"grid": grid, "step": float(step)}
    for s in range(0, len(origins), chunk):
        o = torch.from_numpy(np.ascontiguousarray(origins[s:s + chunk])).float().to(dens.device)
        d = torch.from_numpy(np.ascontiguousarray(directions[s:s + chunk])).float().to(dens.device)
        b = torch.zeros(len(o), dtype=torch.int64, device=dens.device)
        vis = torch.maximum(vis, ray_visibility(dens[None], o, d, b, **kw)[0])
    # vis > 0: a voxel no sample reached is never seen, even with min_transmittance = 0. Samples
    # after the renderer's early stop (transmittance < TRANSMITTANCE_EPS) count for nothing.
    return ((vis > 0) & (vis >= min_transmittance)).cpu().numpy()
