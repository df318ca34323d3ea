// The CUDA kernels' per-ray programs run on the host, for the tests of a machine without a GPU.
//
// The lanes kernel (render_lanes.h) is written against a group of 8 lanes; here the lanes are
// cooperative fibers (ucontext) that switch at every exchange (bcast, swap), an exchange
// completing once all 8 lanes have reached it. The program is compiled from the same source as
// the .cu, with the same variant choice (with_lanes_variant), so the tests check its indexing,
// lane exchanges, slot flushes and row scatters against the reference. The group also checks
// what a GPU would not: that all lanes make the same exchanges in the same order (anything else
// is undefined behaviour with shuffles), that every grid read and gradient add stays inside its
// tensor, and that 4-float adds are 16-byte aligned. Rays run one after another; atomics are
// plain adds. `kernel`: 0 the lanes kernel, 1 the per-ray one (RENDEROCC_CUDA_KERNEL=per-ray),
// 2 the lanes kernel's 64-bit-index variant (a GPU takes it only for grids too big for a test).
#if defined(__APPLE__) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 600  // macOS declares the ucontext routines only then
#endif
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "checks.h"
#include "render_core.h"
#include "render_lanes.h"

namespace renderocc {

namespace {

constexpr size_t kFiberStack = size_t(1) << 18;
constexpr int kEmulatedPerRay = 1;  // the per-ray kernel
constexpr int kEmulatedWide = 2;    // the lanes kernel with 64-bit indices whatever the grid

// A byte range of a tensor the program may read or add into.
struct Span {
  const char* begin;
  const char* end;
};

// kLanes fibers running one lane program each, switching at exchanges.
class Fibers {
 public:
  Fibers() {
    for (auto& s : stacks_) s.resize(kFiberStack);
  }

  // Runs body(lane) on every lane to completion; returns "" or what went wrong.
  template <typename Body>
  std::string run(Body& body) {
    body_ = [](void* b, int lane) { (*static_cast<Body*>(b))(lane); };
    body_arg_ = &body;
    arrived_ = n_done_ = 0;
    error_.clear();
    const uintptr_t self = reinterpret_cast<uintptr_t>(this);
    for (int l = 0; l < kLanes; ++l) {
      done_[l] = false;
      getcontext(&ctx_[l]);
      ctx_[l].uc_stack.ss_sp = stacks_[l].data();
      ctx_[l].uc_stack.ss_size = stacks_[l].size();
      ctx_[l].uc_link = &main_;
      makecontext(&ctx_[l], reinterpret_cast<void (*)()>(&Fibers::entry), 2, static_cast<unsigned>(self >> 32),
                  static_cast<unsigned>(self & 0xFFFFFFFFu));
    }
    while (n_done_ < kLanes && error_.empty()) {
      for (int l = 0; l < kLanes && error_.empty(); ++l) {
        if (done_[l]) continue;
        current_ = l;
        swapcontext(&main_, &ctx_[l]);
      }
      if (error_.empty() && n_done_ > 0 && arrived_ > 0)
        error_ = "lanes diverged: some lanes finished while others wait at an exchange";
    }
    return error_;
  }

  // Lane `lane` offers `value` and gets lane `src`'s, once all lanes have offered theirs. `kind`
  // and `param` name the exchange (bcast from a lane, swap with a mask): all lanes must agree.
  uint64_t exchange(int lane, uint64_t value, int src, int kind, int param) {
    const uint64_t generation = generation_;
    offered_[lane] = value;
    kind_[lane] = kind;
    param_[lane] = param;
    if (++arrived_ == kLanes) {
      for (int l = 1; l < kLanes; ++l)
        if (kind_[l] != kind_[0] || param_[l] != param_[0]) fail("lanes made different exchanges at one step");
      std::memcpy(published_, offered_, sizeof(published_));
      arrived_ = 0;
      ++generation_;
    } else {
      while (generation_ == generation) swapcontext(&ctx_[lane], &main_);
    }
    return published_[src];
  }

  // Records the first error and leaves the lane for good (the run stops).
  void fail(const std::string& what) {
    if (error_.empty()) error_ = what;
    swapcontext(&ctx_[current_], &main_);
  }

  void note(const std::string& what) {
    if (error_.empty()) error_ = what;
  }

 private:
  static void entry(unsigned hi, unsigned lo) {
    auto* f = reinterpret_cast<Fibers*>((static_cast<uintptr_t>(hi) << 32) | lo);
    const int lane = f->current_;
    f->body_(f->body_arg_, lane);
    f->done_[lane] = true;
    ++f->n_done_;
  }

  ucontext_t main_{};
  ucontext_t ctx_[kLanes]{};
  std::vector<char> stacks_[kLanes];
  void (*body_)(void*, int) = nullptr;
  void* body_arg_ = nullptr;
  bool done_[kLanes]{};
  int n_done_ = 0, arrived_ = 0, current_ = 0;
  uint64_t generation_ = 0;
  uint64_t offered_[kLanes]{}, published_[kLanes]{};
  int kind_[kLanes]{}, param_[kLanes]{};
  std::string error_;
};

// The group render_lanes.h expects, on fibers; reads and adds checked against the tensors' spans.
struct FiberLanes {
  Fibers* fibers;
  int lane_;
  const std::vector<Span>* reads;
  const std::vector<Span>* adds;
  static constexpr bool kVector4 = true;

  int lane() const { return lane_; }

