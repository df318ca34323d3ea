// Torch op registration (TORCH_LIBRARY, no pybind11/Python headers: a lean build).
//
// Declares the ops' schemas, checks the inputs, allocates the outputs and hands raw pointers
// to the CPU kernels or, when built with RENDEROCC_WITH_CUDA, to the CUDA kernels, registered
// per dispatch key (CPU, CUDA). Device guard and current stream come from cuda_stream.cpp, the
// only file that includes c10/cuda, so this one compiles (and is compile-checked) anywhere.
// Fake (meta) kernels and autograd live on the same ops in Python (renderocc/cuda/op_registrations.py).
// Every check is RO_CHECK (checks.h): one message, never formatted through a stream.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "checks.h"
#include "render_core.h"
#include "walk.h"

namespace renderocc {

template <typename T>
void render_forward_cpu(const RenderArgs<T>& a);
template <typename T>
void render_backward_cpu(const RenderArgs<T>& a);
template <typename T>
void visibility_cpu(const RenderArgs<T>& a);
template <typename T>
void optical_depth_cpu(const RenderArgs<T>& a);
template <typename T>
void optical_depth_backward_cpu(const RenderArgs<T>& a);
template <typename T>
void render_forward_emulated(const RenderArgs<T>& a, int kernel);
template <typename T>
void render_backward_emulated(const RenderArgs<T>& a, int kernel);
void mark_crossed_cpu(const at::Tensor& origins, const at::Tensor& dirs, const at::Tensor& lengths,
                      const std::vector<double>& box, const std::vector<double>& voxel, const at::Tensor& hit);
std::tuple<at::Tensor, at::Tensor> knn2d_cpu(const at::Tensor& points, int64_t k, double radius);
#ifdef RENDEROCC_WITH_CUDA
const char* launch_error_cuda(int err);
int on_current_cuda_stream(const at::Tensor& like, const std::function<int(void*)>& launch);
template <typename T>
int render_forward_cuda(const RenderArgs<T>& a, void* stream, int kernel);
template <typename T>
int render_backward_cuda(const RenderArgs<T>& a, void* stream, int kernel);
template <typename T>
int visibility_cuda(const RenderArgs<T>& a, void* stream);
template <typename T>
int optical_depth_cuda(const RenderArgs<T>& a, void* stream);
template <typename T>
int optical_depth_backward_cuda(const RenderArgs<T>& a, void* stream);
#endif

namespace {

// The CUDA render kernels: the lanes kernel (render_lanes.h) unless RENDEROCC_CUDA_KERNEL says
// per-ray (one thread per ray over render_core.h's sequential march, the CPU kernel's twin).
constexpr int kLanesKernel = 0;
constexpr int kPerRayKernel = 1;

int cuda_kernel_choice() {
  const char* env = std::getenv("RENDEROCC_CUDA_KERNEL");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "lanes") == 0) return kLanesKernel;
  RO_CHECK(std::strcmp(env, "per-ray") == 0,
           "RENDEROCC_CUDA_KERNEL must be 'lanes' or 'per-ray', got '" + std::string(env) + "'");
  return kPerRayKernel;
}

// Runs f(T{}) with T the density's dtype (float or double; check_inputs refused the rest).
template <typename F>
void with_dtype(const at::Tensor& like, F&& f) {
  if (like.scalar_type() == at::kDouble)
    f(double{});
  else
    f(float{});
}

void check_class_count(int64_t classes) {
  RO_CHECK(classes <= kMaxClassesCuda, "the CUDA renderer supports at most " + std::to_string(kMaxClassesCuda) +
                                           " classes; the semantics have " + std::to_string(classes) +
                                           " (render on the CPU or with the reference)");
}

