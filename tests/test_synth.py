"""The synthetic world writer: devkit compatibility, internal consistency, CLI errors, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import points_in_box
from pyquaternion import Quaternion

from renderocc.classes import LIDARSEG_STANDARD_ORDER, OCC3D_CLASSES, lidarseg_index_to_occ3d
from renderocc.cli import main
from renderocc.synth.camera import CAMERA_NAMES

PC_MIN = np.array([-40.0, -40.0, -1.0])


@pytest.fixture(scope="module")
def nusc(synth_dataset: Path) -> NuScenes:
    return NuScenes("v1.0-mini", str(synth_dataset), verbose=False)


@pytest.fixture(scope="module")
def instances(synth_dataset: Path) -> list[dict]:
    return json.loads((synth_dataset / "synth_truth" / "instances.json").read_text())


def _sensor_to_global(nusc: NuScenes, sd_token: str) -> np.ndarray:
    sd = nusc.get("sample_data", sd_token)
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    ep = nusc.get("ego_pose", sd["ego_pose_token"])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = Quaternion(cs["rotation"]).rotation_matrix, cs["translation"]
    e = np.eye(4)
    e[:3, :3], e[:3, 3] = Quaternion(ep["rotation"]).rotation_matrix, ep["translation"]
    return e @ m


def _truth(root: Path, sd_token: str) -> dict[str, np.ndarray]:
    with np.load(root / "synth_truth" / "points" / f"{sd_token}.npz") as z:
        return {k: z[k] for k in z.files}


def test_devkit_loads_with_lidarseg(nusc, synth_dataset):
    assert len(nusc.scene) == 1 and len(nusc.sample) == 4
    assert [c["name"] for c in sorted(nusc.category, key=lambda c: c["index"])] == LIDARSEG_STANDARD_ORDER
    assert len(nusc.lidarseg) == 4
    for rec in nusc.lidarseg:
        labels = np.fromfile(synth_dataset / rec["filename"], dtype=np.uint8)
        pts = LidarPointCloud.from_file(nusc.get_sample_data_path(rec["sample_data_token"]))
        assert len(labels) == pts.points.shape[1] > 20000
        assert labels.max() < 32
    sample = nusc.sample[0]
    assert set(sample["data"]) == {"LIDAR_TOP", *CAMERA_NAMES}
    assert nusc.get("map", nusc.map[0]["token"])["log_tokens"] == [nusc.log[0]["token"]]


def test_lidar_sweeps_are_real_files_in_one_chain(nusc, synth_dataset):
    sd = nusc.get("sample_data", nusc.sample[0]["data"]["LIDAR_TOP"])
    chain = [sd]
    while sd["next"]:
        sd = nusc.get("sample_data", sd["next"])
        assert nusc.get("sample_data", sd["prev"])["token"] == chain[-1]["token"]
        chain.append(sd)
    assert [s["is_key_frame"] for s in chain] == [True, False, True, False, True, False, True]
    assert all(a["timestamp"] < b["timestamp"] for a, b in zip(chain, chain[1:], strict=False))
    for s in chain:
        assert (synth_dataset / s["filename"]).is_file()
        assert s["filename"].startswith("samples/" if s["is_key_frame"] else "sweeps/")
        # a sweep belongs to the next keyframe's sample, as in nuScenes
        assert nusc.get("sample", s["sample_token"])["timestamp"] >= s["timestamp"]


def test_points_look_like_a_32_ring_lidar(nusc):
    path = nusc.get_sample_data_path(nusc.sample[1]["data"]["LIDAR_TOP"])
    pc = LidarPointCloud.from_file(path)
    pts = np.fromfile(path, np.float32).reshape(-1, 5)
    assert 20000 < pts.shape[0] < 40000
    assert set(np.unique(pts[:, 4]).astype(int)) <= set(range(32))
    dist = np.linalg.norm(pts[:, :3], axis=1)
    assert dist.max() < 70.5 and dist.min() > 0.9
    assert pts[:, 3].max() > pts[:, 3].min() >= 0  # intensity varies with material
    # ground about 1.84 m below the sensor; y forward: most points in front/behind are along +-y
    assert abs(np.median(pc.points[2][dist < 15]) + 1.84) < 0.3


def test_cameras_and_lidar_have_different_times_and_poses(nusc):
    sample = nusc.sample[2]
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    lpose = nusc.get("ego_pose", lidar["ego_pose_token"])
    assert lidar["timestamp"] == sample["timestamp"]
    for name in CAMERA_NAMES:
        cam = nusc.get("sample_data", sample["data"][name])
        assert (cam["width"], cam["height"]) == (320, 180)
        cpose = nusc.get("ego_pose", cam["ego_pose_token"])
        assert cam["timestamp"] == cpose["timestamp"] != lidar["timestamp"]
        assert abs(cam["timestamp"] - lidar["timestamp"]) < 50_000
        assert cpose["translation"] != lpose["translation"]
    assert len({nusc.get("sample_data", sample["data"][n])["timestamp"] for n in CAMERA_NAMES}) == 6


def test_get_sample_data_and_map_pointcloud_to_image(nusc):
    sample = nusc.sample[1]
    path, boxes, k = nusc.get_sample_data(sample["data"]["CAM_FRONT"])
    assert Path(path).is_file() and k.shape == (3, 3) and len(boxes) > 0
    assert k[0, 0] == pytest.approx(1266.4 * 320 / 1600)
    _, lboxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
    assert len(lboxes) == len(sample["anns"])
    # a sweep: boxes are interpolated between keyframes
    sweep = nusc.get("sample_data", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["prev"])
    assert not sweep["is_key_frame"] and len(nusc.get_sample_data(sweep["token"])[1]) > 0
    for name in CAMERA_NAMES:
        points, coloring, im = nusc.explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"],
                                                                     sample["data"][name])
        assert im.size == (320, 180)
        assert points.shape[1] > 500 and len(coloring) == points.shape[1]


def test_camera_truth_agrees_with_projected_lidar(nusc, synth_dataset):
    """Static ground points projected with the devkit's chain land on pixels of the same class."""
    sample = nusc.sample[2]
    lidar_sd = sample["data"]["LIDAR_TOP"]
    labels = np.fromfile(synth_dataset / nusc.get("lidarseg", lidar_sd)["filename"], np.uint8)
    pts = np.fromfile(nusc.get_sample_data_path(lidar_sd), np.float32).reshape(-1, 5)[:, :3]
    road = LIDARSEG_STANDARD_ORDER.index("flat.driveable_surface")
    glob = pts @ _sensor_to_global(nusc, lidar_sd)[:3, :3].T + _sensor_to_global(nusc, lidar_sd)[:3, 3]
    for name in ("CAM_FRONT", "CAM_BACK"):
        cam_sd = sample["data"][name]
        with np.load(synth_dataset / "synth_truth" / "cameras" / f"{cam_sd}.npz") as z:
            depth, label = z["depth"], z["label"]
        assert depth.shape == label.shape == (180, 320)
        m = np.linalg.inv(_sensor_to_global(nusc, cam_sd))
        pc = glob @ m[:3, :3].T + m[:3, 3]
        k = np.array(nusc.get("calibrated_sensor", nusc.get("sample_data", cam_sd)["calibrated_sensor_token"])
                     ["camera_intrinsic"])
        front = pc[:, 2] > 1.0
        uv = pc[front] @ k.T
        u, v = np.rint(uv[:, 0] / uv[:, 2]).astype(int), np.rint(uv[:, 1] / uv[:, 2]).astype(int)
        ok = (u >= 0) & (u < 320) & (v >= 0) & (v < 180) & (labels[front] == road)
        assert ok.sum() > 200
        assert (label[v[ok], u[ok]] == road).mean() > 0.9
        assert np.median(np.abs(depth[v[ok], u[ok]] - pc[front][ok, 2]) / pc[front][ok, 2]) < 0.02


