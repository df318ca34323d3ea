"""Procedural layout of a street scene: road, sidewalks, buildings, vegetation, traffic, people.

The street runs along +x in the scene-local frame; the ego drives in lane y = -1.75 (right-hand
traffic). Lanes share one speed each, so moving objects never collide; every object class of
the Occ3D list appears in every scene.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from renderocc.synth import materials as mat
from renderocc.synth.materials import LABEL
from renderocc.synth.world import BOX, CYLINDER, SPHERE, Instance, Region, World

ROAD_HALF = 8.5
WALK_OUT = 11.5
LOT_OUT = 16.0
LANES = {"ego": -1.75, "outer": -5.25, "oncoming": 1.75, "queue": 5.0, "park": 7.6, "bike": -7.6}
MARGIN = 0.05  # annotation boxes are this much larger than the object's parts
Shape = Callable[["Builder", int], None]  # adds an object's parts (object frame) to a builder


class Builder:
    """Collects primitives (in object frames) and instances, then freezes them into a World."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.rows: list[tuple] = []
        self.instances: list[Instance] = []

    def part(self, kind: int, centre, half, name: str, texture: int, tint=None, yaw: float = 0.0,
             obj: int = -1, shade: float = 1.0) -> None:
        col = mat.colour(name) * (tint if tint is not None else 1.0) * shade
        self.rows.append((kind, tuple(centre), tuple(half), yaw, LABEL[name], texture,
                          tuple(np.clip(col, 0, 1)), mat.reflectivity(name), obj))

    def box(self, x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, name: str, texture: int,
            tint=None, obj: int = -1, yaw: float = 0.0, shade: float = 1.0) -> None:
        """An axis-aligned box in its own frame (object frame when obj >= 0)."""
        self.part(BOX, ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2),
                  ((x1 - x0) / 2, (y1 - y0) / 2, (z1 - z0) / 2), name, texture, tint, yaw, obj, shade)

    def cyl(self, x: float, y: float, z0: float, z1: float, r: float, name: str, texture: int, tint=None,
            obj: int = -1, shade: float = 1.0) -> None:
        """A vertical cylinder standing on z0."""
        self.part(CYLINDER, (x, y, (z0 + z1) / 2), (r, r, (z1 - z0) / 2), name, texture, tint, 0.0, obj,
                  shade)

    def sphere(self, x: float, y: float, z: float, r: float, name: str, texture: int, tint=None, obj: int = -1,
               shade: float = 1.0) -> None:
        self.part(SPHERE, (x, y, z), (r, r, r), name, texture, tint, 0.0, obj, shade)

    def tint(self, spread: float = 0.12) -> np.ndarray:
        """Per-object colour jitter, so instances of a class differ a little."""
        return 1.0 + self.rng.uniform(-spread, spread, 3)

    def add_object(self, category: str, x: float, y: float, yaw: float, speed: float,
                   attribute: str | None, shape: Shape) -> None:
        """Add an annotated object whose parts come from `shape(builder, obj_index)`."""
        k = len(self.instances)
        start = len(self.rows)
        shape(self, k)
        rows = self.rows[start:]
        lo = np.min([np.subtract(r[1], r[2]) for r in rows], 0)
        hi = np.max([np.add(r[1], r[2]) for r in rows], 0)
        lo[:2] -= MARGIN
        hi += MARGIN
        lo[2] = 0.0
        size = (hi[1] - lo[1], hi[0] - lo[0], hi[2] - lo[2])
        off = tuple((lo + hi) / 2)
        self.instances.append(Instance(category, x, y, yaw, speed, size, off, attribute))

    def freeze(self) -> dict[str, np.ndarray]:
        cols = list(zip(*self.rows, strict=True))
        return {
            "kind": np.array(cols[0], np.int8), "centre": np.array(cols[1], np.float64),
            "half": np.array(cols[2], np.float64), "yaw": np.array(cols[3], np.float64),
            "label": np.array(cols[4], np.uint8), "texture": np.array(cols[5], np.int8),
            "colour": np.array(cols[6], np.float32), "reflect": np.array(cols[7], np.float32),
            "obj": np.array(cols[8], np.int32),
        }


