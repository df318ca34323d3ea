// The lanes kernel's backward (render_lanes.h), every compiled variant: a translation unit of its
// own so the build compiles it beside the forward's.
#include "cuda_lanes.cuh"

namespace renderocc {

namespace {
using namespace cuda_detail;

template <typename T, int CPL, int CFIX, bool PROBS, typename I>
__global__ void __launch_bounds__(kThreads, kMinBlocks<T>) lanes_backward_kernel(RenderArgs<T> a) {
  const int64_t r = thread_index() / kLanes;
  if (r >= a.R) return;  // the whole group: its 8 lanes share r
  lanes_backward<T, CPL, CFIX, PROBS, I>(a, r, WarpLanes(threadIdx.x));
}
}  // namespace

template <typename T>
int lanes_backward_cuda(const RenderArgs<T>& a, void* stream) {
  return with_lanes_variant(a, [&](auto variant) {
    using V = decltype(variant);
    return a.march.probs
               ? launch(lanes_backward_kernel<T, V::CPL, V::CFIX, true, typename V::I>, a, stream, kLanes)
               : launch(lanes_backward_kernel<T, V::CPL, V::CFIX, false, typename V::I>, a, stream, kLanes);
  });
}

template int lanes_backward_cuda<float>(const RenderArgs<float>&, void*);
template int lanes_backward_cuda<double>(const RenderArgs<double>&, void*);

}  // namespace renderocc
