// CPU kernels: at::parallel_for over rays around the shared per-ray math.
//
// Scatters (backwards, visibility) are race-free and deterministic for a given thread count:
// rays are dealt in fixed blocks to P partitions (block i -> partition i % P); each partition
// writes into its own buffer (partition 0 into the output itself) and the buffers are folded
// in partition order afterwards. P is capped so the extra memory stays a few grid copies.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "render_core.h"

namespace renderocc {

namespace {
constexpr int64_t kRayBlock = 64;
constexpr int64_t kMaxPartitions = 8;

template <typename T>
struct PlainAdd {
  void operator()(T* p, T v) const { *p += v; }
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
  PartitionBuffers(T* out, int64_t n, int64_t P)
      : out_(out), n_(n), extra_(out == nullptr ? 0 : P - 1, std::vector<T>(n, T(0))) {}

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

template <typename T>
T sum_of(T x, T y) {
  return x + y;
}

template <typename T>
T max_of(T x, T y) {
  return std::max(x, y);
}
}  // namespace

template <typename T>
void render_forward_cpu(const RenderArgs<T>& a) {
  at::parallel_for(0, a.R, kRayBlock, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(std::max<int64_t>(a.grid.C, 1));
    for (int64_t r = begin; r < end; ++r) forward_one(a, r, scratch.data());
  });
}

template <typename T>
void render_backward_cpu(const RenderArgs<T>& a) {
  const int64_t n_dens = a.B * a.grid.X * a.grid.Y * a.grid.Z;
  const int64_t P = num_partitions(a.R);
  PartitionBuffers<T> dens(a.grad_density, n_dens, P);
  PartitionBuffers<T> sem(a.grad_sem, a.grad_sem ? n_dens * a.grid.C : 0, P);
  std::vector<std::vector<T>> scratch(P, std::vector<T>(std::max<int64_t>(a.grid.C, 1)));
  deal_rays(a.R, P, [&](int64_t p, int64_t r) {
    backward_one(a, r, scratch[p].data(), dens.for_partition(p), sem.for_partition(p), PlainAdd<T>());
  });
  dens.fold(sum_of<T>);
  sem.fold(sum_of<T>);
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
