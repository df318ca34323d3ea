"""Per-class appearance: base colour, procedural texture and LiDAR reflectivity.

Colours are per class (with small per-object jitter) so that a CNN can learn semantics from
the images; textures come from world coordinates so they are consistent across views.
"""

from __future__ import annotations

import numpy as np

from renderocc.classes import LIDARSEG_STANDARD_ORDER

# Texture ids understood by camera.shade().
TEX_PLAIN, TEX_ASPHALT, TEX_TILES, TEX_GRASS, TEX_GRAVEL, TEX_FACADE, TEX_FOLIAGE = range(7)
TEX_PAINT, TEX_GLASS, TEX_TYRE, TEX_CLOTH, TEX_BARK, TEX_STRIPES = range(7, 13)

# Airside (apron) categories, after the 32 standard ones in the synthetic lidarseg index space.
AIRSIDE_NAMES: list[str] = [
    "airside.aircraft", "airside.gse.tug", "airside.gse.belt_loader", "airside.gse.fuel_truck",
    "airside.gse.baggage_cart", "airside.jet_bridge", "airside.person", "airside.cone",
    "airside.apron", "airside.marking", "airside.grass", "airside.terminal", "airside.light_pole",
]
SYNTH_NAMES: list[str] = LIDARSEG_STANDARD_ORDER + AIRSIDE_NAMES  # index = synthetic lidarseg index
LABEL = {name: i for i, name in enumerate(SYNTH_NAMES)}

# name -> (RGB base colour 0..1, LiDAR reflectivity 0..255)
APPEARANCE: dict[str, tuple[tuple[float, float, float], float]] = {
    "flat.driveable_surface": ((0.30, 0.30, 0.32), 12.0),
    "flat.sidewalk": ((0.72, 0.62, 0.62), 25.0),
    "flat.terrain": ((0.45, 0.62, 0.25), 9.0),
    "flat.other": ((0.70, 0.60, 0.42), 18.0),
    "static.manmade": ((0.80, 0.72, 0.60), 35.0),
    "static.vegetation": ((0.12, 0.42, 0.12), 14.0),
    "vehicle.car": ((0.15, 0.35, 0.80), 45.0),
    "vehicle.truck": ((0.55, 0.20, 0.75), 50.0),
    "vehicle.bus.rigid": ((0.95, 0.80, 0.10), 50.0),
    "vehicle.trailer": ((0.55, 0.32, 0.10), 40.0),
    "vehicle.construction": ((0.95, 0.55, 0.05), 45.0),
    "vehicle.bicycle": ((0.95, 0.45, 0.75), 30.0),
    "vehicle.motorcycle": ((0.60, 0.55, 0.05), 40.0),
    "human.pedestrian.adult": ((0.85, 0.12, 0.12), 20.0),
    "human.pedestrian.child": ((0.90, 0.25, 0.20), 20.0),
    "human.pedestrian.construction_worker": ((0.95, 0.35, 0.10), 60.0),
    "movable_object.barrier": ((0.95, 0.45, 0.15), 70.0),
    "movable_object.trafficcone": ((1.00, 0.35, 0.00), 90.0),
    "movable_object.pushable_pullable": ((0.10, 0.55, 0.55), 22.0),
    "airside.aircraft": ((0.90, 0.91, 0.93), 55.0),
    "airside.gse.tug": ((0.95, 0.75, 0.10), 50.0),
    "airside.gse.belt_loader": ((0.20, 0.45, 0.85), 45.0),
    "airside.gse.fuel_truck": ((0.85, 0.15, 0.15), 50.0),
    "airside.gse.baggage_cart": ((0.35, 0.55, 0.30), 35.0),
    "airside.jet_bridge": ((0.62, 0.64, 0.68), 40.0),
    "airside.person": ((1.00, 0.55, 0.05), 70.0),  # hi-vis vests
    "airside.cone": ((1.00, 0.35, 0.00), 90.0),
    "airside.apron": ((0.55, 0.55, 0.53), 14.0),
    "airside.marking": ((0.95, 0.85, 0.15), 80.0),
    "airside.grass": ((0.40, 0.58, 0.25), 9.0),
    "airside.terminal": ((0.70, 0.74, 0.80), 35.0),
    "airside.light_pole": ((0.45, 0.45, 0.48), 60.0),
}

SKY_HORIZON = np.array([0.78, 0.85, 0.95])
SKY_ZENITH = np.array([0.35, 0.55, 0.90])


def colour(name: str) -> np.ndarray:
    """Base colour of a class."""
    return np.array(APPEARANCE[name][0])


def reflectivity(name: str) -> float:
    """Base LiDAR intensity of a class."""
    return APPEARANCE[name][1]
