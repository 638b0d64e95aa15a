// Paged attention on CPU for the sampling engine, as an XLA FFI custom call.
//
// The plain-XLA path gathers every row's pages into a dense buffer each step and then runs one tiny
// batched matmul per row and KV head; XLA:CPU is bound by that copy and by per-matmul overhead.
// This kernel reads a row's keys and values straight from its pages, once per KV head, for all the
// query heads of that KV head, and runs rows in parallel on XLA's intra-op thread pool. The samples
// of one prompt sit next to each other in a batch and share their prompt pages, so those pages are
// read from cache rather than from memory for every sample but the first. Head dims of 4, 8 or 16
// vectors (64/128/256 floats with AVX-512) keep queries and accumulators in registers; others take
// a one-lane path.
//
// Semantics (the same as mathjax_train/model/attention.py: paged_masks + paged_attention):
//   q          (B, T, H, D)          f32   query t of row b sits at cache index start[b] + side_pos + t
//   pages_k/v  (L, KVH, NP, PS, D)   f32   row b's first start[b] tokens, token i at page
//                                          page_table[b, i / PS], offset i % PS
//   page_table (B, P)                s32
//   start      (B,)                  s32
//   side_k/v   (L, KVH, B, S, D)     f32   this chunk's tokens: side slot s holds cache index start[b] + s
//   scalars    (2,)                  s32   layer, side_pos
//   out        (B, T, H, D)          f32
// A query sees page keys below start[b] and side keys at or before itself, within the sliding window
// when there is one (query index - key index < window). One float32 softmax over both.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// ---- SIMD: one set of operations per instruction set; the attention below is written once over them.
#if defined(__AVX512F__)
struct Simd {
  using V = __m512;
  static constexpr int W = 16;
  static V Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V Zero() { return _mm512_setzero_ps(); }
  static V Set(float x) { return _mm512_set1_ps(x); }
  static V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V Max(V a, V b) { return _mm512_max_ps(a, b); }
  static float Sum(V v) { return _mm512_reduce_add_ps(v); }
  static float HMax(V v) { return _mm512_reduce_max_ps(v); }
  static V Round(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V Pow2(V p, V n) { return _mm512_scalef_ps(p, n); }  // p * 2^n
};
#elif defined(__AVX2__) && defined(__FMA__)
struct Simd {
  using V = __m256;
  static constexpr int W = 8;
  static V Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V Zero() { return _mm256_setzero_ps(); }
  static V Set(float x) { return _mm256_set1_ps(x); }
  static V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V Add(V a, V b) { return _mm256_add_ps(a, b); }
  static V Sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V Max(V a, V b) { return _mm256_max_ps(a, b); }
  static float Sum(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float HMax(V v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static V Round(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V Pow2(V p, V n) {
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  }
};
#else
struct Simd {  // one lane: correct everywhere, fast nowhere
  using V = float;
  static constexpr int W = 1;
  static V Load(const float* p) { return *p; }
  static void Store(float* p, V v) { *p = v; }
  static V Zero() { return 0.f; }
  static V Set(float x) { return x; }
  static V Fma(V a, V b, V c) { return a * b + c; }
  static V Mul(V a, V b) { return a * b; }
  static V Add(V a, V b) { return a + b; }
  static V Sub(V a, V b) { return a - b; }
  static V Max(V a, V b) { return std::max(a, b); }
  static float Sum(V v) { return v; }
  static float HMax(V v) { return v; }
  static V Round(V x) { return std::nearbyint(x); }
  static V Pow2(V p, V n) { return std::ldexp(p, static_cast<int>(n)); }
};
#endif
using V = Simd::V;
constexpr int W = Simd::W;

// exp(x) for the softmax's x <= 0: x = n ln2 + r with |r| <= ln2 / 2, exp(r) from a degree-6
// polynomial (Cephes' expf coefficients), times 2^n. Within a few float32 ulps of expf.
inline V Exp(V x) {
  x = Simd::Max(x, Simd::Set(-87.0f));
  V n = Simd::Round(Simd::Mul(x, Simd::Set(1.44269504088896341f)));
  V r = Simd::Fma(n, Simd::Set(-0.693359375f), x);
  r = Simd::Fma(n, Simd::Set(2.12194440e-4f), r);
  V q = Simd::Set(1.9875691500e-4f);
  q = Simd::Fma(q, r, Simd::Set(1.3981999507e-3f));
  q = Simd::Fma(q, r, Simd::Set(8.3334519073e-3f));
  q = Simd::Fma(q, r, Simd::Set(4.1665795894e-2f));
  q = Simd::Fma(q, r, Simd::Set(1.6666665459e-1f));
  q = Simd::Fma(q, r, Simd::Set(5.0000001201e-1f));
  q = Simd::Fma(Simd::Mul(q, r), r, Simd::Add(r, Simd::Set(1.0f)));
  return Simd::Pow2(q, n);
}

struct Problem {
  const float* q;
  const float* pages_k;
  const float* pages_v;
  const int32_t* table;
  const int32_t* start;
  const float* side_k;
  const float* side_v;
  float* out;
  int64_t B, T, H, D, KVH, NP, PS, P, S;
  int64_t layer, side_pos, window;
  float scale;
};

// A run of keys stored one after another: `count` rows of D floats from `k` and `v`.
struct Span {
  const float* k;
  const float* v;
  int64_t count;
};

// The keys query t of a row sees, in cache order, as spans (a page's part, then the side buffer's).
// False on a page id outside the cache.
bool KeySpans(const Problem& p, int64_t b, int64_t kvh, int64_t t, std::vector<Span>& spans) {
  const int64_t D = p.D, PS = p.PS, start = p.start[b];
  const int64_t qi = start + p.side_pos + t;
  const int64_t lo = p.window > 0 ? std::max<int64_t>(0, qi - p.window + 1) : 0;
  const float* kpages = p.pages_k + (p.layer * p.KVH + kvh) * p.NP * PS * D;
  const float* vpages = p.pages_v + (p.layer * p.KVH + kvh) * p.NP * PS * D;
  const int32_t* table = p.table + b * p.P;
  spans.clear();
  for (int64_t i = std::min(lo, start); i < start;) {
    const int64_t col = i / PS, page = table[col];
    if (page < 0 || page >= p.NP) return false;
    const int64_t end = std::min(start, (col + 1) * PS), off = (page * PS + i % PS) * D;
    spans.push_back({kpages + off, vpages + off, end - i});
    i = end;
  }
  const int64_t side_lo = std::max<int64_t>(0, lo - start), side_hi = std::min(p.S, p.side_pos + t + 1);
  if (side_hi > side_lo) {
    const int64_t off = (((p.layer * p.KVH + kvh) * p.B + b) * p.S + side_lo) * D;
    spans.push_back({p.side_k + off, p.side_v + off, side_hi - side_lo});
  }
  return true;
}

// Scores of NG query heads (C vectors each) against every key: sc[g * n + j] = scale * q_g . k_j.
template <int C, int NG>
void Scores(const float* q, const std::vector<Span>& spans, int64_t n, float scale, float* sc) {
  V qv[NG][C];
  for (int g = 0; g < NG; ++g)
    for (int c = 0; c < C; ++c) qv[g][c] = Simd::Load(q + (g * C + c) * W);
  int64_t j = 0;
  for (const Span& s : spans) {
    const float* k = s.k;
    for (int64_t i = 0; i < s.count; ++i, ++j, k += C * W) {
      V kv[C];
      for (int c = 0; c < C; ++c) kv[c] = Simd::Load(k + c * W);
      for (int g = 0; g < NG; ++g) {
        V a = Simd::Mul(qv[g][0], kv[0]);
        for (int c = 1; c < C; ++c) a = Simd::Fma(qv[g][c], kv[c], a);
        sc[g * n + j] = Simd::Sum(a) * scale;
      }
    }
  }
}

// out_g = sum_j p[g * n + j] v_j for NG query heads.
template <int C, int NG>
void Mix(const float* probs, const std::vector<Span>& spans, int64_t n, float* out) {
  V acc[NG][C];
  for (int g = 0; g < NG; ++g)
    for (int c = 0; c < C; ++c) acc[g][c] = Simd::Zero();
  int64_t j = 0;
  for (const Span& s : spans) {
    const float* v = s.v;
    for (int64_t i = 0; i < s.count; ++i, ++j, v += C * W) {
      V vv[C];
      for (int c = 0; c < C; ++c) vv[c] = Simd::Load(v + c * W);
      for (int g = 0; g < NG; ++g) {
        const V pj = Simd::Set(probs[g * n + j]);
        for (int c = 0; c < C; ++c) acc[g][c] = Simd::Fma(pj, vv[c], acc[g][c]);
      }
    }
  }
  for (int g = 0; g < NG; ++g)
    for (int c = 0; c < C; ++c) Simd::Store(out + (g * C + c) * W, acc[g][c]);
}

// A row of scores becomes probabilities: max, exp, sum in W lanes, then a rescale.
void Softmax(float* row, int64_t n) {
  int64_t j = 0;
  float m = row[0];
  if (n >= W) {
    V mv = Simd::Load(row);
    for (j = W; j + W <= n; j += W) mv = Simd::Max(mv, Simd::Load(row + j));
    m = Simd::HMax(mv);
  }
  for (; j < n; ++j) m = std::max(m, row[j]);
  const V mv = Simd::Set(m);
  V sv = Simd::Zero();
  for (j = 0; j + W <= n; j += W) {
    const V e = Exp(Simd::Sub(Simd::Load(row + j), mv));
    Simd::Store(row + j, e);
    sv = Simd::Add(sv, e);
  }
  float sum = Simd::Sum(sv);
  for (; j < n; ++j) {
    float tail[W] = {};
    tail[0] = row[j] - m;
    Simd::Store(tail, Exp(Simd::Load(tail)));  // one lane used; the others are exp(0)
    row[j] = tail[0];
    sum += row[j];
  }
  const float inv = 1.f / sum;
  for (j = 0; j < n; ++j) row[j] *= inv;
}

// Up to 4 query heads at a time keep their queries (or accumulators) in registers.
template <int C>
void AttendHeads(const float* q, const std::vector<Span>& spans, int64_t n, int64_t G, float scale, float* sc,
                 float* out) {
  constexpr int kGroup = C <= 8 ? 4 : (C <= 16 ? 2 : 1);
  auto each_group = [&](auto&& fn) {
    int64_t g = 0;
    for (; g + kGroup <= G; g += kGroup) fn(g, std::integral_constant<int, kGroup>{});
    for (; g < G; ++g) fn(g, std::integral_constant<int, 1>{});
  };
  each_group([&](int64_t g, auto ng) { Scores<C, ng.value>(q + g * C * W, spans, n, scale, sc + g * n); });
  for (int64_t g = 0; g < G; ++g) Softmax(sc + g * n, n);
  each_group([&](int64_t g, auto ng) { Mix<C, ng.value>(sc + g * n, spans, n, out + g * C * W); });
}

// Any head_dim, one lane at a time (head dims that are not a multiple of the vector width).
void AttendHeadsScalar(const float* q, const std::vector<Span>& spans, int64_t n, int64_t G, int64_t D, float scale,
                       float* sc, float* out) {
  for (int64_t g = 0; g < G; ++g) {
    int64_t j = 0;
    for (const Span& s : spans)
      for (int64_t i = 0; i < s.count; ++i, ++j) {
        float dot = 0.f;
        for (int64_t d = 0; d < D; ++d) dot += q[g * D + d] * s.k[i * D + d];
        sc[g * n + j] = dot * scale;
      }
    Softmax(sc + g * n, n);
    std::fill(out + g * D, out + (g + 1) * D, 0.f);
    j = 0;
    for (const Span& s : spans)
      for (int64_t i = 0; i < s.count; ++i, ++j)
        for (int64_t d = 0; d < D; ++d) out[g * D + d] += sc[g * n + j] * s.v[i * D + d];
  }
}

// Row b, KV head kvh: every query t of the row, for the H / KVH query heads that share kvh.
// Returns false on a bad page id.
bool AttendRow(const Problem& p, int64_t b, int64_t kvh, std::vector<float>& scratch, std::vector<Span>& spans) {
  const int64_t G = p.H / p.KVH, D = p.D;
  if (static_cast<int64_t>(scratch.size()) < G * (p.start[b] + p.S)) scratch.resize(G * (p.start[b] + p.S));
  for (int64_t t = 0; t < p.T; ++t) {
    if (!KeySpans(p, b, kvh, t, spans)) return false;
    int64_t n = 0;
    for (const Span& s : spans) n += s.count;
    const float* q = p.q + ((b * p.T + t) * p.H + kvh * G) * D;
    float* out = p.out + ((b * p.T + t) * p.H + kvh * G) * D;
    if (n == 0) {
      std::fill(out, out + G * D, 0.f);
      continue;
    }
    float* sc = scratch.data();
    if (D % W == 0 && D / W == 4) {
      AttendHeads<4>(q, spans, n, G, p.scale, sc, out);
    } else if (D % W == 0 && D / W == 8) {
      AttendHeads<8>(q, spans, n, G, p.scale, sc, out);
    } else if (D % W == 0 && D / W == 16) {
      AttendHeads<16>(q, spans, n, G, p.scale, sc, out);
    } else {
      AttendHeadsScalar(q, spans, n, G, D, p.scale, sc, out);
    }
  }
  return true;
}

// Runs fn(i) for i in [0, n) on the caller and the pool's threads. The caller takes items too and
// waits only for items another thread has already started, so it never waits on a queued task;
// a task that starts after all items are taken returns at once (it holds the shared state alive).
template <typename F>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const F& fn) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  const F* body = &fn;
  auto drain = [state, body, n]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < n;) {
      (*body)(i);
      if (state->done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(state->mu);
        state->cv.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t i = 0; i < helpers; ++i) {
    auto task = drain;
    pool.Schedule(std::move(task));
  }
  drain();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == n; });
}

