// The tagger's costliest CPU steps as XLA FFI calls (see transfer_jax/cpu_kernels.py):
// extraction's blocks, each one call (the 3x3 convolution fused with the max-pool window's
// max and min and the per-channel sum of squares, so the conv output never exists in
// memory, then BatchNorm and ELU on the pooled map), and training's block 1 and
// convolution kernel gradients.
#include <Python.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TJ_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TJ_CLONES
#endif

// The block for one example: d = conv3x3(x, k) - mean, (h, w, C);
// hi, lo = max, min of d over each (ph, pw) window, (h / ph, w / pw, C), for the window
// rows [ro0, ro1); sumsq += the sum of d^2 over those rows' windows and, with `tail`,
// over the rows and columns outside whole windows, (C,), when want_var.
// p: x zero-padded by one, (h + 2, w + 2).
template <int C>
TJ_CLONES void Block1(const float* p, int64_t h, int64_t w, const float* k, const float* mean,
                      int64_t ph, int64_t pw, bool want_var, int64_t ro0, int64_t ro1, bool tail,
                      float* hi, float* lo, double* sumsq) {
  const int64_t wp = w + 2, ho = h / ph, wo = w / pw;
  float kk[9][C], m[C];
  double sq[C] = {};
  for (int t = 0; t < 9; ++t)
    for (int c = 0; c < C; ++c) kk[t][c] = k[t * C + c];
  for (int c = 0; c < C; ++c) m[c] = mean[c];

  auto conv = [&](int64_t r, int64_t col, float* d) {
    const float* q = p + r * wp + col;
    for (int c = 0; c < C; ++c) d[c] = -m[c];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        const float v = q[i * wp + j];
        for (int c = 0; c < C; ++c) d[c] += v * kk[i * 3 + j][c];
      }
  };

  for (int64_t ro = ro0; ro < ro1; ++ro)
    for (int64_t co = 0; co < wo; ++co) {
      float mx[C], mn[C], d[C], wsq[C];  // wsq: the window's share, off sq's long chain
      for (int c = 0; c < C; ++c) mx[c] = -FLT_MAX, mn[c] = FLT_MAX, wsq[c] = 0.f;
      for (int64_t a = 0; a < ph; ++a)
        for (int64_t b = 0; b < pw; ++b) {
          conv(ro * ph + a, co * pw + b, d);
          for (int c = 0; c < C; ++c) {
            mx[c] = std::max(mx[c], d[c]);
            mn[c] = std::min(mn[c], d[c]);
          }
          if (want_var)
            for (int c = 0; c < C; ++c) wsq[c] += d[c] * d[c];
        }
      if (want_var)
        for (int c = 0; c < C; ++c) sq[c] += wsq[c];
      float* hp = hi + (ro * wo + co) * C;
      float* lp = lo + (ro * wo + co) * C;
      for (int c = 0; c < C; ++c) hp[c] = mx[c], lp[c] = mn[c];
    }
  if (want_var && tail) {  // the rows and columns outside whole windows count in the variance
    float d[C];
    for (int64_t r = 0; r < h; ++r)
      for (int64_t col = (r < ho * ph ? wo * pw : 0); col < w; ++col) {
        conv(r, col, d);
        for (int c = 0; c < C; ++c) sq[c] += d[c] * d[c];
      }
  }
  for (int c = 0; c < C; ++c) sumsq[c] += sq[c];
}

// Winograd's kernel transform: U[xi][ci][co] = (G g G')[xi], xi = 4 a + b, for the
// (3, 3, C, C) kernel g.
template <int C>
TJ_CLONES void WinogradKernel(const float* k, float* U) {
  static const float G[4][3] = {{1.f, 0.f, 0.f}, {.5f, .5f, .5f}, {.5f, -.5f, .5f}, {0.f, 0.f, 1.f}};
  std::fill(U, U + 16 * C * C, 0.f);
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b)
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
          const float f = G[a][i] * G[b][j];
          float* u = U + (a * 4 + b) * C * C;
          const float* kij = k + (i * 3 + j) * C * C;
          if (f != 0.f)
            for (int e = 0; e < C * C; ++e) u[e] += f * kij[e];
        }
}

