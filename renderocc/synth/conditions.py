"""Scene conditions of the synthetic worlds: floodlit night and wet, reflective pavement.

Night: a low ambient (sky glow) plus pole floodlights, each a downward spot with inverse-square
fall-off, so image brightness depends on the distance to the nearest pole (light pools on the
apron); lamp heads glow. No shadows from the lamps (the renderer has no shadow rays).

Wet: standing water on paved ground, denser in puddles (a low-frequency wetness field in
[WETNESS_DAMP, 1]). The LiDAR loses returns there by specular reflection: a beam hitting wet
pavement at grazing incidence is mirrored away and returns nothing, with probability
`wetness * clip((COS_SPECULAR - cos(incidence)) / (COS_SPECULAR - COS_MIRROR), 0, 1)` (synth_truth
beam status BEAM_SPECULAR): puddles lose every grazing return, damp pavement some. These are
downward beams, so the free-beam logic (upward beams only) never takes them for free space. Cameras
see the pavement as a mirror: a Fresnel-weighted blend of the diffuse shade and the scene mirrored
in the ground plane, with vertical glare streaks under bright reflections.

The condition of a scene is written into its nuScenes scene description ("conditions: night,
wet"), as real nuScenes descriptions say "Night" or "Rain", so QA can group by it.
"""

from __future__ import annotations

import numpy as np

from renderocc.errors import UserError
from renderocc.synth import materials as mat

# --- night ---------------------------------------------------------------------------------------
NIGHT_AMBIENT = 0.1  # sky glow: share of the day's sun-and-sky shading left at night
NIGHT_SKY = 0.06  # night sky (and haze) brightness relative to the day's
LAMP_HEIGHT = 22.0  # metres: the lamp sits under the pole head
LAMP_POWER = 1.1 * LAMP_HEIGHT ** 2  # ground right under a lamp gets ~1.1x the day's diffuse light
LAMP_SPOT = 4.0  # cos^k fall-off of the downward floodlight
LAMP_REACH = 150.0  # metres; lamps farther from the sensor are left out (their light is ~0)
LAMP_EMISSION = 3.0  # lamp heads glow (saturate) at night

# --- wet -----------------------------------------------------------------------------------------
PAVED = np.zeros(256, bool)
for _name in ("airside.apron", "airside.marking", "flat.driveable_surface", "flat.sidewalk"):
    PAVED[mat.LABEL[_name]] = True
WETNESS_DAMP = 0.4  # wetness between puddles; puddles are 1
PUDDLE_SCALE = 1 / 6.0  # 1/m: puddle noise frequency
COS_SPECULAR = 0.5  # beams more than 60 deg from the normal start to be mirrored away ...
COS_MIRROR = 0.25  # ... and beyond ~75 deg (ground > ~7 m from a 1.8 m LiDAR) water is a mirror
FRESNEL_R0 = 0.05  # reflectance of water at normal incidence
GLARE_THRESHOLD = 200.0  # reflected radiance (0..255) above which a reflection streaks
GLARE_LENGTH = 0.12  # streak length as a share of the image height

CONDITION_WORDS = ("day", "night", "wet")


def parse_conditions(spec: str) -> list[tuple[bool, bool]]:
    """'day,night+wet' → [(night, wet), ...] per scene (cycled over the scenes by the writer)."""
    out = []
    for item in spec.split(","):
        words = [w.strip().lower() for w in item.split("+") if w.strip()]
        bad = [w for w in words if w not in CONDITION_WORDS]
        if not words or bad or ("day" in words and "night" in words):
            raise UserError(f"--conditions: {item.strip()!r} is not a condition; use day, night, wet or "
                            "combinations like night+wet, comma-separated per scene (e.g. day,night+wet)")
        out.append(("night" in words, "wet" in words))
    return out


def describe(night: bool, wet: bool) -> str:
    """The conditions as the scene description states them (QA reads them back)."""
    return "conditions: " + ("night" if night else "day") + (", wet" if wet else "")


def wetness(p: np.ndarray, noise) -> np.ndarray:
    """Water cover in [WETNESS_DAMP, 1] at ground points p (N, 3); `noise` is the camera's value noise."""
    n = 0.6 * noise(p, PUDDLE_SCALE, 5) + 0.4 * noise(p, PUDDLE_SCALE * 2.7, 6)
    puddle = np.clip((n - 0.45) / 0.15, 0.0, 1.0)
    return (WETNESS_DAMP + (1.0 - WETNESS_DAMP) * puddle).astype(np.float32)


def specular_drop_probability(cos_incidence: np.ndarray, wet: np.ndarray) -> np.ndarray:
    """Probability that a LiDAR return from wet pavement is mirrored away (no return)."""
    return wet * np.clip((COS_SPECULAR - cos_incidence) / (COS_SPECULAR - COS_MIRROR), 0.0, 1.0)


def fresnel(cos_view: np.ndarray, wet: np.ndarray) -> np.ndarray:
    """Mirror weight of wet pavement seen at cos_view (Schlick), scaled by the water cover."""
    return wet * (FRESNEL_R0 + (1.0 - FRESNEL_R0) * (1.0 - np.clip(cos_view, 0.0, 1.0)) ** 5)


def lamp_light(lamps: np.ndarray, p: np.ndarray, n: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Irradiance (N,) from downward floodlights at `lamps` (L, 3) on points p with normals n (N, 3)."""
    near = lamps[np.hypot(*(lamps[:, :2] - origin[:2]).T) < LAMP_REACH].astype(np.float32)
    out = np.zeros(len(p), np.float32)
    hit = np.flatnonzero(np.isfinite(p[:, 0]))  # not the sky
    p, n = p[hit], n[hit]
    lit = np.zeros(len(p), np.float32)
    for lamp in near:  # a handful of lamps: a loop over them keeps memory at O(N)
        v = lamp - p
        d2 = np.maximum(np.einsum("ij,ij->i", v, v), 1.0)
        inv = 1.0 / np.sqrt(d2)
        facing = np.clip(np.einsum("ij,ij->i", n, v) * inv, 0.0, 1.0)
        spot = np.clip(v[:, 2] * inv, 0.0, 1.0) ** LAMP_SPOT
        lit += facing * spot / d2
    out[hit] = lit * np.float32(LAMP_POWER)
    return out
