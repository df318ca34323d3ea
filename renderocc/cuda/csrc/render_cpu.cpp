// CPU kernels: rays in blocks that threads take as they finish, around the shared per-ray math.
//
// The render backward splits the GRID between threads, not the rays, so it needs no private
// copy of the gradients. Rays go in chunks; pass 1 (parallel over rays) marches each ray and
// records every sample's (dLoss/dsigma, weight; probs mode: <g_sem, s>); pass 2 (parallel over slabs of x
// rows, sized to the chunk's work) has each thread replay the slot rule (render_core.h) over the
// samples of the rays crossing its slab and flush only the slots whose voxel lies inside it.
// Every gradient element thus receives one addition per (ray, voxel), in ray order, whatever the
// thread count: race-free, deterministic, and equal to a one-thread run; the only extra memory
// is one chunk's sample record.
//
// The density-only scatters (visibility, optical-depth backward) deal rays in fixed blocks to
// P partitions instead; each partition writes into its own buffer (partition 0 into the output
// itself) and the buffers are folded in partition order, so they are deterministic for a given
// thread count. P is capped so the extra memory stays a few density grids.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <vector>

#include "render_core.h"

namespace renderocc {

namespace {
constexpr int64_t kRayBlock = 64;
constexpr int64_t kMaxPartitions = 8;
// Rays per render-backward chunk: bounds the sample record (about 4 MB in float at 130 samples/ray).
constexpr int64_t kBackwardChunk = 4096;

template <typename T>
struct PlainAdd {
  void operator()(T* p, T v) const { *p += v; }
  void scaled_row(T* row, T a, const T* g, int64_t C) const {
    for (int64_t ch = 0; ch < C; ++ch) row[ch] += a * g[ch];
  }
  void row(T* row, const T* x, int64_t C) const {
    for (int64_t ch = 0; ch < C; ++ch) row[ch] += x[ch];
  }
};

template <typename T>
struct PlainMax {
  void operator()(T* p, T v) const { *p = v > *p ? v : *p; }
};

int64_t num_blocks(int64_t R) { return (R + kRayBlock - 1) / kRayBlock; }

int64_t num_partitions(int64_t R) {
  return std::max<int64_t>(
      1, std::min<int64_t>({static_cast<int64_t>(at::get_num_threads()), kMaxPartitions, num_blocks(R)}));
}

// One output of a partitioned scatter: partition 0 writes `out` itself, the others private
// zeroed copies that fold() merges into `out` in partition order. A null `out` stays null.
template <typename T>
class PartitionBuffers {
 public:
  PartitionBuffers(T* out, int64_t n, int64_t P) : out_(out), n_(n) {
    if (out == nullptr) return;
    extra_.reserve(P - 1);
    for (int64_t p = 1; p < P; ++p) extra_.emplace_back(n, T(0));  // no zeroed prototype to copy
  }

  T* for_partition(int64_t p) { return out_ == nullptr || p == 0 ? out_ : extra_[p - 1].data(); }

  template <typename Combine>
  void fold(Combine combine) {
    if (extra_.empty()) return;
    at::parallel_for(0, n_, 4096, [&](int64_t begin, int64_t end) {
      for (const auto& buf : extra_)
        for (int64_t i = begin; i < end; ++i) out_[i] = combine(out_[i], buf[i]);
    });
  }

 private:
  T* out_;
  int64_t n_;
  std::vector<std::vector<T>> extra_;
};

// Runs per_ray(p, r) for every ray r, partition p owning blocks p, p + P, ...; partitions run
// in parallel, each in ray order.
template <typename PerRay>
void deal_rays(int64_t R, int64_t P, const PerRay& per_ray) {
  const int64_t n_blocks = num_blocks(R);
  at::parallel_for(0, P, 1, [&](int64_t p_begin, int64_t p_end) {
    for (int64_t p = p_begin; p < p_end; ++p) {
      for (int64_t blk = p; blk < n_blocks; blk += P) {
        const int64_t end = std::min(R, (blk + 1) * kRayBlock);
        for (int64_t r = blk * kRayBlock; r < end; ++r) per_ray(p, r);
      }
    }
  });
}

// Runs body(begin, end) over [0, n) in blocks of `block`, threads taking the next block as they
// finish (rays differ a lot in how far they march, so equal static halves leave a thread idle).
// Each block's outputs are its own, so the results do not depend on who ran it.
template <typename Body>
void dynamic_blocks(int64_t n, int64_t block, const Body& body) {
  std::atomic<int64_t> next{0};
  const int64_t n_blocks = (n + block - 1) / block;
  at::parallel_for(0, std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_blocks)), 1,
                   [&](int64_t, int64_t) {
                     for (int64_t b = next++; b < n_blocks; b = next++) body(b * block, std::min(n, (b + 1) * block));
                   });
}

