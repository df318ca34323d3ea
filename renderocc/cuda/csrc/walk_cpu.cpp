// CPU voxel walk to the first occupied voxel per layer: `renderocc.ops.first_hits` with the extension.
//
// Each line mirrors one numpy operation of `geometry.traversal._walk_start` / `_walk_numpy_part` in the
// same order (float64, no fused multiply-add: -std=c++20 keeps contraction off), so both give
// bit-identical results; tests/test_geometry.py holds them to it. One ray per iteration, rays
// split over threads in contiguous blocks, each ray writing only its own outputs.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "walk.h"

namespace renderocc {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The padded flat index → the unpadded grid's flat index.
int64_t unpad(const WalkArgs& a, int64_t flat) {
  const int64_t Yp = a.shape[1] + 2, Zp = a.shape[2] + 2;
  const int64_t i = flat / (Yp * Zp) - 1, j = (flat / Zp) % Yp - 1, k = flat % Zp - 1;
  return (i * a.shape[1] + j) * a.shape[2] + k;
}

void walk_ray(const WalkArgs& a, int64_t r) {
  const double* o = a.origins + 3 * r;
  const double* d = a.dirs + 3 * r;
  // box clip (geometry.sampling.clip_to_box): slab test, t ≥ 0
  double t_near = -kInf, t_far = kInf;
  for (int ax = 0; ax < 3; ++ax) {
    const double inv = 1.0 / (std::abs(d[ax]) > 1e-12 ? d[ax] : 1e-12);
    const double hi = a.lo[ax] + static_cast<double>(a.shape[ax]) * a.vox[ax];
    const double t0 = (a.lo[ax] - o[ax]) * inv, t1 = (hi - o[ax]) * inv;
    t_near = std::max(t_near, std::min(t0, t1));
    t_far = std::min(t_far, std::max(t0, t1));
  }
  t_near = std::max(t_near, 0.0);
  if (!(t_far > t_near)) return;  // misses the box: outputs keep -1 / NaN / false
  // start voxel, first crossing and crossing interval per axis
  const int64_t Yp = a.shape[1] + 2, Zp = a.shape[2] + 2;
  const int64_t stride[3] = {Yp * Zp, Zp, 1};
  double t[3], dt[3];
  int64_t mv[3], flat = 0;
  for (int ax = 0; ax < 3; ++ax) {
    const double u = std::floor((o[ax] + t_near * d[ax] - a.lo[ax]) / a.vox[ax]);
    const int64_t idx = std::clamp(static_cast<int64_t>(u), int64_t{0}, a.shape[ax] - 1);
    const int64_t step = d[ax] >= 0 ? 1 : -1;
    const double boundary = a.lo[ax] + static_cast<double>(idx + (step > 0)) * a.vox[ax];
    t[ax] = d[ax] != 0 ? (boundary - o[ax]) / d[ax] : kInf;
    dt[ax] = d[ax] != 0 ? a.vox[ax] / std::abs(d[ax]) : kInf;
    mv[ax] = step * stride[ax];
    flat += (idx + 1) * stride[ax];
  }
  const uint8_t all = static_cast<uint8_t>((1u << a.L) - 1u);
  uint8_t cur = a.bits[flat], found = 0;
  for (;;) {
    // SparseOcc's branch order: x only when strictly first; z wins ties with y, y with x
    const int ax = (t[0] < t[1] && t[0] < t[2]) ? 0 : (t[1] < t[2] ? 1 : 2);
    const uint8_t occ = cur & static_cast<uint8_t>(~found);
    if (occ) {  // entered an occupied voxel: it ends where the ray leaves it
      for (int64_t k = 0; k < a.L; ++k) {
        if ((occ >> k) & 1) {
          a.voxel[k * a.R + r] = unpad(a, flat);
          a.dist[k * a.R + r] = t[ax];
          a.hit[k * a.R + r] = true;
        }
      }
      found |= occ;
      if (found == all) return;
    }
    flat += mv[ax];
    cur = a.bits[flat];
    if (cur == a.border) {  // left the grid: layers without a hit end in the last voxel, at the exit
      for (int64_t k = 0; k < a.L; ++k) {
        if (!((found >> k) & 1)) {
          a.voxel[k * a.R + r] = unpad(a, flat - mv[ax]);
          a.dist[k * a.R + r] = t[ax];
        }
      }
      return;
    }
    t[ax] += dt[ax];
  }
}

}  // namespace

void first_hits_cpu(const WalkArgs& a) {
  const int64_t grain = a.threads > 0 ? std::max<int64_t>(1, (a.R + a.threads - 1) / a.threads) : 2048;
  at::parallel_for(0, a.R, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) walk_ray(a, r);
  });
}

}  // namespace renderocc