# --- object shapes (object frame: x forward, y left, z up, origin on the ground) -------------

def car_shape(length: float, width: float, height: float) -> Shape:
    def shape(b: Builder, k: int) -> None:
        n, t = "vehicle.car", b.tint()
        top = 0.6 * height
        b.box(-length / 2, length / 2, -width / 2, width / 2, 0.3, top, n, mat.TEX_PAINT, t, k)
        b.box(-0.3 * length, 0.22 * length, -width / 2 + 0.08, width / 2 - 0.08, top, height, n,
              mat.TEX_GLASS, t, k)
        for ax in (-0.32, 0.32):
            b.box(ax * length - 0.33, ax * length + 0.33, -width / 2 + 0.02, width / 2 - 0.02, 0.0, 0.62,
                  n, mat.TEX_TYRE, t, k)
    return shape


def truck_shape(length: float, width: float, height: float, name: str = "vehicle.truck") -> Shape:
    def shape(b: Builder, k: int) -> None:
        t = b.tint()
        hw = width / 2
        b.box(length / 2 - 2.0, length / 2, -hw, hw, 0.5, height - 0.4, name, mat.TEX_GLASS, t, k)
        b.box(-length / 2, length / 2 - 2.2, -hw, hw, 0.9, height, name, mat.TEX_PAINT, t, k)
        for ax in (-length / 2 + 1.0, length / 2 - 1.2):
            b.box(ax - 0.5, ax + 0.5, -hw + 0.05, hw - 0.05, 0.0, 0.95, name, mat.TEX_TYRE, t, k)
    return shape


def bus_shape(length: float, width: float, height: float) -> Shape:
    def shape(b: Builder, k: int) -> None:
        n, t = "vehicle.bus.rigid", b.tint(0.06)
        b.box(-length / 2, length / 2, -width / 2, width / 2, 0.35, height, n, mat.TEX_PAINT, t, k)
        for ax in (-length / 2 + 2.5, length / 2 - 2.2):
            b.box(ax - 0.55, ax + 0.55, -width / 2 + 0.05, width / 2 - 0.05, 0.0, 0.5, n, mat.TEX_TYRE, t, k)
    return shape


def trailer_shape(length: float, width: float, height: float) -> Shape:
    def shape(b: Builder, k: int) -> None:
        n, t = "vehicle.trailer", b.tint()
        b.box(-length / 2, length / 2, -width / 2, width / 2, 1.1, height, n, mat.TEX_PAINT, t, k)
        b.box(-length / 2 + 0.6, -length / 2 + 2.0, -width / 2 + 0.05, width / 2 - 0.05, 0.0, 1.1, n,
              mat.TEX_TYRE, t, k)
        b.box(length / 2 - 1.2, length / 2 - 0.8, -0.4, 0.4, 0.0, 1.1, n, mat.TEX_PLAIN, t, k)
    return shape


def construction_shape(length: float, width: float, height: float) -> Shape:
    def shape(b: Builder, k: int) -> None:
        n, t = "vehicle.construction", b.tint(0.06)
        for side in (-1, 1):
            y0 = side * width / 2
            b.box(-length / 2, length / 4, min(y0, y0 - side * 0.6), max(y0, y0 - side * 0.6), 0.0, 0.9, n,
                  mat.TEX_TYRE, t, k)
        b.box(-length / 2, length / 4, -width / 2 + 0.6, width / 2 - 0.6, 0.3, 0.9, n, mat.TEX_PAINT, t, k)
        b.box(-length / 2, length / 4, -width / 2, width / 2, 0.9, 2.2, n, mat.TEX_PAINT, t, k)
        b.box(-0.2, length / 4, -width / 2, 0.1, 2.2, height, n, mat.TEX_GLASS, t, k)
        b.box(length / 4, length / 2, -0.3, 0.3, 1.4, 2.1, n, mat.TEX_PAINT, t, k)
    return shape