// Blocks 2 to 5 for one example: as Block1, for a C-channel input x (h, w, C) and a
// (3, 3, C, C) kernel, by Winograd's F(2x2, 3x3): each 2x2 output tile is A' [(G g G') .
// (B' d B)] A with d its 4x4 input tile, 16 products of C x C channel matrices instead of
// 36 (2.25x fewer multiply-adds; the transforms are sums and halvings, so the rounding
// stays that of a direct convolution). Row strips of tiles go through a small buffer into
// the window statistics, so the conv output never exists whole either.
//
// The channel products are written with vectors of W floats, one machine register each
// (auto-vectorised loops kept the accumulators in memory): W is chosen per instruction
// set at run time (`ConvPoolStatsFor`); a vector wider than the machine's registers was
// 35x slower (lowered piece by piece). U: the kernel's transform (`WinogradKernel`),
// computed once a call for the threads that split it.
template <int C, int W>
__attribute__((always_inline)) inline void ConvPoolStats(const float* x, int64_t h, int64_t w, const float* U,
                                                         const float* mean, int64_t ph, int64_t pw, bool want_var,
                                                         int64_t r0, int64_t r1, float* hi, float* lo, double* sumsq) {
  typedef float Vec __attribute__((vector_size(4 * W)));
  constexpr int NV = C / W, T = NV >= 16 ? 1 : 16 / NV;  // T tiles x C channels in 16 vector registers
  const int64_t ho = h / ph, wo = w / pw, nblocks = ((w + 1) / 2 + T - 1) / T, wbuf = nblocks * T * 2;
  thread_local std::vector<float> ybuf;
  ybuf.resize(2 * wbuf * C);
  alignas(64) static thread_local float V[16][T][C], M[16][T][C];
  alignas(64) float zeros[C] = {};
  float m[C];
  double sq[C] = {};
  for (int c = 0; c < C; ++c) m[c] = mean[c];

  for (int64_t top = r0; top < r1; top += 2) {  // strips of two output rows, top and top + 1
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      for (int t = 0; t < T; ++t) {  // V = B' d B for T tiles; outside x reads zeros
        const int64_t c0 = 2 * (blk * T + t) - 1;
        const float* q[4][4];
        for (int a = 0; a < 4; ++a)
          for (int b = 0; b < 4; ++b) {
            const int64_t r = top - 1 + a, col = c0 + b;
            q[a][b] = (r >= 0 && r < h && col >= 0 && col < w) ? x + (r * w + col) * C : zeros;
          }
        float e[4][4][C];
        for (int b = 0; b < 4; ++b)
          for (int c = 0; c < C; ++c) {
            const float d0 = q[0][b][c], d1 = q[1][b][c], d2 = q[2][b][c], d3 = q[3][b][c];
            e[0][b][c] = d0 - d2, e[1][b][c] = d1 + d2, e[2][b][c] = d2 - d1, e[3][b][c] = d1 - d3;
          }
        for (int a = 0; a < 4; ++a)
          for (int c = 0; c < C; ++c) {
            V[a * 4 + 0][t][c] = e[a][0][c] - e[a][2][c];
            V[a * 4 + 1][t][c] = e[a][1][c] + e[a][2][c];
            V[a * 4 + 2][t][c] = e[a][2][c] - e[a][1][c];
            V[a * 4 + 3][t][c] = e[a][1][c] - e[a][3][c];
          }
      }
      for (int xi = 0; xi < 16; ++xi) {  // M[xi] = V[xi] U[xi], T tiles x C in registers
        Vec acc[T][NV];  // set by the first input channel (a zeroed array was stored and reloaded)
        const float* u = U + xi * C * C;
        for (int ci = 0; ci < C; ++ci) {
          Vec uc[NV];
#pragma GCC unroll 16
          for (int n = 0; n < NV; ++n) std::memcpy(&uc[n], u + ci * C + W * n, sizeof(Vec));
#pragma GCC unroll 16
          for (int t = 0; t < T; ++t) {
            const float v = V[xi][t][ci];
#pragma GCC unroll 16
            for (int n = 0; n < NV; ++n) acc[t][n] = ci ? acc[t][n] + v * uc[n] : v * uc[n];
          }
        }
        for (int t = 0; t < T; ++t) std::memcpy(M[xi][t], acc[t], sizeof(acc[t]));
      }
      for (int t = 0; t < T; ++t) {  // y = A' M A - mean into the strip's two rows
        float* y0 = ybuf.data() + (2 * (blk * T + t)) * C;
        float* y1 = y0 + wbuf * C;
        for (int c = 0; c < C; ++c) {
          float s0[4], s1[4];
          for (int b = 0; b < 4; ++b)
            s0[b] = M[b][t][c] + M[4 + b][t][c] + M[8 + b][t][c], s1[b] = M[4 + b][t][c] - M[8 + b][t][c] - M[12 + b][t][c];
          y0[c] = s0[0] + s0[1] + s0[2] - m[c], y0[C + c] = s0[1] - s0[2] - s0[3] - m[c];
          y1[c] = s1[0] + s1[1] + s1[2] - m[c], y1[C + c] = s1[1] - s1[2] - s1[3] - m[c];
        }
      }
    }
    for (int rr = 0; rr < 2; ++rr) {  // the strip's rows into the window statistics
      const int64_t r = top + rr;
      if (r >= r1) break;
      const float* y = ybuf.data() + rr * wbuf * C;
      if (want_var) {
        float rs[C] = {};
        for (int64_t col = 0; col < w; ++col)
          for (int c = 0; c < C; ++c) rs[c] += y[col * C + c] * y[col * C + c];
        for (int c = 0; c < C; ++c) sq[c] += rs[c];
      }
      if (r >= ho * ph) continue;
      const int64_t ro = r / ph;
      const bool first = r % ph == 0;
      for (int64_t co = 0; co < wo; ++co) {
        float* hp = hi + (ro * wo + co) * C;
        float* lp = lo + (ro * wo + co) * C;
        float mx[C], mn[C];
        for (int c = 0; c < C; ++c) mx[c] = first ? -FLT_MAX : hp[c], mn[c] = first ? FLT_MAX : lp[c];
        for (int64_t b = 0; b < pw; ++b)
          for (int c = 0; c < C; ++c) {
            const float d = y[(co * pw + b) * C + c];
            mx[c] = std::max(mx[c], d), mn[c] = std::min(mn[c], d);
          }
        for (int c = 0; c < C; ++c) hp[c] = mx[c], lp[c] = mn[c];
      }
    }
  }
  for (int c = 0; c < C; ++c) sumsq[c] += sq[c];
}

