// CUDA kernels around the shared per-ray math.
//
// Render forward/backward: the lanes kernel by default (render_lanes.h, compiled in
// render_lanes_forward.cu / render_lanes_backward.cu: 8 lanes per ray, 4 rays per warp, the class
// counts in use compiled with their count fixed, the slot rule, 32-bit indices where the grid
// allows, 4-float atomics on sm_90); RENDEROCC_CUDA_KERNEL=per-ray selects one thread per ray over
// render_core.h's sequential march instead (the CPU kernel's twin, per-class scratch in local
// memory). Visibility and optical depth: one thread per ray.
//
// Deliberately free of torch headers (the bindings pass raw pointers and the stream), so
// nvcc compiles this file without a CUDA build of torch.
#include "cuda_lanes.cuh"

namespace renderocc {

template <typename T>
int lanes_forward_cuda(const RenderArgs<T>& a, void* stream);
template <typename T>
int lanes_backward_cuda(const RenderArgs<T>& a, void* stream);

namespace {
using namespace cuda_detail;
constexpr int kPerRayKernel = 1;

template <typename T>
struct AtomicAdd {
  __device__ void operator()(T* p, T v) const { atomicAdd(p, v); }
  __device__ void scaled_row(T* row, T a, const T* g, int64_t C) const {
    for (int64_t ch = 0; ch < C; ++ch) atomicAdd(row + ch, a * g[ch]);
  }
  __device__ void row(T* row, const T* x, int64_t C) const {
    for (int64_t ch = 0; ch < C; ++ch) atomicAdd(row + ch, x[ch]);
  }
};

// Non-negative IEEE floats order like their bit patterns, so integer atomicMax is exact.
struct AtomicMax {
  __device__ void operator()(float* p, float v) const { atomicMax(reinterpret_cast<int*>(p), __float_as_int(v)); }
  __device__ void operator()(double* p, double v) const {
    atomicMax(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(__double_as_longlong(v)));
  }
};

// Per-ray kernels: scratch for the probs mode's per-class values (forward: a sample's semantics;
// backward: that plus the 8 slots' row gradients).
template <typename T, int SCRATCH>
__global__ void per_ray_forward_kernel(RenderArgs<T> a) {
  const int64_t r = thread_index();
  if (r >= a.R) return;
  T scratch[SCRATCH];
  forward_one(a, r, scratch);
}

template <typename T, int SCRATCH>
__global__ void per_ray_backward_kernel(RenderArgs<T> a) {
  const int64_t r = thread_index();
  if (r >= a.R) return;
  T scratch[SCRATCH];
  backward_one(a, r, scratch, a.grad_density, a.grad_sem, AtomicAdd<T>());
}

template <typename T>
__global__ void visibility_kernel(RenderArgs<T> a) {
  const int64_t r = thread_index();
  if (r >= a.R) return;
  visibility_one(a, r, a.visibility, AtomicMax());
}

template <typename T>
__global__ void optical_depth_kernel(RenderArgs<T> a) {
  const int64_t r = thread_index();
  if (r >= a.R) return;
  optical_depth_one(a, r);
}

template <typename T>
__global__ void optical_depth_backward_kernel(RenderArgs<T> a) {
  const int64_t r = thread_index();
  if (r >= a.R) return;
  optical_depth_backward_one(a, r, a.grad_density, AtomicAdd<T>());
}
}  // namespace

const char* launch_error_cuda(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

// The bindings refuse more than kMaxClassesCuda classes before any launch.
template <typename T>
int render_forward_cuda(const RenderArgs<T>& a, void* stream, int kernel) {
  if (kernel != kPerRayKernel) return lanes_forward_cuda(a, stream);
  return a.march.probs ? launch(per_ray_forward_kernel<T, kMaxClassesCuda>, a, stream)
                       : launch(per_ray_forward_kernel<T, 1>, a, stream);
}

template <typename T>
int render_backward_cuda(const RenderArgs<T>& a, void* stream, int kernel) {
  if (kernel != kPerRayKernel) return lanes_backward_cuda(a, stream);
  if (!a.march.probs) return launch(per_ray_backward_kernel<T, 1>, a, stream);
  return a.grad_sem != nullptr ? launch(per_ray_backward_kernel<T, 9 * kMaxClassesCuda>, a, stream)
                               : launch(per_ray_backward_kernel<T, kMaxClassesCuda>, a, stream);
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

template int render_forward_cuda<float>(const RenderArgs<float>&, void*, int);
template int render_forward_cuda<double>(const RenderArgs<double>&, void*, int);
template int render_backward_cuda<float>(const RenderArgs<float>&, void*, int);
template int render_backward_cuda<double>(const RenderArgs<double>&, void*, int);
template int visibility_cuda<float>(const RenderArgs<float>&, void*);
template int visibility_cuda<double>(const RenderArgs<double>&, void*);
template int optical_depth_cuda<float>(const RenderArgs<float>&, void*);
template int optical_depth_cuda<double>(const RenderArgs<double>&, void*);
template int optical_depth_backward_cuda<float>(const RenderArgs<float>&, void*);
template int optical_depth_backward_cuda<double>(const RenderArgs<double>&, void*);

}  // namespace renderocc
