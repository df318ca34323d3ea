// The CUDA kernel's per-ray program: kLanes (8) lanes per ray, 4 rays per warp.
//
// The lanes split a ray's samples: in each chunk of 8 samples, lane j finds sample k0 + j's cell
// and reads its 8 densities (the memory latency of 8 samples at once). The rest of the march is
// sequential by nature (transmittance, the backward's prefix sums, the slot rule): every lane
// runs it redundantly over the chunk's samples in order, taking sample j's values from lane j
// (`bcast`), so all lanes hold the same running sums, in the same order as the sequential march
// of render_core.h. Per-channel work is split instead: lane l holds channels l, l + 8, ... of
// every row it needs (CPL of them), and sums over channels combine the lanes' partial sums with
// an xor butterfly, which is `lane_tree`'s order on every lane. No local arrays: every per-slot
// and per-channel value has a compile-time index, so it lives in registers.
//
// The program is written against a group `G` of the ray's lanes:
//   int lane() const;                          this lane, 0..kLanes-1
//   V bcast(V v, int src) const;               lane src's v (every lane of the group calls it)
//   V swap(V v, int mask) const;               lane (lane ^ mask)'s v
//   T ld(const T* p) const;                    a read of the grids or the upstream gradients
//   void add(T* p, T v) const;                 atomic p += v
//   void add4(float* p, float x0..x3) const;   atomic 4-float add, p 16-byte aligned (kVector4)
//   static constexpr bool kVector4;
// render_cuda.cu runs it on warps (shuffles, atomics); render_emulate.cpp runs the same program
// on the host with the lanes as cooperative fibers, so the CPU tests check it against the
// reference on a machine without a GPU.
#pragma once

#include <cstdint>
#include <type_traits>

#include "render_core.h"

