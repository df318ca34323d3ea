// Torch op registration (TORCH_LIBRARY, no pybind11/Python headers: a lean build).
//
// Checks the inputs, allocates the outputs and hands raw pointers to the CPU kernels or,
// when built with RENDEROCC_WITH_CUDA, to the CUDA kernels. The caller passes the CUDA
// stream as an integer (torch.cuda.current_stream().cuda_stream) and sets the device, so
// this file needs no c10/cuda headers and compiles (and is compile-checked) anywhere.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <vector>

#include "render_core.h"

namespace renderocc {

template <typename T>
void render_forward_cpu(const RenderArgs<T>& a);
template <typename T>
void render_backward_cpu(const RenderArgs<T>& a);
template <typename T>
void visibility_cpu(const RenderArgs<T>& a);
#ifdef RENDEROCC_WITH_CUDA
int max_classes_cuda();
template <typename T>
int render_forward_cuda(const RenderArgs<T>& a, void* stream);
template <typename T>
int render_backward_cuda(const RenderArgs<T>& a, void* stream);
template <typename T>
int visibility_cuda(const RenderArgs<T>& a, void* stream);
#endif

namespace {

void check_inputs(const at::Tensor& density, const at::Tensor& sem, const at::Tensor& origins,
                  const at::Tensor& dirs, const at::Tensor& batch, const std::vector<double>& box,
                  const std::vector<double>& voxel, double step, bool probs) {
  TORCH_CHECK(density.dim() == 4, "density must be (B, X, Y, Z)");
  TORCH_CHECK(sem.dim() == 5 && sem.sizes().slice(0, 4) == density.sizes(),
              "semantics must be (B, X, Y, Z, C) matching density");
  TORCH_CHECK(density.scalar_type() == at::kFloat || density.scalar_type() == at::kDouble,
              "density must be float32 or float64");
  for (const auto* t : {&sem, &origins, &dirs}) {
    TORCH_CHECK(t->scalar_type() == density.scalar_type(), "all float inputs must share a dtype");
  }
  for (const auto* t : {&density, &sem, &origins, &dirs, &batch}) {
    TORCH_CHECK(t->is_contiguous(), "inputs must be contiguous");
    TORCH_CHECK(t->device() == density.device(), "inputs must be on one device");
  }
  TORCH_CHECK(origins.dim() == 2 && origins.size(1) == 3 && dirs.sizes() == origins.sizes(),
              "origins and directions must be (R, 3)");
  TORCH_CHECK(batch.scalar_type() == at::kLong && batch.dim() == 1 && batch.size(0) == origins.size(0),
              "batch_index must be int64 (R,)");
  TORCH_CHECK(box.size() == 6 && voxel.size() == 3, "box needs 6 numbers, voxel_size 3");
  TORCH_CHECK(step > 0, "step must be positive");
#ifdef RENDEROCC_WITH_CUDA
  TORCH_CHECK(!(probs && density.is_cuda() && sem.size(4) > max_classes_cuda()),
              "semantic_mode='probs' on CUDA supports at most ", max_classes_cuda(), " classes");
#else
  (void)probs;
  TORCH_CHECK(!density.is_cuda(), "the renderer extension was built without CUDA");
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

std::vector<at::Tensor> render_forward(const at::Tensor& density, const at::Tensor& sem,
                                       const at::Tensor& origins, const at::Tensor& dirs,
                                       const at::Tensor& batch, std::vector<double> box,
                                       std::vector<double> voxel, double near, double step, bool probs,
                                       int64_t stream) {
  check_inputs(density, sem, origins, dirs, batch, box, voxel, step, probs);
  const int64_t R = origins.size(0), C = sem.size(4);
  auto opts = density.options();
  at::Tensor depth = at::empty({R}, opts), out_sem = at::empty({R, C}, opts);
  at::Tensor opacity = at::empty({R}, opts), distortion = at::empty({R}, opts);
  at::Tensor t_far = at::empty({R}, opts);
  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "render_forward", [&] {
    auto a = make_args<scalar_t>(density, sem, origins, dirs, batch, box, voxel, near, step, probs);
    a.depth = depth.data_ptr<scalar_t>();
    a.sem = out_sem.data_ptr<scalar_t>();
    a.opacity = opacity.data_ptr<scalar_t>();
    a.distortion = distortion.data_ptr<scalar_t>();
    a.t_far = t_far.data_ptr<scalar_t>();
#ifdef RENDEROCC_WITH_CUDA
    if (density.is_cuda()) {
      const int err = render_forward_cuda(a, reinterpret_cast<void*>(stream));
      TORCH_CHECK(err == 0, "render_forward CUDA launch failed with error ", err);
      return;
    }
#endif
    render_forward_cpu(a);
  });
  return {depth, out_sem, opacity, distortion, t_far};
}

std::vector<at::Tensor> render_backward(const at::Tensor& density, const at::Tensor& sem,
                                        const at::Tensor& origins, const at::Tensor& dirs,
                                        const at::Tensor& batch, std::vector<double> box,
                                        std::vector<double> voxel, double near, double step, bool probs,
                                        const at::Tensor& depth, const at::Tensor& out_sem,
                                        const at::Tensor& opacity, const at::Tensor& distortion,
                                        const at::Tensor& g_depth, const at::Tensor& g_sem,
                                        const at::Tensor& g_opacity, const at::Tensor& g_distortion,
                                        bool need_sem_grad, int64_t stream) {
  check_inputs(density, sem, origins, dirs, batch, box, voxel, step, probs);
  const int64_t R = origins.size(0), C = sem.size(4);
  for (const auto* t : {&depth, &opacity, &distortion, &g_depth, &g_opacity, &g_distortion}) {
    TORCH_CHECK(t->is_contiguous() && t->numel() == R && t->scalar_type() == density.scalar_type(),
                "per-ray tensors must be contiguous (R,) of the input dtype");
  }
  for (const auto* t : {&out_sem, &g_sem}) {
    TORCH_CHECK(t->is_contiguous() && t->numel() == R * C && t->scalar_type() == density.scalar_type(),
                "semantic tensors must be contiguous (R, C) of the input dtype");
  }
  at::Tensor grad_density = at::zeros_like(density);
  at::Tensor grad_sem = need_sem_grad ? at::zeros_like(sem) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "render_backward", [&] {
    auto a = make_args<scalar_t>(density, sem, origins, dirs, batch, box, voxel, near, step, probs);
    a.depth = depth.data_ptr<scalar_t>();
    a.sem = out_sem.data_ptr<scalar_t>();
    a.opacity = opacity.data_ptr<scalar_t>();
    a.distortion = distortion.data_ptr<scalar_t>();
    a.g_depth = g_depth.data_ptr<scalar_t>();
    a.g_sem = g_sem.data_ptr<scalar_t>();
    a.g_opacity = g_opacity.data_ptr<scalar_t>();
    a.g_distortion = g_distortion.data_ptr<scalar_t>();
    a.grad_density = grad_density.data_ptr<scalar_t>();
    a.grad_sem = need_sem_grad ? grad_sem.data_ptr<scalar_t>() : nullptr;
#ifdef RENDEROCC_WITH_CUDA
    if (density.is_cuda()) {
      const int err = render_backward_cuda(a, reinterpret_cast<void*>(stream));
      TORCH_CHECK(err == 0, "render_backward CUDA launch failed with error ", err);
      return;
    }
#endif
    render_backward_cpu(a);
  });
  if (!need_sem_grad) grad_sem = at::zeros({0}, density.options());
  return {grad_density, grad_sem};
}

at::Tensor visibility(const at::Tensor& density, const at::Tensor& origins, const at::Tensor& dirs,
                      const at::Tensor& batch, std::vector<double> box, std::vector<double> voxel,
                      double near, double step, int64_t stream) {
  const auto s = density.sizes();
  const at::Tensor no_sem = at::empty({s[0], s[1], s[2], s[3], 0}, density.options());
  check_inputs(density, no_sem, origins, dirs, batch, box, voxel, step, false);
  at::Tensor vis = at::zeros_like(density);
  AT_DISPATCH_FLOATING_TYPES(density.scalar_type(), "visibility", [&] {
    auto a = make_args<scalar_t>(density, no_sem, origins, dirs, batch, box, voxel, near, step, false);
    a.visibility = vis.data_ptr<scalar_t>();
#ifdef RENDEROCC_WITH_CUDA
    if (density.is_cuda()) {
      const int err = visibility_cuda(a, reinterpret_cast<void*>(stream));
      TORCH_CHECK(err == 0, "visibility CUDA launch failed with error ", err);
      return;
    }
#endif
    visibility_cpu(a);
  });
  return vis;
}

}  // namespace
}  // namespace renderocc

TORCH_LIBRARY(renderocc_render, m) {
  m.def(
      "forward(Tensor density, Tensor semantics, Tensor origins, Tensor directions, "
      "Tensor batch_index, float[] box, float[] voxel_size, float near, float step, bool probs, "
      "int stream) -> Tensor[]",
      &renderocc::render_forward);
  m.def(
      "backward(Tensor density, Tensor semantics, Tensor origins, Tensor directions, "
      "Tensor batch_index, float[] box, float[] voxel_size, float near, float step, bool probs, "
      "Tensor depth, Tensor sem, Tensor opacity, Tensor distortion, Tensor g_depth, Tensor g_sem, "
      "Tensor g_opacity, Tensor g_distortion, bool need_sem_grad, int stream) -> Tensor[]",
      &renderocc::render_backward);
  m.def(
      "visibility(Tensor density, Tensor origins, Tensor directions, Tensor batch_index, float[] box, "
      "float[] voxel_size, float near, float step, int stream) -> Tensor",
      &renderocc::visibility);
}
