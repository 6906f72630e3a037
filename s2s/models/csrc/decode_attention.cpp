// Decode-time attention on CPU in one pass per (batch, head): a few query positions over the cached keys.
//
// Why a kernel: at decode time each (batch, head) pair attends 1-8 query positions over a few dozen keys, so
// torch's batched matmuls (or scaled_dot_product_attention) run hundreds of tiny products per call and wait on
// memory between them. Here each query position reads its key and value rows once, in fp32 registers (bf16 is
// widened on load), with the softmax in a small buffer. Two implementations of the same computation:
// - AVX-512 (when the compiler targets it, `-march=native`) for head sizes 32, 64 and 128: intrinsics, because
//   the compiler's own vectorisation of the plain loops kept the value accumulators in memory and summed the
//   lanes serially (measured 4x slower on one (64 x 4 heads, 32 keys) call: 195 -> 50 us on one thread);
// - plain loops otherwise, which the compiler vectorises as it can.
// s2s/models/decode_kernel.py has the end-to-end figures and the loader.
//
// Semantics are those of the torch path in s2s/models/layers.py `decode_attention`: scores q.k / sqrt(Dh) in
// fp32, keys where the optional bool mask is false get -inf, softmax in fp32, weighted sum of values, result in
// the values' dtype (fp32 or bf16). A row whose keys are all masked gives NaN, as that softmax does.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int kLanes = 16;  // head sizes are multiples of this: one AVX-512 register of fp32

struct Strides {
  int64_t batch, head, row;  // in elements; the last dimension is contiguous
};

// Where one call's tensors are; the mask (if any) is bool (B, 1, Lq, Lk) contiguous.
template <typename T>
struct Problem {
  const T *q, *k, *v;
  const bool* mask;
  T* out;
  int64_t heads, queries, keys, dim;
  Strides qs, ks, vs;
  float scale;
};

inline float to_float(float x) { return x; }
inline float to_float(c10::BFloat16 x) { return static_cast<float>(x); }

// ---- plain loops: any CPU, any head size that is a multiple of 16 ----------------------------------------------

template <typename T>
void attend_plain(const Problem<T>& p, int64_t bh, std::vector<float>& scores, std::vector<float>& acc) {
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const T* kb = p.k + b * p.ks.batch + h * p.ks.head;
  const T* vb = p.v + b * p.vs.batch + h * p.vs.head;
  for (int64_t i = 0; i < p.queries; ++i) {
    const T* qi = p.q + b * p.qs.batch + h * p.qs.head + i * p.qs.row;
    const bool* allowed = p.mask ? p.mask + (b * p.queries + i) * p.keys : nullptr;
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < p.keys; ++j) {
      float dot = -std::numeric_limits<float>::infinity();
      if (!allowed || allowed[j]) {
        const T* kr = kb + j * p.ks.row;
        dot = 0.0f;
        for (int64_t d = 0; d < p.dim; ++d) dot += to_float(qi[d]) * to_float(kr[d]);
        dot *= p.scale;
      }
      scores[j] = dot;
      top = std::max(top, dot);
    }
    float total = 0.0f;
    for (int64_t j = 0; j < p.keys; ++j) total += scores[j] = std::exp(scores[j] - top);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t j = 0; j < p.keys; ++j) {
      if (scores[j] == 0.0f) continue;  // masked key (or a vanishing weight): nothing to add
      const T* vr = vb + j * p.vs.row;
      for (int64_t d = 0; d < p.dim; ++d) acc[d] += scores[j] * to_float(vr[d]);
    }
    T* o = p.out + (bh * p.queries + i) * p.dim;
    for (int64_t d = 0; d < p.dim; ++d) o[d] = static_cast<T>(acc[d] / total);
  }
}

// ---- AVX-512 --------------------------------------------------------------------------------------------------
#if defined(__AVX512F__)

inline __m512 load16(const float* x) { return _mm512_loadu_ps(x); }
inline __m512 load16(const c10::BFloat16* x) {
  // bf16 is the top half of an fp32: widen the 16-bit patterns and shift them up
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

inline void store16(float* out, __m512 x) { _mm512_storeu_ps(out, x); }
inline void store16(c10::BFloat16* out, __m512 x) {
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, x);
  for (int l = 0; l < kLanes; ++l) out[l] = static_cast<c10::BFloat16>(lanes[l]);  // torch's rounding
}

// exp(x) for x <= 0 (a score minus the row's maximum), 16 at a time: x = n ln2 + r with |r| <= ln2 / 2, exp(r)
// by Cephes' degree-6 polynomial, 2^n through the exponent bits. Checked exhaustively over every fp32 in
// [-87, 0]: within 1 ulp of the correctly rounded exp. Below -87 (and at -inf, a masked key) the result is 0:
// such a weight is under 1e-37 next to the row's largest weight, 1, far below what the fp32 sum can resolve.
inline __m512 exp_nonpositive(__m512 x) {
  const __m512 low = _mm512_set1_ps(-87.0f);
  const __m512 clamped = _mm512_max_ps(x, low);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), clamped);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 poly = _mm512_set1_ps(1.9875691500e-4f);
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.3981999507e-3f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(8.3334519073e-3f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(4.1665795894e-2f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.6666665459e-1f));
  poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(5.0000001201e-1f));
  poly = _mm512_fmadd_ps(_mm512_mul_ps(poly, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i two_to_n = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, low, _CMP_LT_OQ);
  return _mm512_maskz_mul_ps(static_cast<__mmask16>(~underflow), poly, _mm512_castsi512_ps(two_to_n));
}