template <typename T>
T sum_of(T x, T y) {
  return x + y;
}

template <typename T>
T max_of(T x, T y) {
  return std::max(x, y);
}
}  // namespace

// The rays in a cache-friendly order: by batch, then direction azimuth. Rays from nearby
// origins with similar azimuths cross the same voxel columns (a column's z values and classes
// are contiguous), so neighbours in this order reuse each other's cache lines; in the caller's
// (random) order almost every corner read misses the cache.
template <typename T>
std::vector<int64_t> coherent_order(const RenderArgs<T>& a) {
  std::vector<double> key(a.R);
  for (int64_t r = 0; r < a.R; ++r) {
    const double az = std::atan2(static_cast<double>(a.dirs[3 * r + 1]), static_cast<double>(a.dirs[3 * r]));
    key[r] = std::isnan(az) ? 4.0 : az;  // in [-pi, pi]; NaN directions last
  }
  std::vector<int64_t> order(a.R);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::sort(order.begin(), order.end(), [&](int64_t i, int64_t j) {
    if (a.batch[i] != a.batch[j]) return a.batch[i] < a.batch[j];
    return key[i] != key[j] ? key[i] < key[j] : i < j;
  });
  return order;
}

template <typename T>
void render_forward_cpu(const RenderArgs<T>& a) {
  const std::vector<int64_t> order = coherent_order(a);
  dynamic_blocks(a.R, kRayBlock, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(std::max<int64_t>(a.grid.C, 1));  // probs: a sample's semantics
    for (int64_t i = begin; i < end; ++i) forward_one(a, order[i], scratch.data());
  });
}

template <typename T>
struct SampleRecord {
  T g_sigma;  // dLoss/dsigma of the sample
  T w;        // its compositing weight
};

// P + 1 row boundaries splitting [0, X) into slabs of about equal work: each ray's marched
// samples spread evenly over the rows it crosses (only the speed depends on this).
std::vector<int64_t> balanced_slabs(int64_t X, int64_t P, int64_t n, const int64_t* marched,
                                    const int64_t* row_lo, const int64_t* row_hi) {
  std::vector<double> diff(X + 1, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    if (marched[i] == 0) continue;
    const double share = static_cast<double>(marched[i]) / static_cast<double>(row_hi[i] - row_lo[i] + 1);
    diff[row_lo[i]] += share;
    diff[row_hi[i] + 1] -= share;
  }
  std::vector<double> cum(X);  // work in rows [0, x]
  double row_work = 0, sum = 0;
  for (int64_t x = 0; x < X; ++x) {
    row_work += diff[x];
    sum += row_work;
    cum[x] = sum;
  }
  std::vector<int64_t> bounds(P + 1, X);
  bounds[0] = 0;
  int64_t x = 0;
  for (int64_t p = 1; p < P; ++p) {
    const double target = sum * static_cast<double>(p) / static_cast<double>(P);
    while (x < X && cum[x] < target) ++x;
    bounds[p] = std::max(bounds[p - 1], x);
  }
  return bounds;
}

