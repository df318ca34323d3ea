"""eval / predict / viz on a tiny synthetic store and a 2-step checkpoint, plus an oracle check:
a "model" that returns the GT grid must score mIoU 1 and render depth that matches the labels."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from renderocc.classes import FREE, NUM_SEMANTIC
from renderocc.cli import main
from renderocc.eval import infer
from renderocc.eval.evaluate import evaluate
from renderocc.geometry import Grid, ends_inside

TINY = ["data.input_size=[64, 32]", "data.rays=256", "data.workers=0", "model.width=8", "model.channels=16",
        "model.voxel_channels=8", "model.depth_bins=[1.0, 41.0, 21]", "grid.voxel_size=1.6",
        "render.step=0.8", "train.loader_bench_batches=0", "train.threshold_samples=1",
        "data.holdout='every-k:4'"]


@pytest.fixture(scope="module")
def store(small_store) -> str:
    return small_store


@pytest.fixture(scope="module")
def ckpt(store, tmp_path_factory) -> str:
    """A 2-step checkpoint made by the trainer's CLI."""
    run = tmp_path_factory.mktemp("eval") / "run"
    args = ["train", "--store", store, "--out", str(run), "--config", "demo", "--max-steps", "2"]
    res = CliRunner().invoke(main, args + [a for kv in TINY for a in ("--set", kv)])
    assert res.exit_code == 0, res.output
    return str(run / "last.pt")


def _invoke(*args: str):
    return CliRunner().invoke(main, [*args, "--quiet"])


def test_eval_cli_writes_metrics(store, ckpt, tmp_path):
    res = _invoke("eval", "--store", store, "--ckpt", ckpt, "--out", str(tmp_path), "--split", "all")
    assert res.exit_code == 0, res.output
    assert "supervision: 2d" in res.output and "mIoU" in res.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("miou", "iou_per_class", "geometry_iou", "depth_abs_rel", "depth_rmse", "sem2d_miou",
                "supervision", "checkpoint", "split", "miou_nomask", "geometry_iou_nomask"):
        assert key in m, key
    assert m["split"] == "all" and m["samples"] == 4 and m["occ_samples"] == 4
    assert 0 <= m["miou"] <= 1 and 0 <= m["geometry_iou"] <= 1 and m["depth_pixels"] > 0
    assert m["supervision"].startswith("2d:") and len(m["iou_per_class"]) == 18
    md = (tmp_path / "metrics.md").read_text()
    assert "supervision" in md and "| mIoU (classes 0–16) |" in md


def test_eval_user_errors(store, ckpt, tmp_path):
    res = _invoke("eval", "--store", store, "--ckpt", str(tmp_path / "none.pt"), "--out", str(tmp_path),
                  "--split", "all")
    assert res.exit_code == 2 and "checkpoint not found" in res.output
    res = _invoke("eval", "--store", str(tmp_path / "nostore"), "--ckpt", ckpt, "--out", str(tmp_path))
    assert res.exit_code == 2 and "store not found" in res.output
    res = _invoke("eval", "--store", store, "--ckpt", ckpt, "--out", str(tmp_path), "--split", "scene-9999")
    assert res.exit_code == 2 and "scene-9999" in res.output
    res = _invoke("eval", "--store", store, "--out", str(tmp_path))
    assert res.exit_code == 2 and "exactly one of --ckpt" in res.output
    res = _invoke("eval", "--ckpt", ckpt, "--out", str(tmp_path))
    assert res.exit_code == 2 and "needs --store" in res.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = _invoke("predict", "--store", store, "--ckpt", str(bad), "--out", str(tmp_path), "--split", "all")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    res = _invoke("predict", "--store", store, "--ckpt", str(bad), "--out", str(tmp_path))  # default --split val
    lines = [ln for ln in res.output.strip().splitlines() if not ln.startswith("note: no scene of the nuScenes val")]
    assert res.exit_code == 2 and len(lines) == 1 and "not a readable" in lines[0], res.output  # synthetic: a note


