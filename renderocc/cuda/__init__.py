"""The renderer: fused volume rendering of rays through voxel grids (CPU/CUDA kernels + reference).

`render_rays` picks the kernel for the tensors' device, building the extension on first use;
`ray_visibility` tells observed voxels; `ray_optical_depth` integrates density up to given
distances along rays; `renderocc.cuda.reference` holds the pure-PyTorch oracle.
"""

from renderocc.cuda.functions import RenderOutput, ray_optical_depth, ray_visibility, render_rays

__all__ = ["RenderOutput", "ray_optical_depth", "ray_visibility", "render_rays"]
