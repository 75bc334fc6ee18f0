// Time loops of the fused RIM training path (rims/fast_paths/fused.py), in C++.
//
// The same computation, in the same order, as the Python loops of rims.fast_paths.fused, so the Python
// interpreter's cost per operation goes away: a RIM step is some forty small operations, and at
// small batch sizes that cost is a large part of the time. Where several ATen calls work on a few
// hundred numbers, one pass over the data replaces them (LSTM/GRU gate backward, the input
// attention with the top-k selection, the communication attention and its backward read straight
// from the rows of the q/k/v product, the input side of the backward step); the matrix products
// stay ATen's. Buffers are allocated and owned by the
// Python caller; these functions only fill them. inference_step is one step without gradients
// (acting).
//
// Shapes: L steps, N batch, U units of width d, G gate width, K input key size, Hc heads of
// communication with key Kc and value Vc.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

using at::Tensor;
using c10::optional;

namespace {

struct Comm {
  int64_t heads;
  int64_t key;
  int64_t value;
  double scale;
};

// Rows of a (U, N, width) tensor whose last dimension is contiguous; an undefined tensor (an
// optional input or output that is absent) gives no rows (data null).
template <typename T>
struct Rows {
  T* data = nullptr;
  int64_t su = 0, sn = 0;
  explicit Rows(const Tensor& x) {
    if (!x.defined()) return;
    TORCH_CHECK(x.dim() == 3 && (x.size(2) == 1 || x.stride(2) == 1), "rims: expected (U, N, w) with contiguous rows");
    data = x.data_ptr<T>(), su = x.stride(0), sn = x.stride(1);
  }
  explicit Rows(const optional<Tensor>& x) : Rows(x.has_value() ? *x : Tensor()) {}
  T* at(int64_t u, int64_t n) const { return data + u * su + n * sn; }
};

// Input side of a step's pre-activations over one row: out = base + a * proj (+ b * null), where
// base (the hidden side, or the input bias) and null (the null value's projection under attention
// dropout) may be absent.
template <typename T>
inline void input_side(T* out, const T* base, T a, const T* proj, T b, const T* null, int64_t width) {
  if (base != nullptr) {
    for (int64_t j = 0; j < width; ++j) out[j] = base[j] + a * proj[j];
  } else {
    for (int64_t j = 0; j < width; ++j) out[j] = a * proj[j];
  }
  if (null != nullptr)
    for (int64_t j = 0; j < width; ++j) out[j] += b * null[j];
}

// LSTM gates backward of one step (the keep-inactive rule included), one pass over the data.
// Writes the gate gradient (i, f, o, g) into g_pre and returns (kept_h or undefined, g_c_prev).
std::tuple<Tensor, Tensor> lstm_gates_backward(const Tensor& g_tilde, const Tensor& g_c, const Tensor& mask,
                                               const Tensor& gates, const Tensor& tanh_c, const Tensor& c_prev,
                                               const Tensor& g_pre) {
  const int64_t u_n = g_tilde.size(0), n_n = g_tilde.size(1), d = g_tilde.size(2);
  const Tensor gt = g_tilde.contiguous(), gc = g_c.contiguous();
  Tensor kept = mask.defined() ? at::empty_like(gt) : Tensor();
  Tensor carry = at::empty_like(gt);
  AT_DISPATCH_FLOATING_TYPES(gt.scalar_type(), "lstm_gates_backward", [&] {
    using T = scalar_t;
    const Rows<T> a(gt), b(gc), gs(gates), tc(tanh_c), cp(c_prev), out(g_pre), cr(carry);
    const bool masked = mask.defined();
    const Rows<T> m(mask);  // no rows when all units are active
    const Rows<T> kp(kept);
    for (int64_t u = 0; u < u_n; ++u) {
      for (int64_t n = 0; n < n_n; ++n) {
        const T on = masked ? *m.at(u, n) : T(1);
        const T off = T(1) - on;
        const T *gt_r = a.at(u, n), *gc_r = b.at(u, n), *i = gs.at(u, n), *tc_r = tc.at(u, n), *c = cp.at(u, n);
        const T *f = i + d, *o = i + 2 * d, *g = i + 3 * d;
        T *gi = out.at(u, n), *cr_r = cr.at(u, n);
        T *gf = gi + d, *go = gi + 2 * d, *gg = gi + 3 * d;
        T* kp_r = masked ? kp.at(u, n) : nullptr;
        for (int64_t j = 0; j < d; ++j) {
          const T ah = gt_r[j] * on, ac = gc_r[j] * on;
          const T dc = ac + ah * o[j] * (T(1) - tc_r[j] * tc_r[j]);
          gi[j] = dc * g[j] * (i[j] - i[j] * i[j]);
          gf[j] = dc * c[j] * (f[j] - f[j] * f[j]);
          go[j] = ah * tc_r[j] * (o[j] - o[j] * o[j]);
          gg[j] = dc * i[j] * (T(1) - g[j] * g[j]);
          cr_r[j] = dc * f[j] + gc_r[j] * off;
          if (kp_r != nullptr) kp_r[j] = gt_r[j] * off;
        }
      }
    }
  });
  return {kept, carry};
}

// exp for the one-pass gate kernels. float: Cephes' range reduction and degree-6 polynomial,
// branch-free so that the compiler vectorises the loops that call it (with -fno-trapping-math);
// arguments are clamped to [-87, 88], NaN stays NaN. Measured against double exp at 4e7 points
// of [-87, 88]: within 1.02 ulp; sigmoid_gate within 9e-8 and tanh_gate (2 / (1 + e^-2x) - 1,
// so its relative error grows near 0) within 1.8e-7 absolute. double: std::exp and std::tanh.
inline float exp_gate(float v) {
  float x = v > -87.0f ? v : -87.0f;  // NaN goes to -87 here (defined integer conversion below) ...
  x = x < 88.0f ? x : 88.0f;
  const float nf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // x / ln 2 to the nearest integer
  const int32_t n = static_cast<int32_t>(nf);
  const float r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;  // x - n ln 2 in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (n + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return v == v ? p * scale : v;  // ... and comes back out as NaN
}
inline double exp_gate(double x) { return std::exp(x); }
template <typename T>
inline T sigmoid_gate(T x) {
  return T(1) / (T(1) + exp_gate(-x));
}
template <typename T>
inline T tanh_gate(T x) {
  return T(2) / (T(1) + exp_gate(T(-2) * x)) - T(1);
}
inline double tanh_gate(double x) { return std::tanh(x); }

// LSTM dynamics of one step, one pass over each (unit, batch) row: pre = gh + w * proj
// (+ w_null * null_proj under attention dropout), i, f, o = sigmoid, g = tanh, c' = f c + i g,
// h' = o tanh(c'); rows of inactive units keep (h, c). Also copies the query columns of hq.
// hq (U, N, 4d + K) = h W_h + b with gh its first 4d columns; w, w_null and mask_b (U, N, 1)
// (mask_b bool, undefined when all units are active); proj_t (U, N, 4d); null_proj (U, 1, 4d);
// h, c (U, N, d). Writes gates (U, N, 4d: sigmoid(i, f, o), tanh(g)), c_next, tanh_c (tanh(c')
// for every row), tilde (U, N, d) and, when defined, query (U, N, K). All with contiguous rows.
void lstm_forward(const Tensor& hq, const Tensor& w, const Tensor& w_null, const optional<Tensor>& null_proj,
                  const Tensor& proj_t, const Tensor& mask_b, const Tensor& h, const Tensor& c, const Tensor& gates,
                  const Tensor& c_next, const Tensor& tanh_c, const Tensor& tilde, const Tensor& query) {
  const int64_t u_n = h.size(0), n_n = h.size(1), d = h.size(2), kk = hq.size(2) - 4 * d;
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "lstm_forward", [&] {
    using T = scalar_t;
    const Rows<T> hqr(hq), wr(w), pr(proj_t), hr(h), cr(c), gr(gates), cnr(c_next), tcr(tanh_c), tr(tilde), qr(query);
    const Rows<T> wnr(w_null), npr(null_proj);
    const Rows<bool> mr(mask_b);
    for (int64_t u = 0; u < u_n; ++u) {
      for (int64_t n = 0; n < n_n; ++n) {
        const T* gh = hqr.at(u, n);
        T* g = gr.at(u, n);
        const T* null = npr.data == nullptr ? nullptr : npr.at(u, 0);
        input_side(g, gh, *wr.at(u, n), pr.at(u, n), null == nullptr ? T(0) : *wnr.at(u, n), null, 4 * d);
        for (int64_t j = 0; j < 3 * d; ++j) g[j] = sigmoid_gate(g[j]);
        for (int64_t j = 3 * d; j < 4 * d; ++j) g[j] = tanh_gate(g[j]);
        const T *gi = g, *gf = g + d, *go = g + 2 * d, *gg = g + 3 * d, *c_r = cr.at(u, n), *h_r = hr.at(u, n);
        T *cn = cnr.at(u, n), *tc = tcr.at(u, n), *ti = tr.at(u, n);
        for (int64_t j = 0; j < d; ++j) {
          cn[j] = gf[j] * c_r[j] + gi[j] * gg[j];
          tc[j] = tanh_gate(cn[j]);
          ti[j] = go[j] * tc[j];
        }
        if (mr.data != nullptr && !*mr.at(u, n)) {
          std::copy(c_r, c_r + d, cn);
          std::copy(h_r, h_r + d, ti);
        }
        if (qr.data != nullptr) std::copy(gh + 4 * d, gh + 4 * d + kk, qr.at(u, n));
      }
    }
  });
}

