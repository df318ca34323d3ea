"""The airside apron world: stands with narrow-body aircraft, GSE, jet bridges, people, cones,
markings, a terminal façade and light poles, plus its own class vocabulary.

Scene-local frame: the ego drives the service road along +x at y = -1.75; stands lie on the
+y side (aircraft nose towards the terminal at y = 48), a taxi lane at y = -26 carries an
aircraft under tow. Sizes follow an A320-class narrow-body (37.6 m long, 35.8 m span, tail
11.8 m). Every synthetic lidarseg category maps to one class of `CLASSES` (class map written to
DIR/classes.toml by `renderocc synth airside`).
"""

from __future__ import annotations

import numpy as np

from renderocc.synth import conditions as cond
from renderocc.synth import materials as mat
from renderocc.synth.materials import LABEL
from renderocc.synth.populate import Builder, Shape, pedestrian_shape
from renderocc.synth.world import ClassTable, Region, World

# class name, synthetic lidarseg category, display colour, movable, tie priority (3 thing, 2 static, 1 flat)
CLASSES: list[tuple[str, str, tuple[int, int, int], bool, int]] = [
    ("aircraft", "airside.aircraft", (0, 150, 245), True, 3),
    ("tug", "airside.gse.tug", (255, 200, 0), True, 3),
    ("belt_loader", "airside.gse.belt_loader", (80, 60, 220), True, 3),
    ("fuel_truck", "airside.gse.fuel_truck", (220, 30, 30), True, 3),
    ("baggage_cart", "airside.gse.baggage_cart", (60, 160, 90), True, 3),
    ("jet_bridge", "airside.jet_bridge", (150, 150, 160), False, 2),
    ("person", "airside.person", (255, 0, 255), True, 3),
    ("cone", "airside.cone", (255, 120, 0), False, 3),
    ("apron", "airside.apron", (110, 110, 110), False, 1),
    ("marking", "airside.marking", (250, 240, 80), False, 1),
    ("grass", "airside.grass", (120, 220, 80), False, 1),
    ("terminal", "airside.terminal", (230, 230, 250), False, 2),
    ("light_pole", "airside.light_pole", (40, 40, 40), False, 2),
]
FREE_COLOR = (255, 255, 255)
TERMINAL_Y = 48.0
STAND_PITCH = 48.0  # stand centre-to-centre along x (a 36 m span plus clearance)
TAXI_Y = -26.0
SERVICE_Y = -1.75


def class_table() -> ClassTable:
    """Synthetic lidarseg index → airside class; anything else (the street categories) → 255."""
    to_class = np.full(256, 255, np.uint8)
    for k, (_, src, *_rest) in enumerate(CLASSES):
        to_class[LABEL[src]] = k
    return ClassTable(to_class, np.array([c[4] for c in CLASSES], np.int32))


def class_map_toml() -> str:
    """DIR/classes.toml: the airside vocabulary (renderocc/schemas/class_map.schema.json)."""
    lines = ["# Airside apron classes of `renderocc synth airside` (written with the dataset).",
             'format = "renderocc-class-map"', "version = 1", 'name = "airside-apron"',
             'description = "Synthetic airport apron: aircraft, GSE, jet bridges, people, cones, '
             'markings, terminal, light poles"', "", "[free]", 'name = "free"',
             f"color = {list(FREE_COLOR)}", ""]
    for name, src, color, movable, _ in CLASSES:
        cats = f'["{src}"]' if movable or name == "cone" else "[]"
        lines += ["[[class]]", f'name = "{name}"', f"color = {list(color)}", f'lidarseg = ["{src}"]',
                  f"categories = {cats}", f"movable = {'true' if movable else 'false'}", ""]
    return "\n".join(lines)


# --- shapes (object frame: x forward, y left, z up, origin on the ground) ----------------------

