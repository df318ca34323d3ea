// The first-hit voxel walk's arguments (CPU only): shared by walk_cpu.cpp and the bindings.
#pragma once

#include <cstdint>

namespace renderocc {

struct WalkArgs {
  const uint8_t* bits;    // grid padded by one voxel per side: bit k = layer k, `border` outside
  const double* origins;  // (R, 3)
  const double* dirs;     // (R, 3) unit directions
  double lo[3], vox[3];   // grid corner and voxel size
  int64_t shape[3];       // unpadded grid shape
  int64_t R, L, threads;
  uint8_t border;
  int64_t* voxel;         // (L, R) flat index in the unpadded grid, -1 where the ray misses the box
  double* dist;           // (L, R) where the ray leaves that voxel, NaN where it misses
  bool* hit;              // (L, R) the layer was hit (false: box exit or miss)
};

void first_hits_cpu(const WalkArgs& a);

}  // namespace renderocc