void check_inputs(const at::Tensor& density, const at::Tensor& sem, const at::Tensor& origins,
                  const at::Tensor& dirs, const at::Tensor& batch, const std::vector<double>& box,
                  const std::vector<double>& voxel, double step) {
  RO_CHECK(density.dim() == 4, "density must be (B, X, Y, Z)");
  RO_CHECK(sem.dim() == 5 && sem.sizes().slice(0, 4) == density.sizes(),
           "semantics must be (B, X, Y, Z, C) matching density");
  RO_CHECK(density.scalar_type() == at::kFloat || density.scalar_type() == at::kDouble,
           "density must be float32 or float64");
  for (const auto* t : {&sem, &origins, &dirs}) {
    RO_CHECK(t->scalar_type() == density.scalar_type(), "all float inputs must share a dtype");
  }
  for (const auto* t : {&density, &sem, &origins, &dirs, &batch}) {
    RO_CHECK(t->is_contiguous(), "inputs must be contiguous");
    RO_CHECK(t->device() == density.device(), "inputs must be on one device");
  }
  RO_CHECK(origins.dim() == 2 && origins.size(1) == 3 && dirs.sizes() == origins.sizes(),
           "origins and directions must be (R, 3)");
  RO_CHECK(batch.scalar_type() == at::kLong && batch.dim() == 1 && batch.size(0) == origins.size(0),
           "batch_index must be int64 (R,)");
  RO_CHECK(box.size() == 6 && voxel.size() == 3, "box needs 6 numbers, voxel 3");
  RO_CHECK(step > 0, "step must be positive");
#ifdef RENDEROCC_WITH_CUDA
  if (density.is_cuda()) check_class_count(sem.size(4));
#else
  RO_CHECK(!density.is_cuda(), "the renderer extension was built without CUDA");
#endif
}

template <typename T>
RenderArgs<T> make_args(const at::Tensor& density, const at::Tensor& sem, const at::Tensor& origins,
                        const at::Tensor& dirs, const at::Tensor& batch, const std::vector<double>& box,
                        const std::vector<double>& voxel, double near, double step, bool probs) {
  RenderArgs<T> a{};
  a.grid.density = density.data_ptr<T>();
  a.grid.sem = sem.data_ptr<T>();
  a.grid.X = density.size(1);
  a.grid.Y = density.size(2);
  a.grid.Z = density.size(3);
  a.grid.C = sem.size(4);
  for (int i = 0; i < 3; ++i) {
    a.grid.lo[i] = static_cast<T>(box[i]);
    a.grid.hi[i] = static_cast<T>(box[i + 3]);
    a.grid.vox[i] = static_cast<T>(voxel[i]);
  }
  a.march.near = static_cast<T>(near);
  a.march.step = static_cast<T>(step);
  a.march.probs = probs;
  a.B = density.size(0);
  a.R = origins.size(0);
  a.origins = origins.data_ptr<T>();
  a.dirs = dirs.data_ptr<T>();
  a.batch = batch.data_ptr<int64_t>();
  return a;
}

// Where a render op runs: the device of its tensors, or the host emulation of a CUDA kernel.
// (An emulation's value minus one is the emulated kernel of render_emulate.cpp.)
enum class Runner { kDevice = 0, kEmulateLanes = 1, kEmulatePerRay = 2, kEmulateLanesWide = 3 };

Runner emulation(int64_t kernel) {
  RO_CHECK(kernel >= 0 && kernel <= 2, "kernel must be 0 (lanes), 1 (per-ray) or 2 (lanes, 64-bit indices)");
  return kernel == 0 ? Runner::kEmulateLanes : kernel == 1 ? Runner::kEmulatePerRay : Runner::kEmulateLanesWide;
}

void check_emulation(const at::Tensor& density, const at::Tensor& sem) {
  RO_CHECK(!density.is_cuda(), "the emulated CUDA kernels run on CPU tensors");
  check_class_count(sem.size(4));
}

#ifdef RENDEROCC_WITH_CUDA
// Runs `launch(stream)` on torch's current stream of the density's device; a failed launch raises.
void on_cuda(const at::Tensor& density, const char* what, const std::function<int(void*)>& launch) {
  const int err = on_current_cuda_stream(density, launch);
  RO_CHECK(err == 0, std::string(what) + ": CUDA launch failed: " + launch_error_cuda(err));
}
#endif