// ConvPoolStats with the widest vectors this CPU has: AVX-512, AVX2 + FMA, or 4 floats
// (SSE2, or any other machine).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
template <int C>
__attribute__((target("arch=x86-64-v4"))) void ConvPoolStatsV4(const float* x, int64_t h, int64_t w,
    const float* U, const float* mean, int64_t ph, int64_t pw, bool want_var, int64_t r0, int64_t r1, float* hi,
    float* lo, double* sumsq) {
  ConvPoolStats<C, 16>(x, h, w, U, mean, ph, pw, want_var, r0, r1, hi, lo, sumsq);
}
template <int C>
__attribute__((target("arch=x86-64-v3"))) void ConvPoolStatsV3(const float* x, int64_t h, int64_t w,
    const float* U, const float* mean, int64_t ph, int64_t pw, bool want_var, int64_t r0, int64_t r1, float* hi,
    float* lo, double* sumsq) {
  ConvPoolStats<C, 8>(x, h, w, U, mean, ph, pw, want_var, r0, r1, hi, lo, sumsq);
}
#endif

template <int C>
void ConvPoolStatsFor(const float* x, int64_t h, int64_t w, const float* U, const float* mean, int64_t ph,
                      int64_t pw, bool want_var, int64_t r0, int64_t r1, float* hi, float* lo, double* sumsq) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  if (__builtin_cpu_supports("x86-64-v4"))
    return ConvPoolStatsV4<C>(x, h, w, U, mean, ph, pw, want_var, r0, r1, hi, lo, sumsq);
  if (__builtin_cpu_supports("x86-64-v3"))
    return ConvPoolStatsV3<C>(x, h, w, U, mean, ph, pw, want_var, r0, r1, hi, lo, sumsq);
#endif
  ConvPoolStats<C, 4>(x, h, w, U, mean, ph, pw, want_var, r0, r1, hi, lo, sumsq);
}

// expm1(y) for y <= 0, branch-free so that loops of it vectorise (ELU's negative side):
// 2^k (expm1(r) + 1) - 1 with k = round(y / ln 2), |r| <= ln(2) / 2 and expm1(r) by its
// Taylor series to r^7 (truncation < 2e-8 relative). Within 1.22 ulp of expm1 in double
// over every float in [-90, 0] (an exhaustive check by a scratch program, not kept; the
// tests compare whole blocks with float64).
inline float Expm1NonPositive(float y) {
  y = std::max(y, -87.f);  // expm1 rounds to -1 below; keeps 2^k a normal float
  const float k = (y * 1.44269504f + 12582912.f) - 12582912.f;  // round to nearest via 1.5 * 2^23
  const float r = (y - k * 0.693145751953125f) - k * 1.428606765330187e-06f;  // ln 2 in two parts
  const float p = r * (1.f + r * (.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720 + r * (1.f / 5040)))))));
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;  // 2^k
  float e;
  std::memcpy(&e, &bits, sizeof e);
  return e * p + (e - 1.f);
}

// The block's output from its window statistics, in place of hi: x = elu(a * (a >= 0 ? hi
// : lo) + bias) with a = scale / sqrt(var + eps) (BatchNorm, then ELU, then the max-pool,
// in the pool-first order), n windows; total += x's sum over them (for the layer's feature).
template <int C>
TJ_CLONES void Epilogue(float* hi, const float* lo, int64_t n, const float* var, const float* scale,
                        const float* bias, float eps, double* total) {
  float a[C], b[C];
  for (int c = 0; c < C; ++c) a[c] = scale[c] / std::sqrt(var[c] + eps), b[c] = bias[c];
  for (int64_t i0 = 0; i0 < n; i0 += 256) {  // float sums of 256 windows, then a double total
    float sum[C] = {};
    for (int64_t i = i0; i < std::min(n, i0 + 256); ++i) {
      float* x = hi + i * C;
      const float* l = lo + i * C;
      for (int c = 0; c < C; ++c) {
        const float y = (a[c] >= 0.f ? x[c] : l[c]) * a[c] + b[c];
        x[c] = y > 0.f ? y : Expm1NonPositive(y);
        sum[c] += x[c];
      }
    }
    for (int c = 0; c < C; ++c) total[c] += sum[c];
  }
}