def test_box_velocity_matches_true_speed(nusc, instances):
    truth = {i["token"]: i for i in instances}
    checked = 0
    for ann in nusc.sample_annotation:
        inst = truth[ann["instance_token"]]
        if not (inst["moving"] and ann["prev"] and ann["next"]):
            continue
        speed = np.linalg.norm(nusc.box_velocity(ann["token"])[:2])
        assert speed == pytest.approx(inst["speed"], rel=0.05)
        checked += 1
    assert checked >= 5
    names = {nusc.get("attribute", a)["name"]
             for ann in nusc.sample_annotation for a in ann["attribute_tokens"]}
    assert {"vehicle.moving", "vehicle.parked", "pedestrian.moving", "pedestrian.standing",
            "cycle.with_rider"} <= names


def test_lidar_points_agree_with_occ3d_gt(nusc, synth_dataset):
    lut = lidarseg_index_to_occ3d(nusc.category)
    scene = nusc.scene[0]["name"]
    agree = total = 0
    for sample in nusc.sample:
        sd = sample["data"]["LIDAR_TOP"]
        with np.load(synth_dataset / "gts" / scene / sample["token"] / "labels.npz") as z:
            sem, mask_lidar, mask_camera = z["semantics"], z["mask_lidar"], z["mask_camera"]
        for arr in (sem, mask_lidar, mask_camera):
            assert arr.dtype == np.uint8 and arr.shape == (200, 200, 16)
        assert sem.max() == 17 and 0 < mask_camera.mean() < 1 and 0 < mask_lidar.mean() < 1
        pc = LidarPointCloud.from_file(nusc.get_sample_data_path(sd))
        cs = nusc.get("calibrated_sensor", nusc.get("sample_data", sd)["calibrated_sensor_token"])
        pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
        pc.translate(np.array(cs["translation"]))
        labels = np.fromfile(synth_dataset / nusc.get("lidarseg", sd)["filename"], np.uint8)
        idx = np.floor((pc.points[:3].T - PC_MIN) / 0.4).astype(int)
        ok = np.all((idx >= 0) & (idx < [200, 200, 16]), 1)
        voxel = sem[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        agree += int((voxel == lut[labels[ok]]).sum())
        total += int(ok.sum())
        assert (voxel != 17).mean() > 0.99  # the truth is built from these very returns
        # Occ3D's mask casts rays to voxel *centres*: a ray to a scanned voxel (far ground above
        # all) often grazes a nearer occupied voxel first, so a scanned voxel may be unobserved.
        # The exact rule is tested on a hand-built scene (test_masks_hide_a_wall_behind_a_box).
        assert mask_lidar[idx[ok, 0], idx[ok, 1], idx[ok, 2]].mean() > 0.7
    # 0.97 with the world-solid truth (--gt world); LiDAR-built truth agrees better
    assert agree / total >= 0.98, f"only {agree / total:.3f} of points agree with the Occ3D GT"
    assert json.loads((synth_dataset / "synth_truth" / "gt.json").read_text())["gt"] == "occ3d"


def test_moving_boxes_move_and_hold_their_points(nusc, synth_dataset, instances):
    index = {i["token"]: n for n, i in enumerate(instances)}
    moved = inside = total = 0
    for ann in nusc.sample_annotation:
        inst = instances[index[ann["instance_token"]]]
        if not inst["moving"]:
            continue
        if ann["next"]:
            nxt = nusc.get("sample_annotation", ann["next"])
            step = np.linalg.norm(np.subtract(nxt["translation"], ann["translation"]))
            dt = (nusc.get("sample", nxt["sample_token"])["timestamp"]
                  - nusc.get("sample", ann["sample_token"])["timestamp"]) * 1e-6
            assert step == pytest.approx(inst["speed"] * dt, rel=0.02)
            moved += 1
        sd = nusc.get("sample", ann["sample_token"])["data"]["LIDAR_TOP"]
        truth = _truth(synth_dataset, sd)
        mine = truth["instance"] == index[ann["instance_token"]]
        if not mine.any():
            continue
        assert ann["num_lidar_pts"] == int(mine.sum())
        assert truth["moving"][mine].all()
        pts = np.fromfile(nusc.get_sample_data_path(sd), np.float32).reshape(-1, 5)[mine, :3]
        m = _sensor_to_global(nusc, sd)
        glob = pts @ m[:3, :3].T + m[:3, 3]
        inside += int(points_in_box(nusc.get_box(ann["token"]), glob.T).sum())
        total += len(pts)
    assert moved >= 5 and total > 100
    assert inside / total > 0.99


def test_truth_files_cover_every_lidar_file(nusc, synth_dataset, instances):
    lidar = [sd for sd in nusc.sample_data if sd["channel"] == "LIDAR_TOP"]
    for sd in lidar:
        truth = _truth(synth_dataset, sd["token"])
        n = np.fromfile(synth_dataset / sd["filename"], np.float32).size // 5
        assert truth["moving"].dtype == np.uint8 and truth["instance"].dtype == np.int32
        assert len(truth["moving"]) == len(truth["instance"]) == n
        assert truth["instance"].max() < len(instances)
        assert not truth["moving"][truth["instance"] < 0].any()
    assert {"token", "category", "moving", "speed"} <= set(instances[0])


def test_masks_hide_a_wall_behind_a_box():
    """Occ3D's ray casting: voxels count as observed up to and including the first occupied one."""
    from renderocc.synth.occ_gt import FREE, camera_mask, lidar_mask

    sem = np.full((200, 200, 16), FREE, np.uint8)
    sem[150, 40:160, :] = 15  # a wall 20 m ahead (x = 20.2), y from -24 to 24
    sem[120:123, 97:104, 2:7] = 4  # a box 8 m ahead (x 8..9.2, y -1.2..1.6, z -0.2..1.8)
    origin = np.array([0.05, 0.05, 1.05])
    shadow = (150, slice(94, 109), slice(1, 8))  # rays to these wall centres cross the box
    for name, mask in (("lidar", lidar_mask(sem, origin)), ("camera", None)):
        if mask is None:  # a camera at the same place looking along +x, 100x100 px, +-26.6 deg
            r = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
            grid_to_cam = np.eye(4)
            grid_to_cam[:3, :3], grid_to_cam[:3, 3] = r, -r @ origin
            k = np.array([[100.0, 0.0, 49.5], [0.0, 100.0, 49.5], [0.0, 0.0, 1.0]])
            mask = camera_mask(sem, [(grid_to_cam, k, (100, 100))])
            assert not mask[150, 45, 5] and not mask[150, 155, 5], "wall outside the image is unobserved"
        else:
            assert mask[150, 45, 5] and mask[150, 155, 5], name
        assert not mask[shadow].any(), f"{name}: wall voxels hidden by the box are unobserved"
        assert mask[150, 80:90, 3:6].all() and mask[150, 113:123, 3:6].all(), f"{name}: visible wall"
        assert mask[120, 99:102, 3:6].all(), f"{name}: the box's front face is observed"
        assert not mask[122, 99:102, 3:6].any(), f"{name}: the box's back face is hidden"
        # the voxels holding the midpoints of the rays to (120, 100, 3) and (150, 85, 4)
        assert mask[110, 100, 4] and mask[125, 92, 4], f"{name}: free voxels on the rays are observed"
        assert not mask[160:, 85:95, 3:6].any(), f"{name}: nothing behind the wall is observed"
        assert not mask[136:150, 100, 3:6].any(), f"{name}: free space in the box's shadow is unobserved"


def _tiny_world(speed: float = 0.0):
    """Ground, a 3 m high wall 12 m ahead with a box hidden behind it, and a car driving across."""
    from renderocc.synth import materials as mat
    from renderocc.synth.populate import Builder, car_shape
    from renderocc.synth.world import Region, World

    b = Builder(np.random.default_rng(0))
    b.box(12.0, 12.8, -6.0, 6.0, 0.0, 3.0, "static.manmade", mat.TEX_FACADE)
    b.box(16.0, 17.0, -1.0, 1.0, 0.0, 1.0, "static.manmade", mat.TEX_FACADE)  # hidden by the wall
    b.add_object("vehicle.car", 6.0, 8.0, -np.pi / 2, speed, "vehicle.moving", car_shape(4.4, 1.8, 1.5))
    road = mat.LABEL["flat.driveable_surface"]
    return World(parts=b.freeze(), instances=b.instances, regions=[Region(-50.0, 50.0, -50.0, 50.0, road)],
                 default_ground=(road, mat.TEX_ASPHALT), ego_x0=0.0, ego_y0=0.0, ego_speed=0.0,
                 ego_wobble=0.0, sun=np.array([0.0, 0.0, 1.0]), origin=(0.0, 0.0, 0.0))


def test_occ3d_truth_holds_only_what_the_lidar_scanned():
    from renderocc.synth import lidar, occ_gt

    world = _tiny_world(speed=4.0)
    rng = np.random.default_rng(0)
    times = [0.0, 0.25, 0.5, 0.75, 1.0]
    pieces = []
    for t in times:
        s = lidar.scan(world, t, rng)
        pieces.append(occ_gt.cloud_piece(world, t, world.ego_pose(t) @ lidar.lidar_to_ego(), s.points[:, :3],
                                         s.label, s.instance))
    boxed = np.array([True])
    sem = occ_gt.lidar_semantics(*occ_gt.accumulate(pieces, world, 1.0, boxed, boxed))
    solid = occ_gt.semantics(world, 1.0)

    def vox(x, y, z):
        return tuple(int(np.floor((v - lo) / 0.4)) for v, lo in zip((x, y, z), PC_MIN, strict=True))

    manmade = OCC3D_CLASSES.index("manmade")
    assert sem[vox(12.1, 0.0, 1.0)] == solid[vox(12.1, 0.0, 1.0)] == manmade  # the wall's lit face
    assert sem[vox(4.0, 0.1, 0.0)] == OCC3D_CLASSES.index("driveable_surface")  # scanned road
    for p in [(12.7, 0.0, 1.0), (16.5, 0.0, 0.5), (14.5, 0.0, 0.0)]:  # wall's back, hidden box, its road
        assert solid[vox(*p)] != 17 and sem[vox(*p)] == 17, p
    # the car (4.4 m long, heading -y at 4 m/s: centre y 8 -> 4 m) is scanned all along its way but
    # sits where it is at t = 1 s: y in [1.8, 6.2]
    car = OCC3D_CLASSES.index("car")
    ys = (np.argwhere(sem == car)[:, 1] + 0.5) * 0.4 - 40.0
    assert len(ys) > 20 and ys.min() > 1.4 and ys.max() < 6.6, np.percentile(ys, [0, 50, 100])
    absent = occ_gt.lidar_semantics(*occ_gt.accumulate(pieces, world, 1.0, boxed, ~boxed))
    assert not (absent == car).any()  # no box at this keyframe: the object contributes nothing
    unboxed = occ_gt.lidar_semantics(*occ_gt.accumulate(pieces, world, 1.0, ~boxed, ~boxed))
    ys = (np.argwhere(unboxed == car)[:, 1] + 0.5) * 0.4 - 40.0
    assert ys.max() - ys.min() > 5.0  # never boxed: static, so it smears along its track as in Occ3D


def test_world_truth_option(tmp_path):
    """`gt="world"`: solid-world occupancy (more voxels than LiDAR ever scans), same Occ3D masks."""
    from renderocc.errors import UserError
    from renderocc.synth.writer import write_dataset

    with pytest.raises(UserError, match="--gt"):
        write_dataset(tmp_path / "bad", 1, 1, seed=0, gt="mesh")
    out = {}
    for gt in ("world", "occ3d"):
        root = write_dataset(tmp_path / gt, 1, 1, seed=0, image_size=(64, 36), sweeps_per_sample=0, workers=1,
                             gt=gt)
        assert json.loads((root / "synth_truth" / "gt.json").read_text())["gt"] == gt
        with np.load(next(root.glob("gts/*/*/labels.npz"))) as z:
            out[gt] = {k: z[k] for k in z.files}
    world, occ3d = out["world"], out["occ3d"]
    assert (world["semantics"] != 17).sum() > 5 * (occ3d["semantics"] != 17).sum()
    for gt in out.values():
        for m in ("mask_camera", "mask_lidar"):
            assert 0 < gt[m].mean() < 0.5


def test_world_has_every_occ3d_class():
    from renderocc.synth.occ_gt import TO_OCC
    from renderocc.synth.populate import build_world

    world = build_world(np.random.default_rng(3), 4.5)
    classes = set(TO_OCC[world.parts["label"]].tolist())
    classes |= set(TO_OCC[[r.label for r in world.regions]].tolist())
    assert classes == set(range(17)), sorted(set(range(17)) - classes)
    assert {i.attribute for i in world.instances} >= {"vehicle.moving", "vehicle.parked", "vehicle.stopped",
                                                      "pedestrian.moving", "pedestrian.standing",
                                                      "cycle.with_rider", "cycle.without_rider"}
    assert len(OCC3D_CLASSES) == 18


def test_real_fixture_loads(real_fixture):
    nusc = NuScenes("v1.0-mini", str(real_fixture), verbose=False)
    assert len(nusc.sample) == 41 and nusc.scene[0]["name"] == "scene-0916"
    sample = nusc.sample[0]
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    cam = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    assert lidar["ego_pose_token"] != cam["ego_pose_token"]
    path, boxes, k = nusc.get_sample_data(cam["token"])
    assert Path(path).is_file() and k.shape == (3, 3)


def _run(args: list[str]):
    return CliRunner().invoke(main, ["synth", "nuscenes", *args])


@pytest.mark.parametrize("case", ["non_empty", "overwrite_foreign", "zero_scenes", "unwritable", "bad_size"])
def test_cli_bad_input(tmp_path, case):
    out = tmp_path / "out"
    args = ["--out", str(out), "--scenes", "1", "--samples-per-scene", "1"]
    if case in ("non_empty", "overwrite_foreign"):
        out.mkdir()
        (out / "keep.txt").write_text("x")
        args += ["--overwrite"] if case == "overwrite_foreign" else []
    elif case == "zero_scenes":
        args[3] = "0"
    elif case == "unwritable":
        blocker = tmp_path / "file"
        blocker.write_text("x")
        args[1] = str(blocker / "out")
    else:
        args += ["--image-size", "800"]
    res = _run(args)
    assert res.exit_code != 0
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
    assert "Traceback" not in res.output
    if case in ("non_empty", "overwrite_foreign"):
        assert (out / "keep.txt").read_text() == "x"
    assert not list(tmp_path.glob(".*partial*"))


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_writes_deterministic_datasets(tmp_path):
    """Same seed -> identical bytes, whether frames run in worker processes or not."""
    args = ["--scenes", "2", "--samples-per-scene", "2", "--image-size", "64x36", "--sweeps-per-sample", "1",
            "--seed", "7"]
    a, b = tmp_path / "a", tmp_path / "b"
    for out, workers in ((a, "2"), (b, "1")):
        res = _run(["--out", str(out), "--workers", workers, *args])
        assert res.exit_code == 0, res.output
        assert "wrote 2 scene(s)" in res.output
    first = _digest(a)
    assert first == _digest(b)
    # per-point instance indices of the second scene point into instances.json after the first's
    nusc = NuScenes("v1.0-mini", str(b), verbose=False)
    instances = json.loads((b / "synth_truth" / "instances.json").read_text())
    for ann in nusc.sample_annotation:
        sample = nusc.get("sample", ann["sample_token"])
        truth = _truth(b, sample["data"]["LIDAR_TOP"])
        hits = np.unique(truth["instance"][truth["instance"] >= 0])
        if ann["num_lidar_pts"]:
            owner = [instances[i]["token"] for i in hits]
            assert ann["instance_token"] in owner
    assert {i["scene"] for i in instances} == {0, 1}
    res = _run(["--out", str(a), "--seed", "8", "--overwrite", "--scenes", "1", "--samples-per-scene", "1",
                "--image-size", "64x36"])
    assert res.exit_code == 0, res.output
    assert set(_digest(a)) != set(first)
    NuScenes("v1.0-mini", str(a), verbose=False)
    assert not list(tmp_path.glob(".*"))  # no temp or old copies left behind