// Runs a density-only launch on the density's device: the CUDA kernel on torch's current stream
// of that device, or the CPU one.
template <typename T>
void run_on_device(const at::Tensor& density, const RenderArgs<T>& a, const char* what,
                   void (*cpu)(const RenderArgs<T>&), int (*cuda)(const RenderArgs<T>&, void*)) {
  if (density.is_cuda()) {
#ifdef RENDEROCC_WITH_CUDA
    on_cuda(density, what, [&](void* stream) { return cuda(a, stream); });
#else
    (void)cuda;
    (void)what;
    RO_CHECK(false, "the renderer extension was built without CUDA");
#endif
    return;
  }
  cpu(a);
}

#ifdef RENDEROCC_WITH_CUDA
#define RO_CUDA_LAUNCHER(fn) (fn)
#else
#define RO_CUDA_LAUNCHER(fn) nullptr
#endif

using Tensor5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

template <typename T>
void run_forward(const at::Tensor& density, const RenderArgs<T>& a, Runner runner) {
  if (runner != Runner::kDevice) {
    render_forward_emulated(a, static_cast<int>(runner) - 1);
  } else if (density.is_cuda()) {
#ifdef RENDEROCC_WITH_CUDA
    const int kernel = cuda_kernel_choice();
    on_cuda(density, "render_forward", [&](void* stream) { return render_forward_cuda(a, stream, kernel); });
#endif
  } else {
    render_forward_cpu(a);
  }
}

template <typename T>
void run_backward(const at::Tensor& density, const RenderArgs<T>& a, Runner runner) {
  if (runner != Runner::kDevice) {
    render_backward_emulated(a, static_cast<int>(runner) - 1);
  } else if (density.is_cuda()) {
#ifdef RENDEROCC_WITH_CUDA
    const int kernel = cuda_kernel_choice();
    on_cuda(density, "render_backward", [&](void* stream) { return render_backward_cuda(a, stream, kernel); });
#endif
  } else {
    render_backward_cpu(a);
  }
}

Tensor5 forward_with(const at::Tensor& density, const at::Tensor& sem, const at::Tensor& origins,
                     const at::Tensor& dirs, const at::Tensor& batch, const std::vector<double>& box,
                     const std::vector<double>& voxel, double near, double step, bool probs, Runner runner) {
  check_inputs(density, sem, origins, dirs, batch, box, voxel, step);
  if (runner != Runner::kDevice) check_emulation(density, sem);
  const int64_t R = origins.size(0), C = sem.size(4);
  auto opts = density.options();
  at::Tensor depth = at::empty({R}, opts), out_sem = at::empty({R, C}, opts);
  at::Tensor opacity = at::empty({R}, opts), distortion = at::empty({R}, opts);
  at::Tensor t_far = at::empty({R}, opts);
  with_dtype(density, [&](auto zero) {
    using T = decltype(zero);
    auto a = make_args<T>(density, sem, origins, dirs, batch, box, voxel, near, step, probs);
    a.depth = depth.data_ptr<T>();
    a.sem = out_sem.data_ptr<T>();
    a.opacity = opacity.data_ptr<T>();
    a.distortion = distortion.data_ptr<T>();
    a.t_far = t_far.data_ptr<T>();
    run_forward(density, a, runner);
  });
  return {depth, out_sem, opacity, distortion, t_far};
}