// Training: the same block for a batch, with the window positions that attain the max
// and the min (bit a * pw + b of a mask set where the (a, b) element equals it: ties
// share the gradient, as XLA's max does), instead of the sum of squares.
template <int C>
TJ_CLONES void Block1Select(const float* p, int64_t h, int64_t w, const float* k, const float* mean,
                            int64_t ph, int64_t pw, float* hi, float* lo, uint16_t* mhi, uint16_t* mlo) {
  const int64_t wp = w + 2, ho = h / ph, wo = w / pw;
  float kk[9][C], m[C];
  for (int t = 0; t < 9; ++t)
    for (int c = 0; c < C; ++c) kk[t][c] = k[t * C + c];
  for (int c = 0; c < C; ++c) m[c] = mean[c];
  float d[16][C];  // the window's conv outputs (ph * pw <= 16)
  for (int64_t ro = 0; ro < ho; ++ro)
    for (int64_t co = 0; co < wo; ++co) {
      float mx[C], mn[C];
      for (int c = 0; c < C; ++c) mx[c] = -FLT_MAX, mn[c] = FLT_MAX;
      for (int64_t a = 0; a < ph; ++a)
        for (int64_t b = 0; b < pw; ++b) {
          // Block1's conv lambda, written out: a shared struct holding kk and m measured
          // 1.3-1.6x slower here (GCC kept them in memory); dq then d, as d[q] directly
          // was not vectorised
          float dq[C];
          const float* q = p + (ro * ph + a) * wp + co * pw + b;
          for (int c = 0; c < C; ++c) dq[c] = -m[c];
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) {
              const float v = q[i * wp + j];
              for (int c = 0; c < C; ++c) dq[c] += v * kk[i * 3 + j][c];
            }
          for (int c = 0; c < C; ++c) {
            mx[c] = std::max(mx[c], dq[c]);
            mn[c] = std::min(mn[c], dq[c]);
            d[a * pw + b][c] = dq[c];
          }
        }
      uint32_t bh[C], bl[C];
      for (int c = 0; c < C; ++c) bh[c] = 0, bl[c] = 0;
      for (int64_t q = 0; q < ph * pw; ++q) {
        const uint32_t bit = 1u << q;
        for (int c = 0; c < C; ++c) {
          bh[c] |= d[q][c] == mx[c] ? bit : 0u;
          bl[c] |= d[q][c] == mn[c] ? bit : 0u;
        }
      }
      const int64_t o = (ro * wo + co) * C;
      for (int c = 0; c < C; ++c) hi[o + c] = mx[c], lo[o + c] = mn[c], mhi[o + c] = static_cast<uint16_t>(bh[c]),
        mlo[o + c] = static_cast<uint16_t>(bl[c]);
    }
}

// The kernel's gradient from one example: dk[t][c] = sum over windows of g_hi[c] / (ties)
// x (the patch's tap t - centre[t]) at each position in the max's mask, and the same for
// the min. Centred by the batch's patch mean, the sum has no large terms that cancel
// (log-mels sit around -40 dB: uncentred, float32 lost the gradient to rounding).
template <int C>
TJ_CLONES void Block1SelectGrad(const float* p, int64_t h, int64_t w, int64_t ph, int64_t pw,
                                const uint16_t* mhi, const uint16_t* mlo, const float* ghi,
                                const float* glo, const float* centre, float* dk) {
  const int64_t wp = w + 2, ho = h / ph, wo = w / pw;
  double total[9][C] = {};
  for (int64_t ro = 0; ro < ho; ++ro) {
    float acc[9][C] = {};  // one row of windows in float, then into the double total
    for (int64_t co = 0; co < wo; ++co) {
      const int64_t o = (ro * wo + co) * C;
      float sh[C], sl[C];
      uint32_t bh[C], bl[C];
      for (int c = 0; c < C; ++c) {
        bh[c] = mhi[o + c], bl[c] = mlo[o + c];
        const int nh = __builtin_popcount(bh[c]), nl = __builtin_popcount(bl[c]);
        sh[c] = nh ? ghi[o + c] / nh : 0.f;
        sl[c] = nl ? glo[o + c] / nl : 0.f;
      }
      for (int64_t a = 0; a < ph; ++a)
        for (int64_t b = 0; b < pw; ++b) {
          const uint32_t bit = 1u << (a * pw + b);
          float g[C];
          for (int c = 0; c < C; ++c) g[c] = (bh[c] & bit ? sh[c] : 0.f) + (bl[c] & bit ? sl[c] : 0.f);
          const float* x = p + (ro * ph + a) * wp + co * pw + b;
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) {
              const float v = x[i * wp + j] - centre[i * 3 + j];
              for (int c = 0; c < C; ++c) acc[i * 3 + j][c] += v * g[c];
            }
        }
    }
    for (int t = 0; t < 9; ++t)
      for (int c = 0; c < C; ++c) total[t][c] += acc[t][c];
  }
  for (int t = 0; t < 9; ++t)
    for (int c = 0; c < C; ++c) dk[t * C + c] = static_cast<float>(total[t][c]);
}