// GRU dynamics of one step, one pass over each (unit, batch) row: gx = x_bias + w * proj
// (+ w_null * null_proj under attention dropout), r, z = sigmoid(gx + gh) on their columns,
// n = tanh(gx_n + r * gh_n), h' = n + z (h - n); rows of inactive units keep h. Also copies the
// query columns of hq. hq (U, N, 3d + K) = h W_h + b with gh its first 3d columns; x_bias
// (U, 1, 3d) or none; other inputs as lstm_forward. Writes gates (U, N, 2d: r, z), hidden_n
// (gh_n), cand (n), tilde (U, N, d) and, when defined, query (U, N, K). All with contiguous rows.
void gru_forward(const Tensor& hq, const Tensor& w, const Tensor& w_null, const optional<Tensor>& null_proj,
                 const optional<Tensor>& x_bias, const Tensor& proj_t, const Tensor& mask_b, const Tensor& h,
                 const Tensor& gates, const Tensor& hidden_n, const Tensor& cand, const Tensor& tilde,
                 const Tensor& query) {
  const int64_t u_n = h.size(0), n_n = h.size(1), d = h.size(2), kk = hq.size(2) - 3 * d;
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "gru_forward", [&] {
    using T = scalar_t;
    const Rows<T> hqr(hq), wr(w), pr(proj_t), hr(h), gr(gates), hnr(hidden_n), cr(cand), tr(tilde), qr(query);
    const Rows<T> wnr(w_null), npr(null_proj), xbr(x_bias);
    const Rows<bool> mr(mask_b);
    std::vector<T> gx(3 * d);
    for (int64_t u = 0; u < u_n; ++u) {
      for (int64_t n = 0; n < n_n; ++n) {
        const T* gh = hqr.at(u, n);
        T* x = gx.data();
        const T* null = npr.data == nullptr ? nullptr : npr.at(u, 0);
        const T* bias = xbr.data == nullptr ? nullptr : xbr.at(u, 0);
        input_side(x, bias, *wr.at(u, n), pr.at(u, n), null == nullptr ? T(0) : *wnr.at(u, n), null, 3 * d);
        T *rz = gr.at(u, n), *hn = hnr.at(u, n), *c = cr.at(u, n), *ti = tr.at(u, n);
        const T* h_r = hr.at(u, n);
        for (int64_t j = 0; j < 2 * d; ++j) rz[j] = sigmoid_gate(x[j] + gh[j]);
        for (int64_t j = 0; j < d; ++j) {
          hn[j] = gh[2 * d + j];
          c[j] = tanh_gate(x[2 * d + j] + rz[j] * hn[j]);
          ti[j] = c[j] + rz[d + j] * (h_r[j] - c[j]);
        }
        if (mr.data != nullptr && !*mr.at(u, n)) std::copy(h_r, h_r + d, ti);
        if (qr.data != nullptr) std::copy(gh + 3 * d, gh + 3 * d + kk, qr.at(u, n));
      }
    }
  });
}

