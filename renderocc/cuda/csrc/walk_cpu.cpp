// CPU voxel walk to the first occupied voxel per layer: the inner loop of `raygrid.first_hits`.
//
// Python prepares every ray (box clip, start voxel, first crossings, per-axis increments) so
// both implementations share that arithmetic; this loop then does only what numpy does per step,
// the same double additions and comparisons in the same order, so the results are identical.
// One ray per iteration, rays split over threads in contiguous blocks (no shared writes).
#include <ATen/Parallel.h>

#include "walk.h"

namespace renderocc {

namespace {

void walk_ray(const WalkArgs& a, int64_t r) {
  const uint8_t all = static_cast<uint8_t>((1u << a.L) - 1u);
  double t[3] = {a.t_next[3 * r], a.t_next[3 * r + 1], a.t_next[3 * r + 2]};
  const double* dt = a.t_delta + 3 * r;
  const int64_t* mv = a.move + 3 * r;
  int64_t flat = a.start[r];
  uint8_t cur = a.bits[flat], found = 0;
  for (;;) {
    // SparseOcc's branch order: x only when strictly first; z wins ties with y, y with x
    const int axis = (t[0] < t[1] && t[0] < t[2]) ? 0 : (t[1] < t[2] ? 1 : 2);
    const uint8_t occ = cur & static_cast<uint8_t>(~found);
    if (occ) {  // entered an occupied voxel: it ends where the ray leaves it
      for (int64_t k = 0; k < a.L; ++k) {
        if ((occ >> k) & 1) {
          a.voxel[k * a.R + r] = flat;
          a.dist[k * a.R + r] = t[axis];
          a.hit[k * a.R + r] = true;
        }
      }
      found |= occ;
      if (found == all) return;
    }
    flat += mv[axis];
    cur = a.bits[flat];
    if (cur == a.border) {  // left the grid: layers without a hit end in the last voxel
      for (int64_t k = 0; k < a.L; ++k) {
        if (!((found >> k) & 1)) {
          a.voxel[k * a.R + r] = flat - mv[axis];
          a.dist[k * a.R + r] = t[axis];
        }
      }
      return;
    }
    t[axis] += dt[axis];
  }
}

}  // namespace

void first_hits_cpu(const WalkArgs& a) {
  const int64_t grain = a.threads > 0 ? (a.R + a.threads - 1) / a.threads : 4096;
  at::parallel_for(0, a.R, grain > 0 ? grain : 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) walk_ray(a, r);
  });
}

}  // namespace renderocc
