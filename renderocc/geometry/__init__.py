"""The ground floor: the voxel grid, rays, and the one set of rules for how a ray meets the grid.

- `grid`: the frozen `Grid` (box, voxel, shape), the Occ3D grid, and how a model grid is scored
  against a label grid (`Grid.coarsens`);
- `rays`: the `Rays` record and pixel / label rays;
- `sampling`: box clip, sample rule, trilinear values (the renderer's conventions);
- `traversal`: exact voxel walks (numpy twins of the compiled walks).

Everything here needs only numpy and torch and imports nothing else of the package: the compiled
ops are reached through `renderocc.ops`, one floor up.
"""

from renderocc.geometry.grid import OCC3D_GRID, Grid, GridError, Scoring
from renderocc.geometry.rays import Rays, ends_inside, label_rays, pixel_rays

__all__ = ["OCC3D_GRID", "Grid", "GridError", "Rays", "Scoring", "ends_inside", "label_rays", "pixel_rays"]
