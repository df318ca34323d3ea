"""The renderer extension's internals: C++/CUDA sources (csrc/), the build-on-first-use loader, the
ops' fake kernels and autograd (op_registrations.py) and the pure-PyTorch reference (reference.py).

Callers reach the ops through `renderocc.ops`, which picks the kernel or its twin.
"""
