// Per-ray volume-rendering math shared by the CPU (.cpp) and CUDA (.cu) kernels.
//
// Everything here is header-only and __host__ __device__ so both backends run the SAME
// arithmetic in the same order: slab clipping, the sample rule, trilinear interpolation at
// the Occ3D voxel-centre convention, compositing, the distortion loss, the optical-depth
// integral, the backward recomputations (early termination mirrored exactly) and the slot rule
// below. No torch headers: this file must compile with nvcc and a plain C++ compiler alike.
//
// The slot rule (render and its backward). Consecutive samples of a ray share trilinear
// corners: a ray touches ~2.5 new voxels per sample against 8 corner hits. So a march keeps one
// slot per corner of the current cell (slot n = 4i + 2j + k holds corner (x0+i, y0+j, z0+k)) and
// accumulates per (ray, voxel) what it would otherwise scatter per (sample, corner): the weight
// sum of the voxel (forward, logits), its density gradient, its semantic-row gradient. A slot is
// flushed once, when the ray's cell leaves it (`move_slots`) or the march ends (`flush_slots`):
// a semantic row is read once and its gradient added once per (ray, voxel). Per-channel sums
// over a row (dot products, the softmax normaliser) follow the layout of the CUDA kernel's 8
// lanes (`channel_dot`), so the CPU kernel is its twin in the order of operations too.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define RO_HD __host__ __device__ __forceinline__
#define RO_UNROLL _Pragma("unroll")
#elif defined(__GNUC__) && !defined(__clang__)
#define RO_HD inline
#define RO_UNROLL _Pragma("GCC unroll 8")
#else
#define RO_HD inline
#define RO_UNROLL
#endif

