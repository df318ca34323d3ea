"""Killed `prep masks` / `prep motion-masks` runs: a real SIGKILL at several points of a real CLI run.

Each run is a subprocess of the real CLI, slowed at one step by the test (a sleep wrapped around one
writer function, so the kill lands in a known phase), killed with SIGKILL once the phase's artefact
appears on disk. Afterwards the store must hold the old state or the new one, never a mix; `store
validate` must say which (a note) or why it is not consistent (a problem); readers (and `train`)
must refuse a store validate fails; and a rerun must finish the work.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mask_files import write_key_frame_masks as masks_of

from renderocc.cli import main
from renderocc.errors import UserError
from renderocc.store.reader import StoreReader
from renderocc.store.validate import notes, validate

pytestmark = pytest.mark.slow   # each case starts and kills a CLI process (~5 s)

REPO = Path(__file__).resolve().parents[1]

# The CLI with writer functions slowed: argv[1] = "name:seconds,..." (a sleep before each call).
SLOWED_CLI = """
import sys, time
from renderocc.store import writer

def slowed(name, seconds):
    real = getattr(writer, name)
    def call(*args, **kwargs):
        time.sleep(seconds)
        return real(*args, **kwargs)
    setattr(writer, name, call)

for spec in filter(None, sys.argv[1].split(",")):
    name, seconds = spec.split(":")
    slowed(name, float(seconds))
from renderocc.cli import main
main(sys.argv[2:], prog_name="renderocc")
"""


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    """2 scenes x 2 keyframes (two shards), with annotations (moving boxes) and lidarseg."""
    from renderocc.synth.writer import write_dataset

    out = tmp_path_factory.mktemp("atomic") / "data"
    return write_dataset(out, scenes=2, samples_per_scene=2, seed=1, image_size=(320, 180), sweeps_per_sample=1,
                         workers=1)


@pytest.fixture(scope="module")
def base_store(dataroot, tmp_path_factory) -> Path:
    from renderocc.prep.pipeline import PrepOptions, run

    out = tmp_path_factory.mktemp("atomic_store") / "store"
    run(PrepOptions(dataroot=str(dataroot), version="v1.0-mini", out=str(out), image_size=(96, 54), progress=False),
        log=lambda m: None)
    return out


def cli(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def manifest(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())


def run_and_kill(tmp: Path, slow: str, args: list[str], when: Callable[[], bool], timeout: float = 120) -> None:
    """Start the CLI (`slow`: writer functions to slow), SIGKILL it as soon as `when()` holds; the
    kill must land before the command finishes."""
    log = tmp / "killed-run.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", SLOWED_CLI, slow, *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    t0 = time.monotonic()
    try:
        while True:
            try:
                reached = when()
            except (OSError, ValueError, KeyError):   # a file being replaced: look again
                reached = False
            if reached:
                break
            if proc.poll() is not None:
                raise AssertionError(f"finished (exit {proc.returncode}) before the kill point:\n{log.read_text()}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"kill point not reached in {timeout} s:\n{log.read_text()}")
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()


def store_values(store: Path) -> set[int] | None:
    """The classes in the store's 2D masks (None without masks)."""
    r = StoreReader(store)
    if not r.has_semantic_masks:
        return None
    return set(np.unique(np.stack([r.semantic_mask(i) for i in range(len(r))])).tolist())


def unnamed_mask_folders(store: Path) -> list[str]:
    named = StoreReader(store).semantic_mask_array
    return sorted(p.name for p in store.glob("semantic_mask*") if p.name != named)


def validate_cli(store: Path) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["store", "validate", str(store)])
    return res.exit_code, res.output


# -- prep masks ---------------------------------------------------------------------------------
def _chunk_in_unnamed_folder(store: Path) -> Callable[[], bool]:
    def when() -> bool:
        return any((p / "c").is_dir() for p in store.glob("semantic_mask-*")
                   if p.name != (manifest(store).get("semantic_masks") or {}).get("array"))
    return when


