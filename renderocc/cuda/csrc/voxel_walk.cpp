// Exact voxel traversal (Amanatides & Woo) marking every voxel a segment crosses: the compiled
// twin of renderocc.geometry.traversal.VoxelWalk / mark_crossed_numpy, for QA's coverage counts.
//
// It repeats the numpy walk's float64 arithmetic operation for operation (slab clip with the
// 1e-12 direction floor, start voxel, boundary distances, first-minimum axis choice, the
// `t_next <= t_end` stop), so both mark exactly the same voxels; tests compare them.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "checks.h"

namespace renderocc {

namespace {
constexpr int64_t kParallelRays = 8192;  // fewer rays walk on one thread

// numpy's minimum/maximum: NaN wins.
double np_min(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : (a < b ? a : b); }
double np_max(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : (a > b ? a : b); }

// numpy's argmin over three values: the first NaN (only possible for non-finite rays, hence
// `may_nan`), else the first minimum.
int np_argmin3(const double* t, bool may_nan) {
  if (may_nan) {
    for (int a = 0; a < 3; ++a)
      if (std::isnan(t[a])) return a;
  }
  const int a01 = t[1] < t[0] ? 1 : 0;  // branch-free: the winner is unpredictable
  return t[2] < t[a01] ? 2 : a01;
}

// floor(x).astype(int64) then clip to [0, n - 1], with NaN (numpy: INT64_MIN) clipped to 0.
int64_t start_index(double x, int64_t n) {
  const double f = std::floor(x);
  if (!(f >= 0)) return 0;
  if (f >= static_cast<double>(n - 1)) return n - 1;
  return static_cast<int64_t>(f);
}

// Where one segment's walk stands: the voxel it is in and the next boundary per axis.
struct Walk {
  int64_t idx[3], step[3], flat;
  double t_max[3], t_delta[3], t_far;
  bool may_nan;
};

// Clips the segment to the box and places it in its first voxel; false when nothing is crossed.
bool start_walk(const double* o, const double* d, double length, const double* lo, const double* hi,
                const double* vs, const int64_t* shape, const int64_t* strides, Walk& w) {
  double t_near = -INFINITY, t_far = INFINITY;
  double t0[3], t1[3];
  for (int a = 0; a < 3; ++a) {
    const double inv = 1.0 / (std::fabs(d[a]) > 1e-12 ? d[a] : 1e-12);
    t0[a] = (lo[a] - o[a]) * inv;
    t1[a] = (hi[a] - o[a]) * inv;
  }
  t_near = np_min(t0[0], t1[0]);
  t_far = np_max(t0[0], t1[0]);
  for (int a = 1; a < 3; ++a) {
    t_near = np_max(t_near, np_min(t0[a], t1[a]));
    t_far = np_min(t_far, np_max(t0[a], t1[a]));
  }
  t_near = np_max(t_near, 0.0);
  t_far = np_min(t_far, length);
  if (!(t_far >= t_near)) return false;
  w.t_far = t_far;
  for (int a = 0; a < 3; ++a) {
    w.idx[a] = start_index((o[a] + t_near * d[a] - lo[a]) / vs[a], shape[a]);
    w.step[a] = d[a] > 0 ? 1 : (d[a] < 0 ? -1 : 0);
    const double boundary = lo[a] + static_cast<double>(w.idx[a] + (w.step[a] > 0 ? 1 : 0)) * vs[a];
    w.t_max[a] = w.step[a] != 0 ? (boundary - o[a]) / d[a] : INFINITY;
    w.t_delta[a] = w.step[a] != 0 ? vs[a] / std::fabs(d[a]) : INFINITY;
  }
  // With finite o and d every t_max is finite or +inf, never NaN.
  w.may_nan = !(std::isfinite(o[0]) && std::isfinite(o[1]) && std::isfinite(o[2]) && std::isfinite(d[0]) &&
                std::isfinite(d[1]) && std::isfinite(d[2]));
  w.flat = w.idx[0] * strides[0] + w.idx[1] * strides[1] + w.idx[2];
  return true;
}

// Marks the current voxel and moves to the next; false once the segment has left it for good.
inline bool advance(Walk& w, const int64_t* shape, const int64_t* strides, bool* hit) {
  hit[w.flat] = true;
  const int a = np_argmin3(w.t_max, w.may_nan);
  const double t_next = w.t_max[a];
  w.idx[a] += w.step[a];
  w.flat += w.step[a] * strides[a];
  w.t_max[a] += w.t_delta[a];
  return t_next <= w.t_far && w.idx[a] >= 0 && w.idx[a] < shape[a];
}

// Rays walked side by side by one thread. A step depends on the step before (argmin, then the
// chosen t_max), so one walk leaves the core mostly waiting; independent walks interleaved
// fill those gaps. Each walk's arithmetic is unchanged, and marks are ORs, so the marks are too.
constexpr int kLanes = 8;

void walk_rays(int64_t begin, int64_t end, const double* o, const double* d, const double* len, const double* lo,
               const double* hi, const double* vs, const int64_t* shape, const int64_t* strides, bool* hit) {
  Walk lane[kLanes];
  bool live[kLanes];
  int64_t next = begin;
  const auto refill = [&](Walk& w) {
    for (; next < end; ++next)
      if (start_walk(o + 3 * next, d + 3 * next, len[next], lo, hi, vs, shape, strides, w)) {
        ++next;
        return true;
      }
    return false;
  };
  int n_live = 0;
  for (int l = 0; l < kLanes; ++l) n_live += (live[l] = refill(lane[l]));
  while (n_live > 0) {
    for (int l = 0; l < kLanes; ++l) {
      if (!live[l] || advance(lane[l], shape, strides, hit)) continue;
      live[l] = refill(lane[l]);
      n_live -= !live[l];
    }
  }
}
}  // namespace

// hit: a contiguous bool (X, Y, Z) grid, marked in place.
void mark_crossed_cpu(const at::Tensor& origins, const at::Tensor& dirs, const at::Tensor& lengths,
                      const std::vector<double>& box, const std::vector<double>& voxel, const at::Tensor& hit) {
  RO_CHECK(origins.scalar_type() == at::kDouble && dirs.scalar_type() == at::kDouble &&
                  lengths.scalar_type() == at::kDouble,
              "mark_crossed: origins, directions and lengths must be float64");
  RO_CHECK(origins.dim() == 2 && origins.size(1) == 3 && dirs.sizes() == origins.sizes() &&
                  lengths.dim() == 1 && lengths.size(0) == origins.size(0),
              "mark_crossed: origins/directions (N, 3) and lengths (N,)");
  RO_CHECK(origins.is_contiguous() && dirs.is_contiguous() && lengths.is_contiguous() && hit.is_contiguous(),
              "mark_crossed: inputs must be contiguous");
  RO_CHECK(hit.scalar_type() == at::kBool && hit.dim() == 3, "mark_crossed: hit must be a bool (X, Y, Z) grid");
  RO_CHECK(box.size() == 6 && voxel.size() == 3, "mark_crossed: box needs 6 numbers, voxel_size 3");
  RO_CHECK(!origins.is_cuda() && !hit.is_cuda(), "mark_crossed: CPU tensors only");
  const double lo[3] = {box[0], box[1], box[2]}, hi[3] = {box[3], box[4], box[5]};
  const double vs[3] = {voxel[0], voxel[1], voxel[2]};
  const int64_t shape[3] = {hit.size(0), hit.size(1), hit.size(2)};
  const int64_t strides[3] = {shape[1] * shape[2], shape[2], 1};
  const double *o = origins.data_ptr<double>(), *d = dirs.data_ptr<double>(), *len = lengths.data_ptr<double>();
  bool* grid = hit.data_ptr<bool>();
  const int64_t N = origins.size(0), cells = shape[0] * shape[1] * shape[2];
  // Threads mark private grids (thread 0 the output itself), OR-ed afterwards: no two threads
  // write one byte, and an OR does not depend on the order.
  const int64_t P = N >= kParallelRays ? std::max<int64_t>(1, at::get_num_threads()) : 1;
  if (P == 1) {
    walk_rays(0, N, o, d, len, lo, hi, vs, shape, strides, grid);
    return;
  }
  std::vector<std::unique_ptr<bool[]>> extra;
  for (int64_t p = 1; p < P; ++p) extra.emplace_back(new bool[cells]());
  at::parallel_for(0, N, kParallelRays / 4, [&](int64_t begin, int64_t end) {
    const int64_t t = at::get_thread_num();
    RO_CHECK(t >= 0 && t < P, "mark_crossed: unexpected thread index");
    bool* mine = t == 0 ? grid : extra[t - 1].get();
    walk_rays(begin, end, o, d, len, lo, hi, vs, shape, strides, mine);
  });
  for (const auto& buf : extra)
    for (int64_t i = 0; i < cells; ++i) grid[i] = grid[i] || buf[i];
}

}  // namespace renderocc
