// Elementwise kernels: GELU, the bias add of a linear layer, dropout.
// One thread per element of a flat (n,) buffer.

#define GELU_K 0.7978845608028654      // sqrt(2 / pi)
#define GELU_C 0.044715

// out = 0.5 x (1 + tanh(k (x + c x^3)))
template <typename T> __global__ void gelu_forward(const T* x, T* out, i64 n) {
    i64 i = thread_index();
    if (i >= n) return;
    T v = x[i];
    T t = tanh(T(GELU_K) * (v + T(GELU_C) * v * v * v));
    out[i] = T(0.5) * v * (T(1) + t);
}

// dx = dout * (0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)), t recomputed from x
template <typename T> __global__ void gelu_backward(const T* dout, const T* x, T* dx, i64 n) {
    i64 i = thread_index();
    if (i >= n) return;
    T v = x[i];
    T t = tanh(T(GELU_K) * (v + T(GELU_C) * v * v * v));
    T du = T(GELU_K) * (T(1) + T(3) * T(GELU_C) * v * v);
    dx[i] = dout[i] * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * du);
}

// out (n / width, width) += bias (width,) on every row
template <typename T> __global__ void add_bias(T* out, const T* bias, i64 n, int width) {
    i64 i = thread_index();
    if (i >= n) return;
    out[i] += bias[i % width];
}

// out = x * mask, mask = keep(seed, first + i) ? scale : 0 (first: the batch's flat index of x[0]);
// the same kernel applies it to dout
template <typename T>
__global__ void dropout_apply(const T* x, T* out, i64 n, u32 seed, u32 second, u32 threshold, T scale, i64 first) {
    i64 i = thread_index();
    if (i >= n) return;
    out[i] = x[i] * dropout_factor(1, seed, second, first + i, threshold, scale);
}