def test_masks_kill_while_writing_the_new_set_leaves_the_old_set(dataroot, base_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(base_store, store)
    cli("prep", "masks", "--store", str(store), "--masks", str(masks_of(dataroot, tmp_path / "m3", 3)), "--no-progress")
    before = (store / "manifest.json").read_bytes()
    run_and_kill(tmp_path, "write_semantic_mask:0.4",
                 ["prep", "masks", "--store", str(store), "--masks", str(masks_of(dataroot, tmp_path / "m5", 5)),
                  "--no-progress"], _chunk_in_unnamed_folder(store))
    assert (store / "manifest.json").read_bytes() == before   # the store's identity too
    assert store_values(store) == {3, 255}
    assert validate(str(store)) == []
    code, out = validate_cli(store)
    assert code == 0 and "store valid" in out and "left by an interrupted `prep masks`" in out, out
    assert "the store holds the masks imported" in out and len(unnamed_mask_folders(store)) == 1
    cli("prep", "masks", "--store", str(store), "--masks", str(tmp_path / "m5"), "--no-progress")   # the rerun
    assert store_values(store) == {5, 255} and unnamed_mask_folders(store) == []
    assert validate(str(store)) == [] and notes(str(store)) == []


def test_masks_kill_after_the_switch_leaves_the_new_set(dataroot, base_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(base_store, store)
    cli("prep", "masks", "--store", str(store), "--masks", str(masks_of(dataroot, tmp_path / "m3", 3)), "--no-progress")
    old = manifest(store)["semantic_masks"]["array"]
    run_and_kill(tmp_path, "remove_array:30",
                 ["prep", "masks", "--store", str(store), "--masks", str(masks_of(dataroot, tmp_path / "m5", 5)),
                  "--no-progress"], lambda: manifest(store)["semantic_masks"]["array"] != old)
    assert store_values(store) == {5, 255}
    assert unnamed_mask_folders(store) == [old]   # the replaced set, not yet deleted: never read
    assert validate(str(store)) == []
    code, out = validate_cli(store)
    assert code == 0 and f"{old}/: left by an interrupted `prep masks`" in out, out


def test_masks_kill_during_a_first_import_leaves_a_store_without_masks(dataroot, base_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(base_store, store)
    before = (store / "manifest.json").read_bytes()
    run_and_kill(tmp_path, "write_semantic_mask:0.4",
                 ["prep", "masks", "--store", str(store), "--masks", str(masks_of(dataroot, tmp_path / "m3", 3)),
                  "--no-progress"], _chunk_in_unnamed_folder(store))
    assert (store / "manifest.json").read_bytes() == before and store_values(store) is None
    code, out = validate_cli(store)
    assert code == 0 and "the store holds no 2D masks" in out, out


# -- prep motion-masks ---------------------------------------------------------------------------
def _motion_args(store: Path, *more: str) -> list[str]:
    return ["prep", "motion-masks", "--store", str(store), "--no-progress", *more]


def _shards_done(store: Path) -> Callable[[], bool]:
    return lambda: bool((manifest(store).get("in_progress") or {}).get("shards_done"))


def test_motion_kill_of_a_first_run_leaves_the_store_without_motion_masks(base_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(base_store, store)
    run_and_kill(tmp_path, "write_motion_mask:0.4", _motion_args(store), _shards_done(store))
    r = StoreReader(store)   # readers open it: the old state
    assert not r.has_motion_masks and "dynamic" not in r.labels(0) and r.in_progress
    assert validate(str(store)) == []
    code, out = validate_cli(store)
    assert code == 0 and "note: an interrupted `prep motion-masks`" in out and "reads as before it" in out, out
    cli(*_motion_args(store))   # the rerun finishes it
    r = StoreReader(store)
    assert r.has_motion_masks and r.in_progress is None and r.labels(0)["dynamic"].dtype == bool
    assert validate(str(store)) == [] and notes(str(store)) == []


def test_motion_kill_between_a_rays_rename_and_its_record(base_store, tmp_path):
    """The rays file is replaced but the manifest still has its old checksum: readers accept the
    checksum the manifest recorded as coming, and the rerun records it."""
    store = tmp_path / "store"
    shutil.copytree(base_store, store)
    rays = sorted((store / "rays").glob("*.parquet"))
    inodes = {p: p.stat().st_ino for p in rays}
    run_and_kill(tmp_path, "record_shard_rewrite:3", _motion_args(store),
                 lambda: any(p.stat().st_ino != ino for p, ino in inodes.items()))
    m = manifest(store)
    assert m["in_progress"]["pending"] and not m["in_progress"]["shards_done"]
    r = StoreReader(store)
    assert len(r.labels(0)["u"]) > 0 and validate(str(store)) == []
    cli(*_motion_args(store))
    assert StoreReader(store).has_motion_masks and validate(str(store)) == []


def test_motion_kill_of_a_rerun_is_refused_until_rerun(base_store, tmp_path):
    """Over existing motion masks the rewrite is in place: a kill leaves a mix, which validate names
    and train refuses; the rerun finishes it."""
    store = tmp_path / "store"
    shutil.copytree(base_store, store)
    cli(*_motion_args(store))
    run_and_kill(tmp_path, "write_motion_mask:0.4", _motion_args(store, "--margin", "0.5"), _shards_done(store))
    with pytest.raises(UserError, match="mixes the two runs"):
        StoreReader(store)
    assert any("interrupted `prep motion-masks`" in p for p in validate(str(store)))
    code, out = validate_cli(store)
    assert code == 2 and "store invalid" in out and "mixes the two runs" in out
    res = CliRunner().invoke(main, ["train", "--store", str(store), "--out", str(tmp_path / "run"), "--max-steps", "1"])
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert res.exit_code == 2 and len(errors) == 1 and "interrupted `prep motion-masks`" in errors[0], res.output
    assert not (tmp_path / "run" / "last.pt").exists()
    res = CliRunner().invoke(main, ["prep", "masks", "--store", str(store), "--masks", str(tmp_path)])
    assert res.exit_code == 2 and "mixes the two runs" in res.output   # no other writer builds on the mix
    cli(*_motion_args(store, "--margin", "0.5"))
    r = StoreReader(store)
    assert r.has_motion_masks and r.manifest["motion_masks"]["margin"] == 0.5 and r.in_progress is None
    assert validate(str(store)) == []
