#!/usr/bin/env bash
# Warns loudly when LibTorch would load the reference BLAS: Debian's LibTorch
# calls the system libblas.so.3, and the reference one makes linear layers
# 13-16x slower than OpenBLAS. Prints nothing when OpenBLAS is selected.
set -u
target=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$target" in
  *openblas*|*blis*|*mkl*) exit 0 ;;
esac
cat >&2 <<EOT
**********************************************************************
WARNING: LibTorch will use the reference BLAS ($target).
Matrix multiplies will run 13-16x slower. Install OpenBLAS:
  apt-get install libopenblas0-pthread
and check:
  update-alternatives --query libblas.so.3-x86_64-linux-gnu
**********************************************************************
EOT
exit 0
