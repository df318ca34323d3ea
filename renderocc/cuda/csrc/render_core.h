// Per-ray volume-rendering math shared by the CPU (.cpp) and CUDA (.cu) kernels.
//
// Everything here is header-only and __host__ __device__ so both backends run the SAME
// arithmetic in the same order: slab clipping, the sample rule, trilinear interpolation at
// the Occ3D voxel-centre convention, compositing, the distortion loss, the optical-depth
// integral and the backward recomputations (early termination mirrored exactly). No torch headers: this file
// must compile with nvcc and a plain C++ compiler alike.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define RO_HD __host__ __device__ __forceinline__
#else
#define RO_HD inline
#endif

namespace renderocc {

using std::exp;  // float overloads on the host too
using std::floor;

// A ray stops once its transmittance falls below this (forward and backward alike).
constexpr double kTransmittanceEps = 1e-4;

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

// The 8 trilinear corners of a point: flat voxel offsets within one batch grid and weights.
template <typename T>
struct Corners {
  int64_t idx[8];
  T w[8];
};

// Continuous index u = (p - lo) / vox - 0.5 (voxel i's centre at lo + (i + 0.5) vox),
// clamped to the outermost centres [0, N - 1].
template <typename T>
RO_HD void axis_lerp(T p, T lo, T vox, int64_t n, int64_t& i0, int64_t& i1, T& f) {
  T u = (p - lo) / vox - T(0.5);
  T umax = T(n - 1);
  u = u < T(0) ? T(0) : (u > umax ? umax : u);
  i0 = static_cast<int64_t>(u);  // u >= 0: truncation is floor (and no libm call on the host)
  if (i0 > n - 2) i0 = n > 1 ? n - 2 : 0;
  i1 = n > 1 ? i0 + 1 : 0;
  f = u - T(i0);
}

template <typename T>
RO_HD void trilinear_corners(const T* p, const GridView<T>& g, Corners<T>& c) {
  int64_t x0, x1, y0, y1, z0, z1;
  T fx, fy, fz;
  axis_lerp(p[0], g.lo[0], g.vox[0], g.X, x0, x1, fx);
  axis_lerp(p[1], g.lo[1], g.vox[1], g.Y, y0, y1, fy);
  axis_lerp(p[2], g.lo[2], g.vox[2], g.Z, z0, z1, fz);
  const int64_t xs[2] = {x0, x1}, ys[2] = {y0, y1}, zs[2] = {z0, z1};
  const T wx[2] = {T(1) - fx, fx}, wy[2] = {T(1) - fy, fy}, wz[2] = {T(1) - fz, fz};
  int n = 0;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 2; ++k, ++n) {
        c.idx[n] = (xs[i] * g.Y + ys[j]) * g.Z + zs[k];
        c.w[n] = wx[i] * wy[j] * wz[k];
      }
}

template <typename T>
RO_HD T interp_density(const T* dens, const Corners<T>& c) {
  T s = 0;
  for (int n = 0; n < 8; ++n) s += c.w[n] * dens[c.idx[n]];
  return s;
}

// One sample of a march: the trilinear corners `c` of o + t·d and (sample_transmittance) the
// sample's transmittance exp(-sigma·step). Every march steps through these, so a backward's
// recomputation cannot drift from its forward.
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

// Channels per register block of interp_semantics: a block's sums stay in registers over the
// 8 corners instead of going through `out` once per corner.
constexpr int kChannelBlock = 8;

// out[ch] = the interpolated logit of every channel. Corner-major within blocks of
// kChannelBlock channels, so each corner's values are read contiguously; each channel still
// sums its corners in order 0..7 from +0 (same result as a channel-major loop).
template <typename T>
RO_HD void interp_semantics(const T* sem, int64_t C, const Corners<T>& c, T* out) {
  int64_t ch0 = 0;
  for (; ch0 + kChannelBlock <= C; ch0 += kChannelBlock) {
    T acc[kChannelBlock] = {};
    for (int n = 0; n < 8; ++n) {
      const T wn = c.w[n];
      const T* row = sem + c.idx[n] * C + ch0;
      for (int j = 0; j < kChannelBlock; ++j) acc[j] += wn * row[j];
    }
    for (int j = 0; j < kChannelBlock; ++j) out[ch0 + j] = acc[j];
  }
  for (; ch0 < C; ++ch0) {
    T s = 0;
    for (int n = 0; n < 8; ++n) s += c.w[n] * sem[c.idx[n] * C + ch0];
    out[ch0] = s;
  }
}