// Pass 2 for one ray and one slab of x rows [x_begin, x_end): replay the slot rule over the
// ray's samples that touch the slab (one run: x0 is monotone along a ray) and flush the slots
// whose voxel lies in the slab. A voxel's samples all touch its slab, so its slot gathers
// exactly what a full march gathers. `dots`: each sample's <g_sem, s> (probs mode with a semantic
// gradient only).
template <typename T>
void replay_slab(const RenderArgs<T>& a, int64_t r, const SampleRecord<T>* rec, const T* dots, int64_t marched,
                 int64_t x_begin, int64_t x_end, T* scratch) {
  const GridView<T>& g = a.grid;
  const int64_t C = g.C, b = a.batch[r], vox = g.X * g.Y * g.Z;
  const bool probs = a.march.probs;
  const T *o = a.origins + 3 * r, *d = a.dirs + 3 * r, *g_sem = a.g_sem + r * C;
  T* grad_density = a.grad_density + b * vox;
  T* grad_sem = a.grad_sem ? a.grad_sem + b * vox * C : nullptr;
  RayMarch<T> m;
  start_march(g, b, o, d, a.march, m);
  const int64_t x_step = g.X > 1 ? 1 : 0;
  GradSlots<T> gs = {};
  gs.G = probs && grad_sem != nullptr ? scratch + C : nullptr;
  SlotCell<int64_t> slots = empty_slots<int64_t>();
  const auto leave = [&](int n, const int64_t* cell) {
    const int64_t x = cell[0] + ((n & 4) ? x_step : 0);
    if (x >= x_begin && x < x_end)
      gs.flush(n, slot_voxel(g, cell, m.off, n), C, probs, g_sem, grad_density, grad_sem, PlainAdd<T>());
  };
  const auto shift = [&](int dst, int src) { gs.move(dst, src, C); };
  const auto enter = [&](int n, const int64_t*) { gs.clear(n, C); };
  SampleCell<T, int64_t> sc;
  T c[8];
  bool entered = false;
  for (int64_t k = 0; k < marched; ++k) {
    const T t = sample_t(m.t_in, k, a.march.step);
    sample_cell(g, o, d, t, sc);
    if (sc.i[0] + x_step < x_begin || sc.i[0] >= x_end) {
      if (entered) break;  // past the slab: no later sample comes back
      continue;
    }
    entered = true;
    corner_weights(sc.f, c);
    move_slots(slots, sc.i, leave, shift, enter);
    const T* sem_grad = nullptr;
    if (gs.G != nullptr) {
      interp_rows(m.sem, C, cell_base(g, sc.i), m.off, c, scratch);
      softmax_inplace(scratch, C);
      probs_grad(rec[k].w, g_sem, dots[k], C, scratch);
      sem_grad = scratch;
    }
    gs.add(c, rec[k].g_sigma, rec[k].w, sem_grad, C);
  }
  flush_slots(slots, leave);
}