def aircraft_shape(length: float = 37.6, span: float = 35.8) -> Shape:
    """Narrow-body: fuselage (nose, barrel, tail cone), swept-back wings, two engines, fin,
    tailplane, gear. Boxes only (the renderer's primitives are axis-aligned in the object frame)."""
    def shape(b: Builder, k: int) -> None:
        n, t = "airside.aircraft", b.tint(0.03)
        hl, r = length / 2, 1.98  # fuselage radius (3.95 m wide)
        zc = 1.9 + r  # fuselage axis height
        b.box(-hl + 6.0, hl - 4.0, -r, r, zc - r, zc + r, n, mat.TEX_PAINT, t, k)          # barrel
        b.box(hl - 4.0, hl - 1.5, -0.8 * r, 0.8 * r, zc - 0.8 * r, zc + 0.75 * r, n, mat.TEX_GLASS, t, k)
        b.box(hl - 1.5, hl, -0.45 * r, 0.45 * r, zc - 0.5 * r, zc + 0.3 * r, n, mat.TEX_PAINT, t, k)  # nose
        b.box(-hl + 2.5, -hl + 6.0, -0.7 * r, 0.7 * r, zc - 0.3 * r, zc + r, n, mat.TEX_PAINT, t, k)
        b.box(-hl, -hl + 2.5, -0.35 * r, 0.35 * r, zc + 0.1 * r, zc + r, n, mat.TEX_PAINT, t, k)  # tail cone
        half = span / 2
        for s in (-1, 1):  # wings in three chord steps (sweep), root at mid-fuselage, low wing
            for j, (y0, y1, x0, x1) in enumerate(((r, 7.0, -4.0, 2.5), (7.0, 12.0, -6.0, -1.0),
                                                  (12.0, half, -8.0, -5.5))):
                z = 2.3 + 0.12 * j
                b.box(x0, x1, *sorted((s * y0, s * y1)), z, z + 0.45, n, mat.TEX_PAINT, t, k)
            b.box(-1.0, 3.2, *sorted((s * 4.8, s * 6.8)), 0.55, 2.45, n, mat.TEX_TYRE, t, k)  # engine
            b.box(-1.2, 1.2, *sorted((s * 2.6, s * 4.2)), 0.0, 1.9, n, mat.TEX_TYRE, t, k)   # main gear
            b.box(-hl + 0.5, -hl + 3.5, *sorted((s * 0.4, s * 6.2)), zc + 0.6, zc + 0.9, n, mat.TEX_PAINT,
                  t, k)  # tailplane
        b.box(-hl + 0.3, -hl + 5.8, -0.2, 0.2, zc + r, 11.8, n, mat.TEX_PAINT, t, k)   # fin
        b.box(hl - 6.0, hl - 5.2, -0.3, 0.3, 0.0, 1.9, n, mat.TEX_TYRE, t, k)          # nose gear
    return shape


def tug_shape(length: float = 3.2, width: float = 1.9) -> Shape:
    def shape(b: Builder, k: int) -> None:
        n, t = "airside.gse.tug", b.tint(0.06)
        b.box(-length / 2, length / 2, -width / 2, width / 2, 0.25, 1.1, n, mat.TEX_PAINT, t, k)
        b.box(-length / 2, -length / 2 + 1.0, -width / 2 + 0.2, width / 2 - 0.2, 1.1, 1.9, n, mat.TEX_GLASS,
              t, k)
        b.box(length / 2, length / 2 + 1.6, -0.08, 0.08, 0.35, 0.5, n, mat.TEX_PLAIN, t, k)  # tow bar
    return shape


def belt_loader_shape(length: float = 7.5) -> Shape:
    def shape(b: Builder, k: int) -> None:
        n, t = "airside.gse.belt_loader", b.tint(0.06)
        b.box(-length / 2, length / 2 - 2.5, -0.95, 0.95, 0.3, 1.0, n, mat.TEX_PAINT, t, k)  # chassis
        b.box(length / 2 - 2.5, length / 2, -0.95, 0.95, 0.3, 1.8, n, mat.TEX_GLASS, t, k)  # cab
        for j in range(4):  # the inclined belt, rising backwards to the hold door
            x1 = length / 2 - 2.6 - j * 1.6
            b.box(x1 - 1.6, x1, -0.5, 0.5, 1.0 + 0.55 * j, 1.3 + 0.55 * j, n, mat.TEX_STRIPES, t, k)
    return shape