// scratch[c] = the sample's semantics: interpolated logits, or (probs) their softmax.
template <typename T>
RO_HD void sample_semantics(const T* sem, int64_t C, const Corners<T>& c, bool probs, T* scratch) {
  interp_semantics(sem, C, c, scratch);
  if (!probs) return;
  T mx = -INFINITY;
  for (int64_t ch = 0; ch < C; ++ch) mx = scratch[ch] > mx ? scratch[ch] : mx;
  T z = 0;
  for (int64_t ch = 0; ch < C; ++ch) {
    scratch[ch] = exp(scratch[ch] - mx);
    z += scratch[ch];
  }
  for (int64_t ch = 0; ch < C; ++ch) scratch[ch] /= z;
}

// Forward for one ray. `sem_out` (C) is overwritten; `scratch` (C) holds a sample's semantics.
template <typename T>
RO_HD void render_ray_forward(const GridView<T>& g, int64_t b, const T* o, const T* d,
                              const MarchParams<T>& mp, T* sem_out, T* scratch, RayScalars<T>& out) {
  out.depth = out.opacity = out.distortion = out.t_far = T(0);
  for (int64_t ch = 0; ch < g.C; ++ch) sem_out[ch] = T(0);
  T t_in, t_out;
  int64_t K;
  if (!ray_samples(o, d, g, mp.near, mp.step, t_in, t_out, K)) return;
  out.t_far = t_out;
  const int64_t vox = g.X * g.Y * g.Z;
  const T* dens = g.density + b * vox;
  const T* sem = g.sem + b * vox * g.C;
  T trans_acc = 1, w_sum = 0, wt_sum = 0, dist_pair = 0, w_sq = 0;
  Corners<T> c;
  for (int64_t k = 0; k < K; ++k) {
    const T t = sample_t(t_in, k, mp.step);
    const T trans = sample_transmittance(g, dens, o, d, t, mp.step, c);
    const T w = trans_acc * (T(1) - trans);
    sample_semantics(sem, g.C, c, mp.probs, scratch);
    for (int64_t ch = 0; ch < g.C; ++ch) sem_out[ch] += w * scratch[ch];
    dist_pair += w * (t * w_sum - wt_sum);
    w_sq += w * w;
    w_sum += w;
    wt_sum += w * t;
    trans_acc *= trans;
    if (trans_acc < T(kTransmittanceEps)) break;
  }
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

template <typename T>
RO_HD T dot_product(const T* x, const T* y, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

// The semantic part of a sample's gradient, in place: scratch holds the sample's semantics s
// (sample_semantics) and becomes dLoss/d(interpolated logits) = logits: w g_c; probs:
// w p_c (g_c - dot), with dot = <g_sem, s>.
template <typename T>
RO_HD void semantic_grad(T w, bool probs, const T* g_sem, T dot, int64_t C, T* scratch) {
  for (int64_t ch = 0; ch < C; ++ch)
    scratch[ch] = probs ? w * scratch[ch] * (g_sem[ch] - dot) : w * g_sem[ch];
}

// Adds one sample's gradients to its 8 corners: g_sigma to the density, and (grad_sem not
// null) row-wise sem_grad (C) to the semantics. `keep(n)` selects corners (the CPU backward
// splits the grid between threads); `acc(ptr, v)` adds one value and `acc.row(row, w, g, C)`
// adds w·g[ch] to row[ch] for every channel with g[ch] != 0 (plain adds on CPU, atomics on CUDA).
template <typename T, typename Acc, typename Keep>
RO_HD void scatter_sample(const Corners<T>& c, int64_t C, T g_sigma, const T* sem_grad, T* grad_density,
                          T* grad_sem, const Acc& acc, const Keep& keep) {
  for (int n = 0; n < 8; ++n)
    if (keep(n)) acc(grad_density + c.idx[n], c.w[n] * g_sigma);
  if (grad_sem == nullptr) return;
  for (int n = 0; n < 8; ++n)
    if (keep(n)) acc.row(grad_sem + c.idx[n] * C, c.w[n], sem_grad, C);
}

// The backward march of one ray: recomputes the forward's samples (same break) and calls
// on_sample(k, corners, g_sigma, w, dot) for each, scratch holding the sample's semantics.
// Returns how many samples it marched.
//
// With v_k = dLoss/dw_k, dLoss/dsigma_k = step * (T_{k+1} v_k - sum_{j>k} w_j v_j); the
// suffix sum is the total sum_j w_j v_j (rebuilt from the saved outputs) minus the prefix.
template <typename T, typename OnSample>
RO_HD int64_t backward_march(const GridView<T>& g, int64_t b, const T* o, const T* d, const MarchParams<T>& mp,
                             const RayGrads<T>& rg, T* scratch, OnSample&& on_sample) {
  T t_in, t_out;
  int64_t K;
  if (!ray_samples(o, d, g, mp.near, mp.step, t_in, t_out, K)) return 0;
  const int64_t vox = g.X * g.Y * g.Z;
  const T* dens = g.density + b * vox;
  const T* sem = g.sem + b * vox * g.C;
  const T W = rg.opacity, M = rg.depth;
  T total = rg.g_depth * rg.depth + rg.g_opacity * rg.opacity + T(2) * rg.g_distortion * rg.distortion;
  for (int64_t ch = 0; ch < g.C; ++ch) total += rg.g_sem[ch] * rg.sem[ch];
  T trans_acc = 1, w_prev = 0, m_prev = 0, prefix = 0;
  Corners<T> c;
  for (int64_t k = 0; k < K; ++k) {
    const T t = sample_t(t_in, k, mp.step);
    const T trans = sample_transmittance(g, dens, o, d, t, mp.step, c);
    const T w = trans_acc * (T(1) - trans);
    sample_semantics(sem, g.C, c, mp.probs, scratch);
    const T dot = dot_product(rg.g_sem, scratch, g.C);  // <g_sem, s_k>
    // d(distortion)/dw_k = 2 sum_j w_j |t_k - t_j| + 2 step / 3 w_k
    const T w_next = W - w_prev - w, m_next = M - m_prev - w * t;
    const T d_dist = T(2) * (t * w_prev - m_prev + m_next - t * w_next) + T(2) * mp.step / T(3) * w;
    const T v = rg.g_depth * t + rg.g_opacity + dot + rg.g_distortion * d_dist;
    const T suffix = total - prefix - w * v;
    const T g_sigma = mp.step * (trans_acc * trans * v - suffix);
    on_sample(k, c, g_sigma, w, dot);
    prefix += w * v;
    w_prev += w;
    m_prev += w * t;
    trans_acc *= trans;
    if (trans_acc < T(kTransmittanceEps)) return k + 1;
  }
  return K;
}

struct AllCorners {
  RO_HD bool operator()(int) const { return true; }
};

// Backward for one ray in one pass: march and scatter each sample's gradients into
// `grad_density` / `grad_sem` (per-batch base pointers; grad_sem may be null) through `acc`.
template <typename T, typename Acc>
RO_HD void render_ray_backward(const GridView<T>& g, int64_t b, const T* o, const T* d,
                               const MarchParams<T>& mp, const RayGrads<T>& rg, T* scratch,
                               T* grad_density, T* grad_sem, const Acc& acc) {
  backward_march(g, b, o, d, mp, rg, scratch, [&](int64_t, const Corners<T>& c, T g_sigma, T w, T dot) {
    if (grad_sem != nullptr) semantic_grad(w, mp.probs, rg.g_sem, dot, g.C, scratch);
    scatter_sample(c, g.C, g_sigma, scratch, grad_density, grad_sem, acc, AllCorners());
  });
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
