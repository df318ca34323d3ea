// The bindings' one contact with torch's CUDA runtime: the device guard and the current stream.
//
// Compiled only into CUDA builds (it needs the CUDA runtime headers), so bindings.cpp stays free
// of c10/cuda and the kernels (.cu) free of torch: each launch runs on the stream torch is using
// for that device (streams, CUDA graphs and torch.compile see the ops as ordinary ATen work).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <functional>

namespace renderocc {

int on_current_cuda_stream(const at::Tensor& like, const std::function<int(void*)>& launch) {
  const c10::cuda::CUDAGuard guard(like.device());
  return launch(c10::cuda::getCurrentCUDAStream(like.device().index()).stream());
}

}  // namespace renderocc
