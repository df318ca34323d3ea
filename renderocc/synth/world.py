"""The procedural world of one scene: analytic primitives, object tracks, ground regions, ego path.

A world is immutable; `prims_at(t)` evaluates every primitive at time t (seconds from the first
keyframe) so that LiDAR, cameras and Occ3D truth all see the same geometry. Coordinates are the
scene-local frame (road along +x, z up, ground at z = 0); `to_global` maps them to nuScenes'
global frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from renderocc.synth import materials as mat
from renderocc.synth.geometry import yaw_pose

BOX, CYLINDER, SPHERE = 0, 1, 2
GROUND_RES = 0.1  # metres; ground region edges are snapped to this grid
GROUND_TEXTURE = np.zeros(256, np.int8)
GROUND_NAMES = ("flat.driveable_surface", "flat.sidewalk", "flat.terrain", "flat.other", "airside.apron",
                "airside.marking", "airside.grass")
for _name, _tex in (("flat.driveable_surface", mat.TEX_ASPHALT), ("flat.sidewalk", mat.TEX_TILES),
                    ("flat.terrain", mat.TEX_GRASS), ("flat.other", mat.TEX_GRAVEL),
                    ("airside.apron", mat.TEX_TILES), ("airside.marking", mat.TEX_PLAIN),
                    ("airside.grass", mat.TEX_GRASS)):
    GROUND_TEXTURE[mat.LABEL[_name]] = _tex


@dataclass
class Prims:
    """Primitives at one instant, as parallel arrays (M rows)."""

    kind: np.ndarray  # int8: BOX / CYLINDER / SPHERE
    centre: np.ndarray  # (M, 3) float64, scene-local
    half: np.ndarray  # (M, 3) half extents (box: l/2, w/2, h/2; cylinder: r, r, h/2; sphere: r, r, r)
    yaw: np.ndarray  # (M,) box heading
    label: np.ndarray  # (M,) uint8 lidarseg index
    texture: np.ndarray  # (M,) int8
    colour: np.ndarray  # (M, 3) float32
    reflect: np.ndarray  # (M,) float32 LiDAR reflectivity
    obj: np.ndarray  # (M,) int32 object (instance) index or -1 for stuff

    def __len__(self) -> int:
        return len(self.kind)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned (lo, hi) of each primitive, (M, 3) each."""
        c, s = np.abs(np.cos(self.yaw)), np.abs(np.sin(self.yaw))
        ex = np.where(self.kind == BOX, c * self.half[:, 0] + s * self.half[:, 1], self.half[:, 0])
        ey = np.where(self.kind == BOX, s * self.half[:, 0] + c * self.half[:, 1], self.half[:, 1])
        ext = np.stack([ex, ey, self.half[:, 2]], 1)
        return self.centre - ext, self.centre + ext

    def transformed(self, m: np.ndarray) -> Prims:
        """The same primitives in another frame given by a planar 4x4 `m` (new <- local)."""
        yaw = np.arctan2(m[1, 0], m[0, 0])
        return Prims(self.kind, self.centre @ m[:3, :3].T + m[:3, 3], self.half, self.yaw + yaw,
                     self.label, self.texture, self.colour, self.reflect, self.obj)


@dataclass
class Instance:
    """One annotated object: its category, box and motion (constant velocity along its heading)."""

    category: str
    x0: float
    y0: float
    yaw: float
    speed: float
    size: tuple[float, float, float]  # (w, l, h) of the annotation box
    box_offset: tuple[float, float, float]  # box centre in the object frame
    attribute: str | None
    token: str = ""

    def pose(self, t: float) -> tuple[float, float, float]:
        """(x, y, yaw) of the object frame at time t."""
        return (self.x0 + self.speed * t * np.cos(self.yaw),
                self.y0 + self.speed * t * np.sin(self.yaw), self.yaw)

    @property
    def moving(self) -> bool:
        return self.speed > 0.05


@dataclass
class Region:
    """An axis-aligned ground patch with one lidarseg class (later regions win)."""

    x0: float
    x1: float
    y0: float
    y1: float
    label: int


@dataclass(frozen=True)
class ClassTable:
    """How synthetic lidarseg labels become occupancy classes: `to_class` (256,) uint8 (255 = none),
    `priority` (C,) per class for ties (higher wins: things > static > flat); free = C."""

    to_class: np.ndarray
    priority: np.ndarray

    @property
    def num(self) -> int:
        return len(self.priority)


