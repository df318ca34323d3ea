"""Class vocabularies: what the semantic classes are, as data, and the one place that loads them.

A vocabulary (class map) is a TOML or JSON file (schema: renderocc/schemas/class_map.schema.json):
classes 0..C-1 in order with display colours, the source category names (lidarseg, annotation
boxes) that map onto each, and which can move; free space is class C; 255 is unlabelled. The
default, `classmaps/occ3d-nuscenes.toml`, is Occ3D's 17 classes + free: the constants below are
its values (a test keeps them equal). `prep` writes the vocabulary into the store manifest and
every later step reads it from there (`vocabulary_of_manifest`).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from renderocc.errors import UserError
from renderocc.safe_load import require_file

OCC3D_CLASSES: list[str] = [
    "others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
    "pedestrian", "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat",
    "sidewalk", "terrain", "manmade", "vegetation", "free",
]
NUM_SEMANTIC = 17  # classes 0..16; 17 is free space
FREE = 17
IGNORE = 255
# A 3D target voxel something was seen in (a LiDAR return, a label end point) with no class: occupied,
# class unknown. The occupancy loss and the threshold count it as occupied; the class loss skips it.
OCCUPIED_UNKNOWN = 254
MAX_CLASSES = 64  # the renderer's limit on semantic channels

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

DEFAULT_CLASS_MAP = "occ3d-nuscenes.toml"
CLASS_MAP_SCHEMA = "class_map.schema.json"
CLASS_MAP_FILE = "classes.toml"  # what a dataroot may hold (`prep nuscenes` picks it up)


@dataclass(frozen=True)
class Vocabulary:
    """Classes 0..C-1, free = C, 255 unlabelled; built from a class map by `parse_class_map`."""

    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]  # C + 1: the classes, then free
    lidarseg: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    movable: tuple[bool, ...] = ()
    unmapped: int | None = None  # class of source names no class lists (None: unlabelled)
    free_name: str = "free"
    data: dict = field(default_factory=dict, compare=False, repr=False)  # the class map as read

    @property
    def num_semantic(self) -> int:
        return len(self.classes)

    @property
    def free(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """Every class name including free (index = class id): what checkpoints record."""
        return [*self.classes, self.free_name]

    def color_table(self) -> np.ndarray:
        """(256, 3) uint8 RGB by class id: the classes, free, grey for anything else."""
        table = np.full((256, 3), 128, np.uint8)
        table[:len(self.colors)] = np.asarray(self.colors, np.uint8)
        return table

    def source_index(self, source_name: str) -> int:
        """Class of a lidarseg name (IGNORE when unknown and no `unmapped` class)."""
        c = self.lidarseg.get(source_name, self.unmapped)
        return IGNORE if c is None else c

    def lidarseg_table(self, categories: list[dict]) -> np.ndarray:
        """Lookup table (256,) uint8 from a dataset's lidarseg `index` to this vocabulary's class.

        `categories` are category.json records; those without `index` are skipped; indices no
        record uses map to IGNORE."""
        table = np.full(256, IGNORE, dtype=np.uint8)
        for cat in categories:
            if "index" in cat:
                table[int(cat["index"])] = self.source_index(cat["name"])
        return table

    def static_categories(self) -> frozenset[str]:
        """Annotation categories of classes that cannot move: motion masks never mark their boxes."""
        return frozenset(c for c, k in self.categories.items() if not self.movable[k])

    def digest(self) -> str:
        """sha256 of the class map's canonical JSON: equal files, equal digests."""
        return hashlib.sha256(json.dumps(self.data, sort_keys=True).encode()).hexdigest()

    def check_compatible(self, names: list[str], what: str, other: str) -> None:
        """UserError unless `names` (a checkpoint's classes, free last) are this vocabulary's."""
        if list(names) != self.names:
            raise UserError(f"{what} was trained on classes {_brief(names)} but {other} has classes "
                            f"{_brief(self.names)} ({self.name}): use a checkpoint trained on this vocabulary")


