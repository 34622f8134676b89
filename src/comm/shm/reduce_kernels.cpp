#include "comm/shm/reduce_kernels.h"

#include <ATen/Dispatch.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/complex.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "tandem/core/check.h"

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace tandem::comm::detail {
namespace {

template <typename T>
struct IsComplex : std::false_type {};
template <typename T>
struct IsComplex<c10::complex<T>> : std::true_type {};

// Accumulator types: half types widen to float; integer sums and products
// run in the unsigned type of the same width, so that overflow wraps instead
// of being undefined.
template <typename T>
struct Accum {
  using type = T;
};
template <>
struct Accum<c10::Half> {
  using type = float;
};
template <>
struct Accum<c10::BFloat16> {
  using type = float;
};

struct Sum {
  template <typename A>
  static A apply(A a, A b) {
    return a + b;
  }
};
struct Product {
  template <typename A>
  static A apply(A a, A b) {
    return a * b;
  }
};
// min / max propagate NaN, as torch does.
template <typename A>
inline bool is_nan(A x) {
  if constexpr (std::is_floating_point_v<A>) {
    return std::isnan(x);
  } else {
    return false;
  }
}
struct Min {
  template <typename A>
  static A apply(A a, A b) {
    return (b < a || is_nan(b)) ? b : a;
  }
};
struct Max {
  template <typename A>
  static A apply(A a, A b) {
    return (b > a || is_nan(b)) ? b : a;
  }
};

// Elements per block: the block's accumulators (at most 4 KiB) stay in L1
// while every source streams through once.
constexpr int64_t kBlock = 512;

template <typename T, typename Op, bool kAvg>
void reduce_typed(const void* const* srcs_v, int nsrcs, int64_t count, void* dst_v, void* dst2_v) {
  using Wide = typename Accum<T>::type;
  constexpr bool kInteger = std::is_integral_v<T> && !std::is_same_v<T, bool>;
  constexpr bool kWrap = kInteger && (std::is_same_v<Op, Sum> || std::is_same_v<Op, Product>);
  using A =
      std::conditional_t<kWrap, std::make_unsigned_t<std::conditional_t<kInteger, T, int>>, Wide>;
  auto finish = [nsrcs](A a) -> T {
    if constexpr (kAvg) {
      if constexpr (kInteger) {
        return static_cast<T>(static_cast<T>(a) / static_cast<T>(nsrcs));
      } else {
        return static_cast<T>(a / static_cast<A>(nsrcs));
      }
    } else {
      return static_cast<T>(a);
    }
  };
  T* dst = static_cast<T*>(dst_v);
  T* dst2 = static_cast<T*>(dst2_v);
  if (nsrcs == 2) {
    // The common case (two ranks, or a pair step): one pass. No __restrict:
    // dst may be one of the sources, and the compiler checks for that.
    const T* s0 = static_cast<const T*>(srcs_v[0]);
    const T* s1 = static_cast<const T*>(srcs_v[1]);
    if (dst2 == nullptr) {
      for (int64_t j = 0; j < count; ++j) {
        dst[j] = finish(Op::apply(static_cast<A>(s0[j]), static_cast<A>(s1[j])));
      }
    } else {
      for (int64_t j = 0; j < count; ++j) {
        T v = finish(Op::apply(static_cast<A>(s0[j]), static_cast<A>(s1[j])));
        dst[j] = v;
        dst2[j] = v;
      }
    }
    return;
  }
  A acc[kBlock];
  for (int64_t base = 0; base < count; base += kBlock) {
    const int64_t m = std::min(kBlock, count - base);
    {
      const T* __restrict s0 = static_cast<const T*>(srcs_v[0]) + base;
      const T* __restrict s1 = static_cast<const T*>(srcs_v[1]) + base;
      for (int64_t j = 0; j < m; ++j) {
        acc[j] = Op::apply(static_cast<A>(s0[j]), static_cast<A>(s1[j]));
      }
    }
    for (int k = 2; k < nsrcs; ++k) {
      const T* __restrict s = static_cast<const T*>(srcs_v[k]) + base;
      for (int64_t j = 0; j < m; ++j) acc[j] = Op::apply(acc[j], static_cast<A>(s[j]));
    }
    {
      T* __restrict d = dst + base;
      for (int64_t j = 0; j < m; ++j) d[j] = finish(acc[j]);
    }
    if (dst2 != nullptr) {
      T* __restrict d = dst2 + base;
      const T* __restrict d1 = dst + base;
      for (int64_t j = 0; j < m; ++j) d[j] = d1[j];
    }
  }
}

// bool has max (or) and min (and) only, complex types sum, avg and product
// only (check_reduce_op() rejects the rest before anything runs).
template <typename T>
void reduce_dispatch_op(ReduceOp op, const void* const* srcs, int nsrcs, int64_t count, void* dst,
                        void* dst2) {
  constexpr bool kOrdered = !IsComplex<T>::value;
  constexpr bool kArithmetic = !std::is_same_v<T, bool>;
  switch (op) {
    case ReduceOp::kSum:
      if constexpr (kArithmetic) return reduce_typed<T, Sum, false>(srcs, nsrcs, count, dst, dst2);
      break;
    case ReduceOp::kAvg:
      if constexpr (kArithmetic) return reduce_typed<T, Sum, true>(srcs, nsrcs, count, dst, dst2);
      break;
    case ReduceOp::kMin:
      if constexpr (kOrdered) return reduce_typed<T, Min, false>(srcs, nsrcs, count, dst, dst2);
      break;
    case ReduceOp::kMax:
      if constexpr (kOrdered) return reduce_typed<T, Max, false>(srcs, nsrcs, count, dst, dst2);
      break;
    case ReduceOp::kProduct:
      if constexpr (kArithmetic) {
        return reduce_typed<T, Product, false>(srcs, nsrcs, count, dst, dst2);
      }
      break;
  }
  TANDEM_ASSERT(false, "reduce_arrays: ReduceOp {} on {}", to_string(op),
                c10::toString(c10::CppTypeToScalarType<T>::value));
}

}  // namespace

void copy_streaming(void* dst, const void* src, size_t bytes) {
#if defined(__x86_64__)
  auto* d = static_cast<std::byte*>(dst);
  const auto* s = static_cast<const std::byte*>(src);
  // Plain copies up to the first 16-byte boundary of dst and after the last
  // whole 64-byte line; streaming stores in between (SSE2: every x86-64 has it).
  size_t head = std::min(bytes, (16 - reinterpret_cast<uintptr_t>(d) % 16) % 16);
  std::memcpy(d, s, head);
  d += head;
  s += head;
  bytes -= head;
  const size_t body = bytes / 64 * 64;
  for (size_t i = 0; i < body; i += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
    const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
  }
  std::memcpy(d + body, s + body, bytes - body);
  _mm_sfence();  // streaming stores are weakly ordered: fence before the flag
#else
  std::memcpy(dst, src, bytes);
#endif
}

void reduce_arrays(at::ScalarType dtype, ReduceOp op, const void* const* srcs, int nsrcs,
                   int64_t count, void* dst, void* dst2) {
  TANDEM_ASSERT(nsrcs >= 1, "reduce_arrays: needs at least one source (got {})", nsrcs);
  if (count == 0) return;
  if (nsrcs == 1) {
    // Only kAvg changes a lone value (x / 1 == x); copy unless in place.
    if (dst != srcs[0]) std::memmove(dst, srcs[0], count * c10::elementSize(dtype));
    if (dst2 != nullptr) std::memcpy(dst2, dst, count * c10::elementSize(dtype));
    return;
  }
  // Every dtype the Communicator accepts (communicator.h).
  AT_DISPATCH_ALL_TYPES_AND_COMPLEX_AND3(
      at::kHalf, at::kBFloat16, at::kBool, dtype, "reduce_arrays",
      [&] { reduce_dispatch_op<scalar_t>(op, srcs, nsrcs, count, dst, dst2); });
}

}  // namespace tandem::comm::detail
