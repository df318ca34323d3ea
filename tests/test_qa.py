"""QA report: coverage march, statistics and the CLI, on an in-memory store and on a real one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from renderocc.geometry import Grid, pixel_rays
from renderocc.ops import mark_crossed
from renderocc.qa import commands as qa_commands
from renderocc.qa.report import QAOptions, collect

GRID = Grid([-4.0, -4.0, -1.0, 4.0, 4.0, 1.4], [0.4, 0.4, 0.4], [20, 20, 6])
K = np.array([[10.0, 0, 5], [0, 10, 5], [0, 0, 1]])
# Camera looking along ego +x (camera z forward, x right, y down).
R_FWD = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])


def _cam2ego(t=(0.1, 0.1, 0.1), R=R_FWD) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = R, t
    return m


class FakeReader:
    """Just enough of the StoreReader contract for the QA report."""

    cameras = ["CAM_FRONT", "CAM_BACK"]
    image_size = (10, 10)
    grid = GRID
    has_semantics = True
    has_occ_gt = True
    has_motion_masks = True

    def __init__(self):
        self.scenes = ["scene-a", "scene-a", "scene-b"]
        back = _cam2ego(R=np.diag([-1.0, -1, 1]) @ R_FWD)

        def cams():
            return {"CAM_FRONT": {"K": K, "K_orig": K, "cam2ego": _cam2ego(), "timestamp": 0},
                    "CAM_BACK": {"K": K, "K_orig": K, "cam2ego": back, "timestamp": 0}}
        self.samples = [{"sample_token": f"tok{i}", "scene_name": s, "timestamp": i, "ego_pose": np.eye(4),
                         "cameras": cams(), "adjacent": []} for i, s in enumerate(self.scenes)]
        # Sample 1's neighbour is sample 0, its cameras 2 m further back in the key-ego frame.
        back2 = back.copy()
        back2[0, 3] = -1.9
        self.samples[1]["adjacent"] = [{"offset": -1, "sample_index": 0, "sample_token": "tok0",
                                        "cam2ego": {"CAM_FRONT": _cam2ego(t=(-1.9, 0.1, 0.1)),
                                                    "CAM_BACK": back2}}]

    def __len__(self):
        return len(self.samples)

    def sample(self, i):
        return self.samples[i]

    def images(self, i):
        img = np.full((2, 10, 10, 3), 128, np.uint8)
        if i == 2:
            img[1] = 5  # a dark back camera
        return img

    def labels(self, i):
        # One centre ray per camera at depth 2 m; sample 2's back camera has none.
        n = 2 if i < 2 else 1
        return {"camera": np.array([0, 1][:n], np.int16), "u": np.full(n, 5.0, np.float32),
                "v": np.full(n, 5.0, np.float32), "depth": np.full(n, 2.0, np.float32),
                "label": np.array([4, 11][:n], np.uint8), "dynamic": np.array([True, False][:n]),
                "instance": np.zeros(n, np.int32)}

    def occ_gt(self, i):
        sem = np.full(GRID.shape, 17, np.uint8)
        sem[15, 10, 2] = 4  # the voxel where the front ray ends
        sem[0, 0, 0] = 11  # a voxel no ray crosses
        return {"semantics": sem, "mask_lidar": np.ones_like(sem, bool),
                "mask_camera": np.ones_like(sem, bool)}


def test_pixel_ray_and_march_hand_counted():
    o, d, scale = pixel_rays(np.array([5.0, 15.0]), np.array([5.0, 5.0]), K, _cam2ego())
    np.testing.assert_allclose(d[0], [1, 0, 0])
    assert scale[1] == pytest.approx(np.hypot(1, 1))  # 10 px off-axis with f = 10: 45°
    hit = np.zeros(GRID.shape, bool)
    mark_crossed(hit, o[:1], d[:1], np.array([2.0]), GRID)
    # x from 0.1 to 2.1 m: voxel indices 10..15 at y = 10, z = 2.
    assert sorted(map(tuple, np.argwhere(hit))) == [(x, 10, 2) for x in range(10, 16)]


def test_collect_statistics():
    r = collect(FakeReader(), QAOptions(few_labels=1), progress=False)
    s = r["summary"]
    assert s["samples"] == 3 and s["images"] == 6
    assert s["labelled_pixels_per_image"] == pytest.approx(5 / 6)
    assert s["dark_images"] == 1 and r["dark_images"][0]["camera"] == "CAM_BACK"
    assert s["few_label_images"] == 1  # sample 2's back camera has no labels
    assert r["class_histogram_2d"]["car"] == 3 and r["class_histogram_2d"]["driveable_surface"] == 2
    assert r["dynamic"]["per_class"]["car"] == 1.0 and r["dynamic"]["per_class"]["driveable_surface"] == 0
    assert r["dynamic"]["per_camera"]["CAM_BACK"] == 0.0
    assert r["class_histogram_gt"]["car"] == 3
    # Front ray ends in the car voxel; the (0,0,0) road voxel is never crossed: 1 of 2 per sample.
    assert s["gt_occupied_crossed_share"] == pytest.approx(0.5)
    assert s["key_rays_ending_in_grid_share"] == 1.0
    cov = r["coverage"]["per_sample"]
    assert cov[0]["voxels_crossed_key"] == 11  # x 10..15 forward, 5..10 backward (10 shared)
    # Neighbour's back ray: x −1.9 → −3.9 m, voxels 5..0, five of them new. Its front label is
    # dynamic and so not used as an auxiliary ray.
    assert cov[1]["aux_rays"] == 1
    assert cov[1]["voxels_crossed_all"] == cov[1]["voxels_crossed_key"] + 5
    assert [p["scene"] for p in r["per_scene"]] == ["scene-a", "scene-b"]


def _run(tmp_path, *args):
    return CliRunner().invoke(qa_commands.qa, ["--store", "fake", "--out", str(tmp_path / "qa"),
                                               "--quiet", *args])


@pytest.fixture
def fake_store(monkeypatch):
    monkeypatch.setattr(qa_commands, "open_store", lambda path: FakeReader())


@pytest.mark.slow
def test_cli_writes_report_and_fail_under(tmp_path, fake_store):
    res = _run(tmp_path, "--fail-under", "labelled_pixels_per_image=0.5")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "qa" / "qa.json").read_text())
    assert data["fail_under"]["failures"] == []
    page = (tmp_path / "qa" / "qa.html").read_text()
    assert "data:image/png;base64," in page and "<script" not in page and 'src="http' not in page
    res = _run(tmp_path, "--fail-under", "labelled_pixels_per_image=500")
    assert res.exit_code == 1
    fail_lines = [ln for ln in res.output.splitlines() if "fail-under" in ln]
    assert len(fail_lines) == 1 and "labelled_pixels_per_image" in fail_lines[0]


def test_cli_user_errors(tmp_path, fake_store):
    res = _run(tmp_path, "--fail-under", "no_such_key=1")
    assert res.exit_code == 2 and "unknown --fail-under key 'no_such_key'" in res.output
    res = _run(tmp_path, "--fail-under", "labelled_pixels_per_image")
    assert res.exit_code == 2 and "key=finite number" in res.output


def test_missing_store_is_user_error(tmp_path):
    pytest.importorskip("renderocc.store.reader")
    res = CliRunner().invoke(qa_commands.qa, ["--store", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "store not found" in res.output


@pytest.fixture(scope="module")
def synth_store(synth_dataset, tmp_path_factory) -> str:
    """The shared synthetic dataset prepped (96×54 images) with motion masks."""
    from renderocc.prep.pipeline import PrepOptions, run

    out = tmp_path_factory.mktemp("qa") / "store"
    run(PrepOptions(dataroot=str(synth_dataset), version="v1.0-mini", out=str(out), image_size=(96, 54),
                    progress=False), log=lambda m: None)
    from renderocc.cli import main

    res = CliRunner().invoke(main, ["prep", "motion-masks", "--store", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    return str(out)


def test_qa_on_synthetic_store(synth_store, tmp_path):
    from renderocc.cli import main

    res = CliRunner().invoke(main, ["qa", "--store", synth_store, "--out", str(tmp_path), "--quiet",
                                    "--fail-under", "labelled_pixels_per_image=100",
                                    "--fail-under", "gt_camera_voxels_crossed_share=0.05"])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "qa.json").read_text())
    s = r["summary"]
    assert s["samples"] == 4 and s["images"] == 24 and s["semantic_share"] == 1.0
    assert 0 < s["gt_occupied_crossed_share_key"] <= s["gt_occupied_crossed_share"] < 1
    assert s["aux_rays_per_sample"] > 0 and 0 < s["dynamic_share"] < 0.5
    assert r["class_histogram_gt"]["free"] > 0 and sum(r["class_histogram_2d"].values()) > 0
    # Static classes are never dynamic; at least one vehicle / person class has moving labels.
    dyn = r["dynamic"]["per_class"]
    assert dyn["driveable_surface"] == 0 and dyn["manmade"] == 0
    assert max(v or 0 for k, v in dyn.items() if k in ("car", "pedestrian", "bus", "bicycle")) > 0
    assert [p["scene"] for p in r["per_scene"]] == ["scene-0001"]


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason="Debian chromium not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path, fake_store):
    assert _run(tmp_path).exit_code == 0
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2400",
                    (tmp_path / "qa" / "qa.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1000
    # Not a blank page: plots and tables put plenty of non-white pixels on it.
    assert (img[..., :3] < 0.9).any(-1).mean() > 0.02
