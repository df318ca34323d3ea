"""Class vocabularies as data: the shipped Occ3D map equals the constants, bad maps are one-line
errors, and a custom three-class vocabulary flows prep → train → eval; a checkpoint of other
classes is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from renderocc import classes as C
from renderocc.cli import main
from renderocc.errors import UserError
from renderocc.store.reader import StoreReader
from renderocc.train.checkpoint import load_model

TINY = ["data.input_size=[64, 32]", "data.rays=256", "data.workers=0", "model.width=8", "model.channels=16",
        "model.voxel_channels=8", "model.depth_bins=[1.0, 41.0, 21]", "grid.voxel_size=1.6",
        "render.step=0.8", "train.loader_bench_batches=0", "train.threshold_samples=1",
        "data.holdout='every-k:4'"]

# Three classes built from groups of Occ3D classes, so Occ3D → custom is a function (others → 255).
GROUPS = {"ground": [11, 12, 13, 14], "thing": [2, 3, 4, 5, 6, 7, 9, 10], "structure": [1, 8, 15, 16]}


def three_class_map() -> str:
    lines = ['format = "renderocc-class-map"', "version = 1", 'name = "three"',
             '[free]', 'name = "empty"', "color = [255, 255, 255]"]
    for k, (name, occ) in enumerate(GROUPS.items()):
        src = [n for n, c in C.LIDARSEG_TO_OCC3D.items() if c in occ]
        lines += ["[[class]]", f'name = "{name}"', f"color = [{40 * k}, 100, 200]",
                  f"lidarseg = {json.dumps(src)}", f"movable = {'true' if name == 'thing' else 'false'}"]
    return "\n".join(lines) + "\n"


def _write(tmp: Path, text: str, name: str = "map.toml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_default_class_map_is_the_occ3d_constants():
    v = C.default_vocabulary()
    assert v.names == C.OCC3D_CLASSES and v.free == C.FREE and v.num_semantic == C.NUM_SEMANTIC
    assert np.array_equal(np.asarray(v.colors, np.uint8), C.OCC3D_COLORS)
    assert v.lidarseg == C.LIDARSEG_TO_OCC3D and v.unmapped == 0
    cats = [{"name": n, "index": i} for i, n in enumerate(C.LIDARSEG_STANDARD_ORDER)]
    cats.append({"name": "new.thing", "index": 40})
    table = v.lidarseg_table(cats)
    assert table[40] == 0 and table[41] == C.IGNORE  # unknown name → others; unused index → 255
    assert [table[i] for i in range(32)] == [C.LIDARSEG_TO_OCC3D[n] for n in C.LIDARSEG_STANDARD_ORDER]
    assert [v.classes[k] for k, m in enumerate(v.movable) if m] == [
        "others", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "trailer", "truck"]
    assert v.static_categories() == {"movable_object.barrier", "movable_object.trafficcone"}
    # stores written before vocabularies hold Occ3D's
    assert C.vocabulary_of_manifest({"classes": {"names": C.OCC3D_CLASSES}}) == v


def test_class_map_schema_ships_with_the_repository_copy():
    repo = Path(__file__).resolve().parents[1]
    pkg = json.loads((repo / "renderocc" / "schemas" / C.CLASS_MAP_SCHEMA).read_text())
    assert pkg == json.loads((repo / "schemas" / C.CLASS_MAP_SCHEMA).read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('name = "thing"', 'name = "ground"'), "class 'ground' is listed twice"),
    (lambda t: t.replace('name = "three"', 'name = "three"\nunmapped = "sky"'), "unmapped = 'sky' is not one"),
    (lambda t: t.replace('"vehicle.car"', '"flat.terrain"'), "lidarseg name 'flat.terrain' maps to both"),
    (lambda t: t.replace("color = [0, 100, 200]", "color = [0, 100]"), "['class'][0]['color']"),
    (lambda t: t.replace('name = "empty"', 'name = "ground"'), "free-space name 'ground' is also a class"),
    (lambda t: t + "colour = 3\n", "Additional properties"),
    (lambda t: t.replace("version = 1", "version = ["), "is not valid TOML"),
])
def test_bad_class_maps_are_one_line_errors(tmp_path, edit, message):
    with pytest.raises(UserError, match=None) as e:
        C.load_class_map(_write(tmp_path, edit(three_class_map())))
    assert message in str(e.value) and "\n" not in str(e.value) and "map.toml" in str(e.value)
    with pytest.raises(UserError, match="class map not found"):
        C.load_class_map(tmp_path / "absent.toml")


@pytest.fixture(scope="module")
def three_store(synth_dataset, tmp_path_factory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("vocab")
    cmap = _write(tmp, three_class_map())
    (tmp / "no-gt").mkdir()
    store = str(tmp / "store")
    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(synth_dataset), "--out", store,
                                    "--image-size", "96x54", "--class-map", str(cmap), "--occ-gt",
                                    str(tmp / "no-gt"), "--no-progress"])
    assert res.exit_code == 0, res.output
    return store, tmp


def test_prep_writes_the_vocabulary_and_maps_lidarseg_through_it(three_store, small_store):
    store, _ = three_store
    r, ref = StoreReader(store), StoreReader(small_store)
    v = r.vocabulary
    assert v.names == ["ground", "thing", "structure", "empty"] and v.movable == (False, True, False)
    assert r.manifest["classes"]["free"] == 3 and r.manifest["classes"]["vocabulary"]["name"] == "three"
    lut = np.full(256, C.IGNORE, np.uint8)
    for k, occ in enumerate(GROUPS.values()):
        lut[occ] = k
    for i in range(len(r)):
        mine, theirs = r.labels(i)["label"], ref.labels(i)["label"]
        assert np.array_equal(mine, lut[theirs])  # same rays, labels through the class map
    assert set(np.unique(np.concatenate([r.labels(i)["label"] for i in range(len(r))]))) == {0, 1, 2, 255}


def test_three_classes_flow_to_eval_and_a_mismatch_is_refused(three_store, small_store):
    store, tmp = three_store
    run = tmp / "run"
    res = CliRunner().invoke(main, ["train", "--store", store, "--out", str(run), "--config", "demo",
                                    "--max-steps", "2", *[a for kv in TINY for a in ("--set", kv)]])
    assert res.exit_code == 0, res.output
    model, ckpt = load_model(run / "last.pt")
    assert ckpt["classes"] == ["ground", "thing", "structure", "empty"] and model.semantic_head.out_channels == 3
    res = CliRunner().invoke(main, ["eval", "--store", store, "--ckpt", str(run / "last.pt"), "--out",
                                    str(tmp / "eval"), "--split", "all", "--quiet"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp / "eval" / "metrics.json").read_text())
    assert list(m["sem2d_iou_per_class"]) == ["ground", "thing", "structure"] and m["sem2d_pixels"] > 0
    assert m["classes"]["names"][-1] == "empty"
    # the 3-class checkpoint on an Occ3D store, and an Occ3D-shaped checkpoint on the 3-class store
    res = CliRunner().invoke(main, ["eval", "--store", small_store, "--ckpt", str(run / "last.pt"), "--out",
                                    str(tmp / "bad"), "--split", "all", "--quiet"])
    assert res.exit_code == 2 and "trained on classes [ground, thing, structure, empty]" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp / "bad" / "metrics.json").exists()
    res = CliRunner().invoke(main, ["predict", "--store", small_store, "--ckpt", str(run / "last.pt"),
                                    "--out", str(tmp / "bad-pred"), "--quiet"])
    assert res.exit_code == 2 and "occ3d-nuscenes" in res.output


def test_prep_refuses_occ_gt_outside_the_vocabulary(three_store, synth_dataset, tmp_path):
    _, tmp = three_store
    res = CliRunner().invoke(main, ["prep", "nuscenes", "--dataroot", str(synth_dataset), "--out",
                                    str(tmp_path / "s"), "--image-size", "96x54", "--class-map",
                                    str(tmp / "map.toml"), "--max-samples", "1", "--no-progress"])
    assert res.exit_code == 2 and "semantics hold class 17, outside the class map (0..2, free 3)" in res.output