template <typename T>
void render_backward_cpu(const RenderArgs<T>& a) {
  const GridView<T>& g = a.grid;
  const int64_t C = g.C;
  const int64_t P = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), g.X));
  const int64_t scratch_size = std::max<int64_t>(9 * C, 1);  // probs: a sample's semantics + 8 slot rows
  std::vector<int64_t> start(kBackwardChunk + 1), marched(kBackwardChunk);
  std::vector<int64_t> row_lo(kBackwardChunk), row_hi(kBackwardChunk);
  std::vector<SampleRecord<T>> record;
  std::vector<T> dots;  // probs mode with a semantic gradient: each sample's <g_sem, s>
  const bool keep_dots = a.march.probs && a.grad_sem != nullptr;
  const std::vector<int64_t> order = coherent_order(a);  // also the order gradients are summed in
  for (int64_t r0 = 0; r0 < a.R; r0 += kBackwardChunk) {
    const int64_t n = std::min(kBackwardChunk, a.R - r0);
    start[0] = 0;  // each ray's record holds up to its sample count
    for (int64_t i = 0; i < n; ++i) {
      T t_in, t_out;
      int64_t K = 0;
      const int64_t r = order[r0 + i];
      if (!ray_samples(a.origins + 3 * r, a.dirs + 3 * r, g, a.march.near, a.march.step, t_in, t_out, K)) K = 0;
      start[i + 1] = start[i] + K;
    }
    if (static_cast<int64_t>(record.size()) < start[n]) record.resize(start[n]);
    if (keep_dots && static_cast<int64_t>(dots.size()) < start[n]) dots.resize(start[n]);

    // Pass 1: march every ray, record its samples and the x rows its cells span.
    dynamic_blocks(n, 16, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(std::max<int64_t>(C, 1));
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r = order[r0 + i];
        SampleRecord<T>* out = record.data() + start[i];
        int64_t x_first = 0, x_last = 0;
        marched[i] = backward_march(g, a.batch[r], a.origins + 3 * r, a.dirs + 3 * r, a.march, ray_grads(a, r),
                                    scratch.data(),
                                    [&](int64_t k, const SampleCell<T, int64_t>& sc, const T*, T g_sigma, T w, T dot) {
                                      out[k] = {g_sigma, w};
                                      if (keep_dots) dots[start[i] + k] = dot;
                                      if (k == 0) x_first = sc.i[0];
                                      x_last = sc.i[0];
                                    });
        // x0 moves monotonically along a ray, so rows [lo, hi] (x1 = x0 + 1 included) hold every
        // corner it touched.
        row_lo[i] = std::min(x_first, x_last);
        row_hi[i] = std::min<int64_t>(g.X - 1, std::max(x_first, x_last) + 1);
      }
    });

    // Pass 2: each slab's owner replays the rays that reach it.
    const std::vector<int64_t> bounds = balanced_slabs(g.X, P, n, marched.data(), row_lo.data(), row_hi.data());
    at::parallel_for(0, P, 1, [&](int64_t p_begin, int64_t p_end) {
      std::vector<T> scratch(scratch_size);
      for (int64_t p = p_begin; p < p_end; ++p) {
        const int64_t x_begin = bounds[p], x_end = bounds[p + 1];
        if (x_begin == x_end) continue;
        for (int64_t i = 0; i < n; ++i) {
          if (marched[i] == 0 || row_hi[i] < x_begin || row_lo[i] >= x_end) continue;
          replay_slab(a, order[r0 + i], record.data() + start[i], keep_dots ? dots.data() + start[i] : nullptr,
                      marched[i], x_begin, x_end, scratch.data());
        }
      }
    });
  }
}

// Partitioned scatter of every ray into one (B, X, Y, Z) grid `out`: per_ray(r, buffer) writes
// a ray's contributions into its partition's buffer, `combine` folds the buffers.
template <typename T, typename PerRay, typename Combine>
void scatter_to_grid(const RenderArgs<T>& a, T* out, const PerRay& per_ray, Combine combine) {
  const int64_t P = num_partitions(a.R);
  PartitionBuffers<T> grid(out, a.B * a.grid.X * a.grid.Y * a.grid.Z, P);
  deal_rays(a.R, P, [&](int64_t p, int64_t r) { per_ray(r, grid.for_partition(p)); });
  grid.fold(combine);
}

// Same partition scheme as the backward, with max instead of sum.
template <typename T>
void visibility_cpu(const RenderArgs<T>& a) {
  scatter_to_grid(a, a.visibility, [&](int64_t r, T* vis) { visibility_one(a, r, vis, PlainMax<T>()); },
                  max_of<T>);
}

template <typename T>
void optical_depth_cpu(const RenderArgs<T>& a) {
  at::parallel_for(0, a.R, kRayBlock, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) optical_depth_one(a, r);
  });
}

template <typename T>
void optical_depth_backward_cpu(const RenderArgs<T>& a) {
  scatter_to_grid(
      a, a.grad_density, [&](int64_t r, T* grad) { optical_depth_backward_one(a, r, grad, PlainAdd<T>()); },
      sum_of<T>);
}

template void render_forward_cpu<float>(const RenderArgs<float>&);
template void render_forward_cpu<double>(const RenderArgs<double>&);
template void render_backward_cpu<float>(const RenderArgs<float>&);
template void render_backward_cpu<double>(const RenderArgs<double>&);
template void visibility_cpu<float>(const RenderArgs<float>&);
template void visibility_cpu<double>(const RenderArgs<double>&);
template void optical_depth_cpu<float>(const RenderArgs<float>&);
template void optical_depth_cpu<double>(const RenderArgs<double>&);
template void optical_depth_backward_cpu<float>(const RenderArgs<float>&);
template void optical_depth_backward_cpu<double>(const RenderArgs<double>&);

}  // namespace renderocc