// One example's 3x3 patch moments: mean[t] and cov[s][t] of the zero-padded input's
// taps over the (h, w) output positions (a conv output's mean is mean . k and its
// variance k' cov k). Two passes; sums in double.
TJ_CLONES void PatchMoments(const float* p, int64_t h, int64_t w, float* mean, float* cov) {
  const int64_t wp = w + 2;
  double mu[9];
  for (int t = 0; t < 9; ++t) {
    double s = 0.0;
    for (int64_t r = 0; r < h; ++r) {
      const float* row = p + (r + t / 3) * wp + t % 3;
      float rs = 0.f;
#pragma omp simd reduction(+ : rs)
      for (int64_t c = 0; c < w; ++c) rs += row[c];
      s += rs;
    }
    mu[t] = s / (h * w);
    mean[t] = static_cast<float>(mu[t]);
  }
  for (int s = 0; s < 9; ++s)
    for (int t = s; t < 9; ++t) {
      const float ms = static_cast<float>(mu[s]), mt = static_cast<float>(mu[t]);
      double sum = 0.0;
      for (int64_t r = 0; r < h; ++r) {
        const float* a = p + (r + s / 3) * wp + s % 3;
        const float* b = p + (r + t / 3) * wp + t % 3;
        float rs = 0.f;
#pragma omp simd reduction(+ : rs)
        for (int64_t c = 0; c < w; ++c) rs += (a[c] - ms) * (b[c] - mt);
        sum += rs;
      }
      // the float mean's rounding, corrected: sum((a - ms)(b - mt)) over n = n * (mu - m) products
      const double n = static_cast<double>(h * w);
      sum -= n * (mu[s] - ms) * (mu[t] - mt);
      cov[s * 9 + t] = cov[t * 9 + s] = static_cast<float>(sum / n);
    }
}

// The kernel gradient of a 'same' 3x3 convolution for one example, (h, w, CI) x (h, w, CO)
// -> dk (3, 3, CI, CO) = sum over positions of x(shifted by the tap) outer g. XLA's
// backward-filter convolution runs at a third of its forward speed on CPU; this is a
// register-blocked outer-product loop: CB input channels x CO outputs stay in registers
// along one row of positions, each row's share goes into a double total.
template <int CI, int CO>
TJ_CLONES void Conv3x3FilterGrad(const float* x, const float* g, int64_t h, int64_t w, float* dk) {
  constexpr int CB = 8;
  static_assert(CI % CB == 0, "input channels in blocks of CB");
  std::vector<double> total(9 * CI * CO, 0.0);
  for (int64_t r = 0; r < h; ++r) {
    const float* grow = g + r * w * CO;
    for (int i = 0; i < 3; ++i) {
      const int64_t xr = r + i - 1;
      if (xr < 0 || xr >= h) continue;
      const float* xrow = x + xr * w * CI;
      for (int j = 0; j < 3; ++j) {
        const int64_t w0 = j == 0 ? 1 : 0, w1 = j == 2 ? w - 1 : w;  // output columns with an in-range tap
        for (int cb = 0; cb < CI; cb += CB) {
          float acc[CB][CO] = {};
          for (int64_t col = w0; col < w1; ++col) {
            const float* gv = grow + col * CO;
            const float* xv = xrow + (col + j - 1) * CI + cb;
            for (int a = 0; a < CB; ++a)
              for (int c = 0; c < CO; ++c) acc[a][c] += xv[a] * gv[c];
          }
          double* t = total.data() + ((i * 3 + j) * CI + cb) * CO;
          for (int a = 0; a < CB; ++a)
            for (int c = 0; c < CO; ++c) t[a * CO + c] += acc[a][c];
        }
      }
    }
  }
  for (int64_t e = 0; e < 9 * CI * CO; ++e) dk[e] = static_cast<float>(total[e]);
}

// Calls f(std::integral_constant<int, C>) for C = c, one of the compiled channel counts
// (cpu_kernels.CHANNELS; callers check `c` with SupportedChannels first).
bool SupportedChannels(int64_t c) { return c == 16 || c == 32 || c == 64; }

template <typename F>
void WithChannels(int64_t c, F&& f) {
  switch (c) {
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    default: f(std::integral_constant<int, 64>{});
  }
}

bool AllFinite(const float* xs, int64_t n) {
  int bad = 0;  // an OR reduction, vectorised
  for (int64_t i = 0; i < n; ++i) bad |= !(std::fabs(xs[i]) <= std::numeric_limits<float>::max());
  return !bad;
}

// x (h, w) zero-padded by one into a per-thread buffer.
const float* Padded(const float* xs, int64_t h, int64_t w) {
  thread_local std::vector<float> pad;
  pad.assign((h + 2) * (w + 2), 0.f);
  for (int64_t r = 0; r < h; ++r) std::copy(xs + r * w, xs + (r + 1) * w, pad.data() + (r + 1) * (w + 2) + 1);
  return pad.data();
}