// GRU gates backward of one step; writes the input-side gradient into g_x (r, z, n) and the
// hidden-side one into g_hn (r, z, n * r); returns the gradient on the previous h that does not
// pass through W_hh.
Tensor gru_gates_backward(const Tensor& g_tilde, const Tensor& mask, const Tensor& rz, const Tensor& cand,
                          const Tensor& gh_n, const Tensor& h, const Tensor& g_x, const Tensor& g_h) {
  const int64_t u_n = g_tilde.size(0), n_n = g_tilde.size(1), d = g_tilde.size(2);
  const Tensor gt = g_tilde.contiguous();
  Tensor kept = at::empty_like(gt);
  AT_DISPATCH_FLOATING_TYPES(gt.scalar_type(), "gru_gates_backward", [&] {
    using T = scalar_t;
    const Rows<T> a(gt), gs(rz), nn(cand), ghn(gh_n), hh(h), ox(g_x), oh(g_h), kp(kept);
    const bool masked = mask.defined();
    const Rows<T> m(mask);  // no rows when all units are active
    for (int64_t u = 0; u < u_n; ++u) {
      for (int64_t n = 0; n < n_n; ++n) {
        const T on = masked ? *m.at(u, n) : T(1);
        const T off = T(1) - on;
        const T *gt_r = a.at(u, n), *r = gs.at(u, n), *nv = nn.at(u, n), *gn = ghn.at(u, n), *hp = hh.at(u, n);
        const T* z = r + d;
        T *xr = ox.at(u, n), *hr = oh.at(u, n), *k = kp.at(u, n);
        for (int64_t j = 0; j < d; ++j) {
          const T act = gt_r[j] * on;
          const T dn = (act - act * z[j]) * (T(1) - nv[j] * nv[j]);
          const T gr = dn * gn[j] * (r[j] - r[j] * r[j]);
          const T gz = act * (hp[j] - nv[j]) * (z[j] - z[j] * z[j]);
          xr[j] = gr;
          xr[d + j] = gz;
          xr[2 * d + j] = dn;
          hr[j] = gr;
          hr[d + j] = gz;
          hr[2 * d + j] = dn * r[j];
          k[j] = act * z[j] + gt_r[j] * off;
        }
      }
    }
  });
  return kept;
}