def cycle_shape(name: str, rider: bool, length: float, width: float) -> Shape:
    def shape(b: Builder, k: int) -> None:
        t = b.tint()
        wheel = 0.62 if name == "vehicle.bicycle" else 0.7
        for ax in (-length / 2 + wheel / 2, length / 2 - wheel / 2):
            b.box(ax - wheel / 2, ax + wheel / 2, -0.16, 0.16, 0.0, wheel, name, mat.TEX_TYRE, t, k)
        hl = length / 2
        b.box(-hl + 0.3, hl - 0.3, -width / 2, width / 2, 0.4, 0.95, name, mat.TEX_PAINT, t, k)
        if rider:
            b.cyl(-0.15, 0.0, 0.95, 1.55, 0.22, name, mat.TEX_CLOTH, t, k, shade=0.7)
            b.sphere(-0.1, 0.0, 1.68, 0.13, name, mat.TEX_PLAIN, t, k, shade=0.6)
    return shape


def pedestrian_shape(name: str, height: float) -> Shape:
    def shape(b: Builder, k: int) -> None:
        t = b.tint(0.15)
        r = 0.24 if height > 1.5 else 0.18
        legs = 0.48 * height
        b.cyl(0.0, 0.0, 0.0, legs, r * 0.8, name, mat.TEX_CLOTH, t, k, shade=0.55)
        b.cyl(0.0, 0.0, legs, height - 0.25, r, name, mat.TEX_CLOTH, t, k)
        b.sphere(0.0, 0.0, height - 0.12, 0.12, name, mat.TEX_PLAIN, t, k, shade=0.9)
    return shape


def barrier_shape(b: Builder, k: int) -> None:
    b.box(-1.0, 1.0, -0.22, 0.22, 0.0, 1.0, "movable_object.barrier", mat.TEX_STRIPES, b.tint(0.05), k)


def cone_shape(b: Builder, k: int) -> None:
    n = "movable_object.trafficcone"
    b.cyl(0.0, 0.0, 0.0, 0.1, 0.24, n, mat.TEX_PLAIN, None, k, shade=0.5)
    b.cyl(0.0, 0.0, 0.1, 0.72, 0.13, n, mat.TEX_STRIPES, None, k)


def bin_shape(b: Builder, k: int) -> None:
    b.box(-0.32, 0.32, -0.32, 0.32, 0.0, 1.1, "movable_object.pushable_pullable", mat.TEX_PLAIN, b.tint(), k)


def vehicle(b: Builder, kind: str) -> tuple[str, Shape, float]:
    """(category, shape, length) of a random vehicle of `kind`."""
    u = b.rng.uniform
    if kind == "car":
        ln, w, h = u(4.0, 4.9), u(1.75, 2.0), u(1.45, 1.75)
        return "vehicle.car", car_shape(ln, w, h), ln
    if kind == "truck":
        ln, w, h = u(6.0, 8.5), u(2.3, 2.55), u(2.8, 3.5)
        return "vehicle.truck", truck_shape(ln, w, h), ln
    if kind == "bus":
        ln = u(10.5, 12.0)
        return "vehicle.bus.rigid", bus_shape(ln, 2.55, u(3.1, 3.4)), ln
    if kind == "trailer":
        ln = u(6.5, 9.0)
        return "vehicle.trailer", trailer_shape(ln, 2.45, u(3.2, 3.8)), ln
    if kind == "construction":
        ln = u(5.5, 7.0)
        return "vehicle.construction", construction_shape(ln, 2.6, u(3.0, 3.4)), ln
    if kind == "motorcycle":
        return "vehicle.motorcycle", cycle_shape("vehicle.motorcycle", True, 2.1, 0.6), 2.1
    raise ValueError(kind)


# --- layout ---------------------------------------------------------------------------------

