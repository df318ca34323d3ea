"""Shared fixtures: a tiny synthetic nuScenes dataset (built once per session) and the real one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from paths import REAL_FIXTURE


@pytest.fixture(scope="session")
def ops():
    """The compiled renderer ops; skip (fail on CI) when the extension cannot be built here."""
    from renderocc.cuda import loader

    try:
        return loader.load()
    except loader.ExtensionUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"renderer extension did not build on CI: {exc}")
        pytest.skip(f"renderer extension unavailable (no compiler?): {exc}")


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """Dataroot (version v1.0-mini) of 1 synthetic scene x 4 keyframes, 1 sweep between keyframes,
    320x180 images, seed 0, with synth_truth/cameras; read-only for tests (copy before modifying)."""
    from renderocc.synth.writer import write_dataset

    out = tmp_path_factory.mktemp("synth") / "nuscenes"
    return write_dataset(out, scenes=1, samples_per_scene=4, seed=0, image_size=(320, 180),
                         sweeps_per_sample=1, workers=1, camera_truth=True)


@pytest.fixture(scope="session")
def real_fixture() -> Path:
    """The real nuScenes scene-0916 extract (devkit-loadable, no lidarseg); skip if absent."""
    if not (REAL_FIXTURE / "v1.0-mini").is_dir():
        pytest.skip("real nuScenes fixture absent")
    return REAL_FIXTURE


@pytest.fixture(scope="session")
def small_store(synth_dataset, tmp_path_factory) -> str:
    """`synth_dataset` prepped once into a store with 96×54 images (no motion masks); read-only."""
    from renderocc.prep.pipeline import PrepOptions, run

    out = tmp_path_factory.mktemp("small_store") / "store"
    run(PrepOptions(dataroot=str(synth_dataset), version="v1.0-mini", out=str(out), image_size=(96, 54),
                    progress=False), log=lambda m: None)
    return str(out)