// Input attention of one step, one pass: score = <q, key>, attn = sigmoid(score) and, with k < U,
// the top-k mask by rank = score (+ <q, null_key>) (+ offset: the remedies' noise and balancing
// bias, rims/remedies.py), ties to the lower unit (a stable descending sort's order, NaN first).
// q (U, N, K) and keys_t (N, K) with contiguous rows, offset (U, N, 1) contiguous; writes attn
// (U, N, 1) and, with k < U, mask_b (U, N, 1) bool and, when defined, mask_f (U, N, 1) (1 = active).
void select_units(const Tensor& q, const Tensor& keys_t, const optional<Tensor>& null_key, const optional<Tensor>& offset,
                  int64_t k, const Tensor& attn, const Tensor& mask_f, const Tensor& mask_b) {
  const int64_t u_n = q.size(0), n_n = q.size(1), kk = q.size(2);
  const bool masked = k < u_n;
  TORCH_CHECK(keys_t.stride(1) == 1 && (!null_key.has_value() || null_key->is_contiguous()), "rims: key layout");
  TORCH_CHECK(!offset.has_value() || offset->is_contiguous(), "rims: score offset layout");
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "select_units", [&] {
    using T = scalar_t;
    const Rows<T> qr(q), ar(attn), mf(masked ? mask_f : Tensor());
    const Rows<bool> mb(masked ? mask_b : Tensor());
    const T* key = keys_t.data_ptr<T>();
    const T* null = null_key.has_value() ? null_key->data_ptr<T>() : nullptr;
    const T* off = offset.has_value() ? offset->data_ptr<T>() : nullptr;
    std::vector<T> rank(u_n);
    for (int64_t n = 0; n < n_n; ++n) {
      const T* key_n = key + n * keys_t.stride(0);
      for (int64_t u = 0; u < u_n; ++u) {
        const T* q_un = qr.at(u, n);
        T score = 0, extra = 0;
        for (int64_t j = 0; j < kk; ++j) score += q_un[j] * key_n[j];
        if (null != nullptr)
          for (int64_t j = 0; j < kk; ++j) extra += q_un[j] * null[j];
        *ar.at(u, n) = T(1) / (T(1) + std::exp(-score));
        rank[u] = score + extra;
        if (off != nullptr) rank[u] += off[u * n_n + n];
      }
      if (!masked) continue;
      for (int64_t u = 0; u < u_n; ++u) {
        int64_t ahead = 0;  // units a descending stable sort puts first (NaN above all, as ATen's sort)
        for (int64_t v = 0; v < u_n; ++v) {
          const bool nan_v = std::isnan(rank[v]), nan_u = std::isnan(rank[u]);
          const bool same = rank[v] == rank[u] || (nan_v && nan_u);
          ahead += (nan_v && !nan_u) || rank[v] > rank[u] || (same && v < u);
        }
        const bool on = ahead < k;
        if (mf.data != nullptr) *mf.at(u, n) = on ? T(1) : T(0);
        *mb.at(u, n) = on;
      }
    }
  });
}

// Dot product of two length-n vectors, in eight partial sums so that the compiler vectorises it.
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int64_t l = 0; l < 8; ++l) part[l] += a[j + l] * b[j + l];
  T sum = 0;
  for (; j < n; ++j) sum += a[j] * b[j];
  for (int64_t l = 0; l < 8; ++l) sum += part[l];
  return sum;
}

// y += alpha * x over n elements.
template <typename T>
inline void axpy(T alpha, const T* x, T* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += alpha * x[j];
}

// Communication attention of one step, read straight from the rows of qkv (U, N, Hc*(2Kc+Vc)):
// q, k and v of every head side by side in each (unit, batch) row. Per batch row and head:
// weights (U, U) = softmax(scale * q k^T) into weights (N*Hc, U, U) (row n*Hc + head), and
// read = (weights * keep, when given) v into the head's columns of read (U, N, Hc*Vc).
void attend(const Comm& cm, const Tensor& qkv, const Tensor& weights, const optional<Tensor>& keep,
            const Tensor& read) {
  const int64_t u_n = qkv.size(0), n_n = qkv.size(1);
  TORCH_CHECK(weights.is_contiguous() && (!keep.has_value() || keep->is_contiguous()), "rims: attention layout");
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "attend", [&] {
    using T = scalar_t;
    const Rows<T> xr(qkv), rr(read);
    const T sc = static_cast<T>(cm.scale);
    const int64_t k_at = cm.heads * cm.key, v_at = 2 * cm.heads * cm.key;
    for (int64_t n = 0; n < n_n; ++n) {
      for (int64_t h = 0; h < cm.heads; ++h) {
        const int64_t block = (n * cm.heads + h) * u_n * u_n;
        T* w = weights.data_ptr<T>() + block;
        const T* kp = keep.has_value() ? keep->data_ptr<T>() + block : nullptr;
        for (int64_t i = 0; i < u_n; ++i, w += u_n) {
          const T* q = xr.at(i, n) + h * cm.key;
          T top = -std::numeric_limits<T>::infinity();
          for (int64_t j = 0; j < u_n; ++j) {
            w[j] = sc * dot(q, xr.at(j, n) + k_at + h * cm.key, cm.key);
            top = std::max(top, w[j]);
          }
          T sum = 0;
          for (int64_t j = 0; j < u_n; ++j) sum += (w[j] = std::exp(w[j] - top));
          T* r = rr.at(i, n) + h * cm.value;
          std::fill(r, r + cm.value, T(0));
          for (int64_t j = 0; j < u_n; ++j) {
            w[j] /= sum;
            const T used = kp == nullptr ? w[j] : w[j] * kp[i * u_n + j];
            axpy(used, xr.at(j, n) + v_at + h * cm.value, r, cm.value);
          }
        }
      }
    }
  });
}