def fuel_truck_shape(length: float = 9.0) -> Shape:
    def shape(b: Builder, k: int) -> None:
        n, t = "airside.gse.fuel_truck", b.tint(0.05)
        b.box(length / 2 - 2.2, length / 2, -1.25, 1.25, 0.4, 3.0, n, mat.TEX_GLASS, t, k)
        b.box(-length / 2, length / 2 - 2.4, -1.2, 1.2, 1.0, 3.1, n, mat.TEX_PAINT, t, k)   # tank
        for ax in (-length / 2 + 1.2, length / 2 - 1.3):
            b.box(ax - 0.5, ax + 0.5, -1.2, 1.2, 0.0, 1.0, n, mat.TEX_TYRE, t, k)
    return shape


def cart_shape(length: float = 3.0) -> Shape:
    def shape(b: Builder, k: int) -> None:
        n, t = "airside.gse.baggage_cart", b.tint(0.08)
        b.box(-length / 2, length / 2, -0.8, 0.8, 0.3, 0.6, n, mat.TEX_PLAIN, t, k)
        b.box(-length / 2, length / 2, -0.8, 0.8, 0.6, 1.9, n, mat.TEX_PAINT, t, k, shade=0.8)  # luggage
        b.box(length / 2, length / 2 + 1.2, -0.06, 0.06, 0.35, 0.45, n, mat.TEX_PLAIN, t, k)  # tow bar
    return shape


def cone_shape(b: Builder, k: int) -> None:
    n = "airside.cone"
    b.cyl(0.0, 0.0, 0.0, 0.08, 0.22, n, mat.TEX_PLAIN, None, k, shade=0.5)
    b.cyl(0.0, 0.0, 0.08, 0.75, 0.12, n, mat.TEX_STRIPES, None, k)


# --- layout ------------------------------------------------------------------------------------

def _snap(v: float) -> float:
    return round(v, 1)


def _ground(x0: float, x1: float, stands: list[float]) -> list[Region]:
    """Apron concrete (default), grass beyond the taxi lane, yellow markings: service-road edge
    lines, taxi-lane centreline, stand lead-in lines and stop bars (edges on the 0.1 m raster)."""
    m = LABEL["airside.marking"]
    regions = [Region(x0, x1, -60.0, _snap(TAXI_Y - 12.0), LABEL["airside.grass"])]
    for y in (-4.3, 0.8):  # service road edges (solid)
        regions.append(Region(x0, x1, y, _snap(y + 0.2), m))
    x = x0
    while x < x1:  # taxi-lane centreline, dashed
        regions.append(Region(_snap(x), _snap(x + 3.0), _snap(TAXI_Y - 0.1), _snap(TAXI_Y + 0.1), m))
        x += 6.0
    for xs in stands:
        regions.append(Region(_snap(xs - 0.1), _snap(xs + 0.1), 3.0, _snap(TERMINAL_Y - 4.0), m))  # lead-in
        regions.append(Region(_snap(xs - 2.0), _snap(xs + 2.0), 42.0, 42.3, m))  # stop bar
        for s in (-1, 1):  # stand boundary (red in reality; one marking class here)
            xb = _snap(xs + s * STAND_PITCH / 2)
            regions.append(Region(xb - 0.1, xb + 0.1, 3.0, _snap(TERMINAL_Y - 1.0), m))
    return regions