def test_oracle_scores_perfectly(store, monkeypatch):
    """GT in → mIoU 1 and rendered depth close to the LiDAR labels: frames and z/distance agree."""
    from renderocc.config import load_config, resolved
    from renderocc.store.reader import StoreReader

    reader = StoreReader(store)

    def oracle(model, reader_, i, cfg, tta="none"):
        sem = torch.from_numpy(np.asarray(reader.occ_gt(i)["semantics"]).astype(np.int64))
        density = torch.where(sem != FREE, 60.0, 0.0)
        logits = torch.nn.functional.one_hot(sem.clamp(max=NUM_SEMANTIC - 1), NUM_SEMANTIC).float()
        logits = logits * 10 * (sem != FREE)[..., None]  # free space: no class evidence
        return density, logits

    monkeypatch.setattr(infer, "run_model", oracle)
    cfg = resolved(load_config("demo", ["render.step=0.2", "data.input_size=[64, 32]", "grid.voxel_size=0.4"]),
                   reader.grid)
    ck = {"config": cfg, "grid": reader.grid, "threshold": 1.0, "supervision": "3d"}
    m = evaluate(reader, None, ck, list(range(len(reader))), progress=False)
    assert m["miou"] == pytest.approx(1.0) and m["geometry_iou"] == pytest.approx(1.0)
    assert m["miou_nomask"] == pytest.approx(1.0)
    # Grazing ground rays end early: the GT ground voxel (centre z = 0) blurred by trilinear
    # sampling puts the surface ~0.3 m up, so even GT renders LiDAR depth only roughly.
    assert m["depth_abs_rel"] < 0.35 and m["depth_delta1"] > 0.3, m
    sem = m["sem2d_iou_per_class"]
    assert sem["driveable_surface"] > 0.8 and sem["car"] > 0.4 and m["sem2d_miou"] > 0.2, sem
    # Upright objects are hit head-on: there the rendered depth must match the labels closely.
    i = 0
    lab, s = reader.labels(i), reader.sample(i)
    rays = infer.label_rays(reader, i, s, lab)
    dist = np.asarray(lab["depth"], np.float64) * rays["scale"]
    keep = ends_inside(rays["origins"], rays["directions"], dist, reader.grid)
    keep &= np.isin(lab["label"], [4, 10, 16])  # car, truck, vegetation
    density, logits = oracle(None, reader, i, None)
    r = infer.render(density, logits, rays["origins"][keep], rays["directions"][keep], reader.grid, 0.2)
    ratio = r["depth"] / dist[keep]
    assert keep.sum() > 100 and 0.88 < np.median(ratio) < 1.02  # voxel surfaces sit a little early


def test_visibility_stops_behind_a_wall():
    grid = Grid([0.0, 0.0, 0.0, 10.0, 1.0, 1.0], [1.0, 1.0, 1.0], [10, 1, 1])
    density = torch.zeros(10, 1, 1)
    density[5] = 100.0  # an opaque wall in voxel 5
    o = np.array([[0.5, 0.5, 0.5]])
    d = np.array([[1.0, 0.0, 0.0]])
    vis = infer.visibility(density, o, d, grid, step=0.5, min_transmittance=0.1)
    assert vis[:, 0, 0].tolist() == [True] * 6 + [False] * 4  # the wall is seen, behind it is not


def test_visibility_through_the_renderer_sees_in_front_of_a_wall_only():
    """A 3D wall at x ∈ [6, 7): voxels in front are seen, behind it unseen, outside the fan unseen."""
    grid = Grid([0.0, -4.0, -2.0, 12.0, 4.0, 2.0], [1.0, 1.0, 1.0], [12, 8, 4])
    density = torch.zeros(12, 8, 4)
    density[6] = 50.0
    ang = np.linspace(-0.3, 0.3, 15)
    a, b = np.meshgrid(ang, ang)
    d = np.stack([np.ones(a.size), a.ravel(), b.ravel()], -1)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = np.tile([[0.2, 0.1, 0.1]], (len(d), 1))
    vis = infer.visibility(density, o, d, grid, step=0.25, min_transmittance=0.1, chunk=50)
    assert vis[1:6, 3:5, 1:3].all()  # free space in front of the wall, on the optical axis
    assert vis[6, 3:5, 1:3].all()  # the wall's face
    assert not vis[8:].any()  # behind the wall
    assert not vis[1, 0].any() and not vis[1, 7].any()  # beside the camera, outside the ray fan
    assert (vis == infer.visibility(density, o, d, grid, step=0.25, min_transmittance=0.1)).all()  # chunking