def _ground(x0: float, x1: float, rng: np.random.Generator) -> list[Region]:
    """Road, sidewalks, grass/gravel verges, plazas and yards (edges on the 0.1 m raster grid)."""
    L = LABEL
    regions = [Region(x0, x1, -ROAD_HALF, ROAD_HALF, L["flat.driveable_surface"])]
    for s in (-1, 1):
        regions.append(Region(x0, x1, *sorted((s * ROAD_HALF, s * WALK_OUT)), L["flat.sidewalk"]))
        x = x0
        while x < x1:
            n = round(rng.uniform(12, 35), 1)
            lab = L["flat.other"] if rng.uniform() < 0.35 else L["flat.terrain"]
            regions.append(Region(x, x + n, *sorted((s * WALK_OUT, s * LOT_OUT)), lab))
            x += n
        x = x0 + round(rng.uniform(0, 30), 1)
        while x < x1:  # paved plazas from the kerb to the buildings
            n = round(rng.uniform(8, 16), 1)
            regions.append(Region(x, x + n, *sorted((s * ROAD_HALF, s * LOT_OUT)), L["flat.other"]))
            x += n + round(rng.uniform(25, 60), 1)
        x = x0
        while x < x1:  # paved yards between the buildings
            n = round(rng.uniform(20, 50), 1)
            if rng.uniform() < 0.5:
                regions.append(Region(x, x + n, *sorted((s * LOT_OUT, s * 45.0)), L["flat.other"]))
            x += n
    return regions


def _lane(b: Builder, y: float, yaw: float, speed: float, x0: float, x1: float, kinds, weights, gap,
          attribute: str) -> None:
    """Fill lane y between x0 and x1 with vehicles of `kinds`, all at the lane's speed and heading."""
    x = x0 + b.rng.uniform(0, gap[1])
    while x < x1:
        kind = b.rng.choice(kinds, p=weights)
        attr = attribute
        if kind == "truck" and attribute == "vehicle.parked" and b.rng.uniform() < 0.6:
            cat, shape, tl = vehicle(b, "trailer")  # a parked trailer right behind its truck
            b.add_object(cat, x + tl / 2, y, yaw, speed, attribute, shape)
            x += tl + 0.8
        cat, shape, length = vehicle(b, kind)
        if kind == "motorcycle":
            attr = "cycle.with_rider" if speed > 0 else "cycle.without_rider"
            shape = cycle_shape("vehicle.motorcycle", speed > 0, 2.1, 0.6)
        b.add_object(cat, x + length / 2, y, yaw, speed, attr, shape)
        x += length + b.rng.uniform(*gap)


def _sidewalk(b: Builder, s: int, x0: float, x1: float, speeds) -> None:
    """People, street furniture and parked cycles on side s (+1 left, -1 right)."""
    rng = b.rng
    for band, direction, speed in ((9.1, 1, speeds[0]), (9.9, -1, speeds[1])):
        x = x0 + rng.uniform(0, 6)
        while x < x1:
            name = "human.pedestrian.child" if rng.uniform() < 0.12 else "human.pedestrian.adult"
            h = rng.uniform(1.05, 1.35) if name.endswith("child") else rng.uniform(1.6, 1.9)
            yaw = 0.0 if direction > 0 else np.pi
            b.add_object(name, x, s * band, yaw, speed, "pedestrian.moving", pedestrian_shape(name, h))
            x += rng.uniform(4, 16)
    x = x0 + rng.uniform(0, 4)
    while x < x1:  # furniture band
        r = rng.uniform()
        if r < 0.3:
            trunk = rng.uniform(2.2, 3.2)
            crown = rng.uniform(1.4, 2.4)
            b.cyl(x, s * 11.0, 0.0, trunk + crown * 0.5, rng.uniform(0.16, 0.28), "static.vegetation",
                  mat.TEX_BARK, shade=0.45)
            b.sphere(x, s * 11.0, trunk + crown * 0.9, crown, "static.vegetation", mat.TEX_FOLIAGE,
                     b.tint(0.2))
            x += 2 * crown + 1
            continue
        if r < 0.45:
            b.cyl(x, s * 11.1, 0.0, rng.uniform(5.0, 8.0), 0.15, "static.manmade", mat.TEX_PLAIN, shade=0.6)
        elif r < 0.58:
            b.add_object("movable_object.pushable_pullable", x, s * 11.0, rng.uniform(0, np.pi), 0.0, None,
                         bin_shape)
        elif r < 0.75:
            name = "human.pedestrian.adult"
            b.add_object(name, x, s * 10.6, rng.uniform(-np.pi, np.pi), 0.0, "pedestrian.standing",
                         pedestrian_shape(name, rng.uniform(1.6, 1.9)))
        elif s < 0:
            cat = "vehicle.bicycle" if rng.uniform() < 0.7 else "vehicle.motorcycle"
            ln = 1.75 if cat == "vehicle.bicycle" else 2.1
            b.add_object(cat, x, s * 11.0, 0.0, 0.0, "cycle.without_rider", cycle_shape(cat, False, ln, 0.32))
            x += ln
        x += rng.uniform(2.5, 7)


