"""Synthetic worlds of analytic primitives, written as devkit-loadable nuScenes datasets.

Every file the writer produces is derived from one procedural world per scene, so the 3D truth
(Occ3D voxels, per-point instance and motion) is known exactly.

Modules, in data-flow order:
    populate   procedural street layout -> World         world      primitives, tracks, ground, ego path
    raycast    windowed z-buffer ray casting              lidar      32-ring LiDAR sweeps
    camera     rig, pinhole grids, shading                occ_gt     Occ3D semantics + ray-cast masks
    frame      one keyframe's files (worker unit)         tables     nuScenes record shapes, tokens
    writer     write_dataset(): plan, run, tables, atomic rename
    commands   the `renderocc synth nuscenes` click command
"""