ffi::Error PagedAttentionImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> pages_k,
                              ffi::Buffer<ffi::F32> pages_v, ffi::Buffer<ffi::S32> page_table,
                              ffi::Buffer<ffi::S32> start, ffi::Buffer<ffi::F32> side_k,
                              ffi::Buffer<ffi::F32> side_v, ffi::Buffer<ffi::S32> scalars,
                              ffi::ResultBuffer<ffi::F32> out, int64_t sliding_window) {
  auto qd = q.dimensions(), pd = pages_k.dimensions(), td = page_table.dimensions(), sd = side_k.dimensions();
  if (qd.size() != 4 || pd.size() != 5 || td.size() != 2 || sd.size() != 5 || scalars.element_count() != 2) {
    return ffi::Error::InvalidArgument("paged_attention_cpu: operands have the wrong rank");
  }
  Problem p;
  p.B = qd[0], p.T = qd[1], p.H = qd[2], p.D = qd[3];
  p.KVH = pd[1], p.NP = pd[2], p.PS = pd[3], p.P = td[1], p.S = sd[3];
  const int64_t L = pd[0];
  if (pd[4] != p.D || sd[0] != L || sd[1] != p.KVH || sd[2] != p.B || sd[4] != p.D || td[0] != p.B ||
      start.element_count() != static_cast<size_t>(p.B) || p.H % p.KVH != 0 ||
      pages_v.element_count() != pages_k.element_count() || side_v.element_count() != side_k.element_count()) {
    return ffi::Error::InvalidArgument("paged_attention_cpu: operand shapes do not agree");
  }
  p.layer = scalars.typed_data()[0];
  p.side_pos = scalars.typed_data()[1];
  if (p.layer < 0 || p.layer >= L || p.side_pos < 0) {
    return ffi::Error::InvalidArgument("paged_attention_cpu: layer or side position out of range");
  }
  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t s = start.typed_data()[b];
    if (s < 0 || s > p.P * p.PS) {
      return ffi::Error::InvalidArgument("paged_attention_cpu: a row holds more tokens than its page table covers");
    }
  }
  p.q = q.typed_data(), p.pages_k = pages_k.typed_data(), p.pages_v = pages_v.typed_data();
  p.table = page_table.typed_data(), p.start = start.typed_data();
  p.side_k = side_k.typed_data(), p.side_v = side_v.typed_data(), p.out = out->typed_data();
  p.window = sliding_window;
  p.scale = 1.0f / std::sqrt(static_cast<float>(p.D));

  std::atomic<bool> bad_page{false};
  ParallelFor(pool, p.B * p.KVH, [&](int64_t i) {
    thread_local std::vector<float> scratch;
    thread_local std::vector<Span> spans;
    if (!AttendRow(p, i / p.KVH, i % p.KVH, scratch, spans)) bad_page.store(true);
  });
  if (bad_page.load()) return ffi::Error::InvalidArgument("paged_attention_cpu: a page id is outside the cache");
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MathjaxPagedAttentionCpu, PagedAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // q
                                  .Arg<ffi::Buffer<ffi::F32>>()  // pages_k
                                  .Arg<ffi::Buffer<ffi::F32>>()  // pages_v
                                  .Arg<ffi::Buffer<ffi::S32>>()  // page_table
                                  .Arg<ffi::Buffer<ffi::S32>>()  // start
                                  .Arg<ffi::Buffer<ffi::F32>>()  // side_k
                                  .Arg<ffi::Buffer<ffi::F32>>()  // side_v
                                  .Arg<ffi::Buffer<ffi::S32>>()  // scalars: layer, side_pos
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out
                                  .Attr<int64_t>("sliding_window"));