def _brief(names: list[str]) -> str:
    names = list(names)
    return f"[{', '.join(names[:6])}{', …' if len(names) > 6 else ''}] ({len(names) - 1} + free)"


def parse_class_map(data: dict, where: str) -> Vocabulary:
    """Validate class-map data (schema, then names) and build the Vocabulary; UserError names `where`."""
    import jsonschema

    v = jsonschema.Draft202012Validator(_schema())
    errs = sorted(v.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errs:
        e = errs[0]
        at = "".join(f"[{p!r}]" for p in e.absolute_path)
        raise UserError(f"class map {where}{at}: {e.message}")
    classes = [c["name"] for c in data["class"]]
    dup = [n for n in classes if classes.count(n) > 1]
    if dup:
        raise UserError(f"class map {where}: class {dup[0]!r} is listed twice")
    if data["free"]["name"] in classes:
        raise UserError(f"class map {where}: free-space name {data['free']['name']!r} is also a class")
    maps: dict[str, dict[str, int]] = {"lidarseg": {}, "categories": {}}
    for k, c in enumerate(data["class"]):
        for key, table in maps.items():
            for src in c.get(key, []):
                if src in table:
                    raise UserError(f"class map {where}: {key} name {src!r} maps to both "
                                    f"{classes[table[src]]!r} and {c['name']!r}")
                table[src] = k
    unmapped = data.get("unmapped")
    if unmapped is not None and unmapped not in classes:
        raise UserError(f"class map {where}: unmapped = {unmapped!r} is not one of its classes")
    return Vocabulary(
        name=data["name"], classes=tuple(classes),
        colors=tuple(tuple(c["color"]) for c in data["class"]) + (tuple(data["free"]["color"]),),
        lidarseg=maps["lidarseg"], categories=maps["categories"],
        movable=tuple(bool(c.get("movable", False)) for c in data["class"]),
        unmapped=None if unmapped is None else classes.index(unmapped),
        free_name=data["free"]["name"], data=json.loads(json.dumps(data)))


def load_class_map(path: str | Path) -> Vocabulary:
    """A class-map file (.toml, or .json) as a Vocabulary; one-line UserError for any problem."""
    path = require_file(path, "class map")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"class map {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: "
                        f"{str(e).splitlines()[0]}") from None
    return parse_class_map(data, str(path))


@lru_cache(maxsize=1)
def default_vocabulary() -> Vocabulary:
    """The shipped Occ3D-nuScenes class map."""
    ref = resources.files("renderocc").joinpath("classmaps").joinpath(DEFAULT_CLASS_MAP)
    return parse_class_map(tomllib.loads(ref.read_text()), DEFAULT_CLASS_MAP)


def vocabulary_of_manifest(manifest: dict) -> Vocabulary:
    """The store's vocabulary; stores written before vocabularies were data hold Occ3D's."""
    cls = manifest.get("classes") or {}
    if cls.get("vocabulary") is not None:
        return parse_class_map(cls["vocabulary"], "in the store manifest")
    return default_vocabulary()


def manifest_classes(vocab: Vocabulary, lidarseg_index: dict[str, int]) -> dict:
    """The manifest's `classes` entry: names (free last), free, ignore, the dataset's lidarseg
    index → class, and the whole class map (`vocabulary`)."""
    return {"names": vocab.names, "free": vocab.free, "ignore": IGNORE,
            "lidarseg_to_occ3d": {n: {"index": int(i), "occ3d": int(vocab.source_index(n))}
                                  for n, i in lidarseg_index.items()},
            "vocabulary": vocab.data}


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(resources.files("renderocc").joinpath("schemas").joinpath(CLASS_MAP_SCHEMA).read_text())


def lidarseg_index_to_occ3d(categories: list[dict]) -> np.ndarray:
    """Lookup table (256,) uint8 from a dataset's lidarseg `index` to the Occ3D class (the default
    vocabulary: unknown names are class 0, "others"; unused indices IGNORE)."""
    return default_vocabulary().lidarseg_table(categories)
