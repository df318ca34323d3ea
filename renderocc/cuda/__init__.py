"""The renderer: fused volume rendering of rays through voxel grids (CPU/CUDA kernels + reference).

`render_rays` picks the kernel for the tensors' device, building the extension on first use;
`renderocc.cuda.reference` holds the pure-PyTorch oracle.
"""

from renderocc.cuda.functions import RenderOutput, render_rays

__all__ = ["RenderOutput", "render_rays"]
