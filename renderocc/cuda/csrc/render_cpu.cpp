// CPU kernels: at::parallel_for over rays around the shared per-ray math.
//
// Backward is race-free and deterministic for a given thread count: rays are dealt in
// fixed blocks to P partitions (block i -> partition i % P); each partition adds into its
// own gradient buffer (partition 0 into the output itself) and the buffers are summed in
// partition order afterwards. P is capped so the extra memory stays a few grid copies.
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

int64_t num_partitions(int64_t n_blocks) {
  return std::max<int64_t>(
      1, std::min<int64_t>({static_cast<int64_t>(at::get_num_threads()), kMaxPartitions, n_blocks}));
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
  const int64_t n_sem = a.grad_sem ? n_dens * a.grid.C : 0;
  const int64_t n_blocks = (a.R + kRayBlock - 1) / kRayBlock;
  const int64_t P = num_partitions(n_blocks);
  // Extra buffers for partitions 1..P-1; partition 0 writes into the outputs directly.
  std::vector<std::vector<T>> dens_buf(P - 1, std::vector<T>(n_dens, T(0)));
  std::vector<std::vector<T>> sem_buf(P - 1, std::vector<T>(n_sem, T(0)));
  at::parallel_for(0, P, 1, [&](int64_t p_begin, int64_t p_end) {
    std::vector<T> scratch(std::max<int64_t>(a.grid.C, 1));
    for (int64_t p = p_begin; p < p_end; ++p) {
      T* gd = p == 0 ? a.grad_density : dens_buf[p - 1].data();
      T* gs = a.grad_sem == nullptr ? nullptr : (p == 0 ? a.grad_sem : sem_buf[p - 1].data());
      for (int64_t blk = p; blk < n_blocks; blk += P) {
        const int64_t end = std::min(a.R, (blk + 1) * kRayBlock);
        for (int64_t r = blk * kRayBlock; r < end; ++r)
          backward_one(a, r, scratch.data(), gd, gs, PlainAdd<T>());
      }
    }
  });
  if (P == 1) return;
  at::parallel_for(0, n_dens, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t p = 0; p < P - 1; ++p)
      for (int64_t i = begin; i < end; ++i) a.grad_density[i] += dens_buf[p][i];
  });
  if (n_sem == 0) return;
  at::parallel_for(0, n_sem, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t p = 0; p < P - 1; ++p)
      for (int64_t i = begin; i < end; ++i) a.grad_sem[i] += sem_buf[p][i];
  });
}

// Same partition scheme as the backward, with max instead of sum.
template <typename T>
void visibility_cpu(const RenderArgs<T>& a) {
  const int64_t n = a.B * a.grid.X * a.grid.Y * a.grid.Z;
  const int64_t n_blocks = (a.R + kRayBlock - 1) / kRayBlock;
  const int64_t P = num_partitions(n_blocks);
  std::vector<std::vector<T>> buf(P - 1, std::vector<T>(n, T(0)));
  at::parallel_for(0, P, 1, [&](int64_t p_begin, int64_t p_end) {
    for (int64_t p = p_begin; p < p_end; ++p) {
      T* vis = p == 0 ? a.visibility : buf[p - 1].data();
      for (int64_t blk = p; blk < n_blocks; blk += P) {
        const int64_t end = std::min(a.R, (blk + 1) * kRayBlock);
        for (int64_t r = blk * kRayBlock; r < end; ++r) visibility_one(a, r, vis, PlainMax<T>());
      }
    }
  });
  if (P == 1) return;
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t p = 0; p < P - 1; ++p)
      for (int64_t i = begin; i < end; ++i) a.visibility[i] = std::max(a.visibility[i], buf[p][i]);
  });
}

template void render_forward_cpu<float>(const RenderArgs<float>&);
template void render_forward_cpu<double>(const RenderArgs<double>&);
template void render_backward_cpu<float>(const RenderArgs<float>&);
template void render_backward_cpu<double>(const RenderArgs<double>&);
template void visibility_cpu<float>(const RenderArgs<float>&);
template void visibility_cpu<double>(const RenderArgs<double>&);

}  // namespace renderocc
