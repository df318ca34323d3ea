"""Fault injection through the real CLI: each case breaks one thing (a record, a file, an option, the
disk) and runs the real command on a copy of the shared synthetic dataroot / store / checkpoint.

Each result is classified: `clear error` (non-zero exit, exactly one `Error:` line naming the thing,
nothing sealed complete, no orphan temp file), `handled` (a fault the command is meant to absorb, with
a correct result), `traceback`, or `silently wrong` (exit 0 or a wrong result where an error was due,
or an error line that does not name the thing). The counts are printed; the goal is 0 tracebacks and
0 silently wrong results.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from mask_files import write_key_frame_masks

from renderocc.cli import main

REPO = Path(__file__).resolve().parents[1]
UNWRITABLE = "/proc/renderocc-faults/out"   # cannot be created, even by root
UNWRITABLE_NAMED = "/proc/renderocc-faults"   # what the error names (the first folder it cannot create)
TINY = ["data.input_size=[64, 32]", "data.rays=256", "data.workers=0", "model.width=8", "model.channels=16",
        "model.voxel_channels=8", "model.depth_bins=[1.0, 41.0, 21]", "grid.voxel_size=1.6",
        "render.step=0.8", "train.loader_bench_batches=0", "train.threshold_samples=1",
        "data.holdout='every-k:4'"]
TINY_ARGS = [a for kv in TINY for a in ("--set", kv)]
RESULTS: dict[str, str] = {}


@dataclass
class World:
    dataroot: Path
    store: str
    run: Path          # a 2-step training run (last.pt) on `store`


@pytest.fixture(scope="module")
def world(synth_dataset, small_store, tmp_path_factory) -> World:
    run = tmp_path_factory.mktemp("faults") / "run"
    res = CliRunner().invoke(main, ["train", "--store", small_store, "--out", str(run), "--max-steps", "2",
                                    *TINY_ARGS])
    assert res.exit_code == 0, res.output
    return World(Path(synth_dataset), small_store, run)


@pytest.fixture(scope="module", autouse=True)
def _print_counts(request):
    yield
    counts = collections.Counter(RESULTS.values())
    line = (f"fault injection: {len(RESULTS)} cases: {counts['clear error']} clear errors, {counts['handled']} "
            f"handled, {counts['traceback']} tracebacks, {counts['silently wrong']} silently wrong")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + line)


# -- copies to break ------------------------------------------------------------------------------
def copy_dataroot(w: World, tmp: Path) -> Path:
    """A hard-linked copy of the dataroot (fast); `own` a file before changing it."""
    d = tmp / "data"
    shutil.copytree(w.dataroot, d, copy_function=os.link, ignore=shutil.ignore_patterns("synth_truth"))
    return d


def own(path: Path) -> Path:
    """Replace a hard link by a private copy, so edits never reach the shared fixture."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    return path


def edit_table(root: Path, table: str, edit: Callable[[list[dict]], None]) -> None:
    p = own(root / "v1.0-mini" / f"{table}.json")
    recs = json.loads(p.read_text())
    edit(recs)
    p.write_text(json.dumps(recs))


def _tables(root: Path, *names: str) -> list[list[dict]]:
    return [json.loads((root / "v1.0-mini" / f"{n}.json").read_text()) for n in names]


def calib_of(root: Path, channel: str) -> str:
    sensors, calibs = _tables(root, "sensor", "calibrated_sensor")
    token = next(s["token"] for s in sensors if s["channel"] == channel)
    return next(c["token"] for c in calibs if c["sensor_token"] == token)


def key_file(root: Path, channel: str, k: int = 0, ext: str = "") -> Path:
    """The k-th keyframe file of a channel (time order)."""
    files = sorted((root / "samples" / channel).glob(f"*{ext}"))
    return files[k]


def key_record(root: Path, channel: str, k: int = 0) -> dict:
    (sds,) = _tables(root, "sample_data")
    name = key_file(root, channel, k).name
    return next(sd for sd in sds if sd["filename"].endswith(name))


def set_record(root: Path, table: str, token: str, key: str, value) -> None:
    def edit(recs):
        next(r for r in recs if r["token"] == token)[key] = value
    edit_table(root, table, edit)


def copy_store(w: World, tmp: Path) -> Path:
    s = tmp / "store"
    shutil.copytree(w.store, s)
    return s


def rewrite_samples(store: Path, column: str, change: Callable[[list], None]) -> None:
    """Change a samples.parquet column and re-record its checksum: a consistent but wrong store."""
    t = pq.read_table(store / "samples.parquet")
    values = t.column(column).to_pylist()
    change(values)
    field = t.schema.field(column)
    t = t.set_column(t.schema.get_field_index(column), field, pa.array(values, type=field.type))
    pq.write_table(t, store / "samples.parquet", compression="zstd")
    import hashlib

    m = json.loads((store / "manifest.json").read_text())
    m["samples"]["sha256"] = hashlib.sha256((store / "samples.parquet").read_bytes()).hexdigest()
    (store / "manifest.json").write_text(json.dumps(m))


def chunk(store: Path, array: str, i: int) -> Path:
    return next(p for p in (store / array / "c" / str(i)).rglob("*") if p.is_file())


def truncate(path: Path, keep: float = 0.5) -> None:
    data = own(path).read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


# -- checks after a failure -------------------------------------------------------------------------
def nothing_sealed(out: Path) -> str | None:
    if (out / "manifest.json").exists():
        return "store sealed complete"
    return orphans(out)


def orphans(out: Path) -> str | None:
    tmp = [p for p in out.rglob(".tmp-*")] if out.exists() else []
    return f"orphan temp files {tmp[:2]}" if tmp else None


def store_ok(store: Path) -> str | None:
    from renderocc.store.validate import validate

    problems = validate(str(store))
    return f"store invalid: {problems[:1]}" if problems else None


# -- the cases ------------------------------------------------------------------------------------
@dataclass
class Fault:
    name: str
    setup: Callable[[World, Path], list[str]]       # breaks something, returns the CLI arguments
    message: str | None                             # an error naming this is due; None: must succeed
    post: Callable[[World, Path], str | None] | None = None   # after the run: a problem, or None
    limit_file_bytes: int | None = None             # run in a subprocess with RLIMIT_FSIZE (a full disk)


def prep_args(d: Path, out: Path | str, *more: str) -> list[str]:
    return ["prep", "nuscenes", "--dataroot", str(d), "--out", str(out), "--image-size", "96x54",
            "--no-progress", *more]


def prep_fault(name: str, breaks: Callable[[Path], None], message: str, *more: str) -> Fault:
    def setup(w: World, tmp: Path) -> list[str]:
        d = copy_dataroot(w, tmp)
        breaks(d)
        return prep_args(d, tmp / "out", *more)
    return Fault(name, setup, message, post=lambda w, tmp: nothing_sealed(tmp / "out"))


def _nan_points(path: Path) -> None:
    pts = np.fromfile(own(path), np.float32).reshape(-1, 5)
    pts[[3, 7], 1] = np.nan
    pts.tofile(path)


def _prep_skip_nan_points(w: World, tmp: Path) -> list[str]:
    d = copy_dataroot(w, tmp)
    _nan_points(key_file(d, "LIDAR_TOP", 2))
    return prep_args(d, tmp / "out", "--on-bad-sample", "skip")


def _scene_chain(recs: list[dict]) -> list[dict]:
    """The first scene's samples in link order."""
    by = {r["token"]: r for r in recs}
    first = next(r for r in recs if not r["prev"])
    chain = [first]
    while chain[-1]["next"]:
        chain.append(by[chain[-1]["next"]])
    return chain


def _cycle(recs: list[dict]) -> None:
    chain = _scene_chain(recs)
    chain[-1]["next"] = chain[1]["token"]  # the last keyframe links back into the scene


def _duplicate(recs: list[dict]) -> None:
    recs.append(dict(_scene_chain(recs)[1]))


def _no_timestamp(recs: list[dict]) -> None:
    del _scene_chain(recs)[2]["timestamp"]


def _foreign(recs: list[dict]) -> None:
    _scene_chain(recs)[1]["scene_token"] = "another-scene"


