"""nuScenes table records (category, attribute, visibility, sensor, ...) for a synthetic dataset.

Only the record shapes live here; which records exist is decided by the writer. Tokens are
deterministic hashes of (seed, kind, key) so a seed always gives the same dataset.
"""

from __future__ import annotations

import hashlib

from renderocc.classes import LIDARSEG_STANDARD_ORDER

ATTRIBUTES = ["vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider",
              "cycle.without_rider", "pedestrian.sitting_lying_down", "pedestrian.standing",
              "pedestrian.moving"]
VISIBILITY = [("1", "v0-40", "visibility of whole object is between 0 and 40%"),
              ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
              ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
              ("4", "v80-100", "visibility of whole object is between 80 and 100%")]


def make_token(seed: int, *key) -> str:
    """32-hex token, a pure function of the seed and the key (deterministic datasets)."""
    return hashlib.md5(":".join(map(str, (seed,) + key)).encode()).hexdigest()


def visibility_token(fraction: float) -> str:
    """nuScenes visibility bin of the visible fraction of an object in the six images."""
    for tok, hi in (("1", 0.4), ("2", 0.6), ("3", 0.8)):
        if fraction <= hi:
            return tok
    return "4"


def category_table(seed: int, names: list[str] | None = None) -> list[dict]:
    """Lidarseg categories with their `index` (default: the 32 standard ones, in standard order)."""
    return [{"token": make_token(seed, "category", name), "name": name,
             "description": f"nuScenes-lidarseg category {name}", "index": i}
            for i, name in enumerate(names or LIDARSEG_STANDARD_ORDER)]


def attribute_table(seed: int) -> list[dict]:
    return [{"token": make_token(seed, "attribute", a), "name": a, "description": a} for a in ATTRIBUTES]


def visibility_table() -> list[dict]:
    return [{"token": t, "level": lvl, "description": d} for t, lvl, d in VISIBILITY]


def sensor_record(seed: int, channel: str, modality: str) -> dict:
    return {"token": make_token(seed, "sensor", channel), "channel": channel, "modality": modality}


def calibrated_sensor_record(token: str, sensor_token: str, translation, rotation, intrinsic) -> dict:
    return {"token": token, "sensor_token": sensor_token, "translation": [float(v) for v in translation],
            "rotation": [float(v) for v in rotation],
            "camera_intrinsic": [[float(v) for v in row] for row in intrinsic]}


def ego_pose_record(token: str, timestamp: int, translation, rotation) -> dict:
    return {"token": token, "timestamp": int(timestamp), "rotation": [float(v) for v in rotation],
            "translation": [float(v) for v in translation]}


def sample_data_record(token: str, sample_token: str, calib_token: str, timestamp: int, fileformat: str,
                       key: bool, size: tuple[int, int], filename: str) -> dict:
    return {"token": token, "sample_token": sample_token, "ego_pose_token": token,
            "calibrated_sensor_token": calib_token, "timestamp": int(timestamp), "fileformat": fileformat,
            "is_key_frame": key, "height": size[1], "width": size[0], "filename": filename,
            "prev": "", "next": ""}


def link(records: list[dict]) -> None:
    """Fill prev/next of an ordered chain of records."""
    for a, b in zip(records[:-1], records[1:], strict=True):
        a["next"], b["prev"] = b["token"], a["token"]
