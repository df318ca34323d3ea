"""`SweepFrames`: a store's camera sweeps read like its keyframes.

Camera sweeps are unlabelled camera frames between keyframes (`prep nuscenes --camera-sweeps N`),
each with depth rays from the LiDAR sample_data nearest in time and no semantics. The view is a
`StoreReader` over sweeps.parquet, sweep_rays/ and sweep_images/ (layout.SWEEP_FRAMES), so code
written for keyframes (the training dataset, QA) runs on it unchanged: same methods, same return
shapes, with what sweeps lack answered as a store without it would (no semantics, no Occ3D GT, no
2D masks, no free beams, no neighbours).
"""

from __future__ import annotations

import numpy as np

from renderocc.errors import UserError
from renderocc.store import fsio, layout
from renderocc.store.reader import StoreReader

# what a sweep view shares with the reader of its store (the rest is its own)
_SHARED = ("root", "manifest", "in_progress", "consistent", "cameras", "image_size", "image_codec", "grid",
           "vocabulary", "semantic_mask_array", "_shard_records", "_pending")


class SweepFrames(StoreReader):
    """The camera sweep frames of a store; index j = sweep index (row j of sweeps.parquet)."""

    frames = layout.SWEEP_FRAMES

    def __init__(self, store: StoreReader):
        """The sweep frames of the store `store` reads (made by `StoreReader.sweep_frames()`)."""
        for name in _SHARED:
            setattr(self, name, getattr(store, name))
        info = layout.camera_sweeps(self.manifest)
        self.has_semantics = False
        self.has_occ_gt = False
        self.has_semantic_masks = False
        self.has_free_beams = False
        # dynamic/instance ray columns and sweep_motion_mask/ exist once prep motion-masks flagged the sweeps
        self.has_motion_masks = bool(store.has_motion_masks and info and info.get("motion_masks") is True)
        self.num_sweeps = 0   # a sweep frame has no sweeps of its own
        self.num_keyframes = len(store)
        count = layout.num_sweeps(self.manifest)
        if count:
            self._load_frames(count, 0, f"the manifest's {layout.CAMERA_SWEEPS}.count")
            self._check_keys()
        else:
            self._empty()
        self._init_handles()
        self._by_key: dict[int, list[int]] | None = None

    def _empty(self) -> None:
        """A store without camera sweeps: an empty view."""
        C = len(self.cameras)
        self._tokens, self._scenes, self._index = [], [], {}
        self._timestamp = np.zeros(0, np.int64)
        self._ego = self._lidar2ego = np.zeros((0, 4, 4))
        self._K = self._K_orig = np.zeros((0, C, 3, 3))
        self._cam2ego = np.zeros((0, C, 4, 4))
        self._cam_ts = np.zeros((0, C), np.int64)
        self._adj_off = (np.zeros(0, np.int8), np.zeros(1, np.int64))
        self._adj_idx, self._adj_tok, self._adj_c2e = np.zeros(0, np.int32), np.zeros(0, object), np.zeros((0, C, 4, 4))
        self._shard, self._row_group, self._ray_count = [], np.zeros(0, np.int32), np.zeros(0, np.int64)
        self._has_occ = np.zeros(0, bool)
        self._key_index, self._key_token, self._lidar_token = np.zeros(0, np.int32), [], []

    def _check_keys(self) -> None:
        """Every frame follows a keyframe of the store, in store order."""
        path = fsio.fs_path(self.root, self.frames.table)[1]
        k = self._key_index
        bad = np.nonzero((k < 0) | (k >= self.num_keyframes))[0]
        if len(bad):
            raise UserError(f"{path}: sweep {int(bad[0])} follows keyframe {int(k[bad[0]])}, but the store has "
                            f"{self.num_keyframes}")
        if len(k) > 1 and (np.diff(k) < 0).any():
            raise UserError(f"{path}: sweep frames are not in keyframe order: not a file prep wrote")

    def following(self, i: int) -> list[int]:
        """Sweep indices of the frames that follow keyframe i (i already checked)."""
        if self._by_key is None:
            self._by_key = {}
            for j, k in enumerate(self._key_index.tolist()):
                self._by_key.setdefault(int(k), []).append(j)
        return list(self._by_key.get(i, []))

    def sample(self, j: int) -> dict:
        """Metadata and geometry of sweep frame j: the keys of `StoreReader.sample` (`adjacent` empty;
        `ego_pose`: sweep ego → global, the ego of its LiDAR sample_data; `cam2ego`: camera → sweep
        ego), plus `key_sample_index`, `key_sample_token`, `lidar_token` and `frame` = "sweep"."""
        s = super().sample(j)
        j = s["sample_index"]
        s.update(key_sample_index=int(self._key_index[j]), key_sample_token=self._key_token[j],
                 lidar_token=self._lidar_token[j], frame="sweep")
        return s

    def sweep_frames(self) -> SweepFrames:
        raise UserError("sweep frames have no camera sweeps of their own (use the store's reader)")

    def sweeps_of(self, i: int) -> list[int]:
        self._check(i)
        return []   # a sweep frame has no sweeps of its own

    def occ_gt(self, i: int) -> None:
        self._check(i)
        return None

    def semantic_mask(self, i: int) -> None:
        self._check(i)
        return None

    def free_beams(self, i: int) -> None:
        self._check(i)
        return None

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_by_key"] = None
        return state

    def __repr__(self) -> str:
        return f"SweepFrames({self.root!r}, {len(self)} sweep frames, cameras={self.cameras})"