  template <typename V>
  V bcast(V v, int src) const {
    return trade(v, src, 0, src);
  }

  template <typename V>
  V swap(V v, int mask) const {
    return trade(v, lane_ ^ mask, 1, mask);
  }

  template <typename T>
  T ld(const T* p) const {
    if (!inside(*reads, p, sizeof(T))) {
      fibers->note("a lane read outside the grids");
      return T(0);
    }
    return *p;
  }

  template <typename T>
  void add(T* p, T v) const {
    if (!inside(*adds, p, sizeof(T))) return fibers->note("a lane added outside the gradients");
    *p += v;
  }

  void add4(float* p, float x0, float x1, float x2, float x3) const {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return fibers->note("a 4-float add was not 16-byte aligned");
    if (!inside(*adds, p, 4 * sizeof(float))) return fibers->note("a 4-float add reached outside the gradients");
    p[0] += x0;
    p[1] += x1;
    p[2] += x2;
    p[3] += x3;
  }

 private:
  template <typename V>
  V trade(V v, int src, int kind, int param) const {
    static_assert(sizeof(V) <= sizeof(uint64_t), "one exchange moves at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(V));
    bits = fibers->exchange(lane_, bits, src, kind, param);
    V out;
    std::memcpy(&out, &bits, sizeof(V));
    return out;
  }

  static bool inside(const std::vector<Span>& spans, const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    for (const Span& s : spans)
      if (c >= s.begin && c + n <= s.end) return true;
    return false;
  }
};

template <typename T>
Span span_of(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  return {c, c + (p == nullptr ? 0 : n * static_cast<int64_t>(sizeof(T)))};
}

template <typename T>
struct EmulatedAdd {
  void operator()(T* p, T v) const { *p += v; }
  void scaled_row(T* row, T a, const T* g, int64_t C) const {
    for (int64_t ch = 0; ch < C; ++ch) row[ch] += a * g[ch];
  }
  void row(T* row, const T* x, int64_t C) const {
    for (int64_t ch = 0; ch < C; ++ch) row[ch] += x[ch];
  }
};

// Every ray through the lanes program `per_ray(r, group)`.
template <typename T, typename PerRay>
void run_lanes(const RenderArgs<T>& a, bool backward, const PerRay& per_ray) {
  const GridView<T>& g = a.grid;
  const int64_t vox = a.B * g.X * g.Y * g.Z, R = a.R, C = g.C;
  std::vector<Span> reads = {span_of(g.density, vox), span_of(g.sem, vox * C)};
  std::vector<Span> adds;
  if (backward) {
    reads.push_back(span_of(a.g_sem, R * C));
    reads.push_back(span_of(a.sem, R * C));
    adds = {span_of(a.grad_density, vox), span_of(a.grad_sem, a.grad_sem ? vox * C : 0)};
  }
  Fibers fibers;
  for (int64_t r = 0; r < R; ++r) {
    auto body = [&](int lane) { per_ray(r, FiberLanes{&fibers, lane, &reads, &adds}); };
    const std::string error = fibers.run(body);
    RO_CHECK(error.empty(), "emulated lanes kernel, ray " + std::to_string(r) + ": " + error);
  }
}

}  // namespace

template <typename T>
void render_forward_emulated(const RenderArgs<T>& a, int kernel) {
  if (kernel == kEmulatedPerRay) {
    std::vector<T> scratch(std::max<int64_t>(a.grid.C, 1));
    for (int64_t r = 0; r < a.R; ++r) forward_one(a, r, scratch.data());
    return;
  }
  with_lanes_variant(a, [&](auto variant) {
    using V = decltype(variant);
    if (a.march.probs)
      run_lanes(a, false, [&](int64_t r, const FiberLanes& grp) {
        lanes_forward<T, V::CPL, V::CFIX, true, typename V::I>(a, r, grp);
      });
    else
      run_lanes(a, false, [&](int64_t r, const FiberLanes& grp) {
        lanes_forward<T, V::CPL, V::CFIX, false, typename V::I>(a, r, grp);
      });
    return 0;
  }, kernel == kEmulatedWide);
}

template <typename T>
void render_backward_emulated(const RenderArgs<T>& a, int kernel) {
  if (kernel == kEmulatedPerRay) {
    std::vector<T> scratch(std::max<int64_t>(9 * a.grid.C, 1));
    for (int64_t r = 0; r < a.R; ++r) backward_one(a, r, scratch.data(), a.grad_density, a.grad_sem, EmulatedAdd<T>());
    return;
  }
  with_lanes_variant(a, [&](auto variant) {
    using V = decltype(variant);
    if (a.march.probs)
      run_lanes(a, true, [&](int64_t r, const FiberLanes& grp) {
        lanes_backward<T, V::CPL, V::CFIX, true, typename V::I>(a, r, grp);
      });
    else
      run_lanes(a, true, [&](int64_t r, const FiberLanes& grp) {
        lanes_backward<T, V::CPL, V::CFIX, false, typename V::I>(a, r, grp);
      });
    return 0;
  }, kernel == kEmulatedWide);
}

template void render_forward_emulated<float>(const RenderArgs<float>&, int);
template void render_forward_emulated<double>(const RenderArgs<double>&, int);
template void render_backward_emulated<float>(const RenderArgs<float>&, int);
template void render_backward_emulated<double>(const RenderArgs<double>&, int);

}  // namespace renderocc