namespace renderocc {

using std::exp;  // float overloads on the host too
using std::floor;

// A ray stops once its transmittance falls below this (forward and backward alike).
constexpr double kTransmittanceEps = 1e-4;

// Lanes per ray of the CUDA kernel. Channel c of a row belongs to lane c % kLanes; sums over
// channels are summed per lane, then combined pairwise (lane_tree), on both backends.
constexpr int kLanes = 8;

// The most classes a CUDA kernel holds in registers (kLanes lanes x 8 channels each). The CPU
// kernels have no limit; the bindings refuse more on CUDA, in both semantic modes.
constexpr int kMaxClassesCuda = 64;

// One batch's view of the grids plus the box they fill.
template <typename T>
struct GridView {
  const T* density;  // (B, X, Y, Z)
  const T* sem;      // (B, X, Y, Z, C)
  int64_t X, Y, Z, C;
  T lo[3];   // pc_range min
  T hi[3];   // pc_range max
  T vox[3];  // voxel size per axis
};

template <typename T>
struct MarchParams {
  T near;
  T step;
  bool probs;  // composite softmax(interpolated logits) instead of logits
};

// Outputs of one ray that are not per-class.
template <typename T>
struct RayScalars {
  T depth;       // sum w t (no background term; the wrapper adds it)
  T opacity;     // sum w
  T distortion;  // Mip-NeRF 360 distortion of the composited weights (metres)
  T t_far;       // clipped exit distance, 0 for rays that miss
};

// Clip the ray to the box and to t >= near (slab test). Returns false on a miss.
// Axes with a zero direction component never divide: the ray either lies within the slab
// for all t or misses.
template <typename T>
RO_HD bool clip_ray(const T* o, const T* d, const GridView<T>& g, T near, T& t_in, T& t_out) {
  t_in = near;
  t_out = INFINITY;
  for (int a = 0; a < 3; ++a) {
    if (d[a] == T(0)) {
      if (o[a] < g.lo[a] || o[a] > g.hi[a]) return false;
      continue;
    }
    T t1 = (g.lo[a] - o[a]) / d[a];
    T t2 = (g.hi[a] - o[a]) / d[a];
    T tlo = t1 < t2 ? t1 : t2;
    T thi = t1 < t2 ? t2 : t1;
    if (tlo > t_in) t_in = tlo;
    if (thi < t_out) t_out = thi;
  }
  return t_out > t_in;
}

// Relative slack on the sample count so a span of exactly n steps gives n samples whatever
// the rounding of t_out - t_in (the last sample stays half a step inside the box).
constexpr double kCountSlack = 1e-6;

// K = floor((t_out - t_in) / step) samples (with the slack above) at t_in + (k + 0.5) step.
template <typename T>
RO_HD int64_t num_samples(T t_in, T t_out, T step) {
  return static_cast<int64_t>(floor((t_out - t_in) / step * T(1 + kCountSlack)));
}

template <typename T>
RO_HD T sample_t(T t_in, int64_t k, T step) {
  return t_in + (T(k) + T(0.5)) * step;
}

// The ray's sample span: false on a miss, else t_in, t_out and the sample count K. Every
// march starts here so they all place their samples identically.
template <typename T>
RO_HD bool ray_samples(const T* o, const T* d, const GridView<T>& g, T near, T step, T& t_in, T& t_out,
                       int64_t& K) {
  if (!clip_ray(o, d, g, near, t_in, t_out)) return false;
  K = num_samples(t_in, t_out, step);
  return true;
}

// The largest of E end distances (NaNs ignored): a march stops at the first sample not before it.
template <typename T>
RO_HD T latest_end(const T* t_end, int64_t E) {
  T last = -INFINITY;
  for (int64_t e = 0; e < E; ++e) last = t_end[e] > last ? t_end[e] : last;
  return last;
}

// Continuous index u = (p - lo) / vox - 0.5 (voxel i's centre at lo + (i + 0.5) vox),
// clamped to the outermost centres [0, N - 1].
template <typename T, typename I>
RO_HD void axis_lerp(T p, T lo, T vox, I n, I& i0, I& i1, T& f) {
  T u = (p - lo) / vox - T(0.5);
  T umax = T(n - 1);
  u = u < T(0) ? T(0) : (u > umax ? umax : u);
  i0 = static_cast<I>(u);  // u >= 0: truncation is floor (and no libm call on the host)
  if (i0 > n - 2) i0 = n > 1 ? n - 2 : 0;
  i1 = n > 1 ? i0 + 1 : 0;
  f = u - T(i0);
}

// Trilinear weights of the 8 corners n = 4i + 2j + k from the fractions along x, y, z.
template <typename T>
RO_HD void corner_weights(const T* f, T* w) {
  const T wx[2] = {T(1) - f[0], f[0]}, wy[2] = {T(1) - f[1], f[1]}, wz[2] = {T(1) - f[2], f[2]};
  RO_UNROLL
  for (int n = 0; n < 8; ++n) w[n] = wx[n >> 2] * wy[(n >> 1) & 1] * wz[n & 1];
}

// The 8 trilinear corners of a point: flat voxel offsets within one batch grid and weights.
template <typename T>
struct Corners {
  int64_t idx[8];
  T w[8];
};

template <typename T>
RO_HD void trilinear_corners(const T* p, const GridView<T>& g, Corners<T>& c) {
  int64_t x0, x1, y0, y1, z0, z1;
  T f[3];
  axis_lerp(p[0], g.lo[0], g.vox[0], g.X, x0, x1, f[0]);
  axis_lerp(p[1], g.lo[1], g.vox[1], g.Y, y0, y1, f[1]);
  axis_lerp(p[2], g.lo[2], g.vox[2], g.Z, z0, z1, f[2]);
  const int64_t xs[2] = {x0, x1}, ys[2] = {y0, y1}, zs[2] = {z0, z1};
  corner_weights(f, c.w);
  for (int n = 0; n < 8; ++n) c.idx[n] = (xs[n >> 2] * g.Y + ys[(n >> 1) & 1]) * g.Z + zs[n & 1];
}

template <typename T>
RO_HD T interp_density(const T* dens, const Corners<T>& c) {
  T s = 0;
  for (int n = 0; n < 8; ++n) s += c.w[n] * dens[c.idx[n]];
  return s;
}

// One sample of a density-only march: the trilinear corners `c` of o + t·d and
// (sample_transmittance) the sample's transmittance exp(-sigma·step).
template <typename T>
RO_HD void sample_corners(const GridView<T>& g, const T* o, const T* d, T t, Corners<T>& c) {
  const T p[3] = {o[0] + t * d[0], o[1] + t * d[1], o[2] + t * d[2]};
  trilinear_corners(p, g, c);
}

template <typename T>
RO_HD T sample_transmittance(const GridView<T>& g, const T* dens, const T* o, const T* d, T t, T step,
                             Corners<T>& c) {
  sample_corners(g, o, d, t, c);
  return exp(-interp_density(dens, c) * step);
}

// -- cells and slots -----------------------------------------------------------------------------
// A sample's cell: its lower trilinear corner (x0, y0, z0) and the fractions along each axis.
// I is the index type (int64_t on the host; int32_t in CUDA launches whose grid allows it).
template <typename T, typename I>
struct SampleCell {
  I i[3];
  T f[3];
};

template <typename T, typename I>
RO_HD void sample_cell(const GridView<T>& g, const T* o, const T* d, T t, SampleCell<T, I>& s) {
  const T p[3] = {o[0] + t * d[0], o[1] + t * d[1], o[2] + t * d[2]};
  const I n[3] = {static_cast<I>(g.X), static_cast<I>(g.Y), static_cast<I>(g.Z)};
  RO_UNROLL
  for (int a = 0; a < 3; ++a) {
    I i1;
    axis_lerp(p[a], g.lo[a], g.vox[a], n[a], s.i[a], i1, s.f[a]);
  }
}

// Flat index of a cell's corner 0, and the offsets of its 8 corners (an axis of size 1 has its
// two corners on the same voxel).
template <typename T, typename I>
RO_HD I cell_base(const GridView<T>& g, const I* i) {
  return (i[0] * static_cast<I>(g.Y) + i[1]) * static_cast<I>(g.Z) + i[2];
}

template <typename I>
struct CornerOffsets {
  I o[8];
};

template <typename T, typename I>
RO_HD CornerOffsets<I> corner_offsets(const GridView<T>& g) {
  const I dx = g.X > 1 ? static_cast<I>(g.Y * g.Z) : I(0), dy = g.Y > 1 ? static_cast<I>(g.Z) : I(0);
  const I dz = g.Z > 1 ? I(1) : I(0);
  CornerOffsets<I> c;
  RO_UNROLL
  for (int n = 0; n < 8; ++n) c.o[n] = ((n & 4) ? dx : I(0)) + ((n & 2) ? dy : I(0)) + ((n & 1) ? dz : I(0));
  return c;
}

// sigma at a sample: the corners' densities weighted, summed in corner order from +0.
template <typename T, typename I>
RO_HD T cell_density(const T* dens, I base, const CornerOffsets<I>& off, const T* w) {
  T s = 0;
  RO_UNROLL
  for (int n = 0; n < 8; ++n) s += w[n] * dens[base + off.o[n]];
  return s;
}

// The slots of a march: the cell they belong to and which of them hold a voxel the ray has
// touched (bit n: slot n).
template <typename I>
struct SlotCell {
  I cell[3];
  unsigned occupied;
};

template <typename I>
RO_HD SlotCell<I> empty_slots() {
  SlotCell<I> s;
  s.cell[0] = s.cell[1] = s.cell[2] = I(0);
  s.occupied = 0u;
  return s;
}

// The slot rule: move the slots from their cell to `to`, axis by axis (x, y, z). A step of +1
// along an axis flushes the slots on its low side (`leave(n, cell)`, slot order, `cell` the
// slots' cell at that moment), moves the high side down (`shift(dst, src)`) and frees the high
// side; -1 is mirrored; a longer jump flushes every occupied slot. Then every freed slot takes
// its new voxel (`enter(n, cell)`, slot order). Slots never touched are never flushed.
template <typename I, typename Leave, typename Shift, typename Enter>
RO_HD void move_slots(SlotCell<I>& s, const I* to, Leave&& leave, Shift&& shift, Enter&& enter) {
  if (s.occupied != 0u) {
    RO_UNROLL
    for (int a = 0; a < 3; ++a) {
      const int bit = 4 >> a;
      const I step = to[a] - s.cell[a];
      if (step == I(0)) continue;
      if (step == I(1) || step == I(-1)) {
        const int gone = step == I(1) ? 0 : bit;  // the side the ray leaves behind
        RO_UNROLL
        for (int n = 0; n < 8; ++n)
          if ((n & bit) == gone && ((s.occupied >> n) & 1u)) leave(n, s.cell);
        unsigned kept = 0u;
        RO_UNROLL
        for (int n = 0; n < 8; ++n) {
          if ((n & bit) != gone) continue;
          shift(n, n ^ bit);
          kept |= ((s.occupied >> (n ^ bit)) & 1u) << n;
        }
        s.occupied = kept;
      } else {
        RO_UNROLL
        for (int n = 0; n < 8; ++n)
          if ((s.occupied >> n) & 1u) leave(n, s.cell);
        s.occupied = 0u;
      }
      s.cell[a] = to[a];
    }
  }
  s.cell[0] = to[0];
  s.cell[1] = to[1];
  s.cell[2] = to[2];
  RO_UNROLL
  for (int n = 0; n < 8; ++n)
    if (!((s.occupied >> n) & 1u)) enter(n, s.cell);
  s.occupied = 0xFFu;
}

// The end of a march: flush every occupied slot, in slot order.
template <typename I, typename Leave>
RO_HD void flush_slots(SlotCell<I>& s, Leave&& leave) {
  RO_UNROLL
  for (int n = 0; n < 8; ++n)
    if ((s.occupied >> n) & 1u) leave(n, s.cell);
  s.occupied = 0u;
}

// Flat voxel of slot n of a cell.
template <typename T, typename I>
RO_HD I slot_voxel(const GridView<T>& g, const I* cell, const CornerOffsets<I>& off, int n) {
  return cell_base(g, cell) + off.o[n];
}

// -- channel sums in the lanes' layout -----------------------------------------------------------
// The 8 lanes' partial sums combined as the CUDA kernel's xor butterfly does (1, 2, 4): every
// lane gets ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)), whatever its index.
template <typename T>
RO_HD T lane_tree(const T* p) {
  return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

// sum_c x[c] y[c], lane l summing channels l, l + 8, ... in order from +0 (blocks of 8 channels
// at a time: the same sums, in a loop the host compiler vectorises).
template <typename T>
RO_HD T channel_dot(const T* x, const T* y, int64_t C) {
  T p[kLanes] = {};
  int64_t ch0 = 0;
  for (; ch0 + kLanes <= C; ch0 += kLanes)
    for (int l = 0; l < kLanes; ++l) p[l] += x[ch0 + l] * y[ch0 + l];
  for (int l = 0; ch0 + l < C; ++l) p[l] += x[ch0 + l] * y[ch0 + l];
  return lane_tree(p);
}

// sum_c x[c] in the same layout.
template <typename T>
RO_HD T channel_total(const T* x, int64_t C) {
  T p[kLanes] = {};
  int64_t ch0 = 0;
  for (; ch0 + kLanes <= C; ch0 += kLanes)
    for (int l = 0; l < kLanes; ++l) p[l] += x[ch0 + l];
  for (int l = 0; ch0 + l < C; ++l) p[l] += x[ch0 + l];
  return lane_tree(p);
}

// out[c] = the interpolated logit of every channel at a cell (corners summed in order 0..7 from
// +0). Corner-major within blocks of kChannelBlock channels, so each corner's values are read
// contiguously and a block's sums stay in registers.
constexpr int kChannelBlock = 8;

template <typename T>
RO_HD void interp_rows(const T* sem, int64_t C, int64_t base, const CornerOffsets<int64_t>& off, const T* w,
                       T* out) {
  int64_t ch0 = 0;
  for (; ch0 + kChannelBlock <= C; ch0 += kChannelBlock) {
    T acc[kChannelBlock] = {};
    for (int n = 0; n < 8; ++n) {
      const T wn = w[n];
      const T* row = sem + (base + off.o[n]) * C + ch0;
      for (int j = 0; j < kChannelBlock; ++j) acc[j] += wn * row[j];
    }
    for (int j = 0; j < kChannelBlock; ++j) out[ch0 + j] = acc[j];
  }
  for (; ch0 < C; ++ch0) {
    T s = 0;
    for (int n = 0; n < 8; ++n) s += w[n] * sem[(base + off.o[n]) * C + ch0];
    out[ch0] = s;
  }
}

// out = softmax(out) in place: max, exp(x - max), the normaliser summed in the lanes' layout.
template <typename T>
RO_HD void softmax_inplace(T* out, int64_t C) {
  T mx = -INFINITY;
  for (int64_t ch = 0; ch < C; ++ch) mx = out[ch] > mx ? out[ch] : mx;
  for (int64_t ch = 0; ch < C; ++ch) out[ch] = exp(out[ch] - mx);
  const T z = channel_total(out, C);
  for (int64_t ch = 0; ch < C; ++ch) out[ch] /= z;
}

// -- one ray, sequentially (the CPU kernels; the CUDA per-ray kernel) ----------------------------
// The per-ray part of a march that does not depend on the sample.
template <typename T>
struct RayMarch {
  T t_in, t_out;
  int64_t K;
  const T* dens;  // this batch's density grid
  const T* sem;   // this batch's semantic grid
  CornerOffsets<int64_t> off;
};

template <typename T>
RO_HD bool start_march(const GridView<T>& g, int64_t b, const T* o, const T* d, const MarchParams<T>& mp,
                       RayMarch<T>& m) {
  if (!ray_samples(o, d, g, mp.near, mp.step, m.t_in, m.t_out, m.K)) return false;
  const int64_t vox = g.X * g.Y * g.Z;
  m.dens = g.density + b * vox;
  m.sem = g.sem + b * vox * g.C;
  m.off = corner_offsets<T, int64_t>(g);
  return true;
}

// Forward for one ray. `sem_out` (C) is overwritten; `scratch` (C, probs mode only) holds a
// sample's semantics. Logits: each voxel's weight sum gathers in its slot and its row is added
// once, at the flush. Probs: the softmax of every sample's interpolated logits is composited.
template <typename T>
RO_HD void render_ray_forward(const GridView<T>& g, int64_t b, const T* o, const T* d,
                              const MarchParams<T>& mp, T* sem_out, T* scratch, RayScalars<T>& out) {
  out.depth = out.opacity = out.distortion = out.t_far = T(0);
  const int64_t C = g.C;
  for (int64_t ch = 0; ch < C; ++ch) sem_out[ch] = T(0);
  RayMarch<T> m;
  if (!start_march(g, b, o, d, mp, m)) return;
  out.t_far = m.t_out;
  T trans_acc = 1, w_sum = 0, wt_sum = 0, dist_pair = 0, w_sq = 0;
  SlotCell<int64_t> slots = empty_slots<int64_t>();
  T sw[8] = {};  // per slot: sum over the ray's samples of weight x corner weight
  const auto leave = [&](int n, const int64_t* cell) {
    const T* row = m.sem + slot_voxel(g, cell, m.off, n) * C;
    const T s = sw[n];
    for (int64_t ch = 0; ch < C; ++ch) sem_out[ch] += s * row[ch];
  };
  const auto shift = [&](int dst, int src) { sw[dst] = sw[src]; };
  const auto enter = [&](int n, const int64_t*) { sw[n] = T(0); };
  SampleCell<T, int64_t> sc;
  T c[8];
  for (int64_t k = 0; k < m.K; ++k) {
    const T t = sample_t(m.t_in, k, mp.step);
    sample_cell(g, o, d, t, sc);
    corner_weights(sc.f, c);
    const int64_t base = cell_base(g, sc.i);
    const T trans = exp(-cell_density(m.dens, base, m.off, c) * mp.step);
    const T w = trans_acc * (T(1) - trans);
    if (mp.probs) {
      interp_rows(m.sem, C, base, m.off, c, scratch);
      softmax_inplace(scratch, C);
      for (int64_t ch = 0; ch < C; ++ch) sem_out[ch] += w * scratch[ch];
    } else {
      move_slots(slots, sc.i, leave, shift, enter);
      for (int n = 0; n < 8; ++n) sw[n] += w * c[n];
    }
    dist_pair += w * (t * w_sum - wt_sum);
    w_sq += w * w;
    w_sum += w;
    wt_sum += w * t;
    trans_acc *= trans;
    if (trans_acc < T(kTransmittanceEps)) break;
  }
  flush_slots(slots, leave);
  out.depth = wt_sum;
  out.opacity = w_sum;
  out.distortion = T(2) * dist_pair + mp.step / T(3) * w_sq;
}

// Upstream gradients and saved forward outputs of one ray.
template <typename T>
struct RayGrads {
  T g_depth, g_opacity, g_distortion;
  const T* g_sem;  // (C)
  T depth, opacity, distortion;
  const T* sem;  // saved forward semantics (C)
};

// sum_k w_k v_k (v_k = dLoss/dw_k), rebuilt from the saved outputs.
template <typename T>
RO_HD T ray_total(const RayGrads<T>& rg, int64_t C) {
  const T scalars = rg.g_depth * rg.depth + rg.g_opacity * rg.opacity + T(2) * rg.g_distortion * rg.distortion;
  return scalars + channel_dot(rg.g_sem, rg.sem, C);
}

// The backward march of one ray: recomputes the forward's samples (same break) and calls
// on_sample(k, cell, corner weights, g_sigma, w, dot) for each, with dot = <g_sem, s_k>; in probs
// mode `scratch` (C) then holds the sample's semantics s_k. Returns how many samples it marched.
// Logits: dot = sum_n c_n q_n with q_n = <g_sem, row_n> computed once per voxel (slots).
//
// With v_k = dLoss/dw_k, dLoss/dsigma_k = step * (T_{k+1} v_k - sum_{j>k} w_j v_j); the
// suffix sum is the total sum_j w_j v_j minus the prefix.
template <typename T, typename OnSample>
RO_HD int64_t backward_march(const GridView<T>& g, int64_t b, const T* o, const T* d, const MarchParams<T>& mp,
                             const RayGrads<T>& rg, T* scratch, OnSample&& on_sample) {
  RayMarch<T> m;
  if (!start_march(g, b, o, d, mp, m)) return 0;
  const int64_t C = g.C;
  const T W = rg.opacity, M = rg.depth;
  const T total = ray_total(rg, C);
  T trans_acc = 1, w_prev = 0, m_prev = 0, prefix = 0;
  SlotCell<int64_t> slots = empty_slots<int64_t>();
  T q[8] = {};  // per slot: <g_sem, the voxel's row>
  const auto leave = [](int, const int64_t*) {};
  const auto shift = [&](int dst, int src) { q[dst] = q[src]; };
  const auto enter = [&](int n, const int64_t* cell) {
    q[n] = channel_dot(rg.g_sem, m.sem + slot_voxel(g, cell, m.off, n) * C, C);
  };
  SampleCell<T, int64_t> sc;
  T c[8];
  for (int64_t k = 0; k < m.K; ++k) {
    const T t = sample_t(m.t_in, k, mp.step);
    sample_cell(g, o, d, t, sc);
    corner_weights(sc.f, c);
    const int64_t base = cell_base(g, sc.i);
    const T trans = exp(-cell_density(m.dens, base, m.off, c) * mp.step);
    const T w = trans_acc * (T(1) - trans);
    T dot = 0;
    if (mp.probs) {
      interp_rows(m.sem, C, base, m.off, c, scratch);
      softmax_inplace(scratch, C);
      dot = channel_dot(rg.g_sem, scratch, C);
    } else {
      move_slots(slots, sc.i, leave, shift, enter);
      for (int n = 0; n < 8; ++n) dot += c[n] * q[n];
    }
    // d(distortion)/dw_k = 2 sum_j w_j |t_k - t_j| + 2 step / 3 w_k
    const T w_next = W - w_prev - w, m_next = M - m_prev - w * t;
    const T d_dist = T(2) * (t * w_prev - m_prev + m_next - t * w_next) + T(2) * mp.step / T(3) * w;
    const T v = rg.g_depth * t + rg.g_opacity + dot + rg.g_distortion * d_dist;
    const T suffix = total - prefix - w * v;
    const T g_sigma = mp.step * (trans_acc * trans * v - suffix);
    on_sample(k, sc, c, g_sigma, w, dot);
    prefix += w * v;
    w_prev += w;
    m_prev += w * t;
    trans_acc *= trans;
    if (trans_acc < T(kTransmittanceEps)) return k + 1;
  }
  return m.K;
}

// The semantic part of a probs-mode sample's gradient, in place: s (the sample's semantics)
// becomes dLoss/d(interpolated logits) = w s_c (g_c - dot).
template <typename T>
RO_HD void probs_grad(T w, const T* g_sem, T dot, int64_t C, T* s) {
  for (int64_t ch = 0; ch < C; ++ch) s[ch] = w * s[ch] * (g_sem[ch] - dot);
}

// The gradient slots of one ray: per slot the density gradient D and, for the semantics, the
// weight sum A (logits: the row's gradient is A g_sem) or the row gradient G (probs; 8 x C in
// caller-provided memory). `add` gathers a sample; `flush(n, v)` adds slot n into voxel v's
// gradients through `acc` (acc(ptr, v): one value; acc.scaled_row(row, a, g, C): row += a g;
// acc.row(row, x, C): row += x).
template <typename T>
struct GradSlots {
  T D[8];
  T A[8];
  T* G;  // probs mode with a semantic gradient: 8 x C; else null

  RO_HD void clear(int n, int64_t C) {
    D[n] = A[n] = T(0);
    if (G != nullptr)
      for (int64_t ch = 0; ch < C; ++ch) G[n * C + ch] = T(0);
  }

  RO_HD void move(int dst, int src, int64_t C) {
    D[dst] = D[src];
    A[dst] = A[src];
    if (G != nullptr)
      for (int64_t ch = 0; ch < C; ++ch) G[dst * C + ch] = G[src * C + ch];
  }

  // gs: the sample's semantic gradient (probs; null otherwise).
  RO_HD void add(const T* c, T g_sigma, T w, const T* gs, int64_t C) {
    for (int n = 0; n < 8; ++n) {
      D[n] += c[n] * g_sigma;
      A[n] += c[n] * w;
    }
    if (G == nullptr || gs == nullptr) return;
    for (int n = 0; n < 8; ++n) {
      const T cn = c[n];
      T* row = G + n * C;
      for (int64_t ch = 0; ch < C; ++ch) row[ch] += cn * gs[ch];
    }
  }

  template <typename Acc>
  RO_HD void flush(int n, int64_t v, int64_t C, bool probs, const T* g_sem, T* grad_density, T* grad_sem,
                   const Acc& acc) const {
    acc(grad_density + v, D[n]);
    if (grad_sem == nullptr) return;
    if (probs)
      acc.row(grad_sem + v * C, G + n * C, C);
    else
      acc.scaled_row(grad_sem + v * C, A[n], g_sem, C);
  }
};

// Backward for one ray in one pass (the CUDA per-ray kernel): march and add each voxel's
// gradients once, when its slot is flushed, into `grad_density` / `grad_sem` (per-batch base
// pointers; grad_sem may be null) through `acc`. scratch: C + 8 C (probs), unused in logits mode.
template <typename T, typename Acc>
RO_HD void render_ray_backward(const GridView<T>& g, int64_t b, const T* o, const T* d,
                               const MarchParams<T>& mp, const RayGrads<T>& rg, T* scratch,
                               T* grad_density, T* grad_sem, const Acc& acc) {
  const int64_t C = g.C;
  const CornerOffsets<int64_t> off = corner_offsets<T, int64_t>(g);
  GradSlots<T> gs = {};
  gs.G = mp.probs && grad_sem != nullptr ? scratch + C : nullptr;
  SlotCell<int64_t> slots = empty_slots<int64_t>();
  const auto leave = [&](int n, const int64_t* cell) {
    gs.flush(n, slot_voxel(g, cell, off, n), C, mp.probs, rg.g_sem, grad_density, grad_sem, acc);
  };
  const auto shift = [&](int dst, int src) { gs.move(dst, src, C); };
  const auto enter = [&](int n, const int64_t*) { gs.clear(n, C); };
  backward_march(g, b, o, d, mp, rg, scratch,
                 [&](int64_t, const SampleCell<T, int64_t>& sc, const T* c, T g_sigma, T w, T dot) {
                   move_slots(slots, sc.i, leave, shift, enter);
                   const bool sem_grad = mp.probs && grad_sem != nullptr;
                   if (sem_grad) probs_grad(w, rg.g_sem, dot, C, scratch);
                   gs.add(c, g_sigma, w, sem_grad ? scratch : nullptr, C);
                 });
  flush_slots(slots, leave);
}

// Visibility of one ray: for each voxel corner touched by a sample still before the early
// stop, max(transmittance before the sample x trilinear weight) into `vis` via `vmax(ptr, v)`
// (values are >= 0, so both backends can order them as integers).
template <typename T, typename Max>
RO_HD void visibility_ray(const GridView<T>& g, int64_t b, const T* o, const T* d, const MarchParams<T>& mp,
                          T* vis, Max vmax) {
  T t_in, t_out;
  int64_t K;
  if (!ray_samples(o, d, g, mp.near, mp.step, t_in, t_out, K)) return;
  const T* dens = g.density + b * g.X * g.Y * g.Z;
  T trans_acc = 1;
  Corners<T> c;
  for (int64_t k = 0; k < K; ++k) {
    const T t = sample_t(t_in, k, mp.step);
    const T trans = sample_transmittance(g, dens, o, d, t, mp.step, c);
    for (int n = 0; n < 8; ++n) {
      const T v = trans_acc * c.w[n];
      if (v > T(0)) vmax(vis + c.idx[n], v);
    }
    trans_acc *= trans;
    if (trans_acc < T(kTransmittanceEps)) break;
  }
}

// Optical depth of one ray up to each of E end distances (any order): the render_rays samples,
// but no early stop (an integral, not compositing). tau[e] = sum over samples with
// t_k < t_end[e] of sigma_k·step; count[e] = how many such samples. Missing rays give 0/0.
template <typename T>
RO_HD void optical_depth_ray(const GridView<T>& g, int64_t b, const T* o, const T* d, const MarchParams<T>& mp,
                             const T* t_end, int64_t E, T* tau, T* count) {
  for (int64_t e = 0; e < E; ++e) tau[e] = count[e] = T(0);
  T t_in, t_out;
  int64_t K;
  if (!ray_samples(o, d, g, mp.near, mp.step, t_in, t_out, K)) return;
  const T t_last = latest_end(t_end, E);
  const T* dens = g.density + b * g.X * g.Y * g.Z;
  Corners<T> c;
  for (int64_t k = 0; k < K; ++k) {
    const T t = sample_t(t_in, k, mp.step);
    if (!(t < t_last)) break;  // samples only move away: no later one is before any end
    sample_corners(g, o, d, t, c);
    const T d_tau = interp_density(dens, c) * mp.step;
    for (int64_t e = 0; e < E; ++e) {
      if (t < t_end[e]) {
        tau[e] += d_tau;
        count[e] += T(1);
      }
    }
  }
}

// Backward of optical_depth_ray: tau is linear in sigma, so each sample before the ends adds
// step·(sum of g_tau over those ends) to its 8 corners, weighted trilinearly, via `acc`.
template <typename T, typename Acc>
RO_HD void optical_depth_ray_backward(const GridView<T>& g, const T* o, const T* d, const MarchParams<T>& mp,
                                      const T* t_end, int64_t E, const T* g_tau, T* grad_density, Acc acc) {
  T t_in, t_out;
  int64_t K;
  if (!ray_samples(o, d, g, mp.near, mp.step, t_in, t_out, K)) return;
  const T t_last = latest_end(t_end, E);
  Corners<T> c;
  for (int64_t k = 0; k < K; ++k) {
    const T t = sample_t(t_in, k, mp.step);
    if (!(t < t_last)) break;
    T g_sigma = 0;
    for (int64_t e = 0; e < E; ++e)
      if (t < t_end[e]) g_sigma += g_tau[e];
    if (g_sigma == T(0)) continue;
    g_sigma *= mp.step;
    sample_corners(g, o, d, t, c);
    for (int n = 0; n < 8; ++n) acc(grad_density + c.idx[n], c.w[n] * g_sigma);
  }
}

// Everything one launch needs, as raw pointers (no torch types, so the .cu needs no torch
// headers). Forward writes depth/sem/opacity/distortion/t_far; backward reads them with the
// upstream gradients and adds into grad_density / grad_sem (zero-initialised by the caller).
template <typename T>
struct RenderArgs {
  GridView<T> grid;
  MarchParams<T> march;
  int64_t B, R;
  const T* origins;       // (R, 3)
  const T* dirs;          // (R, 3)
  const int64_t* batch;   // (R,)
  T* depth;               // (R,)
  T* sem;                 // (R, C)
  T* opacity;             // (R,)
  T* distortion;          // (R,)
  T* t_far;               // (R,)
  const T* g_depth;       // (R,)
  const T* g_sem;         // (R, C)
  const T* g_opacity;     // (R,)
  const T* g_distortion;  // (R,)
  T* grad_density;        // (B, X, Y, Z)
  T* grad_sem;            // (B, X, Y, Z, C) or null
  T* visibility;          // (B, X, Y, Z), visibility launches only
  int64_t E;              // optical-depth launches only: ends per ray
  const T* t_ends;        // (R, E)
  T* tau;                 // (R, E)
  T* count;               // (R, E)
  const T* g_tau;         // (R, E)
};

template <typename T>
RO_HD void forward_one(const RenderArgs<T>& a, int64_t r, T* scratch) {
  RayScalars<T> s;
  const int64_t C = a.grid.C;
  render_ray_forward(a.grid, a.batch[r], a.origins + 3 * r, a.dirs + 3 * r, a.march, a.sem + r * C,
                     scratch, s);
  a.depth[r] = s.depth;
  a.opacity[r] = s.opacity;
  a.distortion[r] = s.distortion;
  a.t_far[r] = s.t_far;
}

template <typename T>
RO_HD RayGrads<T> ray_grads(const RenderArgs<T>& a, int64_t r) {
  const int64_t C = a.grid.C;
  RayGrads<T> rg;
  rg.g_depth = a.g_depth[r];
  rg.g_opacity = a.g_opacity[r];
  rg.g_distortion = a.g_distortion[r];
  rg.g_sem = a.g_sem + r * C;
  rg.depth = a.depth[r];
  rg.opacity = a.opacity[r];
  rg.distortion = a.distortion[r];
  rg.sem = a.sem + r * C;
  return rg;
}

template <typename T, typename Acc>
RO_HD void backward_one(const RenderArgs<T>& a, int64_t r, T* scratch, T* grad_density, T* grad_sem,
                        const Acc& acc) {
  const int64_t C = a.grid.C, b = a.batch[r];
  const int64_t vox = a.grid.X * a.grid.Y * a.grid.Z;
  render_ray_backward(a.grid, b, a.origins + 3 * r, a.dirs + 3 * r, a.march, ray_grads(a, r), scratch,
                      grad_density + b * vox, grad_sem ? grad_sem + b * vox * C : nullptr, acc);
}

template <typename T, typename Max>
RO_HD void visibility_one(const RenderArgs<T>& a, int64_t r, T* vis, Max vmax) {
  const int64_t b = a.batch[r];
  visibility_ray(a.grid, b, a.origins + 3 * r, a.dirs + 3 * r, a.march,
                 vis + b * a.grid.X * a.grid.Y * a.grid.Z, vmax);
}

template <typename T>
RO_HD void optical_depth_one(const RenderArgs<T>& a, int64_t r) {
  optical_depth_ray(a.grid, a.batch[r], a.origins + 3 * r, a.dirs + 3 * r, a.march, a.t_ends + r * a.E, a.E,
                    a.tau + r * a.E, a.count + r * a.E);
}

template <typename T, typename Acc>
RO_HD void optical_depth_backward_one(const RenderArgs<T>& a, int64_t r, T* grad_density, Acc acc) {
  const int64_t b = a.batch[r];
  optical_depth_ray_backward(a.grid, a.origins + 3 * r, a.dirs + 3 * r, a.march, a.t_ends + r * a.E, a.E,
                             a.g_tau + r * a.E, grad_density + b * a.grid.X * a.grid.Y * a.grid.Z, acc);
}

}  // namespace renderocc
