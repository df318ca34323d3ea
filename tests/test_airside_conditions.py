"""Airside conditions (renderocc/synth/conditions.py): wet pavement loses LiDAR returns by specular
reflection and nothing else changes; floodlit night is bright under the poles and dark between
them; the scene description states the conditions."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from renderocc.cli import main
from renderocc.prep import freebeams
from renderocc.synth import airside
from renderocc.synth import camera as cam
from renderocc.synth import lidar as lid
from renderocc.synth.conditions import parse_conditions
from renderocc.synth.materials import LABEL

PAVED = [LABEL["airside.apron"], LABEL["airside.marking"]]


def _world(wet: bool = False, night: bool = False):
    return airside.build_airside_world(np.random.default_rng([3, 0, 0]), 2.0, night=night, wet=wet)


def test_wet_pavement_loses_returns_only_on_pavement():
    grid = lid.LidarGrid()
    dry = lid.scan(_world(), 0.0, np.random.default_rng(7), grid)
    wet = lid.scan(_world(wet=True), 0.0, np.random.default_rng(7), grid)
    paved_dry, paved_wet = (int(np.isin(s.label, PAVED).sum()) for s in (dry, wet))
    assert paved_dry > 10000 and paved_wet < 0.8 * paved_dry, (paved_dry, paved_wet)
    # everything that is not pavement returns exactly as when dry (same seed, same draws)
    other_dry, other_wet = (np.sort(s.label[~np.isin(s.label, PAVED)]) for s in (dry, wet))
    assert np.array_equal(other_dry, other_wet)
    # the lost returns are downward beams marked specular, not "nothing there"
    spec = wet.beams == lid.BEAM_SPECULAR
    assert spec.sum() == paved_dry - paved_wet
    assert np.all(lid.ELEVATIONS[np.nonzero(spec)[0]] < 0)
    assert np.array_equal(wet.beams[~spec], dry.beams[~spec])
    # so prep's free-beam detection finds the same free beams in both clouds
    l2e = lid.lidar_to_ego()
    assert len(freebeams.free_beams(wet.points, l2e)["ring"]) == len(freebeams.free_beams(dry.points, l2e)["ring"])


def test_floodlit_night_is_darker_away_from_the_poles():
    world = _world(night=True)
    near, far = [], []
    for spec in cam.RIG[::2]:
        img, hits = cam.render(world, spec, cam.pinhole_grid(spec.name, (240, 135)), 0.0, np.random.default_rng(1))
        ground = hits.pid == -1
        p = hits.points[ground]
        dist = np.min(np.hypot(p[:, None, 0] - world.lamps[None, :, 0], p[:, None, 1] - world.lamps[None, :, 1]), 1)
        luma = img[ground].astype(np.float64) @ [0.299, 0.587, 0.114]
        near.append(luma[dist < 10.0])
        far.append(luma[(dist > 25.0) & (hits.t[ground] < 40.0)])
    near, far = np.concatenate(near), np.concatenate(far)
    assert len(near) > 500 and len(far) > 500
    assert near.mean() > 2.0 * far.mean(), (near.mean(), far.mean())
    day, _ = cam.render(_world(), cam.RIG[0], cam.pinhole_grid("CAM_FRONT", (240, 135)), 0.0, np.random.default_rng(1))
    assert far.mean() < 0.25 * day.mean()   # low ambient


def test_bad_conditions_are_one_line_errors(tmp_path):
    res = CliRunner().invoke(main, ["synth", "airside", "--out", str(tmp_path / "b"), "--conditions", "day+foggy"])
    assert res.exit_code == 2 and "--conditions: 'day+foggy' is not a condition" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("spec, parsed", [("day", [(False, False)]), ("night+wet,wet", [(True, True), (False, True)])])
def test_parse_conditions(spec, parsed):
    assert parse_conditions(spec) == parsed
