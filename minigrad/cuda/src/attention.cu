// Attention's layout kernels and its fused softmax. Heads are (B, H, T, hs) buffers; rows
// are (B, T, width) with head h at columns offset + h * hs. The matmuls are cuBLAS calls
// (minigrad/cuda/gemm.py). One thread per element, or one warp per softmax row.

// Where element i of a (B, T, 3C) qkv buffer belongs: batch b, position t, which of q/k/v,
// head h, channel d; col is its column in the 3C.
struct QkvIndex { int b, t, which, h, d, col; };

__device__ __forceinline__ QkvIndex qkv_index(i64 i, int Tn, int H, int hs) {
    int C = H * hs;
    QkvIndex q;
    q.col = i % (3 * C);
    i64 bt = i / (3 * C);
    q.t = bt % Tn; q.b = bt / Tn;
    q.which = q.col / C; q.h = (q.col % C) / hs; q.d = q.col % hs;
    return q;
}

// qkv (B, T, 3C) + bias -> q (B, H, T, hs), and k, v at positions t0.. of (B, H, L, hs)
// buffers (L = T in training; the KV cache's block_size in generation).
template <typename T>
__global__ void qkv_split(const T* qkv, const T* bias, T* q, T* k, T* v, int B, int Tn, int H, int hs, int L,
                          int t0) {
    i64 i = thread_index();
    if (i >= (i64)B * Tn * 3 * H * hs) return;
    QkvIndex e = qkv_index(i, Tn, H, hs);
    T value = qkv[i] + bias[e.col];
    if (e.which == 0) q[(((i64)e.b * H + e.h) * Tn + e.t) * hs + e.d] = value;
    else (e.which == 1 ? k : v)[(((i64)e.b * H + e.h) * L + t0 + e.t) * hs + e.d] = value;
}

// rows (B, T, C) -> heads (B, H, T, hs)
template <typename T>
__global__ void split_heads(const T* rows, T* heads, int B, int Tn, int H, int hs) {
    i64 i = thread_index();
    if (i >= (i64)B * H * Tn * hs) return;
    int d = i % hs, t = (i / hs) % Tn, h = (i / ((i64)hs * Tn)) % H, b = i / ((i64)hs * Tn * H);
    heads[i] = rows[((i64)b * Tn + t) * H * hs + h * hs + d];
}

// heads (B, H, T, hs) -> rows (B, T, C)
template <typename T>
__global__ void merge_heads(const T* heads, T* rows, int B, int Tn, int H, int hs) {
    i64 i = thread_index();
    if (i >= (i64)B * H * Tn * hs) return;
    int d = i % hs, t = (i / hs) % Tn, h = (i / ((i64)hs * Tn)) % H, b = i / ((i64)hs * Tn * H);
    rows[((i64)b * Tn + t) * H * hs + h * hs + d] = heads[i];
}

// dq, dk, dv (B, H, T, hs) -> dqkv (B, T, 3C), side by side
template <typename T>
__global__ void merge_qkv_heads(const T* dq, const T* dk, const T* dv, T* dqkv, int B, int Tn, int H, int hs) {
    i64 i = thread_index();
    if (i >= (i64)B * Tn * 3 * H * hs) return;
    QkvIndex e = qkv_index(i, Tn, H, hs);
    const T* src = e.which == 0 ? dq : (e.which == 1 ? dk : dv);
    dqkv[i] = src[(((i64)e.b * H + e.h) * Tn + e.t) * hs + e.d];
}

// att (R = B*H*T rows of S scores q.k) in place -> probs = softmax(scale * scores) over the
// keys each query may see: query row r (row r % T of its head) sits at position t0 + r % T
// and sees keys 0 .. t0 + r % T; the rest get probability 0. With use_dropout, dropped =
// probs * mask, the mask at flat index first + r * S + j (minigrad/dropout.py). One warp per row,
// an online max and sum in one pass, then the write.
template <typename T>
__global__ void softmax_forward(T* att, T* dropped, i64 rows, int Tn, int S, int t0, T scale, int use_dropout,
                                u32 seed, u32 second, u32 threshold, T drop_scale, i64 first) {
    i64 row = (i64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;                           // the whole warp: row is the warp's
    int last = t0 + (int)(row % Tn);
    T* a = att + row * S;
    T m = -MG_INF, sum = 0;                          // this lane's running max and sum of exp
    for (int j = lane; j <= last; j += 32) {
        T z = a[j] * scale;
        if (z > m) { sum *= exp(m - z); m = z; }
        sum += z == -MG_INF ? T(0) : exp(z - m);      // exp(-inf - -inf) would be NaN
    }
    for (int offset = 16; offset > 0; offset >>= 1) {  // merge the lanes' (max, sum) pairs
        T m2 = __shfl_xor_sync(FULL_MASK, m, offset), sum2 = __shfl_xor_sync(FULL_MASK, sum, offset);
        T top = max(m, m2);
        sum = (m == -MG_INF ? T(0) : sum * exp(m - top)) + (m2 == -MG_INF ? T(0) : sum2 * exp(m2 - top));
        m = top;
    }
    for (int j = lane; j < S; j += 32) {
        T p = j <= last ? exp(a[j] * scale - m) / sum : T(0);
        a[j] = p;
        if (use_dropout) dropped[row * S + j] = p * dropout_factor(1, seed, second, first + row * S + j, threshold, drop_scale);
    }
}

// dp (R rows of S: d loss / d dropped probs) in place -> d loss / d scores:
// g = dp * mask, ds = probs * (g - sum_j g probs) * scale. One warp per row.
template <typename T>
__global__ void softmax_backward(T* dp, const T* probs, i64 rows, int Tn, int S, int t0, T scale, int use_dropout,
                                 u32 seed, u32 second, u32 threshold, T drop_scale, i64 first) {
    i64 row = (i64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    int last = t0 + (int)(row % Tn);
    T* g = dp + row * S;
    const T* p = probs + row * S;
    T dot = 0;
    for (int j = lane; j <= last; j += 32)
        dot += g[j] * dropout_factor(use_dropout, seed, second, first + row * S + j, threshold, drop_scale) * p[j];
    dot = warp_sum(dot);
    for (int j = lane; j < S; j += 32) {
        T gj = g[j] * dropout_factor(use_dropout, seed, second, first + row * S + j, threshold, drop_scale);
        g[j] = j <= last ? p[j] * (gj - dot) * scale : T(0);
    }
}