def _dangling(recs: list[dict]) -> None:
    _scene_chain(recs)[1]["next"] = "no-such-sample-token"


def _swap_times(recs: list[dict]) -> None:
    chain = _scene_chain(recs)
    chain[1]["timestamp"], chain[2]["timestamp"] = chain[2]["timestamp"], chain[1]["timestamp"]


def _bad_prev(recs: list[dict]) -> None:
    _scene_chain(recs)[2]["prev"] = ""


def _pred_with_cycle(w: World, tmp: Path) -> list[str]:
    d = copy_dataroot(w, tmp)
    edit_table(d, "sample", _cycle)
    (tmp / "pred").mkdir()
    np.savez(tmp / "pred" / "x.npz", semantics=np.zeros((200, 200, 16), np.uint8))
    return ["eval", "--pred", str(tmp / "pred"), "--gt", str(d / "gts"), "--dataroot", str(d), "--out",
            str(tmp / "o"), "--split", "all", "--allow-missing", "--quiet"]


def _zero_quat(channel: str) -> Callable[[Path], None]:
    return lambda d: set_record(d, "calibrated_sensor", calib_of(d, channel), "rotation", [0, 0, 0, 0])


def _ego(channel: str, key: str, value) -> Callable[[Path], None]:
    return lambda d: set_record(d, "ego_pose", key_record(d, channel)["ego_pose_token"], key, value)


def _intrinsic(edit: Callable[[list], None]) -> Callable[[Path], None]:
    def breaks(d: Path) -> None:
        tok = calib_of(d, "CAM_FRONT")
        (calibs,) = _tables(d, "calibrated_sensor")
        K = next(c for c in calibs if c["token"] == tok)["camera_intrinsic"]
        edit(K)
        set_record(d, "calibrated_sensor", tok, "camera_intrinsic", K)
    return breaks


def _set(K, r, c, v):
    K[r][c] = v