std::tuple<at::Tensor, at::Tensor> backward_with(
    const at::Tensor& density, const at::Tensor& sem, const at::Tensor& origins, const at::Tensor& dirs,
    const at::Tensor& batch, const std::vector<double>& box, const std::vector<double>& voxel, double near,
    double step, bool probs, const at::Tensor& depth, const at::Tensor& out_sem, const at::Tensor& opacity,
    const at::Tensor& distortion, const at::Tensor& g_depth, const at::Tensor& g_sem, const at::Tensor& g_opacity,
    const at::Tensor& g_distortion, bool need_sem_grad, Runner runner) {
  check_inputs(density, sem, origins, dirs, batch, box, voxel, step);
  if (runner != Runner::kDevice) check_emulation(density, sem);
  const int64_t R = origins.size(0), C = sem.size(4);
  for (const auto* t : {&depth, &opacity, &distortion, &g_depth, &g_opacity, &g_distortion}) {
    RO_CHECK(t->is_contiguous() && t->numel() == R && t->scalar_type() == density.scalar_type() &&
                 t->device() == density.device(),
             "per-ray tensors must be contiguous (R,) of the input dtype and device");
  }
  for (const auto* t : {&out_sem, &g_sem}) {
    RO_CHECK(t->is_contiguous() && t->numel() == R * C && t->scalar_type() == density.scalar_type() &&
                 t->device() == density.device(),
             "semantic tensors must be contiguous (R, C) of the input dtype and device");
  }
  at::Tensor grad_density = at::zeros_like(density);
  at::Tensor grad_sem = need_sem_grad ? at::zeros_like(sem) : at::Tensor();
  with_dtype(density, [&](auto zero) {
    using T = decltype(zero);
    auto a = make_args<T>(density, sem, origins, dirs, batch, box, voxel, near, step, probs);
    a.depth = depth.data_ptr<T>();
    a.sem = out_sem.data_ptr<T>();
    a.opacity = opacity.data_ptr<T>();
    a.distortion = distortion.data_ptr<T>();
    a.g_depth = g_depth.data_ptr<T>();
    a.g_sem = g_sem.data_ptr<T>();
    a.g_opacity = g_opacity.data_ptr<T>();
    a.g_distortion = g_distortion.data_ptr<T>();
    a.grad_density = grad_density.data_ptr<T>();
    a.grad_sem = need_sem_grad ? grad_sem.data_ptr<T>() : nullptr;
    run_backward(density, a, runner);
  });
  if (!need_sem_grad) grad_sem = at::zeros({0}, density.options());
  return {grad_density, grad_sem};
}

Tensor5 render_forward(const at::Tensor& density, const at::Tensor& sem, const at::Tensor& origins,
                       const at::Tensor& dirs, const at::Tensor& batch, std::vector<double> box,
                       std::vector<double> voxel, double near, double step, bool probs) {
  return forward_with(density, sem, origins, dirs, batch, box, voxel, near, step, probs, Runner::kDevice);
}

std::tuple<at::Tensor, at::Tensor> render_backward(
    const at::Tensor& density, const at::Tensor& sem, const at::Tensor& origins, const at::Tensor& dirs,
    const at::Tensor& batch, std::vector<double> box, std::vector<double> voxel, double near, double step,
    bool probs, const at::Tensor& depth, const at::Tensor& out_sem, const at::Tensor& opacity,
    const at::Tensor& distortion, const at::Tensor& g_depth, const at::Tensor& g_sem, const at::Tensor& g_opacity,
    const at::Tensor& g_distortion, bool need_sem_grad) {
  return backward_with(density, sem, origins, dirs, batch, box, voxel, near, step, probs, depth, out_sem, opacity,
                       distortion, g_depth, g_sem, g_opacity, g_distortion, need_sem_grad, Runner::kDevice);
}

// The CUDA kernels' programs run on the host (render_emulate.cpp): kernel 0 lanes, 1 per-ray,
// 2 lanes with 64-bit indices.
Tensor5 emulated_forward(const at::Tensor& density, const at::Tensor& sem, const at::Tensor& origins,
                         const at::Tensor& dirs, const at::Tensor& batch, std::vector<double> box,
                         std::vector<double> voxel, double near, double step, bool probs, int64_t kernel) {
  return forward_with(density, sem, origins, dirs, batch, box, voxel, near, step, probs, emulation(kernel));
}

std::tuple<at::Tensor, at::Tensor> emulated_backward(
    const at::Tensor& density, const at::Tensor& sem, const at::Tensor& origins, const at::Tensor& dirs,
    const at::Tensor& batch, std::vector<double> box, std::vector<double> voxel, double near, double step,
    bool probs, const at::Tensor& depth, const at::Tensor& out_sem, const at::Tensor& opacity,
    const at::Tensor& distortion, const at::Tensor& g_depth, const at::Tensor& g_sem, const at::Tensor& g_opacity,
    const at::Tensor& g_distortion, bool need_sem_grad, int64_t kernel) {
  return backward_with(density, sem, origins, dirs, batch, box, voxel, near, step, probs, depth, out_sem, opacity,
                       distortion, g_depth, g_sem, g_opacity, g_distortion, need_sem_grad, emulation(kernel));
}