// A second thread for one extraction call whose caller has a core to spare (a batch of
// one on a two-core machine runs on one JAX device, `inference.kernel_threads`); calls of
// larger batches keep every core busy with examples of their own and run on one thread.
// TRANSFER_JAX_KERNEL_THREADS=1 keeps every call on one thread.
class Helper {
 public:
  // f(0, 2) on this thread and f(1, 2) on the helper when `split` and the helper is free;
  // f(0, 1) alone otherwise. Returns when all of it is done.
  static void Run(const std::function<void(int, int)>& f, bool split) {
    static const bool allowed = [] {
      const char* v = std::getenv("TRANSFER_JAX_KERNEL_THREADS");
      return !(v && std::atoi(v) == 1) && std::thread::hardware_concurrency() > 1;
    }();
    if (!split || !allowed) return f(0, 1);
    Helper* h = Get();
    std::unique_lock<std::mutex> busy(h->busy_, std::try_to_lock);  // one call at a time uses it
    if (!busy.owns_lock()) return f(0, 1);
    h->job_.store(&f, std::memory_order_release);
    { std::lock_guard<std::mutex> lock(h->m_); }  // a helper between its check and its wait gets the notice
    h->cv_.notify_one();
    f(0, 2);
    for (int64_t i = 0; h->job_.load(std::memory_order_acquire) != nullptr; ++i)  // cleared when done
      i < (1 << 16) ? Pause() : std::this_thread::yield();
  }

 private:
  static void Pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  static Helper* Get() {  // one a process, started again in a forked child
    static std::atomic<Helper*> helper{nullptr};
    static std::atomic<pid_t> owner{0};
    static std::mutex start;
    if (owner.load() != getpid()) {
      std::lock_guard<std::mutex> lock(start);
      if (owner.load() != getpid()) {
        helper.store(new Helper());  // a parent's is not running here; left as it is
        owner.store(getpid());
      }
    }
    return helper.load();
  }
  Helper() { std::thread([this] { Loop(); }).detach(); }
  void Loop() {
    for (;;) {
      // the next block's call comes within a fraction of a millisecond at batch 1: wait
      // for it awake for 0.2 ms, then asleep
      const std::function<void(int, int)>* f = nullptr;
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      for (int i = 0; !(f = job_.load(std::memory_order_acquire)); ++i) {
        Pause();
        if (i % 64 == 0 && std::chrono::steady_clock::now() > until) break;
      }
      if (!f) {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return (f = job_.load(std::memory_order_acquire)) != nullptr; });
      }
      (*f)(1, 2);
      job_.store(nullptr, std::memory_order_release);
    }
  }
  std::mutex m_, busy_;
  std::condition_variable cv_;
  std::atomic<const std::function<void(int, int)>*> job_{nullptr};
};

// One block of the extraction for one example: x (h, w, c_in) -> the pooled block output
// (h / ph, w / pw, C) and its mean (C,); c_in 1 (block 1) or C (blocks 2-5). mean: the
// conv output's (without bias); var: its variance, or with var_given 0 the map's own.
// With threads 2, split by window rows over this thread and the `Helper`.
ffi::Error ConvBlockImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel, ffi::Buffer<ffi::F32> mean,
                         ffi::Buffer<ffi::F32> var, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> bias,
                         ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> feature, int64_t ph,
                         int64_t pw, int64_t var_given, float eps, int64_t threads) {
  const auto xd = x.dimensions();
  if (xd.size() != 3) return ffi::Error::InvalidArgument("conv_block: x must be (h, w, c_in)");
  const int64_t h = xd[0], w = xd[1], ci = xd[2], C = mean.element_count();
  if (kernel.element_count() != 9 * ci * C)
    return ffi::Error::InvalidArgument("conv_block: kernel must be (3, 3, c_in, channels)");
  if (var.element_count() != C || scale.element_count() != C || bias.element_count() != C)
    return ffi::Error::InvalidArgument("conv_block: var, scale and bias must hold one value a channel");
  if (ph < 1 || pw < 1 || h < ph || w < pw)
    return ffi::Error::InvalidArgument("conv_block: the pool window does not fit the input");
  if (!SupportedChannels(C) || (ci != 1 && ci != C))  // cpu_kernels.CHANNELS; XLA's path serves the others
    return ffi::Error::InvalidArgument("conv_block: channels must be 16, 32 or 64, from 1 or as many");
  const float* xs = x.typed_data();
  const float *k = kernel.typed_data(), *m = mean.typed_data();
  float *hp = out->typed_data(), *fp = feature->typed_data();
  const int64_t ho = h / ph, n = ho * (w / pw);
  if (!AllFinite(xs, h * w * ci)) {  // max and min below would skip NaNs; XLA's propagate them
    std::fill(hp, hp + n * C, std::numeric_limits<float>::quiet_NaN());
    std::fill(fp, fp + C, std::numeric_limits<float>::quiet_NaN());
    return ffi::Error::Success();
  }
  const bool split = threads >= 2 && ho >= 2;
  thread_local std::vector<float> lo_buffer;  // this thread's; the helper writes into it too
  lo_buffer.resize(n * C);
  float* lo = lo_buffer.data();
  const float* pad = ci == 1 ? Padded(xs, h, w) : nullptr;
  const bool want_var = var_given == 0;
  double sumsq[2][64] = {}, total[2][64] = {};
  float v[64];
  thread_local std::vector<float> u_buffer;  // blocks 2-5: the kernel's Winograd transform
  WithChannels(C, [&](auto c) {
    const float* u = nullptr;
    if (ci != 1) {
      u_buffer.resize(16 * C * C);
      WinogradKernel<c()>(k, u_buffer.data());
      u = u_buffer.data();
    }
    Helper::Run([&](int part, int parts) {  // window rows [ho * part / parts, ho * (part + 1) / parts)
      const int64_t ro0 = ho * part / parts, ro1 = ho * (part + 1) / parts;
      const bool last = part == parts - 1;
      if (ci == 1)
        Block1<c()>(pad, h, w, k, m, ph, pw, want_var, ro0, ro1, last, hp, lo, sumsq[part]);
      else
        ConvPoolStatsFor<c()>(xs, h, w, u, m, ph, pw, want_var, ro0 * ph, last ? h : ro1 * ph, hp, lo, sumsq[part]);
    }, split);
    for (int j = 0; j < c(); ++j)  // biased, as BatchNorm's
      v[j] = want_var ? static_cast<float>((sumsq[0][j] + sumsq[1][j]) / (h * w)) : var.typed_data()[j];
    Helper::Run([&](int part, int parts) {
      const int64_t i0 = n * part / parts, i1 = n * (part + 1) / parts;
      Epilogue<c()>(hp + i0 * c(), lo + i0 * c(), i1 - i0, v, scale.typed_data(), bias.typed_data(), eps,
                    total[part]);
    }, split);
    for (int j = 0; j < c(); ++j) fp[j] = static_cast<float>((total[0][j] + total[1][j]) / n);
  });
  return ffi::Error::Success();
}