def _lidarseg(values: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def breaks(d: Path) -> None:
        tok = key_record(d, "LIDAR_TOP")["token"]
        p = own(d / "lidarseg" / "v1.0-mini" / f"{tok}_lidarseg.bin")
        values(np.fromfile(p, np.uint8)).astype(np.uint8).tofile(p)
    return breaks


def _out_of_vocab(lab: np.ndarray) -> np.ndarray:
    lab[:10] = 200
    return lab


PREP = [
    prep_fault("prep: LiDAR calibration zero quaternion", _zero_quat("LIDAR_TOP"), "unit quaternion"),
    prep_fault("prep: camera calibration zero quaternion", _zero_quat("CAM_FRONT"), "unit quaternion"),
    prep_fault("prep: non-unit quaternion", lambda d: set_record(
        d, "calibrated_sensor", calib_of(d, "CAM_BACK"), "rotation", [2.0, 0, 0, 0]), "unit quaternion"),
    prep_fault("prep: NaN in LiDAR ego_pose", _ego("LIDAR_TOP", "translation", [float("nan"), 0, 0]),
               "non-finite"),
    prep_fault("prep: NaN in camera ego_pose", _ego("CAM_FRONT", "rotation", [float("nan"), 0, 0, 1]),
               "non-finite"),
    prep_fault("prep: rotation of 3 numbers", _ego("CAM_FRONT", "rotation", [1, 0, 0]), "4 and 3 numbers"),
    prep_fault("prep: zero focal length", _intrinsic(lambda K: _set(K, 0, 0, 0.0)), "focal"),
    prep_fault("prep: principal point outside the image", _intrinsic(lambda K: _set(K, 0, 2, -50.0)),
               "principal point"),
    prep_fault("prep: NaN intrinsics", _intrinsic(lambda K: _set(K, 1, 1, float("nan"))), "finite 3x3"),
    prep_fault("prep: truncated JPEG", lambda d: truncate(key_file(d, "CAM_FRONT", 1)), "truncated JPEG"),
    prep_fault("prep: empty JPEG", lambda d: own(key_file(d, "CAM_BACK", 2)).write_bytes(b""), "image"),
    prep_fault("prep: missing image", lambda d: key_file(d, "CAM_FRONT_LEFT", 0).unlink(), "image missing"),
    prep_fault("prep: NaN coordinates in a .pcd.bin", lambda d: _nan_points(key_file(d, "LIDAR_TOP", 1)),
               "non-finite coordinates"),
    Fault("prep: NaN coordinates in a .pcd.bin, --on-bad-sample skip", _prep_skip_nan_points, None,
          post=lambda w, tmp: _skip_recorded(w, tmp, "non-finite coordinates")),
    prep_fault("prep: empty .pcd.bin", lambda d: own(key_file(d, "LIDAR_TOP", 1)).write_bytes(b""),
               "empty point cloud"),
    prep_fault("prep: .pcd.bin of odd size", lambda d: truncate(key_file(d, "LIDAR_TOP", 0), 0.3333),
               "corrupt point cloud"),
    prep_fault("prep: lidarseg index out of vocabulary", _lidarseg(_out_of_vocab), "does not define"),
    prep_fault("prep: lidarseg of wrong length", _lidarseg(lambda lab: lab[:-3]), "labels for"),
    prep_fault("prep: missing table", lambda d: (d / "v1.0-mini" / "sample_data.json").unlink(),
               "table missing"),
    prep_fault("prep: table not JSON", lambda d: own(d / "v1.0-mini" / "ego_pose.json").write_text("{"),
               "devkit cannot load"),
    prep_fault("prep: duplicate --cameras", lambda d: None, "given twice", "--cameras", "CAM_FRONT,CAM_FRONT"),
    prep_fault("prep: unknown camera", lambda d: None, "camera not in dataset", "--cameras", "CAM_NOPE"),
    prep_fault("prep: --image-size 100000x100000", lambda d: None, "at most 4096", "--image-size",
               "100000x100000"),
    prep_fault("prep: --image-size of a portrait (H and W swapped)", lambda d: None, "is portrait", "--image-size",
               "54x96"),
    prep_fault("prep: --image-size abc", lambda d: None, "--image-size must be", "--image-size", "abc"),
    prep_fault("prep: unknown scene", lambda d: None, "scene not in dataset", "--scenes", "scene-9999"),
]


def _prep_to(url: str) -> Callable[[World, Path], list[str]]:
    return lambda w, tmp: prep_args(copy_dataroot(w, tmp), url)


def _prep_skip(w: World, tmp: Path) -> list[str]:
    d = copy_dataroot(w, tmp)
    truncate(key_file(d, "CAM_FRONT", 2))
    return prep_args(d, tmp / "out", "--on-bad-sample", "skip")


def _prep_skip_lidarseg(w: World, tmp: Path) -> list[str]:
    d = copy_dataroot(w, tmp)
    _lidarseg(_out_of_vocab)(d)
    return prep_args(d, tmp / "out", "--on-bad-sample", "skip")


def _skip_recorded(w: World, tmp: Path, reason: str = "truncated JPEG") -> str | None:
    m = json.loads((tmp / "out" / "manifest.json").read_text())
    sk = m.get("skipped_samples", [])
    if m["num_samples"] != 3 or len(sk) != 1 or reason not in sk[0]["reason"]:
        return f"skip not recorded: {m['num_samples']} samples, {sk}"
    res = CliRunner().invoke(main, ["qa", "--store", str(tmp / "out"), "--out", str(tmp / "qa"), "--quiet",
                                    "--no-coverage"])
    qa = json.loads((tmp / "qa" / "qa.json").read_text()) if res.exit_code == 0 else {}
    if "prep skipped 1 bad sample" not in res.output or len(qa.get("skipped_samples", [])) != 1:
        return f"qa does not show the skip: {res.output[-300:]}"
    return store_ok(tmp / "out")


def _prep_resume_truncated(w: World, tmp: Path) -> list[str]:
    """A finished shard truncated after a kill (before the store was sealed): the rerun must redo it."""
    d = copy_dataroot(w, tmp)
    out = tmp / "out"
    res = CliRunner().invoke(main, prep_args(d, out))
    assert res.exit_code == 0, res.output
    (out / "manifest.json").unlink()
    (out / "samples.parquet").unlink()
    truncate(next((out / "rays").glob("*.parquet")))
    return prep_args(d, out)


def _prep_rerun_after_motion_masks(w: World, tmp: Path) -> list[str]:
    """A sealed store whose shards `prep motion-masks` rewrote: a rerun must leave it alone."""
    d = copy_dataroot(w, tmp)
    out = tmp / "out"
    for args in (prep_args(d, out), ["prep", "motion-masks", "--store", str(out), "--dataroot", str(d),
                                     "--no-progress"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
    return prep_args(d, out)


def _motion_masks_kept(w: World, tmp: Path) -> str | None:
    m = json.loads((tmp / "out" / "manifest.json").read_text())
    return store_ok(tmp / "out") or (None if m["supervision"]["motion_masks"] else "motion masks lost")


def _unwritable_parent(w: World, tmp: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return prep_args(copy_dataroot(w, tmp), tmp / "afile" / "store")


PREP += [
    prep_fault("prep: cyclic sample links", lambda d: edit_table(d, "sample", _cycle), "form a cycle"),
    prep_fault("prep: a sample of another scene in the chain", lambda d: edit_table(d, "sample", _foreign),
               "belongs to another scene"),
    prep_fault("prep: a sample link to a token not in sample.json", lambda d: edit_table(d, "sample", _dangling),
               "is linked but not in sample.json"),
    Fault("prep: --class-map is a folder", lambda w, tmp: prep_args(copy_dataroot(w, tmp), tmp / "out",
                                                                    "--class-map", str(tmp)), "is a folder"),
    prep_fault("prep: a duplicated sample token", lambda d: edit_table(d, "sample", _duplicate), "twice"),
    prep_fault("prep: a sample without its timestamp", lambda d: edit_table(d, "sample", _no_timestamp),
               "timestamp"),
    prep_fault("prep: sample timestamps out of order", lambda d: edit_table(d, "sample", _swap_times),
               "timestamp is not after"),
    prep_fault("prep: a prev link that does not point back", lambda d: edit_table(d, "sample", _bad_prev),
               "prev link does not point back"),
    Fault("eval --pred --dataroot: cyclic sample links (RayIoU origins)", lambda w, tmp: _pred_with_cycle(w, tmp),
          "form a cycle"),
    Fault("prep: --out memory://", _prep_to("memory://faults/store"), "does not persist"),
    Fault("prep: --out s3:// without s3fs", _prep_to("s3://bucket/store"), "s3:// needs s3fs"),
    Fault("prep: --out of an unknown protocol", _prep_to("nosuch://bucket/store"), "unknown protocol"),
    Fault("prep: unwritable --out", _prep_to(UNWRITABLE), UNWRITABLE_NAMED),
    Fault("prep: --out under a regular file", _unwritable_parent, "afile"),
    Fault("prep: --on-bad-sample skip (truncated JPEG)", _prep_skip, None, post=_skip_recorded),
    Fault("prep: --on-bad-sample skip (lidarseg out of vocabulary)", _prep_skip_lidarseg, None,
          post=lambda w, tmp: _skip_recorded(w, tmp, "does not define")),
    Fault("prep: rerun after a finished shard was truncated", _prep_resume_truncated, None,
          post=lambda w, tmp: store_ok(tmp / "out")),
    Fault("prep: rerun on a sealed store after motion-masks", _prep_rerun_after_motion_masks, None,
          post=_motion_masks_kept),
    Fault("prep: full disk", lambda w, tmp: prep_args(copy_dataroot(w, tmp), tmp / "out"), "File too large",
          post=lambda w, tmp: nothing_sealed(tmp / "out"), limit_file_bytes=30_000),
]


# -- store faults -----------------------------------------------------------------------------------
def store_fault(name: str, breaks: Callable[[Path], None], message: str | None, *command: str,
                post=None) -> Fault:
    def setup(w: World, tmp: Path) -> list[str]:
        s = copy_store(w, tmp)
        breaks(s)
        return [a.replace("{store}", str(s)).replace("{out}", str(tmp / "o")).replace("{run}", str(w.run))
                for a in command]
    return Fault(name, setup, message, post=post)


def _nothing_outside(tmp: Path) -> str | None:
    """A name from the data that would escape --out must not have written anything, anywhere."""
    stray = [p for p in (tmp.parent / "escaped", Path("/tmp/renderocc-abs")) if p.exists()]
    written = [p for p in (tmp / "o").rglob("*") if p.is_file()] if (tmp / "o").exists() else []
    return f"written: {stray + written}" if stray or written else None


def _flip(path: Path) -> None:
    """Flip one byte a third of the way in: inside the data, not the footer a reader checks."""
    data = bytearray(own(path).read_bytes())
    data[len(data) // 3] ^= 0x5A
    path.write_bytes(bytes(data))


def _to_dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _to_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _zip_bomb_preds(w: World, tmp: Path, gt: bool = False) -> list[str]:
    """Valid predictions for every store sample (or an Occ3D gts/ folder), one of them a compressed
    .npz whose member inflates to 100 MB (a 160 kB file)."""
    from renderocc.store.reader import StoreReader

    reader = StoreReader(w.store)
    preds, gts = tmp / "pred", tmp / "gts"
    for i, tok in enumerate(reader.tokens()):
        scene = reader.sample(i)["scene_name"]
        (preds / scene / tok).mkdir(parents=True)
        np.savez_compressed(preds / scene / tok / "labels.npz", semantics=np.full((200, 200, 16), 17, np.uint8))
        (gts / scene / tok).mkdir(parents=True)
        ones = np.ones((200, 200, 16), np.uint8)
        np.savez_compressed(gts / scene / tok / "labels.npz", semantics=ones * 17, mask_camera=ones, mask_lidar=ones)
    bomb = (gts if gt else preds) / reader.sample(0)["scene_name"] / reader.tokens()[0] / "labels.npz"
    np.savez_compressed(bomb, semantics=np.zeros(100_000_000, np.uint8))
    return ["eval", "--pred", str(preds), "--gt", str(gts), "--out", str(tmp / "o"), "--split", "all", "--quiet"]


def _nan_ego(values: list) -> None:
    values[1][3] = float("nan")


def _ray_count(values: list) -> None:
    values[2] += 1


STORE = [
    store_fault("store validate: truncated rays Parquet", lambda s: truncate(next((s / "rays").glob("*"))),
                "rays/", "store", "validate", "{store}"),
    store_fault("qa: truncated rays Parquet", lambda s: truncate(next((s / "rays").glob("*"))),
                "differs from the manifest's", "qa", "--store", "{store}", "--out", "{out}", "--quiet",
                "--no-coverage"),
    store_fault("store info: truncated samples.parquet", lambda s: truncate(s / "samples.parquet"),
                "not readable Parquet", "store", "info", "{store}"),
    store_fault("store validate: truncated free beams", lambda s: truncate(next((s / "free_beams").glob("*"))),
                "free_beams", "store", "validate", "{store}"),
    store_fault("store validate: NaN ego pose (checksums consistent)",
                lambda s: rewrite_samples(s, "ego_pose", _nan_ego), "non-finite", "store", "validate", "{store}"),
    store_fault("store validate: ray count differs from the shard",
                lambda s: rewrite_samples(s, "ray_count", _ray_count), "says", "store", "validate", "{store}"),
    store_fault("store validate --no-data: missing image chunk", lambda s: chunk(s, "images", 1).unlink(),
                "chunk of sample 1 missing", "store", "validate", "{store}", "--no-data"),
    store_fault("viz: missing image chunk is not a black image", lambda s: chunk(s, "images", 0).unlink(),
                "chunk of sample 0 missing", "viz", "--store", "{store}", "--out", "{out}", "--quiet"),
    store_fault("eval: corrupt occ_gt chunk", lambda s: own(chunk(s, "occ_gt/semantics", 0)).write_bytes(
        b"garbage" * 10), "cannot be decoded", "eval", "--store", "{store}", "--ckpt", "{run}/last.pt",
        "--out", "{out}", "--split", "all", "--quiet"),
    store_fault("store validate: missing occ_gt chunk", lambda s: chunk(s, "occ_gt/mask_camera", 2).unlink(),
                "chunk of sample 2 missing", "store", "validate", "{store}", "--no-data"),
    *(store_fault(f"store validate: {what} is {kind}", lambda s, what=what, make=make: make(s / what),
                  "refused", "store", "validate", "{store}")
      for what in ("manifest.json", "samples.parquet")
      for kind, make in (("a symlink to /dev/zero", _to_dev_zero), ("a FIFO", _to_fifo))),
    store_fault("qa: one flipped byte inside a rays row group", lambda s: _flip(next((s / "rays").glob("*"))),
                "differs from the manifest's", "qa", "--store", "{store}", "--out", "{out}", "--quiet",
                "--no-coverage"),
    store_fault("train: one flipped byte inside a rays row group", lambda s: _flip(next((s / "rays").glob("*"))),
                "differs from the manifest's", "train", "--store", "{store}", "--out", "{out}", "--max-steps", "1",
                *TINY_ARGS),
    store_fault("train: one flipped byte inside a free-beams file",
                lambda s: _flip(next((s / "free_beams").glob("*"))), "differs from the manifest's", "train",
                "--store", "{store}", "--out", "{out}", "--max-steps", "1", *TINY_ARGS),
    store_fault("train: a free-beams shard that is a FIFO", lambda s: _to_fifo(next((s / "free_beams").glob("*"))),
                "refused", "train", "--store", "{store}", "--out", "{out}", "--max-steps", "1", *TINY_ARGS),
    store_fault("qa: a rays shard that is a symlink to /dev/zero",
                lambda s: _to_dev_zero(next((s / "rays").glob("*"))), "refused", "qa", "--store", "{store}",
                "--out", "{out}", "--quiet", "--no-coverage"),
    store_fault("store info: manifest not JSON", lambda s: (s / "manifest.json").write_text("{"),
                "not valid JSON", "store", "info", "{store}"),
    store_fault("store info: no manifest", lambda s: (s / "manifest.json").unlink(),
                "not a complete ray store", "store", "info", "{store}"),
    store_fault("store validate --deep: intact store", lambda s: None, None, "store", "validate", "{store}",
                "--deep"),
    *(store_fault(f"{cmd[0]}: scene name {name!r} from the data", lambda s, name=name: rewrite_samples(
        s, "scene_name", lambda v, name=name: v.__setitem__(slice(None), [name] * len(v))),
        "cannot name an output file", *cmd, post=lambda w, tmp: _nothing_outside(tmp))
      for name in ("../../escaped", "/tmp/renderocc-abs", "..", ".hidden", "a\nb")
      for cmd in (("predict", "--store", "{store}", "--ckpt", "{run}/last.pt", "--out", "{out}", "--quiet"),
                  ("viz", "--store", "{store}", "--out", "{out}", "--quiet", "--samples", "1"),
                  ("fit", "--store", "{store}", "--out", "{out}", "--quiet", "--indices", "0", "--iters", "1"))
      if not (cmd[0] == "viz" and name in ("..", ".hidden"))),  # viz prefixes the index: '0000_.._x' is one name
    Fault("eval --pred: a prediction that declares 100 MB (zip bomb)", lambda w, tmp: _zip_bomb_preds(w, tmp),
          "declares 100,000,"),
    Fault("eval --pred: a GT file that declares 100 MB (zip bomb)", lambda w, tmp: _zip_bomb_preds(w, tmp, gt=True),
          "declares 100,000,"),
    Fault("store info: gcs:// without gcsfs", lambda w, tmp: ["store", "info", "gcs://b/s"], "gcs:// needs gcsfs"),
    Fault("eval: --store s3:// without s3fs", lambda w, tmp: [
        "eval", "--store", "s3://b/s", "--ckpt", str(w.run / "last.pt"), "--out", str(tmp / "o")], "s3fs"),
    Fault("motion-masks: memory:// store", lambda w, tmp: ["prep", "motion-masks", "--store", "memory://none/s"],
          "not a complete ray store"),
]


# -- hostile tables, declared sizes, interrupted rewrites -------------------------------------------
def _scenes(edit: Callable[[list[dict]], None]) -> Callable[[Path], None]:
    return lambda d: edit_table(d, "scene", edit)


def _second_scene(name: str | None = None, first: str | None = None) -> Callable[[list[dict]], None]:
    """A second scene record (over the same samples): named `name` (default: the first's), the first
    renamed to `first` when given."""
    def edit(recs: list[dict]) -> None:
        if first is not None:
            recs[0]["name"] = first
        recs.append({**recs[0], "token": "a-second-scene", "name": recs[0]["name"] if name is None else name})
    return edit


def _rename_scene(name: str) -> Callable[[list[dict]], None]:
    def edit(recs: list[dict]) -> None:
        recs[0]["name"] = name
    return edit


def _category_index(k: int, value) -> Callable[[Path], None]:
    def edit(recs: list[dict]) -> None:
        recs[k]["index"] = recs[k + 1]["index"] if value == "next" else value
    return lambda d: edit_table(d, "category", edit)


def _scene_json_bytes(d: Path) -> None:
    p = own(d / "v1.0-mini" / "scene.json")
    p.write_bytes(p.read_bytes().replace(b'"scene-0001"', b'"scene-\xff\xfe"', 1))


def _lidarseg_uint16(d: Path) -> None:
    tok = key_record(d, "LIDAR_TOP")["token"]
    p = own(d / "lidarseg" / "v1.0-mini" / f"{tok}_lidarseg.bin")
    np.fromfile(p, np.uint8).astype(np.uint16).tofile(p)   # a crafted file: two bytes a label


PREP += [
    prep_fault("prep: two scenes with the same name", _scenes(_second_scene()), "appears twice"),
    prep_fault("prep: two scene names that make one shard name",
               _scenes(_second_scene("scene_0001", first="scene 0001")), "both make shard name"),
    prep_fault("prep: scene name with a path separator", _scenes(_rename_scene("a/../../b")), "path separator"),
    prep_fault("prep: scene name with a control character", _scenes(_rename_scene("scene\n0001")),
               "control character"),
    prep_fault("prep: scene name with a bidirectional override", _scenes(_rename_scene("scene\u202e1000")),
               "control character"),
    prep_fault("prep: scene name not valid UTF-8 (a lone surrogate)", _scenes(_rename_scene("scene-\udc80")),
               "not valid UTF-8"),
    prep_fault("prep: scene name '..'", _scenes(_rename_scene("..")), "'..'"),
    prep_fault("prep: scene.json not valid UTF-8", _scene_json_bytes, "scene.json is not valid UTF-8"),
    prep_fault("prep: lidarseg category index 300", _category_index(3, 300), "lidarseg index 300"),
    prep_fault("prep: lidarseg category index -1", _category_index(3, -1), "lidarseg index -1"),
    prep_fault("prep: two lidarseg categories with one index", _category_index(3, "next"), "both have lidarseg index"),
    prep_fault("prep: lidarseg file of two-byte labels", _lidarseg_uint16, "labels for"),
]


def _zarr_meta(array: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def breaks(s: Path) -> None:
        p = s / array / "zarr.json"
        meta = json.loads(p.read_text())
        edit(meta)
        p.write_text(json.dumps(meta))
    return breaks


def _shard_of_samples(meta: dict) -> None:
    meta["chunk_grid"]["configuration"]["chunk_shape"][0] = 4   # one read: four samples


def _huge_occ(meta: dict) -> None:
    meta["shape"][1:] = [20000, 20000, 16]
    meta["chunk_grid"]["configuration"]["chunk_shape"][1:] = [20000, 20000, 16]


def _manifest_edit(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def breaks(s: Path) -> None:
        m = json.loads((s / "manifest.json").read_text())
        edit(m)
        (s / "manifest.json").write_text(json.dumps(m))
    return breaks


def _rerecord_rays(s: Path, rays: Path) -> None:
    """Record a rewritten rays file's checksum, size and rows in the manifest: consistent but crafted."""
    import hashlib

    def edit(m: dict) -> None:
        sh = next(x for x in m["shards"] if x["name"] == rays.stem)
        sh.update(rays_sha256=hashlib.sha256(rays.read_bytes()).hexdigest(), rays_bytes=rays.stat().st_size,
                  num_rays=pq.ParquetFile(rays).metadata.num_rows)
    _manifest_edit(edit)(s)


def _extra_ray(s: Path) -> None:
    """Row group 0 of the rays file gains a row the samples table does not count."""
    rays = next((s / "rays").glob("*.parquet"))
    pf = pq.ParquetFile(rays)
    groups = [pf.read_row_group(g) for g in range(pf.num_row_groups)]
    groups[0] = pa.concat_tables([groups[0], groups[0].slice(0, 1)])
    with pq.ParquetWriter(rays, pf.schema_arrow) as w:
        for t in groups:
            w.write_table(t, row_group_size=len(t))
    _rerecord_rays(s, rays)


def _extra_sample_row(s: Path) -> None:
    t = pq.read_table(s / "samples.parquet")
    pq.write_table(pa.concat_tables([t, t.slice(0, 1)]), s / "samples.parquet", compression="zstd")
    import hashlib

    _manifest_edit(lambda m: m["samples"].update(
        sha256=hashlib.sha256((s / "samples.parquet").read_bytes()).hexdigest()))(s)


def _lying_frame(path: Path) -> None:
    """The chunk's zstd frame header claims 4 GiB of content (its data unchanged): what numcodecs
    would allocate before finding out."""
    data = bytearray(own(path).read_bytes())
    assert data[:4] == b"\x28\xb5\x2f\xfd" and data[4] >> 6 == 2 and data[4] & 0x20   # 4-byte size, one segment
    data[5:9] = (2 ** 32 - 1).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def _interrupted_rerun(m: dict) -> None:
    """What a `prep motion-masks` rerun killed after its first shard leaves in the manifest."""
    m["motion_masks"] = {"version": 1}
    m["in_progress"] = {"command": "prep motion-masks", "started": "2000-01-01T00:00:00+00:00", "replaces": True,
                        "shards_done": [m["shards"][0]["name"]], "pending": {}}


STORE += [
    store_fault("viz: images zarr.json declares four samples a read", _zarr_meta("images", _shard_of_samples),
                "images/zarr.json", "viz", "--store", "{store}", "--out", "{out}", "--quiet", "--samples", "1"),
    store_fault("eval: occ_gt zarr.json declares a 20000x20000 grid", _zarr_meta("occ_gt/semantics", _huge_occ),
                "occ_gt/semantics/zarr.json", "eval", "--store", "{store}", "--ckpt", "{run}/last.pt", "--out",
                "{out}", "--split", "all", "--quiet"),
    store_fault("eval: an occ_gt chunk whose zstd frame declares 4 GiB", lambda s: _lying_frame(
        chunk(s, "occ_gt/semantics", 0)), "declares 4294967295 bytes", "eval", "--store", "{store}", "--ckpt",
        "{run}/last.pt", "--out", "{out}", "--split", "all", "--quiet"),
    store_fault("store validate: occ_gt zarr.json declares a gzip codec", _zarr_meta(
        "occ_gt/mask_lidar", lambda m: m["codecs"].__setitem__(1, {"name": "gzip", "configuration": {"level": 1}})),
        "not the ones prep writes", "store", "validate", "{store}"),
    store_fault("store validate: images zarr.json declares another shape",
                _zarr_meta("images", lambda m: m["shape"].__setitem__(0, 10 ** 9)), "images/zarr.json", "store",
                "validate", "{store}"),
    store_fault("qa: a rays row group declares a ray samples.parquet does not count (checksums consistent)",
                _extra_ray, "row group 0 declares", "qa", "--store", "{store}", "--out", "{out}", "--quiet",
                "--no-coverage"),
    store_fault("store info: samples.parquet declares a row the manifest does not count", _extra_sample_row,
                "declares 5 rows", "store", "info", "{store}"),
    store_fault("store validate: a sample declares more rays than its pixels",
                lambda s: rewrite_samples(s, "ray_count", lambda v: v.__setitem__(0, 10 ** 12)),
                "more than the", "store", "validate", "{store}"),
    store_fault("store info: manifest points the 2D masks outside the store",
                _manifest_edit(lambda m: m.update(semantic_masks={"array": "../../elsewhere"})),
                "semantic_masks.array", "store", "info", "{store}"),
    store_fault("store info: manifest shard name '../x'",
                _manifest_edit(lambda m: m["shards"][0].update(name="../x")), "is not a file name",
                "store", "info", "{store}"),
    store_fault("train refuses a store a killed motion-masks rerun left", _manifest_edit(_interrupted_rerun),
                "interrupted `prep motion-masks`", "train", "--store", "{store}", "--out", "{out}", "--max-steps",
                "1", *TINY_ARGS),
    store_fault("store validate names a store a killed motion-masks rerun left", _manifest_edit(_interrupted_rerun),
                "mixes the two runs", "store", "validate", "{store}", "--no-data"),
]


def write_masks(w: World, out: Path, value: int = 3) -> Path:
    """A PNG mask (class `value`, a band unlabelled) for every key-frame camera image of the dataroot."""
    return write_key_frame_masks(w.dataroot, out, value)


def _masked_store(w: World, tmp: Path) -> Path:
    """A copy of the store with masks of class 3 imported."""
    s = copy_store(w, tmp)
    res = CliRunner().invoke(main, ["prep", "masks", "--store", str(s), "--masks", str(write_masks(w, tmp / "m3")),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    return s


def _masks_args(s: Path, masks: Path) -> list[str]:
    return ["prep", "masks", "--store", str(s), "--masks", str(masks), "--no-progress"]


def _masks_bad_class(w: World, tmp: Path) -> list[str]:
    s = _masked_store(w, tmp)
    masks = write_masks(w, tmp / "m5", 5)
    import cv2

    victim = sorted(masks.rglob("*.png"))[-1]
    m = cv2.imread(str(victim), cv2.IMREAD_UNCHANGED)
    m[5, 5] = 200
    cv2.imwrite(str(victim), m)
    return _masks_args(s, masks)


def _masks_after_kill(w: World, tmp: Path) -> list[str]:
    """What a kill during an import leaves (a new array folder the manifest does not name): the next
    import must replace the masks and delete it."""
    s = _masked_store(w, tmp)
    shutil.copytree(next(s.glob("semantic_mask-*")), s / "semantic_mask-0badc0de")
    return _masks_args(s, write_masks(w, tmp / "m5", 5))


def _masks_are(tmp: Path, value: int) -> str | None:
    """The store holds masks of class `value` (and 255) only, in its one mask folder, and validates."""
    from renderocc.store.reader import StoreReader
    from renderocc.store.validate import notes

    s = tmp / "store"
    r = StoreReader(s)
    folders = sorted(p.name for p in s.glob("semantic_mask*"))
    if not r.has_semantic_masks or folders != [r.semantic_mask_array]:
        return f"mask folders {folders}, manifest names {r.semantic_mask_array}"
    values = set(np.unique(r.semantic_mask(0)).tolist())
    return (None if values == {value, 255} else f"masks hold {values}") or store_ok(s) or \
        (f"notes: {notes(str(s))}" if notes(str(s)) else None)


STORE += [
    Fault("prep masks: a mask of class 200 keeps the previous masks", _masks_bad_class, "outside the class map",
          post=lambda w, tmp: _masks_are(tmp, 3)),
    Fault("prep masks: an import after a killed one replaces the masks and its leftover", _masks_after_kill, None,
          post=lambda w, tmp: _masks_are(tmp, 5)),
    Fault("prep masks: --masks folder missing", lambda w, tmp: _masks_args(copy_store(w, tmp), tmp / "none"),
          "--masks folder not found"),
    Fault("prep masks: full disk at the switch keeps the previous masks",
          lambda w, tmp: _masks_args(_masked_store(w, tmp), write_masks(w, tmp / "m5", 5)), "File too large",
          post=lambda w, tmp: orphans(tmp / "store") or _masks_are(tmp, 3), limit_file_bytes=4_000),
]


# -- camera sweeps (unlabelled camera frames between keyframes) -------------------------------------
_SWEEP_WORLD: dict[str, Path] = {}


def sweep_dataroot(w: World) -> Path:
    """A dataroot with camera sweeps (1 scene x 3 keyframes, 2 per interval), written once for the module."""
    if "root" not in _SWEEP_WORLD:
        from renderocc.synth.writer import write_dataset

        _SWEEP_WORLD["root"] = write_dataset(w.run.parent / "camera-sweeps", scenes=1, samples_per_scene=3, seed=0,
                                             image_size=(160, 90), sweeps_per_sample=1, workers=1,
                                             camera_sweeps_per_sample=2)
    return _SWEEP_WORLD["root"]


def sweep_store(w: World) -> Path:
    """`sweep_dataroot` prepped with --camera-sweeps 2, once for the module (copy before breaking it)."""
    if "store" not in _SWEEP_WORLD:
        out = w.run.parent / "camera-sweeps-store"
        res = CliRunner().invoke(main, prep_args(sweep_dataroot(w), out, "--camera-sweeps", "2"))
        assert res.exit_code == 0, res.output
        _SWEEP_WORLD["store"] = out
    return _SWEEP_WORLD["store"]


def sweep_file(root: Path, channel: str, k: int = 0) -> Path:
    """The k-th sweep file of a channel (time order)."""
    return sorted((root / "sweeps" / channel).iterdir())[k]


def sweep_record(root: Path, channel: str, k: int = 0) -> dict:
    (sds,) = _tables(root, "sample_data")
    name = sweep_file(root, channel, k).name
    return next(sd for sd in sds if sd["filename"].endswith(name))


def sweep_prep_fault(name: str, breaks: Callable[[Path], None], message: str | None, *more: str,
                     post=None) -> Fault:
    def setup(w: World, tmp: Path) -> list[str]:
        d = tmp / "data"
        shutil.copytree(sweep_dataroot(w), d, copy_function=os.link, ignore=shutil.ignore_patterns("synth_truth"))
        breaks(d)
        return prep_args(d, tmp / "out", "--camera-sweeps", "2", *more)
    return Fault(name, setup, message, post=post or (lambda w, tmp: nothing_sealed(tmp / "out")))


def sweep_store_fault(name: str, breaks: Callable[[Path], None], message: str | None, *command: str) -> Fault:
    def setup(w: World, tmp: Path) -> list[str]:
        s = tmp / "store"
        shutil.copytree(sweep_store(w), s)
        breaks(s)
        return [a.replace("{store}", str(s)).replace("{out}", str(tmp / "o")).replace("{data}", str(sweep_dataroot(w)))
                for a in command]
    return Fault(name, setup, message)


def _sweep_skip_recorded(w: World, tmp: Path) -> str | None:
    m = json.loads((tmp / "out" / "manifest.json").read_text())
    sk = m["camera_sweeps"]["skipped"]
    if m["camera_sweeps"]["count"] != 3 or len(sk) != 1 or "truncated JPEG" not in sk[0]["reason"]:
        return f"sweep skip not recorded: {m['camera_sweeps']}"
    return store_ok(tmp / "out")


def _sweep_resume_truncated(w: World, tmp: Path) -> list[str]:
    """A finished shard whose sweep rays were truncated after a kill (before the seal): the rerun redoes it."""
    d = sweep_dataroot(w)
    out = tmp / "out"
    res = CliRunner().invoke(main, prep_args(d, out, "--camera-sweeps", "2"))
    assert res.exit_code == 0, res.output
    for name in ("manifest.json", "samples.parquet", "sweeps.parquet"):
        (out / name).unlink()
    truncate(next((out / "sweep_rays").glob("*.parquet")))
    return prep_args(d, out, "--camera-sweeps", "2")


PREP += [
    sweep_prep_fault("prep: missing camera sweep image", lambda d: sweep_file(d, "CAM_BACK", 1).unlink(),
                     "image missing"),
    sweep_prep_fault("prep: truncated camera sweep JPEG", lambda d: truncate(sweep_file(d, "CAM_FRONT", 2)),
                     "truncated JPEG"),
    sweep_prep_fault("prep: empty camera sweep JPEG",
                     lambda d: own(sweep_file(d, "CAM_FRONT_LEFT", 0)).write_bytes(b""), "image"),
    sweep_prep_fault("prep: missing LiDAR sweep of a camera sweep", lambda d: [
        p.unlink() for p in sorted((d / "sweeps" / "LIDAR_TOP").iterdir())], "LiDAR file missing"),
    sweep_prep_fault("prep: NaN coordinates in a camera sweep's LiDAR sweep", lambda d: [
        _nan_points(p) for p in sorted((d / "sweeps" / "LIDAR_TOP").iterdir())], "non-finite coordinates"),
    sweep_prep_fault("prep: a camera sweep's LiDAR sweep of odd size", lambda d: [
        truncate(p, 0.3333) for p in sorted((d / "sweeps" / "LIDAR_TOP").iterdir())], "corrupt point cloud"),
    sweep_prep_fault("prep: camera sweep zero-quaternion ego pose", lambda d: set_record(
        d, "ego_pose", sweep_record(d, "CAM_FRONT_RIGHT", 1)["ego_pose_token"], "rotation", [0, 0, 0, 0]),
        "unit quaternion"),
    *(sweep_prep_fault(f"prep: --camera-sweeps {value}", lambda d: None, "--camera-sweeps", "--camera-sweeps",
                       value) for value in ("-1", "abc", "21", "1.5")),
    sweep_prep_fault("prep: --camera-sweeps, --on-bad-sample skip (truncated sweep JPEG)",
                     lambda d: truncate(sweep_file(d, "CAM_FRONT", 2)), None, "--on-bad-sample", "skip",
                     post=_sweep_skip_recorded),
    Fault("prep: rerun after a finished shard's sweep rays were truncated", _sweep_resume_truncated, None,
          post=lambda w, tmp: store_ok(tmp / "out")),
]


STORE += [
    sweep_store_fault("store validate: truncated sweep rays Parquet",
                      lambda s: truncate(next((s / "sweep_rays").glob("*"))), "sweep_rays/", "store", "validate",
                      "{store}"),
    sweep_store_fault("store validate: one flipped byte inside a sweep rays row group",
                      lambda s: _flip(next((s / "sweep_rays").glob("*"))), "sweep_rays/", "store", "validate",
                      "{store}"),
    sweep_store_fault("store validate: sweeps.parquet missing", lambda s: (s / "sweeps.parquet").unlink(),
                      "sweeps.parquet", "store", "validate", "{store}"),
    sweep_store_fault("store validate: truncated sweeps.parquet", lambda s: truncate(s / "sweeps.parquet"),
                      "sweeps.parquet", "store", "validate", "{store}"),
    sweep_store_fault("store validate --no-data: missing sweep image chunk",
                      lambda s: chunk(s, "sweep_images", 1).unlink(), "sweep_images: chunk of sample 1 missing",
                      "store", "validate", "{store}", "--no-data"),
    sweep_store_fault("store validate: corrupt sweep image chunk",
                      lambda s: own(chunk(s, "sweep_images", 2)).write_bytes(b"garbage" * 10), "sweep_images",
                      "store", "validate", "{store}", "--deep"),
    sweep_store_fault("store validate: sweep rays of another frame count", _manifest_edit(
        lambda m: m["shards"][0].update(num_sweeps=3)), "sweep", "store", "validate", "{store}"),
    sweep_store_fault("prep motion-masks: one flipped byte inside a sweep rays row group",
                      lambda s: _flip(next((s / "sweep_rays").glob("*"))), "differs from the manifest's",
                      "prep", "motion-masks", "--store", "{store}", "--dataroot", "{data}", "--no-progress"),
    sweep_store_fault("prep motion-masks: a store with camera sweeps", lambda s: None, None,
                      "prep", "motion-masks", "--store", "{store}", "--dataroot", "{data}", "--no-progress"),
    sweep_store_fault("store validate --deep: intact store with camera sweeps", lambda s: None, None,
                      "store", "validate", "{store}", "--deep"),
]


# -- checkpoints, training, evaluation, synth ------------------------------------------------------
def _ckpt_with(edit: Callable[[dict], object]) -> Callable[[World, Path], list[str]]:
    def setup(w: World, tmp: Path) -> list[str]:
        ck = torch.load(w.run / "last.pt", weights_only=True)
        ck = edit(ck) or ck
        torch.save(ck, tmp / "last.pt")
        return ["predict", "--store", w.store, "--ckpt", str(tmp / "last.pt"), "--out", str(tmp / "o"), "--quiet"]
    return setup


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _unscorable_grid(c: dict) -> None:
    """A checkpoint whose resolved grid (0.5 x 0.5 x 0.4 m) no Occ3D label grid can score."""
    c["config"]["grid"].update(voxel_size=[0.5, 0.5, 0.4], shape=[160, 160, 16])


def _pred_special(w: World, tmp: Path, make: Callable[[Path], None]) -> list[str]:
    """Predictions for the store's samples, the first a special file instead of an .npz."""
    from renderocc.store.reader import StoreReader

    reader = StoreReader(w.store)
    for i, tok in enumerate(reader.tokens()):
        d = tmp / "pred" / reader.sample(i)["scene_name"] / tok
        d.mkdir(parents=True)
        if i == 0:
            make(d / "labels.npz")
        else:
            np.savez(d / "labels.npz", semantics=np.full((200, 200, 16), 17, np.uint8))
    return ["eval", "--pred", str(tmp / "pred"), "--store", w.store, "--out", str(tmp / "o"), "--split", "all",
            "--quiet"]


def _crafted(w: World, tmp: Path) -> list[str]:
    torch.save({"config": {}, "model": _Payload(str(tmp / "marker"))}, tmp / "last.pt")
    return ["eval", "--store", w.store, "--ckpt", str(tmp / "last.pt"), "--out", str(tmp / "o"), "--split", "all"]


def _resume(store_edit: Callable[[Path], None] | None, *more: str) -> Callable[[World, Path], list[str]]:
    def setup(w: World, tmp: Path) -> list[str]:
        run = tmp / "run"
        shutil.copytree(w.run, run)
        store = w.store
        if store_edit:
            s = copy_store(w, tmp)
            store_edit(s)
            store = str(s)
        return ["train", "--store", store, "--out", str(run), "--resume", "--max-steps", "2", *TINY_ARGS, *more]
    return setup


def _touch_manifest(s: Path) -> None:
    m = json.loads((s / "manifest.json").read_text())
    m["created"] = "2000-01-01T00:00:00+00:00"
    (s / "manifest.json").write_text(json.dumps(m))


def _out_cmd(*command: str) -> Callable[[World, Path], list[str]]:
    return lambda w, tmp: [a.replace("{store}", w.store).replace("{run}", str(w.run)).replace("{tmp}", str(tmp))
                           for a in command]


def _train_full_disk(w: World, tmp: Path) -> list[str]:
    """The checkpoint's temp file is /dev/full: every write to it fails with ENOSPC (a real full disk)."""
    (tmp / "run").mkdir()
    (tmp / "run" / ".tmp-last.pt").symlink_to("/dev/full")
    return ["train", "--store", w.store, "--out", str(tmp / "run"), "--max-steps", "1", *TINY_ARGS]


RUNS = [
    Fault("eval: crafted pickle checkpoint", _crafted, "refused",
          post=lambda w, tmp: "the pickle ran code" if (tmp / "marker").exists() else None),
    Fault("predict: --ckpt is a folder", lambda w, tmp: [
        "predict", "--store", w.store, "--ckpt", str(tmp), "--out", str(tmp / "o"), "--quiet"], "is a folder"),
    Fault("predict: --ckpt is a text file (not a checkpoint, no security refusal)", lambda w, tmp: (
        (tmp / "notes.pt").write_text("not a checkpoint\n"),
        ["predict", "--store", w.store, "--ckpt", str(tmp / "notes.pt"), "--out", str(tmp / "o"), "--quiet"])[-1],
        "not a readable renderocc checkpoint", post=lambda w, tmp: None),
    Fault("predict: --ckpt is /dev/zero", lambda w, tmp: [
        "predict", "--store", w.store, "--ckpt", "/dev/zero", "--out", str(tmp / "o"), "--quiet"],
        "not a regular file"),
    Fault("predict: checkpoint config not a table", _ckpt_with(lambda c: c.update(config=[1, 2])), "not a table"),
    Fault("predict: checkpoint without weights", _ckpt_with(lambda c: c.pop("model") and None), "missing `model`"),
    Fault("predict: checkpoint config with a wrong type", _ckpt_with(
        lambda c: c["config"]["optim"].update(lr="fast")), "optim.lr"),
    Fault("predict: checkpoint whose weights are all NaN", _ckpt_with(
        lambda c: [t.fill_(float("nan")) for t in c["ema"].values() if t.is_floating_point()] and None),
        "not finite"),
    Fault("predict: checkpoint weights of another shape", _ckpt_with(
        lambda c: c["ema"].update({k: torch.zeros(1) for k in list(c["ema"])[:1]})), "weights do not fit"),
    Fault("predict: truncated checkpoint", lambda w, tmp: (
        shutil.copy(w.run / "last.pt", tmp / "last.pt"), truncate(tmp / "last.pt"),
        ["predict", "--store", w.store, "--ckpt", str(tmp / "last.pt"), "--out", str(tmp / "o")])[-1],
        "not a readable renderocc checkpoint"),
    Fault("train --resume on another store", _resume(_touch_manifest), "another store"),
    Fault("train --resume with another config", _resume(None, "--set", "optim.lr=0.5"), "another config"),
    Fault("train --set of the wrong type", _out_cmd("train", "--store", "{store}", "--out", "{tmp}/r",
                                                  "--set", "optim.lr=fast"), "optim.lr expects float"),
    *(Fault(f"{cmd[0]} {cmd[-2]} {cmd[-1]}", _out_cmd(*cmd), f"{cmd[-2]}")
      for cmd in [("prep", "motion-masks", "--store", "{store}", "--speed-threshold", "nan"),
                  ("prep", "motion-masks", "--store", "{store}", "--margin", "inf"),
                  ("qa", "--store", "{store}", "--out", "{tmp}/q", "--quiet", "--dark-luma", "nan"),
                  ("qa", "--store", "{store}", "--out", "{tmp}/q", "--quiet", "--fail-under", "labelled_pixels=nan"),
                  ("fit", "--store", "{store}", "--out", "{tmp}/f", "--quiet", "--lr", "nan"),
                  ("predict", "--store", "{store}", "--ckpt", "{run}/last.pt", "--out", "{tmp}/p",
                   "--min-transmittance", "nan")]),
    *(Fault(f"{cmd[0]} --device {dev}", _out_cmd(*cmd, "--device", dev), f"--device {dev}",
            post=lambda w, tmp: "an output folder was made" if any(tmp.iterdir()) else None)
      for dev in ("tpu", "cuda:x") for cmd in [
          ("train", "--store", "{store}", "--out", "{tmp}/r"),
          ("eval", "--store", "{store}", "--ckpt", "{run}/last.pt", "--out", "{tmp}/e"),
          ("predict", "--store", "{store}", "--ckpt", "{run}/last.pt", "--out", "{tmp}/p"),
          ("fit", "--store", "{store}", "--out", "{tmp}/f", "--indices", "0")]),
    Fault("fit --set grid.voxel_size=0.32 (finer than the store: no fit counterpart)",
          _out_cmd("fit", "--store", "{store}", "--out", "{tmp}/f", "--indices", "0", "--quiet", "--set",
                   "grid.voxel_size=0.32"), "finer than the store's"),
    Fault("train --set grid.pc_range of five numbers", _out_cmd("train", "--store", "{store}", "--out", "{tmp}/r",
                                                                "--set", "grid.pc_range=[-40, -40, -1, 40, 40]"),
          "expected 6 finite numbers"),
    Fault("qa --fail-under key=inf", _out_cmd("qa", "--store", "{store}", "--out", "{tmp}/q", "--quiet",
                                              "--fail-under", "labelled_pixels=inf"), "finite number"),
    Fault("predict --store-grid: checkpoint of a grid the store cannot score",
          lambda w, tmp: [*_ckpt_with(_unscorable_grid)(w, tmp), "--store-grid"], "cannot be scored against"),
    Fault("eval: checkpoint of a grid the store cannot score",
          lambda w, tmp: ["eval", *_ckpt_with(_unscorable_grid)(w, tmp)[1:]], "cannot be scored against"),
    Fault("predict: checkpoint config with a NaN voxel size", _ckpt_with(
        lambda c: c["config"]["grid"].update(voxel_size=[float("nan")] * 3)), "grid.voxel_size must be finite"),
    Fault("eval --pred: a prediction that is a FIFO", lambda w, tmp: _pred_special(w, tmp, os.mkfifo),
          "not a regular file"),
    Fault("eval --pred: a prediction that is a symlink to /dev/zero",
          lambda w, tmp: _pred_special(w, tmp, lambda p: p.symlink_to("/dev/zero")), "not a regular file"),
    *(Fault(f"train --set {item}", _out_cmd("train", "--store", "{store}", "--out", "{tmp}/r", "--set", item),
            message) for item, message in [
        ("optim.lr=-inf", "optim.lr must be finite"), ("loss.occ3d=nan", "loss.occ3d must be finite"),
        ("render.near=inf", "render.near must be finite"), ("data.aux_weight=nan", "data.aux_weight must be finite"),
        ("data.batch_size=100000", "GiB per step")]),
    Fault("train --pretrained is a folder", _out_cmd("train", "--store", "{store}", "--out", "{tmp}/r",
                                                     "--pretrained", "{tmp}", *TINY_ARGS), "is a directory"),
    Fault("predict --ckpt /dev/null", _out_cmd("predict", "--store", "{store}", "--ckpt", "/dev/null", "--out",
                                              "{tmp}/p"), "not a regular file"),
    Fault("eval --ckpt is a FIFO", lambda w, tmp: (os.mkfifo(tmp / "fifo.pt"), [
        "eval", "--store", w.store, "--ckpt", str(tmp / "fifo.pt"), "--out", str(tmp / "e")])[-1],
        "not a regular file"),
    Fault("train --set of an unknown key", _out_cmd("train", "--store", "{store}", "--out", "{tmp}/r",
                                                  "--set", "optim.nosuch=1"), "nosuch"),
    *(Fault(f"train --set {item}", _out_cmd("train", "--store", "{store}", "--out", "{tmp}/r", "--set", item),
            message, post=lambda w, tmp: "a run folder was made" if (tmp / "r").exists() else None)
      for item, message in [
          ("optim.lr=nan", "optim.lr must be finite"), ("optim.lr=inf", "optim.lr must be finite"),
          ("loss.class_weights=[1.0, nan]", "loss.class_weights must be finite"),
          ("model.depth_bins=[45.0, 1.0, 20]", "depth_bins min 45 must be below max 1"),
          ("data.resize_range=[1.2, 0.9]", "resize_range"),
          ("render.step=1e-7", "samples per ray"), ("data.rays=2000000000", "GiB per step"),
          ("grid.voxel_size=0.004", "too small"), ("grid.voxel_size=[0.5, 0.5, 0.4]", "cannot be scored"),
          ("grid.pc_range=[-40, -40, 5.4, 40, 40, -1]", "min < max")]),
    Fault("train: unwritable --out", _out_cmd("train", "--store", "{store}", "--out", UNWRITABLE, "--max-steps",
                                              "1", *TINY_ARGS), UNWRITABLE_NAMED),
    Fault("eval: unwritable --out", _out_cmd("eval", "--store", "{store}", "--ckpt", "{run}/last.pt", "--out",
                                             UNWRITABLE, "--split", "all", "--quiet"), UNWRITABLE_NAMED),
    Fault("predict: unwritable --out", _out_cmd("predict", "--store", "{store}", "--ckpt", "{run}/last.pt",
                                                "--out", UNWRITABLE, "--quiet"), UNWRITABLE_NAMED),
    Fault("viz: unwritable --out", _out_cmd("viz", "--store", "{store}", "--out", UNWRITABLE, "--quiet"),
          UNWRITABLE_NAMED),
    Fault("qa: unwritable --out", _out_cmd("qa", "--store", "{store}", "--out", UNWRITABLE, "--quiet",
                                           "--no-coverage"), UNWRITABLE_NAMED),
    Fault("fit: unwritable --out", _out_cmd("fit", "--store", "{store}", "--out", UNWRITABLE, "--indices", "0",
                                            "--quiet"), UNWRITABLE_NAMED),
    Fault("eval: --out under a regular file", lambda w, tmp: (
        (tmp / "afile").write_text("x"), ["eval", "--store", w.store, "--ckpt", str(w.run / "last.pt"),
                                          "--out", str(tmp / "afile" / "o"), "--split", "all"])[-1], "afile"),
    Fault("predict: full disk leaves no partial file", lambda w, tmp: [
        "predict", "--store", w.store, "--ckpt", str(w.run / "last.pt"), "--out", str(tmp / "p"), "--quiet"],
        "File too large", post=lambda w, tmp: orphans(tmp / "p"), limit_file_bytes=4_000),
    Fault("train: full disk", _train_full_disk, "disk full", post=lambda w, tmp: orphans(tmp / "run")),
    Fault("synth: --version ../../escape", _out_cmd("synth", "nuscenes", "--out", "{tmp}/s", "--version",
                                                    "../../escape"), "plain folder name",
          post=lambda w, tmp: "wrote outside --out" if (tmp.parent / "escape").exists() else None),
    Fault("synth: --scenes 100000000", _out_cmd("synth", "nuscenes", "--out", "{tmp}/s", "--scenes",
                                                "100000000"), "--scenes must be between"),
    Fault("synth: --samples-per-scene 0", _out_cmd("synth", "nuscenes", "--out", "{tmp}/s",
                                                   "--samples-per-scene", "0"), "--samples-per-scene"),
    Fault("synth: --image-size 100000x100000", _out_cmd("synth", "nuscenes", "--out", "{tmp}/s", "--image-size",
                                                        "100000x100000"), "at most 4096"),
    Fault("synth: unwritable --out", _out_cmd("synth", "nuscenes", "--out", UNWRITABLE), "proc"),
]

FAULTS = PREP + STORE + RUNS


# -- running and classifying ----------------------------------------------------------------------
def run_cli(args: list[str], limit_file_bytes: int | None) -> tuple[int, str, bool]:
    """(exit code, output, raised an unexpected exception)."""
    if limit_file_bytes is None:
        res = CliRunner().invoke(main, args)
        crashed = res.exception is not None and not isinstance(res.exception, SystemExit)
        return res.exit_code, res.output, crashed
    # the renderer extension is loaded before the limit: its build cache is never touched by it
    code = ("import contextlib, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "from renderocc.cuda import loader\n"
            "with contextlib.suppress(loader.ExtensionUnavailable): loader.load()\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_file_bytes}, {limit_file_bytes}))\n"
            "from renderocc.cli import main; main(sys.argv[1:], prog_name='renderocc')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    return p.returncode, p.stdout + p.stderr, "Traceback" in p.stderr


def classify(fault: Fault, code: int, output: str, crashed: bool, post_problem: str | None) -> str:
    if crashed or "Traceback (most recent call last)" in output:
        return "traceback"
    if fault.message is None:
        return "handled" if code == 0 and post_problem is None else "silently wrong"
    errors = [line for line in output.replace("\r", "\n").splitlines() if line.startswith("Error")]
    if code == 0 or len(errors) != 1 or fault.message.lower() not in errors[0].lower() or post_problem:
        return "silently wrong"
    return "clear error"


SLOW_KINDS = ("prep:", "prep masks", "train:", "synth:")  # commands that rebuild a dataroot, a store or a run


@pytest.mark.parametrize("fault", [pytest.param(f, id=f.name, marks=[pytest.mark.slow] if f.name.startswith(SLOW_KINDS)
                                                else []) for f in FAULTS])
def test_fault(fault: Fault, world: World, tmp_path):
    args = fault.setup(world, tmp_path)
    code, output, crashed = run_cli(args, fault.limit_file_bytes)
    post_problem = fault.post(world, tmp_path) if fault.post and not crashed else None
    verdict = classify(fault, code, output, crashed, post_problem)
    RESULTS[fault.name] = verdict
    assert verdict in ("clear error", "handled"), f"{verdict} (exit {code}; {post_problem}):\n{output[-3000:]}"


def test_enough_fault_cases():
    assert len(FAULTS) >= 40 and len({f.name for f in FAULTS}) == len(FAULTS)