@dataclass
class World:
    """Everything needed to sense one scene at any time."""

    parts: dict[str, np.ndarray]  # Prims fields in object frames, plus 'obj'
    instances: list[Instance]
    regions: list[Region]
    default_ground: tuple[int, int]
    ego_x0: float
    ego_y0: float
    ego_speed: float
    ego_wobble: float
    sun: np.ndarray
    origin: tuple[float, float, float]  # global (x, y, yaw) of the scene-local frame
    extent: tuple[float, float] = (-100.0, 100.0)
    lane_marks: list[float] = field(default_factory=list)
    # Occupancy classes of the lidarseg labels (None: Occ3D's, synth/occ_gt.py) and image light level
    classes: ClassTable | None = None
    light: float = 1.0  # < 1: night (low ambient; light from `lamps`, renderocc/synth/conditions.py)
    lamps: np.ndarray | None = None  # (L, 3) floodlight positions (scene-local), lit at night
    wet: bool = False  # wet, reflective pavement (LiDAR drop-outs, mirror images; synth/conditions.py)
    _raster: tuple | None = field(default=None, repr=False)
    _motion: np.ndarray | None = field(default=None, repr=False)

    def to_global(self) -> np.ndarray:
        """4x4 scene-local -> global."""
        x, y, yaw = self.origin
        return yaw_pose(x, y, 0.0, yaw)

    def ego_pose(self, t: float) -> np.ndarray:
        """4x4 ego -> scene-local at time t (planar: ground stays at ego z = 0)."""
        w = 2 * np.pi / 7.0
        x = self.ego_x0 + self.ego_speed * t
        y = self.ego_y0 + self.ego_wobble * np.sin(w * t)
        yaw = np.arctan2(self.ego_wobble * w * np.cos(w * t), self.ego_speed)
        return yaw_pose(x, y, 0.0, yaw)

    def object_poses(self, t: float) -> np.ndarray:
        """(K, 3) (x, y, yaw) of every instance at time t."""
        if self._motion is None:
            self._motion = np.array([[i.x0, i.y0, i.yaw, i.speed] for i in self.instances],
                                    np.float64).reshape(-1, 4)
        x0, y0, yaw, v = self._motion.T
        return np.stack([x0 + v * t * np.cos(yaw), y0 + v * t * np.sin(yaw), yaw], 1)

    def prims_at(self, t: float) -> Prims:
        """All primitives at time t in the scene-local frame."""
        p = self.parts
        obj = p["obj"]
        centre = p["centre"].copy()
        yaw = p["yaw"].copy()
        dyn = obj >= 0
        if dyn.any():
            poses = self.object_poses(t)[obj[dyn]]
            c, s = np.cos(poses[:, 2]), np.sin(poses[:, 2])
            off = p["centre"][dyn]
            centre[dyn, 0] = poses[:, 0] + c * off[:, 0] - s * off[:, 1]
            centre[dyn, 1] = poses[:, 1] + s * off[:, 0] + c * off[:, 1]
            yaw[dyn] += poses[:, 2]
        return Prims(p["kind"], centre, p["half"], yaw, p["label"], p["texture"], p["colour"],
                     p["reflect"], obj)

    def ground(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lidarseg label, texture id) of the ground at scene-local (x, y), from a 0.1 m raster."""
        if self._raster is None:
            self._raster = self._rasterise()
        raster, x0, y0 = self._raster
        ix = np.floor((x - x0) * (1 / GROUND_RES)).astype(np.int64)
        iy = np.floor((y - y0) * (1 / GROUND_RES)).astype(np.int64)
        inside = (ix >= 0) & (ix < raster.shape[0]) & (iy >= 0) & (iy < raster.shape[1])
        label = np.where(inside, raster[np.clip(ix, 0, raster.shape[0] - 1),
                                        np.clip(iy, 0, raster.shape[1] - 1)], self.default_ground[0])
        label = label.astype(np.uint8)
        return label, GROUND_TEXTURE[label]

    def _rasterise(self) -> tuple[np.ndarray, float, float]:
        """Region map as a label raster; region edges are multiples of GROUND_RES, so it is exact."""
        x0 = min(r.x0 for r in self.regions)
        x1 = max(r.x1 for r in self.regions)
        y0 = min(r.y0 for r in self.regions)
        y1 = max(r.y1 for r in self.regions)
        nx, ny = int(round((x1 - x0) / GROUND_RES)), int(round((y1 - y0) / GROUND_RES))
        raster = np.full((nx, ny), self.default_ground[0], np.uint8)
        for r in self.regions:
            i0, i1 = int(round((r.x0 - x0) / GROUND_RES)), int(round((r.x1 - x0) / GROUND_RES))
            j0, j1 = int(round((r.y0 - y0) / GROUND_RES)), int(round((r.y1 - y0) / GROUND_RES))
            raster[max(i0, 0):i1, max(j0, 0):j1] = r.label
        return raster, x0, y0

    def ground_colour(self, label: np.ndarray) -> np.ndarray:
        """Base colour (N, 3) of ground labels."""
        lut = np.zeros((256, 3), np.float32)
        for name in GROUND_NAMES:
            lut[mat.LABEL[name]] = mat.colour(name)
        return lut[label]


def lane_paint(world: World, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where white lane markings are painted (dashed inner lines, solid centre and edges)."""
    paint = np.zeros(x.shape, bool)
    for m in world.lane_marks:
        line = np.abs(y - m) < 0.08
        if abs(abs(m) - 3.5) < 1e-6:
            line &= np.mod(x, 9.0) < 3.0
        paint |= line
    return paint
