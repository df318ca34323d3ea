"""Synthetic worlds of analytic primitives, written as devkit-loadable nuScenes datasets.

Every file the writer produces is derived from one procedural world per scene, so the 3D truth
(Occ3D voxels, per-point instance and motion) is known exactly.
"""
