// What the CUDA translation units share: the launch shape and the warp form of render_lanes.h's
// lane group. Free of torch headers, like the .cu files.
#pragma once

#include <cuda_runtime.h>

#include "render_core.h"
#include "render_lanes.h"

namespace renderocc {
namespace cuda_detail {

constexpr int kThreads = 128;  // a multiple of 32: a warp holds 4 whole lane groups

// Blocks per SM the lanes kernels are compiled for: float ones keep <= 128 registers (the hot
// float variants then neither spill nor drop below 16 warps per SM); double ones take what they need.
template <typename T>
constexpr int kMinBlocks = sizeof(T) == 4 ? 4 : 1;

// The ray's 8 lanes within the warp (lanes 8 g .. 8 g + 7 of the warp for group g).
struct WarpLanes {
  unsigned mask;
  int lane_;

  __device__ explicit WarpLanes(unsigned thread) : mask(0xFFu << (thread & 24u)), lane_(static_cast<int>(thread & 7u)) {}

  __device__ int lane() const { return lane_; }

  template <typename V>
  __device__ V bcast(V v, int src) const {
    return __shfl_sync(mask, v, src, kLanes);
  }

  template <typename V>
  __device__ V swap(V v, int m) const {
    return __shfl_xor_sync(mask, v, m, kLanes);
  }

  template <typename T>
  __device__ T ld(const T* p) const {
    return __ldg(p);
  }

  template <typename T>
  __device__ void add(T* p, T v) const {
    atomicAdd(p, v);
  }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  static constexpr bool kVector4 = true;
  __device__ void add4(float* p, float x0, float x1, float x2, float x3) const {
    atomicAdd(reinterpret_cast<float4*>(p), make_float4(x0, x1, x2, x3));
  }
#else
  static constexpr bool kVector4 = false;
  __device__ void add4(float* p, float x0, float x1, float x2, float x3) const {
    atomicAdd(p, x0);
    atomicAdd(p + 1, x1);
    atomicAdd(p + 2, x2);
    atomicAdd(p + 3, x3);
  }
#endif
};

__device__ inline int64_t thread_index() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }

// Launches `threads_per_ray` threads per ray; returns the launch's cudaError_t as int (0: success).
template <typename T>
int launch(void (*kernel)(RenderArgs<T>), const RenderArgs<T>& a, void* stream, int threads_per_ray = 1) {
  if (a.R == 0) return 0;
  const int64_t threads = a.R * threads_per_ray;
  const auto blocks = static_cast<unsigned int>((threads + kThreads - 1) / kThreads);
  kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace cuda_detail
}  // namespace renderocc