// The batched training calls below take x as (n, h, w) and loop over the examples.
ffi::Error Conv1PoolSelectImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                               ffi::Buffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> hi,
                               ffi::ResultBuffer<ffi::F32> lo, ffi::ResultBuffer<ffi::U16> mhi,
                               ffi::ResultBuffer<ffi::U16> mlo, int64_t ph, int64_t pw) {
  const auto xd = x.dimensions();
  if (xd.size() != 3) return ffi::Error::InvalidArgument("conv1_pool_select: x must be (n, h, w)");
  const int64_t n = xd[0], h = xd[1], w = xd[2], C = mean.element_count();
  if (kernel.element_count() != 9 * C)
    return ffi::Error::InvalidArgument("conv1_pool_select: kernel must be (3, 3, 1, channels)");
  if (ph < 1 || pw < 1 || ph * pw > 16 || h < ph || w < pw)
    return ffi::Error::InvalidArgument("conv1_pool_select: the pool window must fit the input and hold <= 16");
  if (!SupportedChannels(C))
    return ffi::Error::InvalidArgument("conv1_pool_select: channels must be 16, 32 or 64");
  const int64_t per_out = (h / ph) * (w / pw) * C;
  for (int64_t e = 0; e < n; ++e) {
    const float* xs = x.typed_data() + e * h * w;
    float *hp = hi->typed_data() + e * per_out, *lp = lo->typed_data() + e * per_out;
    uint16_t *bh = mhi->typed_data() + e * per_out, *bl = mlo->typed_data() + e * per_out;
    if (!AllFinite(xs, h * w)) {  // NaN statistics and no gradient, as XLA's max gives NaN
      std::fill(hp, hp + per_out, std::numeric_limits<float>::quiet_NaN());
      std::fill(lp, lp + per_out, std::numeric_limits<float>::quiet_NaN());
      std::fill(bh, bh + per_out, 0), std::fill(bl, bl + per_out, 0);
      continue;
    }
    const float *p = Padded(xs, h, w), *k = kernel.typed_data(), *m = mean.typed_data();
    WithChannels(C, [&](auto c) { Block1Select<c()>(p, h, w, k, m, ph, pw, hp, lp, bh, bl); });
  }
  return ffi::Error::Success();
}

ffi::Error Conv1PoolSelectGradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U16> mhi,
                                   ffi::Buffer<ffi::U16> mlo, ffi::Buffer<ffi::F32> ghi,
                                   ffi::Buffer<ffi::F32> glo, ffi::Buffer<ffi::F32> centre,
                                   ffi::ResultBuffer<ffi::F32> dk, int64_t ph, int64_t pw) {
  const auto xd = x.dimensions(), md = mhi.dimensions();
  if (xd.size() != 3 || md.size() != 4)
    return ffi::Error::InvalidArgument("conv1_pool_select_grad: x must be (n, h, w), the masks (n, h', w', c)");
  const int64_t n = xd[0], h = xd[1], w = xd[2], C = md[3];
  if (ph < 1 || pw < 1 || ph * pw > 16 || md[0] != n || md[1] != h / ph || md[2] != w / pw)
    return ffi::Error::InvalidArgument("conv1_pool_select_grad: shapes do not match the pool window");
  if (!SupportedChannels(C))
    return ffi::Error::InvalidArgument("conv1_pool_select_grad: channels must be 16, 32 or 64");
  if (centre.element_count() != 9)
    return ffi::Error::InvalidArgument("conv1_pool_select_grad: the centre must hold 9 taps");
  const int64_t per_out = md[1] * md[2] * C;
  for (int64_t e = 0; e < n; ++e) {
    const float* p = Padded(x.typed_data() + e * h * w, h, w);
    const uint16_t *bh = mhi.typed_data() + e * per_out, *bl = mlo.typed_data() + e * per_out;
    const float *gh = ghi.typed_data() + e * per_out, *gl = glo.typed_data() + e * per_out;
    float* out = dk->typed_data() + e * 9 * C;
    const float* ctr = centre.typed_data();
    WithChannels(C, [&](auto c) { Block1SelectGrad<c()>(p, h, w, ph, pw, bh, bl, gh, gl, ctr, out); });
  }
  return ffi::Error::Success();
}