// Backward of attend from g_read (U, N, Hc*Vc): the gradients on q, k and v into the rows of g_qkv
// (U, N, Hc*(2Kc+Vc)), in qkv's layout. Per batch row and head, with used = weights * keep:
// g_v = used^T g, g_w = (g v^T) * keep, g_s = scale * w * (g_w - <g_w, w> per row),
// g_q = g_s k, g_k = g_s^T q.
void attend_backward(const Comm& cm, const Tensor& g_read, const Tensor& qkv, const Tensor& weights,
                     const optional<Tensor>& keep, const Tensor& g_qkv) {
  const int64_t u_n = qkv.size(0), n_n = qkv.size(1);
  TORCH_CHECK(weights.is_contiguous() && (!keep.has_value() || keep->is_contiguous()), "rims: attention layout");
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "attend_backward", [&] {
    using T = scalar_t;
    const Rows<T> xr(qkv), gr(g_read), out(g_qkv);
    const T sc = static_cast<T>(cm.scale);
    const int64_t k_at = cm.heads * cm.key, v_at = 2 * cm.heads * cm.key, width = g_qkv.size(2);
    std::vector<T> g_s(u_n * u_n);
    for (int64_t n = 0; n < n_n; ++n) {
      for (int64_t u = 0; u < u_n; ++u) std::fill(out.at(u, n), out.at(u, n) + width, T(0));
      for (int64_t h = 0; h < cm.heads; ++h) {
        const int64_t block = (n * cm.heads + h) * u_n * u_n;
        const T* w = weights.data_ptr<T>() + block;
        const T* kp = keep.has_value() ? keep->data_ptr<T>() + block : nullptr;
        for (int64_t i = 0; i < u_n; ++i) {
          const T* g = gr.at(i, n) + h * cm.value;
          const T* w_i = w + i * u_n;
          T* s_i = g_s.data() + i * u_n;
          T inner = 0;
          for (int64_t j = 0; j < u_n; ++j) {
            const T keep_ij = kp == nullptr ? T(1) : kp[i * u_n + j];
            s_i[j] = dot(g, xr.at(j, n) + v_at + h * cm.value, cm.value) * keep_ij;  // g_w
            inner += s_i[j] * w_i[j];
            axpy(w_i[j] * keep_ij, g, out.at(j, n) + v_at + h * cm.value, cm.value);  // g_v
          }
          for (int64_t j = 0; j < u_n; ++j) s_i[j] = sc * w_i[j] * (s_i[j] - inner);
        }
        for (int64_t i = 0; i < u_n; ++i) {
          const T* q_i = xr.at(i, n) + h * cm.key;
          T* g_q = out.at(i, n) + h * cm.key;
          for (int64_t j = 0; j < u_n; ++j) {
            const T s = g_s[i * u_n + j];
            axpy(s, xr.at(j, n) + k_at + h * cm.key, g_q, cm.key);
            axpy(s, q_i, out.at(j, n) + k_at + h * cm.key, cm.key);
          }
        }
      }
    }
  });
}

// Input side of one backward step without dropout, one pass: g_proj = a * g_x,
// g_score = <g_x, proj> * a (1 - a), g_query = g_score * key, g_key = sum over units of
// g_score * query. g_x, proj_t, g_proj (U, N, G), query_t, g_query (U, N, K) with contiguous
// rows; attn (U, N, 1); keys_t, g_key (N, K) with contiguous rows.
void input_backward(const Tensor& g_x, const Tensor& proj_t, const Tensor& attn, const Tensor& keys_t,
                    const Tensor& query_t, const Tensor& g_proj, const Tensor& g_query, const Tensor& g_key) {
  const int64_t u_n = g_x.size(0), n_n = g_x.size(1), gw = g_x.size(2), kk = query_t.size(2);
  TORCH_CHECK(keys_t.stride(1) == 1 && g_key.stride(1) == 1, "rims: key layout");
  AT_DISPATCH_FLOATING_TYPES(g_x.scalar_type(), "input_backward", [&] {
    using T = scalar_t;
    const Rows<T> gx(g_x), pr(proj_t), ar(attn), qr(query_t), gp(g_proj), gq(g_query);
    const T* key = keys_t.data_ptr<T>();
    T* gk = g_key.data_ptr<T>();
    for (int64_t n = 0; n < n_n; ++n) {
      const T* key_n = key + n * keys_t.stride(0);
      T* gk_n = gk + n * g_key.stride(0);
      for (int64_t j = 0; j < kk; ++j) gk_n[j] = 0;
      for (int64_t u = 0; u < u_n; ++u) {
        const T *g = gx.at(u, n), *p = pr.at(u, n), *q = qr.at(u, n);
        const T a = *ar.at(u, n);
        T *o = gp.at(u, n), *oq = gq.at(u, n);
        T ga = 0;
        for (int64_t j = 0; j < gw; ++j) {
          ga += g[j] * p[j];
          o[j] = g[j] * a;
        }
        const T gs = ga * (a - a * a);
        for (int64_t j = 0; j < kk; ++j) {
          oq[j] = gs * key_n[j];
          gk_n[j] += gs * q[j];
        }
      }
    }
  });
}

Tensor slope(const Tensor& x) { return at::addcmul(x, x, x, -1.0); }  // x - x*x: sigmoid' at output x

// input_backward with input dropout (noise (U, N, 2): the scales of the real and the null input).
void input_backward_dropout(const Tensor& g_x, const Tensor& proj_t, const Tensor& attn, const Tensor& noise,
                            const optional<Tensor>& null_proj, const Tensor& keys_t, const Tensor& query_t,
                            Tensor g_proj, Tensor g_query, Tensor g_key) {
  const Tensor keep_in = noise.narrow(-1, 0, 1), keep_null = noise.narrow(-1, 1, 1);
  at::mul_out(g_proj, g_x, attn * keep_in);
  Tensor g_attn = at::linalg_vecdot(g_x, proj_t).unsqueeze(-1) * keep_in;  // (U, N, 1)
  if (null_proj.has_value()) {
    const Tensor g_total = at::linalg_vecdot(g_x, *null_proj).unsqueeze(-1);
    g_attn = at::addcmul(g_attn, g_total, keep_in - keep_null);
  }
  const Tensor g_score = g_attn * slope(attn);
  at::mul_out(g_query, g_score, keys_t);
  at::sum_out(g_key, g_score * query_t, {0});
}

