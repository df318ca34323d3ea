"""Job arrays: prep and qa take their shard from Slurm / Kubernetes environment variables."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from renderocc.errors import UserError
from renderocc.shards import resolve_shard

SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP",
         "JOB_COMPLETION_INDEX", "RENDEROCC_NUM_SHARDS")


@pytest.mark.parametrize("flags, env, expected", [
    ((None, None), {}, (0, 1)),
    ((None, None), {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, (3, 4)),
    ((None, None), {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, (3, 4)),
    ((None, None), {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "8"}, (3, 8)),
    ((None, None), {"JOB_COMPLETION_INDEX": "2", "RENDEROCC_NUM_SHARDS": "3"}, (2, 3)),
    ((None, 5), {"JOB_COMPLETION_INDEX": "2"}, (2, 5)),
    ((1, 2), {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "8"}, (1, 2)),  # flags win
])
def test_resolve_shard(flags, env, expected):
    shard = resolve_shard(*flags, env=env)
    assert (shard.index, shard.count) == expected


@pytest.mark.parametrize("env, message", [
    ({"JOB_COMPLETION_INDEX": "2"}, "JOB_COMPLETION_INDEX is set but the number of shards is not"),
    ({"JOB_COMPLETION_INDEX": "two", "RENDEROCC_NUM_SHARDS": "3"}, "JOB_COMPLETION_INDEX='two' is not an integer"),
    ({"JOB_COMPLETION_INDEX": "3", "RENDEROCC_NUM_SHARDS": "3"},
     "shard index 3 (from JOB_COMPLETION_INDEX) must be in [0, 3 (from RENDEROCC_NUM_SHARDS))"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"},
     "is not on the array's grid"),
])
def test_resolve_shard_errors(env, message):
    with pytest.raises(UserError) as err:
        resolve_shard(None, None, env=env)
    assert message in str(err.value.message)


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory):
    """2 synthetic scenes x 2 keyframes: one prep shard per scene."""
    from renderocc.synth.writer import write_dataset

    return write_dataset(tmp_path_factory.mktemp("two") / "nuscenes", scenes=2, samples_per_scene=2, seed=3,
                         image_size=(160, 90), sweeps_per_sample=0, workers=1)


def _invoke(args: list[str], env: dict[str, str], monkeypatch) -> str:
    from renderocc.cli import main

    for name in SLURM:
        monkeypatch.delenv(name, raising=False)
    res = CliRunner().invoke(main, args, env=env)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
def test_job_array_through_environment(two_scenes, tmp_path, monkeypatch):
    """A Slurm array of two prep tasks writes one file:// store; an Indexed Job of two QA tasks
    reports on it exactly as one QA job does."""
    from renderocc.store.reader import StoreReader
    from renderocc.store.validate import validate

    url = (tmp_path / "store").as_uri()
    prep = ["prep", "nuscenes", "--dataroot", str(two_scenes), "--out", url, "--image-size", "128x64",
            "--no-progress"]
    out = _invoke(prep, {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"},
                  monkeypatch)
    assert "shard 1 of 2 (SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT)" in out and "incomplete" in out
    out = _invoke(prep, {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"},
                  monkeypatch)
    assert "store complete" in out
    reader = StoreReader(url)
    assert len(reader) == 4 and len(set(reader.scene_names())) == 2 and validate(url) == []

    qa = ["qa", "--store", url, "--quiet"]
    _invoke([*qa, "--out", str(tmp_path / "single")], {}, monkeypatch)
    sharded = tmp_path / "sharded"
    out = _invoke([*qa, "--out", str(sharded)], {"JOB_COMPLETION_INDEX": "1", "RENDEROCC_NUM_SHARDS": "2"},
                  monkeypatch)
    assert "1 of 2 parts in" in out and not (sharded / "qa.json").exists()
    out = _invoke([*qa, "--out", str(sharded)], {"JOB_COMPLETION_INDEX": "0", "RENDEROCC_NUM_SHARDS": "2"},
                  monkeypatch)
    assert "2 of 2 parts in" in out
    single = json.loads((tmp_path / "single" / "qa.json").read_text())
    assert json.loads((sharded / "qa.json").read_text()) == single
    assert single["summary"]["samples"] == 4 and single["coverage"]["totals"]["aux_rays"] > 0