ffi::Error PatchMomentsImpl(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> mean,
                            ffi::ResultBuffer<ffi::F32> cov) {
  const auto xd = x.dimensions();
  if (xd.size() != 3) return ffi::Error::InvalidArgument("patch_moments: x must be (n, h, w)");
  const int64_t n = xd[0], h = xd[1], w = xd[2];
  for (int64_t e = 0; e < n; ++e)
    PatchMoments(Padded(x.typed_data() + e * h * w, h, w), h, w, mean->typed_data() + e * 9,
                 cov->typed_data() + e * 81);
  return ffi::Error::Success();
}

ffi::Error Conv3x3FilterGradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                                 ffi::ResultBuffer<ffi::F32> dk) {
  const auto xd = x.dimensions(), gd = g.dimensions();
  if (xd.size() != 4 || gd.size() != 4 || xd[0] != gd[0] || xd[1] != gd[1] || xd[2] != gd[2])
    return ffi::Error::InvalidArgument("conv3x3_filter_grad: x (n, h, w, ci) and g (n, h, w, co) must match");
  const int64_t n = xd[0], h = xd[1], w = xd[2], ci = xd[3], co = gd[3];
  if (ci != co || !SupportedChannels(ci))
    return ffi::Error::InvalidArgument("conv3x3_filter_grad: channels must be 16, 32 or 64 in and out");
  for (int64_t e = 0; e < n; ++e) {
    const float *xe = x.typed_data() + e * h * w * ci, *ge = g.typed_data() + e * h * w * co;
    float* out = dk->typed_data() + e * 9 * ci * co;
    WithChannels(ci, [&](auto c) { Conv3x3FilterGrad<c(), c()>(xe, ge, h, w, out); });
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvBlock, ConvBlockImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x (h, w, c_in), c_in 1 or C
                                  .Arg<ffi::Buffer<ffi::F32>>()  // kernel (3, 3, c_in, C)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // the conv output's mean (C,)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // its variance (C,), if var_given
                                  .Arg<ffi::Buffer<ffi::F32>>()  // BatchNorm scale (C,)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // BatchNorm bias (C,)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // the block's output (h / ph, w / pw, C)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // its mean (C,)
                                  .Attr<int64_t>("ph")
                                  .Attr<int64_t>("pw")
                                  .Attr<int64_t>("var_given")
                                  .Attr<float>("eps")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1PoolSelect, Conv1PoolSelectImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x (n, h, w)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // kernel (3, 3, 1, C)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // mean (C,)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hi (n, h / ph, w / pw, C)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // lo
                                  .Ret<ffi::Buffer<ffi::U16>>()  // the max's positions, bit a * pw + b
                                  .Ret<ffi::Buffer<ffi::U16>>()  // the min's
                                  .Attr<int64_t>("ph")
                                  .Attr<int64_t>("pw"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1PoolSelectGrad, Conv1PoolSelectGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x (n, h, w)
                                  .Arg<ffi::Buffer<ffi::U16>>()  // the max's positions
                                  .Arg<ffi::Buffer<ffi::U16>>()  // the min's
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d loss / d hi
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d loss / d lo
                                  .Arg<ffi::Buffer<ffi::F32>>()  // the patches' centre (9,)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d loss / d kernel per example (n, 9, C)
                                  .Attr<int64_t>("ph")
                                  .Attr<int64_t>("pw"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(PatchMomentsHandler, PatchMomentsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x (n, h, w)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // mean (n, 9)
                                  .Ret<ffi::Buffer<ffi::F32>>());  // cov (n, 9, 9)

XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv3x3FilterGrad_, Conv3x3FilterGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x (n, h, w, ci)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d loss / d output (n, h, w, co)
                                  .Ret<ffi::Buffer<ffi::F32>>());  // d loss / d kernel per example (n, 3, 3, ci, co)

static PyObject* Handlers(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  const std::pair<const char*, void*> handlers[] = {
      {"conv_block", reinterpret_cast<void*>(ConvBlock)},
      {"conv1_pool_select", reinterpret_cast<void*>(Conv1PoolSelect)},
      {"conv1_pool_select_grad", reinterpret_cast<void*>(Conv1PoolSelectGrad)},
      {"patch_moments", reinterpret_cast<void*>(PatchMomentsHandler)},
      {"conv3x3_filter_grad", reinterpret_cast<void*>(Conv3x3FilterGrad_)}};
  for (const auto& [name, fn] : handlers) {
    PyObject* cap = PyCapsule_New(fn, nullptr, nullptr);
    PyDict_SetItemString(d, name, cap);
    Py_DECREF(cap);
  }
  return d;
}

static PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "XLA FFI handlers by name, as PyCapsules."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_cpu_kernels", nullptr, -1, kMethods};

PyMODINIT_FUNC PyInit__cpu_kernels() { return PyModule_Create(&kModule); }