// Density-only ops see an empty (B, X, Y, Z, 0) semantic grid, so they share the checks and args.
at::Tensor no_semantics(const at::Tensor& density) {
  RO_CHECK(density.dim() == 4, "density must be (B, X, Y, Z)");
  const auto s = density.sizes();
  return at::empty({s[0], s[1], s[2], s[3], 0}, density.options());
}

at::Tensor visibility(const at::Tensor& density, const at::Tensor& origins, const at::Tensor& dirs,
                      const at::Tensor& batch, std::vector<double> box, std::vector<double> voxel,
                      double near, double step) {
  const at::Tensor no_sem = no_semantics(density);
  check_inputs(density, no_sem, origins, dirs, batch, box, voxel, step);
  at::Tensor vis = at::zeros_like(density);
  with_dtype(density, [&](auto zero) {
    using T = decltype(zero);
    auto a = make_args<T>(density, no_sem, origins, dirs, batch, box, voxel, near, step, false);
    a.visibility = vis.data_ptr<T>();
    run_on_device<T>(density, a, "visibility", visibility_cpu<T>, RO_CUDA_LAUNCHER(visibility_cuda<T>));
  });
  return vis;
}

template <typename T>
RenderArgs<T> ends_args(const at::Tensor& density, const at::Tensor& no_sem, const at::Tensor& origins,
                        const at::Tensor& dirs, const at::Tensor& batch, const at::Tensor& t_ends,
                        const std::vector<double>& box, const std::vector<double>& voxel, double near,
                        double step) {
  auto a = make_args<T>(density, no_sem, origins, dirs, batch, box, voxel, near, step, false);
  a.E = t_ends.size(1);
  a.t_ends = t_ends.data_ptr<T>();
  return a;
}

void check_ends(const at::Tensor& density, const at::Tensor& no_sem, const at::Tensor& origins,
                const at::Tensor& dirs, const at::Tensor& batch, const at::Tensor& t_ends,
                const std::vector<double>& box, const std::vector<double>& voxel, double step) {
  check_inputs(density, no_sem, origins, dirs, batch, box, voxel, step);
  RO_CHECK(t_ends.dim() == 2 && t_ends.size(0) == origins.size(0) && t_ends.size(1) > 0,
           "t_ends must be (R, E) with E > 0");
  RO_CHECK(t_ends.scalar_type() == density.scalar_type(), "t_ends must share the density dtype");
  RO_CHECK(t_ends.is_contiguous(), "inputs must be contiguous");
  RO_CHECK(t_ends.device() == density.device(), "inputs must be on one device");
}

std::tuple<at::Tensor, at::Tensor> optical_depth(const at::Tensor& density, const at::Tensor& origins,
                                                 const at::Tensor& dirs, const at::Tensor& batch,
                                                 const at::Tensor& t_ends, std::vector<double> box,
                                                 std::vector<double> voxel, double near, double step) {
  const at::Tensor no_sem = no_semantics(density);
  check_ends(density, no_sem, origins, dirs, batch, t_ends, box, voxel, step);
  at::Tensor tau = at::empty_like(t_ends), count = at::empty_like(t_ends);
  with_dtype(density, [&](auto zero) {
    using T = decltype(zero);
    auto a = ends_args<T>(density, no_sem, origins, dirs, batch, t_ends, box, voxel, near, step);
    a.tau = tau.data_ptr<T>();
    a.count = count.data_ptr<T>();
    run_on_device<T>(density, a, "optical_depth", optical_depth_cpu<T>, RO_CUDA_LAUNCHER(optical_depth_cuda<T>));
  });
  return {tau, count};
}

