"""Class vocabularies: Occ3D's 18 classes and the nuScenes lidarseg names that map onto them.

The mapping is keyed by category *name*; the numeric lidarseg index of a dataset is read from its
category.json (`index`) and turned into a lookup table by `lidarseg_index_to_occ3d`.
"""

from __future__ import annotations

import numpy as np

OCC3D_CLASSES: list[str] = [
    "others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
    "pedestrian", "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat",
    "sidewalk", "terrain", "manmade", "vegetation", "free",
]
NUM_SEMANTIC = 17  # classes 0..16; 17 is free space
FREE = 17
IGNORE = 255

# The 32 standard nuScenes lidarseg categories and their Occ3D class.
LIDARSEG_TO_OCC3D: dict[str, int] = {
    "noise": 0, "animal": 0,
    "human.pedestrian.adult": 7, "human.pedestrian.child": 7,
    "human.pedestrian.construction_worker": 7, "human.pedestrian.personal_mobility": 0,
    "human.pedestrian.police_officer": 7, "human.pedestrian.stroller": 0,
    "human.pedestrian.wheelchair": 0,
    "movable_object.barrier": 1, "movable_object.debris": 0,
    "movable_object.pushable_pullable": 0, "movable_object.trafficcone": 8,
    "static_object.bicycle_rack": 0,
    "vehicle.bicycle": 2, "vehicle.bus.bendy": 3, "vehicle.bus.rigid": 3, "vehicle.car": 4,
    "vehicle.construction": 5, "vehicle.emergency.ambulance": 0, "vehicle.emergency.police": 0,
    "vehicle.motorcycle": 6, "vehicle.trailer": 9, "vehicle.truck": 10,
    "flat.driveable_surface": 11, "flat.other": 12, "flat.sidewalk": 13, "flat.terrain": 14,
    "static.manmade": 15, "static.other": 0, "static.vegetation": 16, "vehicle.ego": 0,
}

# The standard nuScenes lidarseg index order (what real lidarseg.json datasets use).
LIDARSEG_STANDARD_ORDER: list[str] = list(LIDARSEG_TO_OCC3D)

# RGB colours for visualisation, one per Occ3D class.
OCC3D_COLORS = np.array([
    [0, 0, 0], [255, 120, 50], [255, 192, 203], [255, 255, 0], [0, 150, 245], [0, 255, 255],
    [200, 180, 0], [255, 0, 0], [255, 240, 150], [135, 60, 0], [160, 32, 240], [255, 0, 255],
    [139, 137, 137], [75, 0, 75], [150, 240, 80], [230, 230, 250], [0, 175, 0], [255, 255, 255],
], dtype=np.uint8)


def lidarseg_index_to_occ3d(categories: list[dict]) -> np.ndarray:
    """Lookup table (256,) uint8 from a dataset's lidarseg `index` to the Occ3D class.

    `categories` are category.json records; those without `index` are skipped, unknown
    names map to class 0 ("others"), unused indices to IGNORE.
    """
    table = np.full(256, IGNORE, dtype=np.uint8)
    for cat in categories:
        if "index" in cat:
            table[int(cat["index"])] = LIDARSEG_TO_OCC3D.get(cat["name"], 0)
    return table