namespace renderocc {

// The class counts in use, compiled with their count fixed (Occ3D's 17 classes; the airside
// vocabulary's 13); every other count up to kMaxClassesCuda takes a generic variant.
constexpr int kClassesOcc3d = 17;
constexpr int kClassesAirside = 13;

// One compiled variant: CPL channels per lane, the class count fixed at compile time (CFIX) or
// read at run time (0), and the index type of voxels and row elements within one batch grid.
template <int CPL_, int CFIX_, typename I_>
struct LanesVariant {
  static constexpr int CPL = CPL_;
  static constexpr int CFIX = CFIX_;
  using I = I_;
};

// Calls launch(LanesVariant<...>{}) for the variant serving the launch's class count and grid:
// 32-bit indices when one batch grid's rows fit them (`wide`: 64-bit regardless, for the tests).
// Returns what launch returns.
template <typename T, typename Launch>
int with_lanes_variant(const RenderArgs<T>& a, Launch&& launch, bool wide = false) {
  const int64_t C = a.grid.C, vox = a.grid.X * a.grid.Y * a.grid.Z;
  const bool idx32 = !wide && vox * (C > 0 ? C : 1) < (int64_t(1) << 31);
  if (!idx32) return launch(LanesVariant<8, 0, int64_t>{});
  if (C == kClassesOcc3d) return launch(LanesVariant<3, kClassesOcc3d, int32_t>{});
  if (C == kClassesAirside) return launch(LanesVariant<2, kClassesAirside, int32_t>{});
  if (C <= 4 * kLanes) return launch(LanesVariant<4, 0, int32_t>{});
  return launch(LanesVariant<8, 0, int32_t>{});
}

// Sum of one value per lane in lane_tree's order (bitwise the same on every lane: each
// butterfly step adds the same two numbers, in one order or the other).
template <typename T, typename G>
RO_HD T group_sum(const G& grp, T x) {
  x += grp.swap(x, 1);
  x += grp.swap(x, 2);
  x += grp.swap(x, 4);
  return x;
}

template <typename T, typename G>
RO_HD T group_max(const G& grp, T x) {
  RO_UNROLL
  for (int m = 1; m < kLanes; m <<= 1) {
    const T y = grp.swap(x, m);
    x = y > x ? y : x;
  }
  return x;
}

// The values one lane gathers from a sample's 8 densities: its cell and transmittance.
template <typename T, typename I>
struct LaneSample {
  SampleCell<T, I> cell;
  T t, trans;
};

// Lane j's own sample of the chunk starting at k0 (a sample past K gets a neutral placeholder).
template <typename T, typename I, typename G>
RO_HD LaneSample<T, I> own_sample(const GridView<T>& g, const T* o, const T* d, T t_in, T step, int64_t k,
                                  int64_t K, const T* dens, const CornerOffsets<I>& off, const G& grp) {
  LaneSample<T, I> s;
  s.t = T(0);
  s.trans = T(1);
  RO_UNROLL
  for (int a = 0; a < 3; ++a) {
    s.cell.i[a] = I(0);
    s.cell.f[a] = T(0);
  }
  if (k < K) {
    s.t = sample_t(t_in, k, step);
    sample_cell(g, o, d, s.t, s.cell);
    T c[8];
    corner_weights(s.cell.f, c);
    const I base = cell_base(g, s.cell.i);
    T sigma = 0;
    RO_UNROLL
    for (int n = 0; n < 8; ++n) sigma += c[n] * grp.ld(dens + (base + off.o[n]));
    s.trans = exp(-sigma * step);
  }
  return s;
}

// Sample j of the chunk, as every lane sees it.
template <typename T, typename I, typename G>
RO_HD LaneSample<T, I> chunk_sample(const LaneSample<T, I>& mine, int j, const G& grp) {
  LaneSample<T, I> s;
  s.t = grp.bcast(mine.t, j);
  s.trans = grp.bcast(mine.trans, j);
  RO_UNROLL
  for (int a = 0; a < 3; ++a) {
    s.cell.i[a] = grp.bcast(mine.cell.i[a], j);
    s.cell.f[a] = grp.bcast(mine.cell.f[a], j);
  }
  return s;
}

// Lane l's channels of a row (0 beyond C).
template <typename T, int CPL, typename I, typename G>
RO_HD void load_lane_row(const G& grp, const T* row, I C, T* out) {
  const int lane = grp.lane();
  RO_UNROLL
  for (int j = 0; j < CPL; ++j) {
    const I ch = static_cast<I>(lane + kLanes * j);
    out[j] = ch < C ? grp.ld(row + ch) : T(0);
  }
}

// The softmax of the sample's interpolated logits, lane l's channels: p[j] for channel l + 8 j.
template <typename T, int CPL, typename I, typename G>
RO_HD void lane_softmax(const G& grp, const T (&rows)[8][CPL], const T* c, I C, T* p) {
  const int lane = grp.lane();
  T mx = -INFINITY;
  RO_UNROLL
  for (int j = 0; j < CPL; ++j) {
    T s = 0;
    RO_UNROLL
    for (int n = 0; n < 8; ++n) s += c[n] * rows[n][j];
    p[j] = s;
    if (static_cast<I>(lane + kLanes * j) < C) mx = s > mx ? s : mx;
  }
  mx = group_max(grp, mx);
  T z = 0;
  RO_UNROLL
  for (int j = 0; j < CPL; ++j) {
    p[j] = static_cast<I>(lane + kLanes * j) < C ? exp(p[j] - mx) : T(0);
    z += p[j];
  }
  z = group_sum(grp, z);
  RO_UNROLL
  for (int j = 0; j < CPL; ++j) p[j] /= z;
}

template <int CFIX, typename T, typename I>
RO_HD I class_count(const GridView<T>& g) {
  return CFIX > 0 ? I(CFIX) : static_cast<I>(g.C);
}

// Forward of ray r (every lane of the group calls it with the same r).
template <typename T, int CPL, int CFIX, bool PROBS, typename I, typename G>
RO_HD void lanes_forward(const RenderArgs<T>& a, int64_t r, const G& grp) {
  const GridView<T>& g = a.grid;
  const int lane = grp.lane();
  const I C = class_count<CFIX, T, I>(g);
  const T step = a.march.step;
  const T *o = a.origins + 3 * r, *d = a.dirs + 3 * r;
  T acc[CPL];  // lane's channels of the composited semantics
  RO_UNROLL
  for (int j = 0; j < CPL; ++j) acc[j] = T(0);
  T depth = 0, opacity = 0, distortion = 0, t_far = 0, t_in, t_out;
  int64_t K;
  if (ray_samples(o, d, g, a.march.near, step, t_in, t_out, K)) {
    t_far = t_out;
    const int64_t b = a.batch[r], vox = g.X * g.Y * g.Z;
    const T* dens = g.density + b * vox;
    const T* sem = g.sem + b * vox * g.C;
    const CornerOffsets<I> off = corner_offsets<T, I>(g);
    SlotCell<I> slots = empty_slots<I>();
    T sw[8] = {};                // logits: per slot, the sum of weight x corner weight
    T rows[PROBS ? 8 : 1][CPL] = {};  // probs: per slot, lane's channels of the voxel's row
    const auto leave = [&](int n, const I* cell) {
      if constexpr (!PROBS) {
        const T* row = sem + slot_voxel(g, cell, off, n) * C;
        RO_UNROLL
        for (int j = 0; j < CPL; ++j) {
          const I ch = static_cast<I>(lane + kLanes * j);
          if (ch < C) acc[j] += sw[n] * grp.ld(row + ch);
        }
      }
    };
    const auto shift = [&](int dst, int src) {
      if constexpr (PROBS) {
        RO_UNROLL
        for (int j = 0; j < CPL; ++j) rows[dst][j] = rows[src][j];
      } else {
        sw[dst] = sw[src];
      }
    };
    const auto enter = [&](int n, const I* cell) {
      if constexpr (PROBS)
        load_lane_row<T, CPL>(grp, sem + slot_voxel(g, cell, off, n) * C, C, rows[n]);
      else
        sw[n] = T(0);
    };
    T trans_acc = 1, w_sum = 0, wt_sum = 0, dist_pair = 0, w_sq = 0;
    bool alive = true;
    for (int64_t k0 = 0; alive && k0 < K; k0 += kLanes) {
      const LaneSample<T, I> mine = own_sample(g, o, d, t_in, step, k0 + lane, K, dens, off, grp);
      const int here = K - k0 < kLanes ? static_cast<int>(K - k0) : kLanes;
      for (int j = 0; j < here; ++j) {
        const LaneSample<T, I> s = chunk_sample(mine, j, grp);
        T c[8];
        corner_weights(s.cell.f, c);
        const T w = trans_acc * (T(1) - s.trans);
        move_slots(slots, s.cell.i, leave, shift, enter);
        if constexpr (PROBS) {
          T p[CPL];
          lane_softmax<T, CPL>(grp, rows, c, C, p);
          RO_UNROLL
          for (int jj = 0; jj < CPL; ++jj) acc[jj] += w * p[jj];
        } else {
          RO_UNROLL
          for (int n = 0; n < 8; ++n) sw[n] += w * c[n];
        }
        const T t = s.t;
        dist_pair += w * (t * w_sum - wt_sum);
        w_sq += w * w;
        w_sum += w;
        wt_sum += w * t;
        trans_acc *= s.trans;
        if (trans_acc < T(kTransmittanceEps)) {
          alive = false;
          break;
        }
      }
    }
    flush_slots(slots, leave);
    depth = wt_sum;
    opacity = w_sum;
    distortion = T(2) * dist_pair + step / T(3) * w_sq;
  }
  if (lane == 0) {
    a.depth[r] = depth;
    a.opacity[r] = opacity;
    a.distortion[r] = distortion;
    a.t_far[r] = t_far;
  }
  T* out = a.sem + r * static_cast<int64_t>(C);
  RO_UNROLL
  for (int j = 0; j < CPL; ++j) {
    const I ch = static_cast<I>(lane + kLanes * j);
    if (ch < C) out[ch] = acc[j];
  }
}

// row += s * g over the C elements of a gradient row (v's row of `grad_sem`): with 4-float
// atomics, lanes take the 16-byte-aligned blocks the row overlaps (blocks only partly in the row
// get single adds, so no element outside it is touched); otherwise lane l adds its channels.
template <typename T, int CPL, typename I, typename G>
RO_HD void add_scaled_row(const G& grp, T* grad_sem, I v, I C, T s, const T* g_row, const T* g_lane) {
  const int lane = grp.lane();
  if constexpr (std::is_same<T, float>::value && G::kVector4) {
    // Element e of this batch grid lies at aligned index e + mis from the 16-byte boundary below.
    const I mis = static_cast<I>((reinterpret_cast<uintptr_t>(grad_sem) / sizeof(float)) & 3u);
    float* aligned = grad_sem - mis;
    const I e0 = v * C + mis, e1 = e0 + C;
    for (I blk = (e0 >> 2) + lane; blk <= ((e1 - 1) >> 2); blk += kLanes) {
      const I lo = blk * 4 > e0 ? blk * 4 : e0, hi = blk * 4 + 4 < e1 ? blk * 4 + 4 : e1;
      if (lo == blk * 4 && hi == blk * 4 + 4) {
        const T* gp = g_row + (lo - e0);
        grp.add4(aligned + lo, s * grp.ld(gp), s * grp.ld(gp + 1), s * grp.ld(gp + 2), s * grp.ld(gp + 3));
      } else {
        for (I e = lo; e < hi; ++e) grp.add(aligned + e, s * grp.ld(g_row + (e - e0)));
      }
    }
  } else {
    T* row = grad_sem + v * C;
    RO_UNROLL
    for (int j = 0; j < CPL; ++j) {
      const I ch = static_cast<I>(lane + kLanes * j);
      if (ch < C) grp.add(row + ch, s * g_lane[j]);
    }
  }
}

// Backward of ray r: the forward's march again, each voxel's gradients gathered in its slot and
// added once per (ray, voxel) when the slot is flushed (the density by lane n % 8 for slot n,
// the row by all lanes).
template <typename T, int CPL, int CFIX, bool PROBS, typename I, typename G>
RO_HD void lanes_backward(const RenderArgs<T>& a, int64_t r, const G& grp) {
  const GridView<T>& g = a.grid;
  const int lane = grp.lane();
  const I C = class_count<CFIX, T, I>(g);
  const T step = a.march.step;
  const T *o = a.origins + 3 * r, *d = a.dirs + 3 * r;
  T t_in, t_out;
  int64_t K;
  if (!ray_samples(o, d, g, a.march.near, step, t_in, t_out, K)) return;
  const int64_t b = a.batch[r], vox = g.X * g.Y * g.Z;
  const T* dens = g.density + b * vox;
  const T* sem = g.sem + b * vox * g.C;
  T* grad_density = a.grad_density + b * vox;
  T* grad_sem = a.grad_sem != nullptr ? a.grad_sem + b * vox * g.C : nullptr;
  const T* g_row = a.g_sem + r * static_cast<int64_t>(C);
  const T* s_row = a.sem + r * static_cast<int64_t>(C);
  const CornerOffsets<I> off = corner_offsets<T, I>(g);

  T g_lane[CPL];  // lane's channels of the semantic upstream gradient
  load_lane_row<T, CPL>(grp, g_row, C, g_lane);
  T part = 0;
  RO_UNROLL
  for (int j = 0; j < CPL; ++j) {
    const I ch = static_cast<I>(lane + kLanes * j);
    if (ch < C) part += g_lane[j] * grp.ld(s_row + ch);
  }
  const T g_depth = a.g_depth[r], g_opacity = a.g_opacity[r], g_distortion = a.g_distortion[r];
  const T W = a.opacity[r], M = a.depth[r];
  const T total = (g_depth * M + g_opacity * W + T(2) * g_distortion * a.distortion[r]) + group_sum(grp, part);

  SlotCell<I> slots = empty_slots<I>();
  T D[8] = {};                 // per slot: density gradient
  T A[PROBS ? 1 : 8] = {};     // logits: weight sum (the row's gradient is A g_sem)
  T q[PROBS ? 1 : 8] = {};     // logits: <g_sem, the voxel's row>
  T rows[PROBS ? 8 : 1][CPL] = {};  // probs: lane's channels of the voxel's row
  T RG[PROBS ? 8 : 1][CPL] = {};  // probs: lane's channels of the row gradient
  const auto leave = [&](int n, const I* cell) {
    const I v = slot_voxel(g, cell, off, n);
    if (lane == n % kLanes) grp.add(grad_density + v, D[n]);
    if (grad_sem == nullptr) return;
    if constexpr (PROBS) {
      T* row = grad_sem + v * C;
      RO_UNROLL
      for (int j = 0; j < CPL; ++j) {
        const I ch = static_cast<I>(lane + kLanes * j);
        if (ch < C) grp.add(row + ch, RG[n][j]);
      }
    } else {
      add_scaled_row<T, CPL>(grp, grad_sem, v, C, A[n], g_row, g_lane);
    }
  };
  const auto shift = [&](int dst, int src) {
    D[dst] = D[src];
    if constexpr (PROBS) {
      RO_UNROLL
      for (int j = 0; j < CPL; ++j) {
        rows[dst][j] = rows[src][j];
        RG[dst][j] = RG[src][j];
      }
    } else {
      A[dst] = A[src];
      q[dst] = q[src];
    }
  };
  const auto enter = [&](int n, const I* cell) {
    D[n] = T(0);
    const T* row = sem + slot_voxel(g, cell, off, n) * C;
    if constexpr (PROBS) {
      load_lane_row<T, CPL>(grp, row, C, rows[n]);
      RO_UNROLL
      for (int j = 0; j < CPL; ++j) RG[n][j] = T(0);
    } else {
      A[n] = T(0);
      T qp = 0;
      RO_UNROLL
      for (int j = 0; j < CPL; ++j) {
        const I ch = static_cast<I>(lane + kLanes * j);
        if (ch < C) qp += g_lane[j] * grp.ld(row + ch);
      }
      q[n] = group_sum(grp, qp);
    }
  };

  T trans_acc = 1, w_prev = 0, m_prev = 0, prefix = 0;
  bool alive = true;
  for (int64_t k0 = 0; alive && k0 < K; k0 += kLanes) {
    const LaneSample<T, I> mine = own_sample(g, o, d, t_in, step, k0 + lane, K, dens, off, grp);
    const int here = K - k0 < kLanes ? static_cast<int>(K - k0) : kLanes;
    for (int j = 0; j < here; ++j) {
      const LaneSample<T, I> s = chunk_sample(mine, j, grp);
      T c[8];
      corner_weights(s.cell.f, c);
      const T t = s.t, trans = s.trans;
      const T w = trans_acc * (T(1) - trans);
      move_slots(slots, s.cell.i, leave, shift, enter);
      T dot = 0;
      T p[PROBS ? CPL : 1];
      if constexpr (PROBS) {
        lane_softmax<T, CPL>(grp, rows, c, C, p);
        T dp = 0;
        RO_UNROLL
        for (int jj = 0; jj < CPL; ++jj) dp += g_lane[jj] * p[jj];
        dot = group_sum(grp, dp);
      } else {
        RO_UNROLL
        for (int n = 0; n < 8; ++n) dot += c[n] * q[n];
      }
      const T w_next = W - w_prev - w, m_next = M - m_prev - w * t;
      const T d_dist = T(2) * (t * w_prev - m_prev + m_next - t * w_next) + T(2) * step / T(3) * w;
      const T v = g_depth * t + g_opacity + dot + g_distortion * d_dist;
      const T suffix = total - prefix - w * v;
      const T g_sigma = step * (trans_acc * trans * v - suffix);
      RO_UNROLL
      for (int n = 0; n < 8; ++n) D[n] += c[n] * g_sigma;
      if constexpr (PROBS) {
        if (grad_sem != nullptr) {
          RO_UNROLL
          for (int jj = 0; jj < CPL; ++jj) {
            const T gs = w * p[jj] * (g_lane[jj] - dot);
            RO_UNROLL
            for (int n = 0; n < 8; ++n) RG[n][jj] += c[n] * gs;
          }
        }
      } else {
        RO_UNROLL
        for (int n = 0; n < 8; ++n) A[n] += c[n] * w;
      }
      prefix += w * v;
      w_prev += w;
      m_prev += w * t;
      trans_acc *= trans;
      if (trans_acc < T(kTransmittanceEps)) {
        alive = false;
        break;
      }
    }
  }
  flush_slots(slots, leave);
}

}  // namespace renderocc