inline __mmask16 first_lanes(int64_t count) {
  return count >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << count) - 1);
}

// kDim: the head size, so that the query and the accumulators live in kDim / 16 registers
template <typename T, int kDim>
void attend_avx512(const Problem<T>& p, int64_t bh, std::vector<float>& scores) {
  constexpr int kChunks = kDim / kLanes;
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const T* kb = p.k + b * p.ks.batch + h * p.ks.head;
  const T* vb = p.v + b * p.vs.batch + h * p.vs.head;
  float* s = scores.data();
  for (int64_t i = 0; i < p.queries; ++i) {
    const T* qi = p.q + b * p.qs.batch + h * p.qs.head + i * p.qs.row;
    const bool* allowed = p.mask ? p.mask + (b * p.queries + i) * p.keys : nullptr;
    __m512 query[kChunks];
    for (int c = 0; c < kChunks; ++c) query[c] = load16(qi + kLanes * c);
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < p.keys; ++j) {
      if (allowed && !allowed[j]) {
        s[j] = -std::numeric_limits<float>::infinity();
        continue;
      }
      const T* kr = kb + j * p.ks.row;
      __m512 dot = _mm512_mul_ps(query[0], load16(kr));
      for (int c = 1; c < kChunks; ++c) dot = _mm512_fmadd_ps(query[c], load16(kr + kLanes * c), dot);
      s[j] = _mm512_reduce_add_ps(dot) * p.scale;
      top = std::max(top, s[j]);
    }
    T* o = p.out + (bh * p.queries + i) * kDim;
    if (top == -std::numeric_limits<float>::infinity()) {  // every key masked: NaN, as the torch softmax
      for (int64_t d = 0; d < kDim; ++d) o[d] = static_cast<T>(std::numeric_limits<float>::quiet_NaN());
      continue;
    }
    const __m512 shift = _mm512_set1_ps(top);
    __m512 total = _mm512_setzero_ps();
    for (int64_t j = 0; j < p.keys; j += kLanes) {
      const __mmask16 live = first_lanes(p.keys - j);
      const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, s + j), shift));
      _mm512_mask_storeu_ps(s + j, live, e);
      total = _mm512_add_ps(total, _mm512_maskz_mov_ps(live, e));
    }
    __m512 acc[kChunks];
    for (int c = 0; c < kChunks; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < p.keys; ++j) {
      if (s[j] == 0.0f) continue;  // masked key (or a vanishing weight): nothing to add
      const __m512 weight = _mm512_set1_ps(s[j]);
      const T* vr = vb + j * p.vs.row;
      for (int c = 0; c < kChunks; ++c) acc[c] = _mm512_fmadd_ps(weight, load16(vr + kLanes * c), acc[c]);
    }
    const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(total));
    for (int c = 0; c < kChunks; ++c) store16(o + kLanes * c, _mm512_mul_ps(acc[c], inverse));
  }
}

#endif  // __AVX512F__

template <typename T>
void attend(const Problem<T>& p, int64_t batch) {
  at::parallel_for(0, batch * p.heads, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(p.keys + kLanes), acc(p.dim);
    for (int64_t bh = begin; bh < end; ++bh) {
#if defined(__AVX512F__)
      switch (p.dim) {
        case 32: attend_avx512<T, 32>(p, bh, scores); continue;
        case 64: attend_avx512<T, 64>(p, bh, scores); continue;
        case 128: attend_avx512<T, 128>(p, bh, scores); continue;
        default: break;
      }
#endif
      attend_plain<T>(p, bh, scores, acc);
    }
  });
}

Strides strides_of(const torch::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

template <typename T>
void run(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const bool* mask,
         torch::Tensor& out) {
  const Problem<T> problem{q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), mask, out.data_ptr<T>(),
                           q.size(1), q.size(2), k.size(2), q.size(3), strides_of(q), strides_of(k), strides_of(v),
                           1.0f / std::sqrt(static_cast<float>(q.size(3)))};
  attend<T>(problem, q.size(0));
}

}  // namespace

// q (B, H, Lq, Dh), k and v (B, H, Lk, Dh) of one dtype (fp32 or bf16), last dimension contiguous, Dh a
// multiple of 16; mask None or bool, broadcastable to (B, 1, Lq, Lk). Returns (B, H, Lq, Dh), contiguous.
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const c10::optional<torch::Tensor>& mask) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "q, k, v must be (B, H, L, Dh)");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && k.scalar_type() == v.scalar_type(),
              "q, k, v must share one dtype");
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16, "fp32 or bf16 only");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "the head dimension must be contiguous");
  const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), dim = q.size(3), keys = k.size(2);
  TORCH_CHECK(dim % kLanes == 0, "the head size must be a multiple of ", kLanes);
  TORCH_CHECK(k.size(0) == batch && v.size(0) == batch && k.size(1) == heads && v.size(1) == heads &&
                  v.size(2) == keys && k.size(3) == dim && v.size(3) == dim,
              "k and v must be (B, H, Lk, Dh) matching q");
  auto out = torch::empty({batch, heads, queries, dim}, q.options());
  torch::Tensor expanded;
  const bool* mask_ptr = nullptr;
  if (mask.has_value()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool, "the mask must be bool");
    expanded = mask->expand({batch, 1, queries, keys}).contiguous();
    mask_ptr = expanded.data_ptr<bool>();
  }
  if (q.scalar_type() == at::kFloat) {
    run<float>(q, k, v, mask_ptr, out);
  } else {
    run<c10::BFloat16>(q, k, v, mask_ptr, out);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("decode_attention", &decode_attention, "decode-time attention (see decode_attention.cpp)");
}
