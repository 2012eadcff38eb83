// Block 1 of the tagger on CPU as one XLA FFI call: the 3x3 convolution of a one-channel
// input fused with the max-pool window's max and min and the per-channel sum of squares,
// so the (h, w, channels) conv output never exists in memory (see transfer_jax/cpu_kernels.py).
#include <Python.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TJ_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TJ_CLONES
#endif

// The block for one example: d = conv3x3(x, k) - mean, (h, w, C);
// hi, lo = max, min of d over each (ph, pw) window, (h / ph, w / pw, C);
// sumsq = sum of d^2 over the whole map, (C,), when want_var.
// p: x zero-padded by one, (h + 2, w + 2).
template <int C>
TJ_CLONES void Block1(const float* p, int64_t h, int64_t w, const float* k, const float* mean,
                      int64_t ph, int64_t pw, bool want_var, float* hi, float* lo, float* sumsq) {
  const int64_t wp = w + 2, ho = h / ph, wo = w / pw;
  float kk[9][C], m[C], sq[C];
  for (int t = 0; t < 9; ++t)
    for (int c = 0; c < C; ++c) kk[t][c] = k[t * C + c];
  for (int c = 0; c < C; ++c) m[c] = mean[c], sq[c] = 0.f;

  auto conv = [&](int64_t r, int64_t col, float* d) {
    const float* q = p + r * wp + col;
    for (int c = 0; c < C; ++c) d[c] = -m[c];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        const float v = q[i * wp + j];
        for (int c = 0; c < C; ++c) d[c] += v * kk[i * 3 + j][c];
      }
  };

  for (int64_t ro = 0; ro < ho; ++ro)
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
  if (want_var) {  // the rows and columns outside whole windows count in the variance
    float d[C];
    for (int64_t r = 0; r < h; ++r)
      for (int64_t col = (r < ho * ph ? wo * pw : 0); col < w; ++col) {
        conv(r, col, d);
        for (int c = 0; c < C; ++c) sq[c] += d[c] * d[c];
      }
  }
  for (int c = 0; c < C; ++c) sumsq[c] = want_var ? sq[c] : 0.f;
}

ffi::Error Conv1PoolStatsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                              ffi::Buffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> hi,
                              ffi::ResultBuffer<ffi::F32> lo, ffi::ResultBuffer<ffi::F32> sumsq,
                              int64_t ph, int64_t pw, int64_t want_var) {
  const auto xd = x.dimensions();
  if (xd.size() != 2) return ffi::Error::InvalidArgument("conv1_pool_stats: x must be (h, w)");
  const int64_t h = xd[0], w = xd[1], C = mean.element_count();
  if (kernel.element_count() != 9 * C)
    return ffi::Error::InvalidArgument("conv1_pool_stats: kernel must be (3, 3, 1, channels)");
  if (ph < 1 || pw < 1 || h < ph || w < pw)
    return ffi::Error::InvalidArgument("conv1_pool_stats: the pool window does not fit the input");
  if (C != 16 && C != 32 && C != 64)  // cpu_kernels.CHANNELS; XLA's path serves the others
    return ffi::Error::InvalidArgument("conv1_pool_stats: channels must be 16, 32 or 64");
  const float* xs = x.typed_data();
  const float *k = kernel.typed_data(), *m = mean.typed_data();
  float *hp = hi->typed_data(), *lp = lo->typed_data(), *sp = sumsq->typed_data();
  int bad = 0;  // a NaN or an infinity anywhere (an OR reduction, vectorised)
  for (int64_t i = 0; i < h * w; ++i) bad |= !(std::fabs(xs[i]) <= std::numeric_limits<float>::max());
  if (bad) {  // max and min below would skip NaNs; XLA's propagate them
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::fill(hp, hp + hi->element_count(), nan);
    std::fill(lp, lp + lo->element_count(), nan);
    std::fill(sp, sp + sumsq->element_count(), nan);
    return ffi::Error::Success();
  }
  thread_local std::vector<float> pad;
  pad.assign((h + 2) * (w + 2), 0.f);
  for (int64_t r = 0; r < h; ++r) std::copy(xs + r * w, xs + (r + 1) * w, pad.data() + (r + 1) * (w + 2) + 1);
  const bool v = want_var != 0;
  switch (C) {
    case 16: Block1<16>(pad.data(), h, w, k, m, ph, pw, v, hp, lp, sp); break;
    case 32: Block1<32>(pad.data(), h, w, k, m, ph, pw, v, hp, lp, sp); break;
    default: Block1<64>(pad.data(), h, w, k, m, ph, pw, v, hp, lp, sp);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(Conv1PoolStats, Conv1PoolStatsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x (h, w)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // kernel (3, 3, 1, C)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // mean (C,)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hi (h / ph, w / pw, C)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // lo
                                  .Ret<ffi::Buffer<ffi::F32>>()  // sumsq (C,)
                                  .Attr<int64_t>("ph")
                                  .Attr<int64_t>("pw")
                                  .Attr<int64_t>("want_var"));

static PyObject* Handlers(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  PyObject* cap = PyCapsule_New(reinterpret_cast<void*>(Conv1PoolStats), nullptr, nullptr);
  PyDict_SetItemString(d, "conv1_pool_stats", cap);
  Py_DECREF(cap);
  return d;
}

static PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "XLA FFI handlers by name, as PyCapsules."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_cpu_kernels", nullptr, -1, kMethods};

PyMODINIT_FUNC PyInit__cpu_kernels() { return PyModule_Create(&kModule); }