// The communication update of one step, one pass over each (unit, batch) row: active rows
// (mask_b true, or no mask) take tilde + message (bounded: its tanh), the others keep tilde.
// h_next, tilde, message (U, N, d) with contiguous rows; mask_b (U, N, 1) bool or undefined.
void update_forward(const Tensor& h_next, const Tensor& tilde, const Tensor& message, const Tensor& mask_b,
                    bool bounded) {
  const int64_t u_n = tilde.size(0), n_n = tilde.size(1), d = tilde.size(2);
  AT_DISPATCH_FLOATING_TYPES(tilde.scalar_type(), "update_forward", [&] {
    using T = scalar_t;
    const Rows<T> out(h_next), tr(tilde), mr_(message);
    const Rows<bool> mr(mask_b);
    for (int64_t u = 0; u < u_n; ++u) {
      for (int64_t n = 0; n < n_n; ++n) {
        const T *t_r = tr.at(u, n), *m_r = mr_.at(u, n);
        T* o = out.at(u, n);
        if (mr.data != nullptr && !*mr.at(u, n)) {
          std::copy(t_r, t_r + d, o);
        } else if (bounded) {
          for (int64_t j = 0; j < d; ++j) o[j] = tanh_gate(t_r[j] + m_r[j]);
        } else {
          for (int64_t j = 0; j < d; ++j) o[j] = t_r[j] + m_r[j];
        }
      }
    }
  });
}

// Backward of update_forward, one pass over each row: for active rows g_msg = g_direct =
// g_h (1 - h_next^2) (bounded) or g_h; inactive rows get g_msg = 0 and g_direct = g_h.
// g_h, h_next, g_msg, g_direct (U, N, d) with contiguous rows; mask (U, N, 1) float or undefined.
void update_backward(const Tensor& g_h, const Tensor& h_next, const Tensor& mask, bool bounded, const Tensor& g_msg,
                     const Tensor& g_direct) {
  const int64_t u_n = g_h.size(0), n_n = g_h.size(1), d = g_h.size(2);
  AT_DISPATCH_FLOATING_TYPES(g_h.scalar_type(), "update_backward", [&] {
    using T = scalar_t;
    const Rows<T> gr(g_h), hr(h_next), mr(mask), mo(g_msg), dr(g_direct);
    for (int64_t u = 0; u < u_n; ++u) {
      for (int64_t n = 0; n < n_n; ++n) {
        const T *g = gr.at(u, n), *h = hr.at(u, n);
        T *m_out = mo.at(u, n), *d_out = dr.at(u, n);
        if (mr.data != nullptr && *mr.at(u, n) == T(0)) {
          std::fill(m_out, m_out + d, T(0));
          std::copy(g, g + d, d_out);
        } else if (bounded) {
          for (int64_t j = 0; j < d; ++j) d_out[j] = m_out[j] = g[j] * (T(1) - h[j] * h[j]);
        } else {
          std::copy(g, g + d, m_out);
          std::copy(g, g + d, d_out);
        }
      }
    }
  });
}

}  // namespace

