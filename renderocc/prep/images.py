"""Camera images resized to the training size, and the matching intrinsics.

Resize rule (the BEVDet/RenderOcc one, made exact): scale by s = max(W_out/W, H_out/H) so the
image covers the target, crop the excess centred horizontally and from the TOP (sky) vertically.
Pixel centres follow OpenCV's convention (u_out + 0.5 = s (u + 0.5)), which the reference code's
K scaling ignores (a 0.28 px shift at 256×704).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from renderocc.errors import UserError


@dataclass(frozen=True)
class Fit:
    """How an original (W, H) image maps to the stored (W_out, H_out) one."""

    scale_x: float
    scale_y: float
    resized: tuple[int, int]   # (W, H) before the crop
    crop: tuple[int, int]      # (x0, y0) removed from the left / top

    def K(self, K_orig: np.ndarray) -> np.ndarray:
        A = np.array([[self.scale_x, 0, 0.5 * (self.scale_x - 1) - self.crop[0]],
                      [0, self.scale_y, 0.5 * (self.scale_y - 1) - self.crop[1]],
                      [0, 0, 1.0]])
        return A @ K_orig


def fit(orig: tuple[int, int], out: tuple[int, int]) -> Fit:
    W, H = orig
    Wo, Ho = out
    s = max(Wo / W, Ho / H)
    rw, rh = max(Wo, round(W * s)), max(Ho, round(H * s))
    return Fit(rw / W, rh / H, (rw, rh), ((rw - Wo) // 2, rh - Ho))


def read_rgb(path: str, reduce2: bool = False) -> np.ndarray:
    """Decode an image as RGB uint8; `reduce2` decodes at half size (JPEG DCT scaling: ~3× faster)."""
    if not os.path.isfile(path):
        raise UserError(f"image missing: {path}")
    flag = cv2.IMREAD_REDUCED_COLOR_2 if reduce2 else cv2.IMREAD_COLOR
    img = cv2.imread(path, flag)
    if img is None:
        raise UserError(f"image cannot be decoded: {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_size(path: str) -> tuple[int, int]:
    img = read_rgb(path)
    return img.shape[1], img.shape[0]


def load_resized(path: str, orig: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """The stored (H_out, W_out, 3) image; checks the file has the size the tables declare."""
    f = fit(orig, out)
    W, H = orig
    half = f.scale_x <= 0.5 and f.scale_y <= 0.5 and W % 2 == 0 and H % 2 == 0
    img = read_rgb(path, reduce2=half)
    got = (img.shape[1] * (2 if half else 1), img.shape[0] * (2 if half else 1))
    if got != (W, H):
        raise UserError(f"image {path} is {got[0]}x{got[1]}, tables say {W}x{H}")
    if (img.shape[1], img.shape[0]) != f.resized:
        img = cv2.resize(img, f.resized, interpolation=cv2.INTER_AREA)
    x0, y0 = f.crop
    return np.ascontiguousarray(img[y0:y0 + out[1], x0:x0 + out[0]])