def _lots(b: Builder, s: int, x0: float, x1: float, site_x: float | None) -> None:
    """Trees, hedges, a construction site, buildings and walls beyond the sidewalk."""
    rng = b.rng
    x = x0
    while x < x1:
        if site_x is not None and site_x - 12 < x < site_x + 12:
            x = site_x + 12
            continue
        if rng.uniform() < 0.5:
            crown = rng.uniform(1.5, 2.8)
            trunk = rng.uniform(2.0, 3.5)
            y = s * rng.uniform(12.5 + crown * 0.3, 15.0)
            b.cyl(x, y, 0.0, trunk + crown * 0.5, 0.25, "static.vegetation", mat.TEX_BARK, shade=0.45)
            b.sphere(x, y, trunk + crown * 0.9, crown, "static.vegetation", mat.TEX_FOLIAGE, b.tint(0.2))
        elif rng.uniform() < 0.5:
            n = rng.uniform(3, 8)
            b.box(x, x + n, *sorted((s * 12.6, s * 13.4)), 0.0, rng.uniform(0.8, 1.4), "static.vegetation",
                  mat.TEX_FOLIAGE, b.tint(0.2))
        x += rng.uniform(4, 10)
    x = x0
    while x < x1:  # buildings
        n = rng.uniform(8, 26)
        depth = rng.uniform(8, 20)
        y0 = rng.uniform(16.5, 19.0)
        if site_x is None or not (site_x - 14 < x + n and x < site_x + 14):
            b.box(x, x + n, *sorted((s * y0, s * (y0 + depth))), 0.0, rng.uniform(4, 15), "static.manmade",
                  mat.TEX_FACADE, b.tint(0.15))
        gap = rng.uniform(2, 10)
        if gap > 5 and rng.uniform() < 0.6:
            b.box(x + n, x + n + gap, *sorted((s * 16.3, s * 16.6)), 0.0, rng.uniform(1.5, 2.5),
                  "static.manmade", mat.TEX_PLAIN, b.tint(0.1), shade=0.8)
        x += n + gap
    for _ in range(int((x1 - x0) / 12)):  # far trees for the horizon
        x = rng.uniform(x0, x1)
        crown = rng.uniform(2.5, 4.0)
        y = s * rng.uniform(48, 60)
        b.cyl(x, y, 0.0, 4.0, 0.4, "static.vegetation", mat.TEX_BARK, shade=0.45)
        b.sphere(x, y, 4.0 + crown * 0.8, crown, "static.vegetation", mat.TEX_FOLIAGE, b.tint(0.2))


def _construction_site(b: Builder, xc: float) -> None:
    """Construction vehicle, trailer, workers, barriers and cones on the left of the road."""
    rng = b.rng
    cat, shape, _ = vehicle(b, "construction")
    b.add_object(cat, xc - 3, 19.5, rng.choice([0.0, np.pi]), 0.0, "vehicle.parked", shape)
    cat, shape, _ = vehicle(b, "trailer")
    b.add_object(cat, xc + 6, 23.0, 0.0, 0.0, "vehicle.parked", shape)
    for i in range(3):
        b.add_object("human.pedestrian.construction_worker", xc - 6 + 5 * i, 16.5 + rng.uniform(0, 1),
                     rng.uniform(-np.pi, np.pi), 0.0, "pedestrian.standing",
                     pedestrian_shape("human.pedestrian.construction_worker", rng.uniform(1.65, 1.85)))
    for x in np.arange(xc - 11, xc + 11, 2.2):
        b.add_object("movable_object.barrier", x + 1.0, 12.3, 0.0, 0.0, None, barrier_shape)
    # a closed stretch of the parking lane, coned off
    for x in np.arange(xc - 9, xc + 9, 3.0):
        b.add_object("movable_object.trafficcone", x, 6.6, 0.0, 0.0, None, cone_shape)
    for x in np.arange(xc - 8, xc + 8, 2.2):
        b.add_object("movable_object.barrier", x + 1.0, 7.9, 0.0, 0.0, None, barrier_shape)