def _stand(b: Builder, xs: float, rng: np.random.Generator, busy: bool) -> None:
    """One stand: a parked aircraft (nose to the terminal), jet bridge, GSE, crew, cones."""
    nose_y = 44.0
    ac_len = 37.6
    b.add_object("airside.aircraft", xs, nose_y - ac_len / 2, np.pi / 2, 0.0, "vehicle.parked",
                 aircraft_shape(ac_len))
    # jet bridge (stuff): tunnel from the terminal to the forward door (left side, x < xs), on a column
    jb, door_y = "airside.jet_bridge", nose_y - 6.0
    b.box(xs - 9.0, xs - 2.2, door_y - 1.3, door_y + 1.3, 3.4, 6.2, jb, mat.TEX_PAINT)      # cab
    b.box(xs - 11.5, xs - 9.0, door_y - 1.3, TERMINAL_Y, 3.6, 6.4, jb, mat.TEX_GLASS)        # tunnel
    b.cyl(xs - 10.2, door_y + 2.0, 0.0, 3.6, 0.45, jb, mat.TEX_PLAIN)                        # column
    b.box(xs - 11.0, xs - 9.4, door_y + 1.3, door_y + 2.7, 0.0, 0.9, jb, mat.TEX_TYRE)       # wheel bogie
    # cones: nose, wingtips, engines
    for cx, cy in ((0.0, nose_y + 2.0), (-18.8, nose_y - 20.5), (18.8, nose_y - 20.5), (-5.8, nose_y - 13.5),
                   (5.8, nose_y - 13.5), (0.0, nose_y - ac_len - 2.0)):
        b.add_object("airside.cone", xs + cx, cy, 0.0, 0.0, None, cone_shape)
    if not busy:
        return
    # belt loader at the forward hold (right side), a baggage train beside it, fuel truck at the wing
    b.add_object("airside.gse.belt_loader", xs + 5.8, nose_y - 9.0, 0.0, 0.0, "vehicle.parked",
                 belt_loader_shape())
    y = nose_y - 14.0
    b.add_object("airside.gse.tug", xs + 9.0, y, np.pi / 2, 0.0, "vehicle.parked", tug_shape())
    for j in range(int(rng.integers(2, 4))):
        b.add_object("airside.gse.baggage_cart", xs + 9.0, y - 3.4 - j * 4.4, np.pi / 2, 0.0, "vehicle.parked",
                     cart_shape())
    b.add_object("airside.gse.fuel_truck", xs + 14.0, nose_y - 33.0, np.pi, 0.0, "vehicle.parked",
                 fuel_truck_shape())
    for _ in range(int(rng.integers(2, 5))):  # ground crew standing about
        b.add_object("airside.person", xs + rng.uniform(2.5, 4.0), nose_y - rng.uniform(10.0, 14.0),
                     rng.uniform(-np.pi, np.pi), 0.0, "pedestrian.standing",
                     pedestrian_shape("airside.person", rng.uniform(1.65, 1.9)))


def _terminal(b: Builder, x0: float, x1: float, rng: np.random.Generator) -> None:
    """The terminal façade (glass and panels) behind the stands, and light poles between stands."""
    n = "airside.terminal"
    x = x0
    while x < x1:
        w = rng.uniform(12.0, 24.0)
        h = rng.uniform(12.0, 18.0)
        b.box(x, x + w, TERMINAL_Y, TERMINAL_Y + 20.0, 0.0, h, n, mat.TEX_FACADE, b.tint(0.05))
        b.box(x, x + w, TERMINAL_Y - 0.3, TERMINAL_Y, 3.0, h - 2.0, n, mat.TEX_GLASS, b.tint(0.05))
        x += w


def _light_poles(b: Builder, stands: list[float]) -> np.ndarray:
    """Poles between stands with a floodlight head; returns the lamp positions (L, 3)."""
    n = "airside.light_pole"
    lamps = []
    for xs in stands:
        for x, y in ((xs + STAND_PITCH / 2, TERMINAL_Y - 3.0), (xs + STAND_PITCH / 2, 3.8)):
            b.cyl(x, y, 0.0, cond.LAMP_HEIGHT, 0.3, n, mat.TEX_PLAIN)
            b.box(x - 1.2, x + 1.2, y - 0.6, y + 0.6, cond.LAMP_HEIGHT, cond.LAMP_HEIGHT + 1.0, n, mat.TEX_GLASS)
            lamps.append((x, y, cond.LAMP_HEIGHT - 0.05))
    return np.array(lamps, np.float64).reshape(-1, 3)