at::Tensor optical_depth_backward(const at::Tensor& density, const at::Tensor& origins, const at::Tensor& dirs,
                                  const at::Tensor& batch, const at::Tensor& t_ends, std::vector<double> box,
                                  std::vector<double> voxel, double near, double step, const at::Tensor& g_tau) {
  const at::Tensor no_sem = no_semantics(density);
  check_ends(density, no_sem, origins, dirs, batch, t_ends, box, voxel, step);
  RO_CHECK(g_tau.is_contiguous() && g_tau.sizes() == t_ends.sizes() &&
               g_tau.scalar_type() == density.scalar_type() && g_tau.device() == density.device(),
           "g_tau must be contiguous (R, E) like t_ends");
  at::Tensor grad_density = at::zeros_like(density);
  with_dtype(density, [&](auto zero) {
    using T = decltype(zero);
    auto a = ends_args<T>(density, no_sem, origins, dirs, batch, t_ends, box, voxel, near, step);
    a.g_tau = g_tau.data_ptr<T>();
    a.grad_density = grad_density.data_ptr<T>();
    run_on_device<T>(density, a, "optical_depth_backward", optical_depth_backward_cpu<T>,
                     RO_CUDA_LAUNCHER(optical_depth_backward_cuda<T>));
  });
  return grad_density;
}

// The first-hit walk (CPU only) of `renderocc.ops.first_hits`: rays (R, 3) float64 walked through L ≤ 7
// occupancy layers packed as bits of a grid padded by one border voxel (value 128) per side.
std::tuple<at::Tensor, at::Tensor, at::Tensor> first_hits(const at::Tensor& bits, const at::Tensor& origins, const at::Tensor& dirs,
                                   std::vector<double> box, std::vector<double> voxel_edge,
                                   std::vector<int64_t> shape, int64_t layers, int64_t threads) {
  RO_CHECK(layers >= 1 && layers <= 7, "first_hits: 1 to 7 layers");
  RO_CHECK(box.size() == 6 && voxel_edge.size() == 3 && shape.size() == 3,
              "first_hits: box needs 6 numbers, voxel and shape 3");
  RO_CHECK(bits.scalar_type() == at::kByte && bits.dim() == 3 && bits.size(0) == shape[0] + 2 &&
                  bits.size(1) == shape[1] + 2 && bits.size(2) == shape[2] + 2,
              "bits must be uint8 (X + 2, Y + 2, Z + 2)");
  RO_CHECK(origins.scalar_type() == at::kDouble && origins.dim() == 2 && origins.size(1) == 3 &&
                  dirs.sizes() == origins.sizes() && dirs.scalar_type() == at::kDouble,
              "origins and directions must be float64 (R, 3)");
  for (const auto* t : {&bits, &origins, &dirs}) {
    RO_CHECK(t->is_contiguous() && !t->is_cuda(), "first_hits inputs must be contiguous CPU tensors");
  }
  const int64_t R = origins.size(0);
  const auto opts = origins.options();
  at::Tensor voxel = at::full({layers, R}, -1, opts.dtype(at::kLong));
  at::Tensor dist = at::full({layers, R}, std::numeric_limits<double>::quiet_NaN(), opts);
  at::Tensor hit = at::zeros({layers, R}, opts.dtype(at::kBool));
  WalkArgs a{};
  a.bits = bits.data_ptr<uint8_t>();
  a.origins = origins.data_ptr<double>();
  a.dirs = dirs.data_ptr<double>();
  for (int i = 0; i < 3; ++i) {
    a.lo[i] = box[i];
    a.vox[i] = voxel_edge[i];
    a.shape[i] = shape[i];
  }
  a.R = R;
  a.L = layers;
  a.threads = threads;
  a.border = 128;
  a.voxel = voxel.data_ptr<int64_t>();
  a.dist = dist.data_ptr<double>();
  a.hit = hit.data_ptr<bool>();
  first_hits_cpu(a);
  return {voxel, dist, hit};
}

void mark_crossed(const at::Tensor& origins, const at::Tensor& dirs, const at::Tensor& lengths,
                  std::vector<double> box, std::vector<double> voxel, const at::Tensor& hit) {
  mark_crossed_cpu(origins, dirs, lengths, box, voxel, hit);
}

std::tuple<at::Tensor, at::Tensor> knn2d(const at::Tensor& points, int64_t k, double radius) {
  return knn2d_cpu(points, k, radius);
}

}  // namespace
}  // namespace renderocc