def build_world(rng: np.random.Generator, duration: float) -> World:
    """A street scene long enough for the ego to drive `duration` seconds with 70 m around it."""
    b = Builder(rng)
    v = rng.uniform(5.0, 8.0)
    path = v * duration
    x0, x1 = -95.0, float(np.ceil(path + 95.0))
    regions = _ground(x0, x1, rng)
    site_x = rng.uniform(0.2, 0.8) * path + rng.uniform(10, 30)

    kinds = ["car", "truck", "bus", "motorcycle"]
    # traffic lanes: every vehicle of a lane has the lane's speed
    outer = max(2.5, v + rng.uniform(-3.0, 2.5))
    _lane(b, LANES["outer"], 0.0, outer, x0 - outer * duration, x1, kinds, [0.7, 0.12, 0.1, 0.08], (6, 25),
          "vehicle.moving")
    onc = rng.uniform(7.0, 11.0)
    _lane(b, LANES["oncoming"], np.pi, onc, x0, x1 + onc * duration, kinds, [0.72, 0.12, 0.08, 0.08],
          (10, 40), "vehicle.moving")
    qx = rng.uniform(-20, path + 20)
    _lane(b, LANES["queue"], np.pi, 0.0, qx, qx + 35, ["car", "truck", "bus"], [0.6, 0.2, 0.2], (1.5, 3),
          "vehicle.stopped")
    # parking lane (left side), interrupted by the coned-off works
    for a, z in ((x0, site_x - 12), (site_x + 12, x1)):
        _lane(b, LANES["park"], 0.0, 0.0, a, z, ["car", "truck", "motorcycle"], [0.8, 0.12, 0.08], (1, 8),
              "vehicle.parked")
    bike = rng.uniform(3.5, 5.5)
    x = x0 - bike * duration + rng.uniform(0, 10)
    while x < x1:
        cat = "vehicle.bicycle" if rng.uniform() < 0.75 else "vehicle.motorcycle"
        ln = 1.75 if cat == "vehicle.bicycle" else 2.1
        b.add_object(cat, x, LANES["bike"], 0.0, bike, "cycle.with_rider", cycle_shape(cat, True, ln, 0.35))
        x += rng.uniform(12, 40)
    # a lead car in the ego lane at the ego's speed
    cat, shape, ln = vehicle(b, "car")
    b.add_object(cat, rng.uniform(16, 30), LANES["ego"], 0.0, v, "vehicle.moving", shape)
    cat, shape, ln = vehicle(b, "car")
    b.add_object(cat, -rng.uniform(14, 25), LANES["ego"], 0.0, v, "vehicle.moving", shape)

    speeds = rng.uniform(1.0, 1.6, 4)
    for i, s in enumerate((-1, 1)):
        _sidewalk(b, s, x0 - 2 * duration, x1 + 2 * duration, speeds[2 * i: 2 * i + 2])
        _lots(b, s, x0, x1, site_x if s > 0 else None)
    _construction_site(b, site_x)

    sun_el, sun_az = rng.uniform(0.5, 1.0), rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)])
    origin = (rng.uniform(300, 1500), rng.uniform(300, 1500), rng.uniform(-np.pi, np.pi))
    return World(
        parts=b.freeze(), instances=b.instances, regions=regions,
        default_ground=(LABEL["flat.terrain"], mat.TEX_GRASS), ego_x0=0.0, ego_y0=LANES["ego"],
        ego_speed=v, ego_wobble=rng.uniform(0.0, 0.25), sun=sun, origin=origin, extent=(x0, x1),
        lane_marks=[-7.0, -3.5, 0.0, 3.5, 7.0],
    )