def _traffic(b: Builder, x0: float, x1: float, duration: float, rng: np.random.Generator) -> None:
    """Moving things: an aircraft under tow on the taxi lane, a baggage train and a fuel truck on
    the service road (opposite lane), and people walking along the stand line."""
    v_tow = rng.uniform(1.5, 2.5)
    xa = rng.uniform(-20.0, 20.0)
    b.add_object("airside.aircraft", xa, TAXI_Y, 0.0, v_tow, "vehicle.moving", aircraft_shape())
    b.add_object("airside.gse.tug", xa + 18.8 + 2.5, TAXI_Y, 0.0, v_tow, "vehicle.moving", tug_shape())
    v_train = rng.uniform(3.0, 5.0)
    x = x0 - v_train * duration + rng.uniform(0.0, 20.0)
    y = 2.0 - 0.25
    while x < x1:  # opposite lane: tug then carts, all at the train's speed, heading -x
        b.add_object("airside.gse.tug", x, y, np.pi, v_train, "vehicle.moving", tug_shape())
        for j in range(3):
            b.add_object("airside.gse.baggage_cart", x + 3.4 + j * 4.4, y, np.pi, v_train, "vehicle.moving",
                         cart_shape())
        x += rng.uniform(45.0, 80.0)
        if x < x1 and rng.uniform() < 0.5:
            b.add_object("airside.gse.fuel_truck", x, y, np.pi, v_train, "vehicle.moving", fuel_truck_shape())
            x += rng.uniform(25.0, 40.0)
    for band, sign in ((5.5, 1), (6.5, -1)):  # walkers between the road and the stands
        v = rng.uniform(1.0, 1.5)
        x = x0 - v * duration + rng.uniform(0.0, 8.0)
        while x < x1 + v * duration:
            b.add_object("airside.person", x, band, 0.0 if sign > 0 else np.pi, v, "pedestrian.moving",
                         pedestrian_shape("airside.person", rng.uniform(1.6, 1.9)))
            x += rng.uniform(10.0, 30.0)


def build_airside_world(rng: np.random.Generator, duration: float, night: bool = False, wet: bool = False
                        ) -> World:
    """An apron scene long enough for the ego to drive `duration` seconds with 70 m around it.

    `night`: floodlit low light; `wet`: wet, reflective pavement (renderocc/synth/conditions.py).
    `wet` draws nothing from `rng`: a wet scene is the dry scene of the same seed, wet."""
    b = Builder(rng)
    v = rng.uniform(4.0, 7.0)
    path = v * duration
    x0, x1 = -95.0, float(np.ceil(path + 95.0))
    first = rng.uniform(-30.0, 10.0)
    stands = [float(_snap(s)) for s in np.arange(first - 3 * STAND_PITCH, x1 + STAND_PITCH, STAND_PITCH)
              if x0 - 20.0 < s < x1 + 20.0]
    for xs in stands:
        _stand(b, xs, rng, busy=rng.uniform() < 0.8)
    _terminal(b, x0 - 20.0, x1 + 20.0, rng)
    lamps = _light_poles(b, stands)
    _traffic(b, x0, x1, duration, rng)
    if night:  # floodlit night: light from high above, low light overall
        sun = np.array([0.1, 0.2, 0.97])
    else:
        el, az = rng.uniform(0.5, 1.0), rng.uniform(-np.pi, np.pi)
        sun = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    origin = (rng.uniform(300, 1500), rng.uniform(300, 1500), rng.uniform(-np.pi, np.pi))
    return World(
        parts=b.freeze(), instances=b.instances, regions=_ground(x0, x1, stands),
        default_ground=(LABEL["airside.apron"], mat.TEX_TILES), ego_x0=0.0, ego_y0=SERVICE_Y,
        ego_speed=v, ego_wobble=rng.uniform(0.0, 0.2), sun=sun / np.linalg.norm(sun), origin=origin,
        extent=(x0, x1), lane_marks=[], classes=class_table(),
        light=cond.NIGHT_AMBIENT if night else 1.0, lamps=lamps, wet=wet,
    )