// Forward loop. Buffers as in rims.fast_paths.fused._Buffers (optional ones may be None).
void forward_loop(bool lstm, bool bounded, int64_t k, double dropout, int64_t heads, int64_t key, int64_t value, double scale,
                  const Tensor& proj, const Tensor& keys, const Tensor& w_h, const optional<Tensor>& h_bias,
                  const optional<Tensor>& x_bias, const optional<Tensor>& null_proj, const optional<Tensor>& null_key,
                  const optional<Tensor>& score_offset, const Tensor& w_qkv, const Tensor& w_out, const Tensor& hidden,
                  const Tensor& tilde,
                  const Tensor& query, const Tensor& attn_buf, const optional<Tensor>& mask_buf,
                  const optional<Tensor>& noise_buf, const Tensor& read, const Tensor& qkv_buf,
                  const Tensor& weights_buf, const optional<Tensor>& keep_buf,
                  const optional<Tensor>& cell, const Tensor& gates, const optional<Tensor>& tanh_c_buf,
                  const optional<Tensor>& cand, const optional<Tensor>& hidden_n) {
  const Comm cm{heads, key, value, scale};
  const int64_t seq_len = proj.size(0), n = proj.size(1), u = w_h.size(0), d = w_h.size(1);
  const int64_t key_size = query.size(-1), gate_width = w_h.size(2) - key_size;
  const Tensor active = at::empty({u, n, 1}, proj.options().dtype(at::kBool));  // this step's mask, if any
  for (int64_t t = 0; t < seq_len; ++t) {
    const Tensor h = hidden.select(1, t);
    const Tensor hq = h_bias.has_value() ? at::baddbmm(*h_bias, h, w_h) : at::bmm(h, w_h);  // (U, N, G + K)
    const Tensor q = hq.narrow(-1, gate_width, key_size);
    Tensor attn = attn_buf.select(1, t);
    const Tensor mask = mask_buf.has_value() ? active : Tensor();  // no mask buffer: all units active (k == U)
    const Tensor mask_f = mask_buf.has_value() ? mask_buf->select(1, t) : Tensor();
    const optional<Tensor> offset_t =
        score_offset.has_value() ? optional<Tensor>(score_offset->select(0, t)) : c10::nullopt;  // (U, N, 1)
    select_units(q, keys.select(0, t), null_key, offset_t, k, attn, mask_f, mask);
    const Tensor proj_t = proj.select(0, t).transpose(0, 1);  // (U, N, G)
    // input side: weight * proj_t (+ total * null_proj under dropout), added to gh (LSTM) or the input bias (GRU)
    Tensor weight = attn, total;
    if (noise_buf.has_value()) {
      // same draws as F.dropout on stack([attn, 1 - attn]) in the step-by-step path
      Tensor noise = at::empty({u, n, 1, 2}, proj.options());
      noise.bernoulli_(1.0 - dropout).div_(1.0 - dropout);
      noise = noise.view({u, n, 2});
      noise_buf->select(1, t).copy_(noise);
      weight = attn * noise.narrow(-1, 0, 1);
      if (null_proj.has_value()) total = at::addcmul(weight, at::rsub(attn, 1.0), noise.narrow(-1, 1, 1));
    }
    Tensor h_tilde = tilde.select(1, t);
    if (lstm) {
      lstm_forward(hq, weight, total, total.defined() ? null_proj : c10::nullopt, proj_t, mask, h, cell->select(1, t),
                   gates.select(1, t), cell->select(1, t + 1), tanh_c_buf->select(1, t), h_tilde, query.select(1, t));
    } else {
      gru_forward(hq, weight, total, total.defined() ? null_proj : c10::nullopt, x_bias, proj_t, mask, h,
                  gates.select(1, t), hidden_n->select(1, t), cand->select(1, t), h_tilde, query.select(1, t));
    }
    // communication: q, k, v of every unit in one product, attention in one pass, messages
    Tensor qkv_t = qkv_buf.select(0, t);  // (U, N, Hc*(2Kc+Vc))
    at::bmm_out(qkv_t, h_tilde, w_qkv);
    const optional<Tensor> keep_t = keep_buf.has_value() ? optional<Tensor>(keep_buf->select(0, t)) : c10::nullopt;
    if (keep_t.has_value()) keep_t->bernoulli_(1.0 - dropout).div_(1.0 - dropout);
    const Tensor read_t = read.select(1, t);
    attend(cm, qkv_t, weights_buf.select(0, t), keep_t, read_t);
    const Tensor message = at::bmm(read_t, w_out);
    // active units: h_tilde + message (bounded: its tanh); the others keep h_tilde
    update_forward(hidden.select(1, t + 1), h_tilde, message, mask, bounded);
  }
}

// Backward loop: fills grad_hq, grad_x (GRU; a view of grad_hq for LSTM), grad_qkv, grad_msg,
// grad_proj, grad_keys and returns the gradients on (h0, c0) (c0's undefined for GRU).
std::tuple<Tensor, Tensor> backward_loop(
    bool lstm, bool bounded, int64_t heads, int64_t key, int64_t value, double scale, const Tensor& grad_hidden,
    const optional<Tensor>& grad_c, const Tensor& grad_hq, const Tensor& grad_x, const Tensor& grad_qkv,
    const Tensor& grad_msg, const Tensor& grad_proj, const Tensor& grad_keys, const Tensor& proj, const Tensor& keys,
    const Tensor& w_h, const optional<Tensor>& null_proj, const Tensor& w_qkv, const Tensor& w_out,
    const Tensor& hidden, const Tensor& query, const Tensor& attn_buf, const optional<Tensor>& mask_buf,
    const optional<Tensor>& noise_buf, const Tensor& qkv_buf, const Tensor& weights_buf,
    const optional<Tensor>& keep_buf, const optional<Tensor>& cell, const Tensor& gates,
    const optional<Tensor>& tanh_c_buf, const optional<Tensor>& cand, const optional<Tensor>& hidden_n) {
  const Comm cm{heads, key, value, scale};
  const int64_t seq_len = proj.size(0), d = w_h.size(1);
  const int64_t key_size = query.size(-1), gate_width = w_h.size(2) - key_size;
  const Tensor w_h_t = w_h.transpose(1, 2), w_qkv_t = w_qkv.transpose(1, 2), w_out_t = w_out.transpose(1, 2);
  Tensor carry_h = grad_hidden.select(1, seq_len).clone();
  Tensor carry_c = lstm ? grad_c->clone() : Tensor();
  for (int64_t t = seq_len - 1; t >= 0; --t) {
    const Tensor g_h = t == seq_len - 1 ? carry_h : carry_h + grad_hidden.select(1, t + 1);
    const Tensor mask = mask_buf.has_value() ? mask_buf->select(1, t) : Tensor();
    // gradients on the message and, directly, on h_tilde (bounded: through the tanh for active units)
    const Tensor g_msg = grad_msg.select(1, t), g_direct = at::empty_like(g_h);
    update_backward(g_h, hidden.select(1, t + 1), mask, bounded, g_msg, g_direct);
    const Tensor g_read = at::bmm(g_msg, w_out_t);  // (U, N, Hc*Vc)
    const Tensor g_qkv = grad_qkv.select(1, t);
    const optional<Tensor> keep_t = keep_buf.has_value() ? optional<Tensor>(keep_buf->select(0, t)) : c10::nullopt;
    attend_backward(cm, g_read, qkv_buf.select(0, t), weights_buf.select(0, t), keep_t, g_qkv);
    const Tensor g_tilde = at::baddbmm(g_direct, g_qkv, w_qkv_t);  // (U, N, d)
    const Tensor g_hq = grad_hq.select(1, t), g_x = grad_x.select(1, t);
    Tensor kept_h;
    if (lstm) {
      std::tie(kept_h, carry_c) = lstm_gates_backward(g_tilde, carry_c, mask, gates.select(1, t), tanh_c_buf->select(1, t),
                                                      cell->select(1, t), g_hq.narrow(-1, 0, 4 * d));
    } else {
      kept_h = gru_gates_backward(g_tilde, mask, gates.select(1, t), cand->select(1, t), hidden_n->select(1, t),
                                  hidden.select(1, t), g_x, g_hq.narrow(-1, 0, 3 * d));
    }
    // input side
    const Tensor attn = attn_buf.select(1, t), proj_t = proj.select(0, t).transpose(0, 1);
    Tensor g_proj = grad_proj.select(0, t).transpose(0, 1);
    Tensor g_query = g_hq.narrow(-1, gate_width, key_size);
    if (noise_buf.has_value()) {
      input_backward_dropout(g_x, proj_t, attn, noise_buf->select(1, t), null_proj, keys.select(0, t),
                             query.select(1, t), g_proj, g_query, grad_keys.select(0, t));
    } else {
      input_backward(g_x, proj_t, attn, keys.select(0, t), query.select(1, t), g_proj, g_query, grad_keys.select(0, t));
    }
    carry_h = kept_h.defined() ? at::baddbmm(kept_h, g_hq, w_h_t) : at::bmm(g_hq, w_h_t);
  }
  return {carry_h, carry_c};
}

