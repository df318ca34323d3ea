// The first-hit voxel walk's arguments (CPU only): shared by walk_cpu.cpp and the bindings.
#pragma once

#include <cstdint>

namespace renderocc {

struct WalkArgs {
  const uint8_t* bits;    // padded grid: bit k = layer k occupied, `border` = outside
  const int64_t* start;   // (R,) padded flat index of the first voxel
  const double* t_next;   // (R, 3) distance of the next crossing per axis (inf: never)
  const double* t_delta;  // (R, 3) distance between crossings per axis
  const int64_t* move;    // (R, 3) flat-index step per axis
  int64_t R, L, threads;
  uint8_t border;
  int64_t* voxel;         // (L, R) padded flat index, -1 where untouched
  double* dist;           // (L, R) where the ray leaves that voxel
  bool* hit;              // (L, R) the layer was hit (false: box exit)
};

void first_hits_cpu(const WalkArgs& a);

}  // namespace renderocc
