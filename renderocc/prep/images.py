"""Camera images resized to the training size, and the matching intrinsics.

Resize rule (the BEVDet/RenderOcc one, made exact): scale by s = max(W_out/W, H_out/H) so the
image covers the target, crop the excess centred horizontally and from the TOP (sky) vertically.
Pixel centres follow OpenCV's convention (u_out + 0.5 = s (u + 0.5)), which the reference code's
K scaling ignores (a 0.28 px shift at 256×704).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from renderocc.errors import UserError
from renderocc.prep import jpeg_rows


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


_REDUCED = {1: cv2.IMREAD_COLOR_RGB, 2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_COLOR_RGB,
            4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_COLOR_RGB, 8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_COLOR_RGB}


def read_rgb(path: str, reduce: int = 1) -> np.ndarray:
    """Decode an image as RGB uint8 (libjpeg writes RGB: no colour conversion); `reduce` 2, 4 or 8
    decodes at 1/reduce size (JPEG DCT scaling: the IDCT work shrinks with the output)."""
    if not os.path.isfile(path):
        raise UserError(f"image missing: {path}")
    img = cv2.imread(path, _REDUCED[reduce])
    if img is None:
        raise UserError(f"image cannot be decoded: {path}")
    return img


def reduction(orig: tuple[int, int], resized: tuple[int, int]) -> int:
    """The largest DCT reduction (2, 4 or 8) that still decodes at least the resized size and
    divides the original size (so pixel centres stay at u_k + 0.5 = (u + 0.5) / k); else 1."""
    W, H = orig
    return max([1] + [k for k in _REDUCED if W % k == 0 and H % k == 0 and W // k >= resized[0]
                      and H // k >= resized[1]])


def image_size(path: str) -> tuple[int, int]:
    """(width, height): from the JPEG header when the helper can read it, else by decoding."""
    wh = jpeg_rows.size(path)
    if wh is not None:
        return wh
    img = read_rgb(path)
    return img.shape[1], img.shape[0]


def decoded_band(decoded: tuple[int, int], f: Fit) -> tuple[int, int]:
    """(first decoded row the stored image depends on, resized rows above it): (0, 0) for all.

    The top crop removes resized rows [0, crop_y). With decoded height Hd = p m and resized height
    H' = q m (p/q in lowest terms, p >= q: bilinear, never upsampling), resized row q j + r
    samples decoded rows at (q j + r + 0.5) p/q - 0.5 = p j + (r + 0.5) p/q - 0.5 >= p j: so
    resizing decoded rows [p j, Hd) to H' - q j rows gives exactly resized rows [q j, H'), with
    the same sampling positions and weights, for any q j <= crop_y."""
    Hd, rh = decoded[1], f.resized[1]
    g = math.gcd(Hd, rh)
    p, q = Hd // g, rh // g
    if p < q:
        return 0, 0
    j = f.crop[1] // q
    return p * j, q * j


def _decode_rows(path: str, orig: tuple[int, int], k: int, row0: int, rows: int) -> np.ndarray:
    """Rows [row0, row0 + rows) of the 1/k-size decode: the JPEG helper's band, else OpenCV's
    whole decode cut to it; either way the file must have the size the tables declare."""
    status, band = jpeg_rows.decode_rows(path, k, orig, row0, rows)
    if status == jpeg_rows.OK:
        return band
    if status == jpeg_rows.CORRUPT:
        raise UserError(f"image {path}: corrupt JPEG data ({band}); a decoder fills it with grey, so it is refused")
    if status == jpeg_rows.SIZE:
        size = band
    else:   # no helper, or a file it does not do: OpenCV decodes all of it
        img = read_rgb(path, k)
        size, band = (img.shape[1] * k, img.shape[0] * k), img[row0:row0 + rows]
    if tuple(size) != tuple(orig):
        raise UserError(f"image {path} is {size[0]}x{size[1]}, tables say {orig[0]}x{orig[1]}")
    return band


def load_resized(path: str, orig: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """The stored (H_out, W_out, 3) image; checks the file has the size the tables declare.

    Decoded at the largest reduction `reduction` allows, then ONE resampling to the cover size:
    bilinear while the remaining scale is at least 1/2 (always, after a reduction: a 2-tap filter
    then covers the source, like INTER_AREA at a fraction of its cost), INTER_AREA below it.
    Only the band of decoded rows the crop keeps is decoded (with the JPEG helper) and resampled:
    the same pixels as resampling the whole image and cropping (`decoded_band`)."""
    f = fit(orig, out)
    k = reduction(orig, f.resized)
    Wd, Hd = orig[0] // k, orig[1] // k
    linear = f.resized[0] * 2 >= Wd and f.resized[1] * 2 >= Hd
    if (Wd, Hd) == f.resized:   # no resampling: decode just the kept rows
        row0 = skipped = f.crop[1]
        img = _decode_rows(path, orig, k, row0, out[1])
    else:
        row0, skipped = decoded_band((Wd, Hd), f) if linear else (0, 0)
        img = cv2.resize(_decode_rows(path, orig, k, row0, Hd - row0), (f.resized[0], f.resized[1] - skipped),
                         interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_AREA)
    x0, y0 = f.crop[0], f.crop[1] - skipped
    return np.ascontiguousarray(img[y0:y0 + out[1], x0:x0 + out[0]])