// Schemas only: kernels are registered per dispatch key below, fake kernels and autograd in the
// Python module named here (torch imports it when a fake tensor meets an op first).
TORCH_LIBRARY(renderocc_render, m) {
  m.set_python_module("renderocc.cuda.op_registrations");
  m.def(
      "forward(Tensor density, Tensor semantics, Tensor origins, Tensor directions, "
      "Tensor batch_index, float[] box, float[] voxel, float near, float step, bool probs) "
      "-> (Tensor depth, Tensor sem, Tensor opacity, Tensor distortion, Tensor t_far)");
  m.def(
      "backward(Tensor density, Tensor semantics, Tensor origins, Tensor directions, "
      "Tensor batch_index, float[] box, float[] voxel, float near, float step, bool probs, "
      "Tensor depth, Tensor sem, Tensor opacity, Tensor distortion, Tensor g_depth, Tensor g_sem, "
      "Tensor g_opacity, Tensor g_distortion, bool need_sem_grad) -> (Tensor grad_density, Tensor grad_sem)");
  m.def(
      "visibility(Tensor density, Tensor origins, Tensor directions, Tensor batch_index, float[] box, "
      "float[] voxel, float near, float step) -> Tensor");
  m.def(
      "optical_depth(Tensor density, Tensor origins, Tensor directions, Tensor batch_index, Tensor t_ends, "
      "float[] box, float[] voxel, float near, float step) -> (Tensor tau, Tensor count)");
  m.def(
      "optical_depth_backward(Tensor density, Tensor origins, Tensor directions, Tensor batch_index, "
      "Tensor t_ends, float[] box, float[] voxel, float near, float step, Tensor g_tau) -> Tensor");
  m.def(
      "first_hits(Tensor bits, Tensor origins, Tensor directions, float[] box, float[] voxel, int[] shape, "
      "int layers, int threads) -> (Tensor voxel, Tensor dist, Tensor hit)");
  m.def(
      "mark_crossed(Tensor origins, Tensor directions, Tensor lengths, float[] box, float[] voxel, "
      "Tensor(a!) hit) -> ()");
  m.def("knn2d(Tensor points, int k, float radius) -> (Tensor dist, Tensor idx)");
  // The CUDA kernels' programs on the host (tests): forward / backward plus kernel (0 lanes,
  // 1 per-ray, 2 lanes with 64-bit indices).
  m.def(
      "emulated_forward(Tensor density, Tensor semantics, Tensor origins, Tensor directions, "
      "Tensor batch_index, float[] box, float[] voxel, float near, float step, bool probs, int kernel) "
      "-> (Tensor depth, Tensor sem, Tensor opacity, Tensor distortion, Tensor t_far)");
  m.def(
      "emulated_backward(Tensor density, Tensor semantics, Tensor origins, Tensor directions, "
      "Tensor batch_index, float[] box, float[] voxel, float near, float step, bool probs, "
      "Tensor depth, Tensor sem, Tensor opacity, Tensor distortion, Tensor g_depth, Tensor g_sem, "
      "Tensor g_opacity, Tensor g_distortion, bool need_sem_grad, int kernel) "
      "-> (Tensor grad_density, Tensor grad_sem)");
}

// The renderer ops run on either device (a build without CUDA refuses CUDA tensors in one line);
// the LiDAR walks are CPU-only.
#define RO_RENDER_IMPLS(m)                                                \
  m.impl("forward", &renderocc::render_forward);                          \
  m.impl("backward", &renderocc::render_backward);                        \
  m.impl("visibility", &renderocc::visibility);                           \
  m.impl("optical_depth", &renderocc::optical_depth);                     \
  m.impl("optical_depth_backward", &renderocc::optical_depth_backward)

TORCH_LIBRARY_IMPL(renderocc_render, CPU, m) {
  RO_RENDER_IMPLS(m);
  m.impl("first_hits", &renderocc::first_hits);
  m.impl("mark_crossed", &renderocc::mark_crossed);
  m.impl("knn2d", &renderocc::knn2d);
  m.impl("emulated_forward", &renderocc::emulated_forward);
  m.impl("emulated_backward", &renderocc::emulated_backward);
}

TORCH_LIBRARY_IMPL(renderocc_render, CUDA, m) { RO_RENDER_IMPLS(m); }