def test_predict_writes_occ3d_layout(store, ckpt, tmp_path):
    res = _invoke("predict", "--store", store, "--ckpt", ckpt, "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    files = sorted(tmp_path.glob("*/*/labels.npz"))
    assert len(files) == 4
    z = np.load(files[0])
    shape = (50, 50, 4)  # demo range at 1.6 m
    assert z["semantics"].dtype == np.uint8 and z["semantics"].shape == shape
    assert z["semantics"].max() <= FREE
    assert z["visibility"].shape == shape and set(np.unique(z["visibility"])) <= {0, 1}
    assert 0 < z["visibility"].mean() < 1
    assert z["occupancy_prob"].shape == shape and 0 <= float(z["occupancy_prob"].min())
    assert float(z["occupancy_prob"].max()) <= 1
    info = json.loads((tmp_path / "predict.json").read_text())
    assert set(info["keys"]) == {"semantics", "density", "occupancy_prob", "visibility"}
    assert info["split"] == "all (no nuScenes val scene)"  # the default --split val, as eval's, on synthetic data
    res = _invoke("predict", "--store", store, "--ckpt", ckpt, "--out", str(tmp_path / "g"), "--store-grid",
                  "--device", "cpu")
    assert res.exit_code == 0, res.output
    z2 = np.load(tmp_path / "g" / files[0].relative_to(tmp_path))
    assert z2["semantics"].shape == (200, 200, 16)  # the Occ3D grid, coarse voxels repeated
    np.testing.assert_array_equal(z2["semantics"][::4, ::4, ::4], z["semantics"])


@pytest.mark.slow
def test_viz_writes_pngs(store, ckpt, tmp_path):
    res = _invoke("viz", "--store", store, "--ckpt", ckpt, "--out", str(tmp_path / "a"), "--samples", "1")
    assert res.exit_code == 0, res.output
    names = sorted(p.name.split("_")[-1] for p in (tmp_path / "a").glob("*.png"))
    assert names == ["3d.png", "bev.png", "cameras.png"]
    from matplotlib.image import imread

    for p in (tmp_path / "a").glob("*.png"):
        img = imread(p)
        assert img.shape[0] > 200 and img[..., :3].std() > 0.05  # a picture, not a blank canvas
    res = _invoke("viz", "--store", store, "--out", str(tmp_path / "b"), "--samples", "1")
    assert res.exit_code == 0, res.output  # without a checkpoint: labels and GT only
    assert len(list(Path(tmp_path / "b").glob("*.png"))) == 3


def test_inputs_are_the_stored_images_resized_and_bottom_cropped(store):
    """The network input is an independent resize of the stored image, cropped to keep the bottom,
    and K follows the same pixel map: u' = (u + ½)·s − ½ − x0."""
    from renderocc.config import load_config
    from renderocc.store.reader import StoreReader

    reader = StoreReader(store)
    images, K, _ = infer.model_inputs(reader, 1, load_config("demo", ["data.input_size=[64, 32]"]))
    (W, H), (w, h) = reader.image_size, (64, 32)
    s = max(w / W, h / H)
    rw, rh = round(W * s), round(H * s)
    x0, y0 = (rw - w) // 2, rh - h
    K0 = np.asarray(reader.sample(1)["cameras"][reader.cameras[2]]["K"], np.float64)
    sx, sy = rw / W, rh / H
    want = np.array([[K0[0, 0] * sx, 0, (K0[0, 2] + 0.5) * sx - 0.5 - x0],
                     [0, K0[1, 1] * sy, (K0[1, 2] + 0.5) * sy - 0.5 - y0], [0, 0, 1]])
    np.testing.assert_allclose(K[0, 2].numpy(), want, rtol=1e-5, atol=1e-4)
    raw = torch.from_numpy(reader.images(1)[2]).permute(2, 0, 1).float()[None]
    img = torch.nn.functional.interpolate(raw, size=(rh, rw), mode="bilinear", antialias=True)[0]
    img = img[:, y0:y0 + h, x0:x0 + w] / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(images[0, 2], (img - mean) / std, rtol=1e-4, atol=1e-4)


def _scores(path: Path) -> dict:
    m = json.loads((path / "metrics.json").read_text())
    return {k: m[k] for k in ("miou", "miou_nomask", "geometry_iou", "rayiou", "rayiou_1", "rayiou_2", "rayiou_4",
                              "iou_per_class", "rayiou_per_class")}


@pytest.mark.parametrize("tta", ["none", pytest.param("flip-bev", marks=pytest.mark.slow)])
def test_eval_pred_on_predict_output_equals_eval_ckpt(store, ckpt, tmp_path, tta):
    res = _invoke("predict", "--store", store, "--ckpt", ckpt, "--out", str(tmp_path / "p"), "--store-grid",
                  "--tta", tta, "--vis-stride", "16")
    assert res.exit_code == 0, res.output
    res = _invoke("eval", "--store", store, "--ckpt", ckpt, "--out", str(tmp_path / "c"), "--split", "all",
                  "--tta", tta, "--rays-per-sample", "64")
    assert res.exit_code == 0, res.output
    res = _invoke("eval", "--store", store, "--pred", str(tmp_path / "p"), "--out", str(tmp_path / "e"),
                  "--split", "all")
    assert res.exit_code == 0, res.output
    assert _scores(tmp_path / "e") == _scores(tmp_path / "c")
    assert _scores(tmp_path / "c")["rayiou"] is not None
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["supervision"].startswith("2d:") and m["supervision"].endswith("(from predict.json)")
    c = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert (c["tta"] or "none").split(":")[0] == tta and (m["tta"] or "none").split(":")[0] == tta


def test_eval_pred_on_the_model_grid_says_use_store_grid(store, ckpt, tmp_path):
    res = _invoke("predict", "--store", store, "--ckpt", ckpt, "--out", str(tmp_path / "p"), "--vis-stride", "16")
    assert res.exit_code == 0, res.output
    res = _invoke("eval", "--store", store, "--pred", str(tmp_path / "p"), "--out", str(tmp_path / "e"),
                  "--split", "all", "--no-rayiou")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "shape (50, 50, 4), expected (200, 200, 16)" in res.output and "--store-grid" in res.output


class _Geometric(torch.nn.Module):
    """Occupancy that depends only on where camera 0 sits in the (possibly mirrored) ego frame, and
    classes only on the distance to it: exactly equivariant to the TTA flips, so `--tta flip-bev`
    must give back the plain output (a pose not mirrored or a grid not flipped back would not)."""

    def __init__(self, grid: dict):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.centres = torch.from_numpy(grid.centres()).float()

    def forward(self, imgs, K, c2e):
        rel = self.centres - c2e[0, 0, :3, 3]
        dist = rel.norm(dim=-1)
        density = 2.0 * torch.exp(-dist / 10)
        logits = -(dist[..., None] - 2.0 * torch.arange(NUM_SEMANTIC)) ** 2
        return SimpleNamespace(density=density[None], semantics=logits[None])


def test_tta_flip_gives_back_an_equivariant_models_output(store):
    from renderocc.config import load_config, resolved
    from renderocc.store.reader import StoreReader

    reader = StoreReader(store)
    cfg = resolved(load_config("demo", ["data.input_size=[64, 32]", "grid.voxel_size=1.6"]), reader.grid)
    model = _Geometric(cfg.grid.spec)
    assert abs(float(reader.sample(0)["cameras"][reader.cameras[0]]["cam2ego"][0, 3])) > 0.5  # off-centre
    d0, l0 = infer.run_model(model, reader, 0, cfg)
    d1, l1 = infer.run_model(model, reader, 0, cfg, tta="flip-bev")
    torch.testing.assert_close(d1, d0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(l1.argmax(-1), l0.argmax(-1))
    torch.testing.assert_close(l1, torch.log(torch.softmax(l0, -1).clamp_min(1e-12)), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(d0, d0.flip(0), atol=1e-3)  # the field is not symmetric itself


class _ImageReader(torch.nn.Module):
    """Each voxel reads camera 0's image where its centre projects (bilinear, through K and the
    pose): equivariant to mirroring the image together with the intrinsics, and to nothing less."""

    def __init__(self, grid: dict):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.centres = torch.from_numpy(grid.centres()).float()

    def forward(self, imgs, K, c2e):
        ego2cam = torch.linalg.inv(c2e[0, 0])
        cam = self.centres @ ego2cam[:3, :3].T + ego2cam[:3, 3]
        uvw = cam @ K[0, 0].T
        z = uvw[..., 2].clamp_min(1e-3)
        h, w = imgs.shape[-2:]
        xy = torch.stack([uvw[..., 0] / z / (w - 1), uvw[..., 1] / z / (h - 1)], -1) * 2 - 1
        grey = imgs[0, 0].mean(0)[None, None]
        val = torch.nn.functional.grid_sample(grey, xy.reshape(1, 1, -1, 2), align_corners=True)
        val = val.reshape(self.centres.shape[:3]) * (cam[..., 2] > 0.5)
        density = 1.0 + val
        logits = -(4 * val[..., None] - torch.arange(NUM_SEMANTIC) / 4) ** 2
        return SimpleNamespace(density=density[None], semantics=logits[None])


def test_tta_flip_mirrors_the_image_with_its_intrinsics(store):
    from renderocc.config import load_config, resolved
    from renderocc.store.reader import StoreReader

    reader = StoreReader(store)
    cfg = resolved(load_config("demo", ["data.input_size=[64, 32]", "grid.voxel_size=1.6"]), reader.grid)
    model = _ImageReader(cfg.grid.spec)
    d0, l0 = infer.run_model(model, reader, 0, cfg)
    d1, l1 = infer.run_model(model, reader, 0, cfg, tta="flip")
    torch.testing.assert_close(d1, d0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(l1, torch.log(torch.softmax(l0, -1).clamp_min(1e-12)), rtol=1e-3, atol=1e-3)
    imgs, K, c2e = infer.model_inputs(reader, 0, cfg)
    assert ((d0 - 1).abs() > 0.01).sum() > 50  # many voxels see the image
    # the image mirrored without its intrinsics reads other pixels: the test can tell
    assert not torch.allclose(model(imgs.flip(-1), K, c2e).density[0], d0, atol=1e-2)