// One step without gradients (acting): same equations as the step-by-step path of RIMCell,
// from the input projection (N, U*G) and scaled keys (N, K); states (N, U*d). Returns (h, c)
// ((N, U*d) each; c undefined for GRU).
std::tuple<Tensor, Tensor> inference_step(bool lstm, bool bounded, int64_t k, int64_t heads, int64_t key,
                                          int64_t value, double scale, const Tensor& proj, const Tensor& keys, const Tensor& h_in,
                                          const optional<Tensor>& c_in, const Tensor& w_h,
                                          const optional<Tensor>& h_bias, const optional<Tensor>& x_bias,
                                          const optional<Tensor>& null_key, const optional<Tensor>& score_offset,
                                          const Tensor& w_qkv,
                                          const Tensor& w_out) {
  const int64_t u = w_h.size(0), d = w_h.size(1), n = h_in.size(0);
  const int64_t key_size = keys.size(-1), gate_width = w_h.size(2) - key_size;
  const Tensor h = h_in.reshape({n, u, d}).transpose(0, 1).contiguous();  // (U, N, d)
  const Tensor hq = h_bias.has_value() ? at::baddbmm(*h_bias, h, w_h) : at::bmm(h, w_h);
  const Tensor q = hq.narrow(-1, gate_width, key_size);
  const Tensor attn = at::empty({u, n, 1}, proj.options());
  const Tensor mask = k < u ? at::empty({u, n, 1}, proj.options().dtype(at::kBool)) : Tensor();
  select_units(q, keys, null_key, score_offset, k, attn, Tensor(), mask);
  const Tensor proj_t = proj.view({n, u, gate_width}).transpose(0, 1);  // (U, N, G)
  Tensor tilde, c_out;
  if (lstm) {
    const Tensor c = c_in->contiguous().view({n, u, d}).transpose(0, 1);  // (U, N, d) view, rows contiguous
    const Tensor gates = at::empty({u, n, 4 * d}, proj.options()), tanh_c = at::empty({u, n, d}, proj.options());
    const Tensor c_next = at::empty({u, n, d}, proj.options());
    tilde = at::empty({u, n, d}, proj.options());
    lstm_forward(hq, attn, Tensor(), c10::nullopt, proj_t, mask, h, c, gates, c_next, tanh_c, tilde, Tensor());
    c_out = c_next.transpose(0, 1).reshape({n, u * d});
  } else {
    const Tensor rz = at::empty({u, n, 2 * d}, proj.options()), cand = at::empty({u, n, d}, proj.options());
    const Tensor hidden_n = at::empty({u, n, d}, proj.options());
    tilde = at::empty({u, n, d}, proj.options());
    gru_forward(hq, attn, Tensor(), c10::nullopt, x_bias, proj_t, mask, h, rz, hidden_n, cand, tilde, Tensor());
  }
  const Tensor qkv = at::bmm(tilde, w_qkv);  // (U, N, Hc*(2Kc+Vc))
  const Tensor weights = at::empty({n * heads, u, u}, proj.options());
  const Tensor read = at::empty({u, n, heads * value}, proj.options());
  attend(Comm{heads, key, value, scale}, qkv, weights, c10::nullopt, read);
  const Tensor message = at::bmm(read, w_out);
  const Tensor h_out = at::empty_like(tilde);
  update_forward(h_out, tilde, message, mask, bounded);
  return {h_out.transpose(0, 1).reshape({n, u * d}), c_out};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("inference_step", &inference_step, "one RIM step without gradients");
  m.def("forward_loop", &forward_loop, "RIM fused forward time loop");
  m.def("backward_loop", &backward_loop, "RIM fused backward time loop");
}
