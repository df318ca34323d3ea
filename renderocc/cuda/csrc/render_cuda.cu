// CUDA kernels: one thread per ray around the shared per-ray math; gradients via atomicAdd.
//
// Deliberately free of torch headers (the bindings pass raw pointers and the stream), so
// nvcc compiles this file in seconds and a compile check needs no CUDA build of torch.
#include <cuda_runtime.h>

#include "render_core.h"

namespace renderocc {

namespace {
// Per-thread scratch for probs mode lives in registers/local memory: cap the class count.
constexpr int kMaxClassesCuda = 64;
constexpr int kThreads = 128;

template <typename T>
struct AtomicAdd {
  __device__ void operator()(T* p, T v) const { atomicAdd(p, v); }
  __device__ void row(T* row, T w, const T* g, int64_t C) const {
    for (int64_t ch = 0; ch < C; ++ch)
      if (g[ch] != T(0)) atomicAdd(row + ch, w * g[ch]);
  }
};

// Non-negative IEEE floats order like their bit patterns, so integer atomicMax is exact.
struct AtomicMax {
  __device__ void operator()(float* p, float v) const { atomicMax(reinterpret_cast<int*>(p), __float_as_int(v)); }
  __device__ void operator()(double* p, double v) const {
    atomicMax(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(__double_as_longlong(v)));
  }
};

template <typename T>
__global__ void visibility_kernel(RenderArgs<T> a) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.R) return;
  visibility_one(a, r, a.visibility, AtomicMax());
}

template <typename T>
__global__ void forward_kernel(RenderArgs<T> a) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.R) return;
  T scratch[kMaxClassesCuda];
  forward_one(a, r, scratch);
}

template <typename T>
__global__ void backward_kernel(RenderArgs<T> a) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.R) return;
  T scratch[kMaxClassesCuda];
  backward_one(a, r, scratch, a.grad_density, a.grad_sem, AtomicAdd<T>());
}

template <typename T>
__global__ void optical_depth_kernel(RenderArgs<T> a) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.R) return;
  optical_depth_one(a, r);
}

template <typename T>
__global__ void optical_depth_backward_kernel(RenderArgs<T> a) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.R) return;
  optical_depth_backward_one(a, r, a.grad_density, AtomicAdd<T>());
}

// One thread per ray; returns the launch's cudaError_t as int (0 on success) so the caller reports it.
template <typename T>
int launch(void (*kernel)(RenderArgs<T>), const RenderArgs<T>& a, void* stream) {
  if (a.R == 0) return 0;
  const auto blocks = static_cast<unsigned int>((a.R + kThreads - 1) / kThreads);
  kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return static_cast<int>(cudaGetLastError());
}
}  // namespace

int max_classes_cuda() { return kMaxClassesCuda; }

template <typename T>
int render_forward_cuda(const RenderArgs<T>& a, void* stream) {
  return launch(forward_kernel<T>, a, stream);
}

template <typename T>
int render_backward_cuda(const RenderArgs<T>& a, void* stream) {
  return launch(backward_kernel<T>, a, stream);
}

template <typename T>
int visibility_cuda(const RenderArgs<T>& a, void* stream) {
  return launch(visibility_kernel<T>, a, stream);
}

template <typename T>
int optical_depth_cuda(const RenderArgs<T>& a, void* stream) {
  return launch(optical_depth_kernel<T>, a, stream);
}

template <typename T>
int optical_depth_backward_cuda(const RenderArgs<T>& a, void* stream) {
  return launch(optical_depth_backward_kernel<T>, a, stream);
}

template int render_forward_cuda<float>(const RenderArgs<float>&, void*);
template int render_forward_cuda<double>(const RenderArgs<double>&, void*);
template int render_backward_cuda<float>(const RenderArgs<float>&, void*);
template int render_backward_cuda<double>(const RenderArgs<double>&, void*);
template int visibility_cuda<float>(const RenderArgs<float>&, void*);
template int visibility_cuda<double>(const RenderArgs<double>&, void*);
template int optical_depth_cuda<float>(const RenderArgs<float>&, void*);
template int optical_depth_cuda<double>(const RenderArgs<double>&, void*);
template int optical_depth_backward_cuda<float>(const RenderArgs<float>&, void*);
template int optical_depth_backward_cuda<double>(const RenderArgs<double>&, void*);

}  // namespace renderocc
