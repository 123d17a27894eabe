// Token + position embedding. The backward is deterministic, with no atomics: the token
// ids are sorted once (keys = id * BT + position, cupy.sort), and the first position of
// each run of equal ids sums that run's rows in position order.

// out (B, T, C) = wte[idx] + wpe[t]
template <typename T>
__global__ void embedding_forward(const i64* idx, const T* wte, const T* wpe, T* out, i64 BT, int Tn, int C) {
    i64 i = thread_index();
    if (i >= BT * C) return;
    i64 bt = i / C;
    int c = i % C, t = bt % Tn;
    out[i] = wte[idx[bt] * C + c] + wpe[(i64)t * C + c];
}

// keys (BT,) = idx * BT + position: sorted, they list each token's positions in order
extern "C" __global__ void embedding_sort_keys(const i64* idx, i64* keys, i64 BT) {
    i64 i = thread_index();
    if (i < BT) keys[i] = idx[i] * BT + i;
}

// Block i handles sorted position i if it starts a run of one token: dwte[token] += the
// run's dout rows, summed in position order.
template <typename T>
__global__ void embedding_backward_wte(const i64* sorted_keys, const T* dout, T* dwte, i64 BT, int C) {
    i64 i = blockIdx.x;
    i64 token = sorted_keys[i] / BT;
    if (i > 0 && sorted_keys[i - 1] / BT == token) return;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        T sum = 0;
        for (i64 j = i; j < BT && sorted_keys[j] / BT == token; j++) sum += dout[(sorted_keys[j] % BT) * C + c];
        dwte[token * C + c] += sum;
    }
}

// dwpe[t] += sum_b dout[b, t]
template <typename T>
__global__ void embedding_backward_wpe(const T* dout, T* dwpe, int B, int Tn, int C) {
    i64 i = thread_index();
    if (i >= (i64)Tn * C) return;
    T sum = 0;
    for (int b = 0; b < B; b++) sum += dout[(i64)b * Tn * C + i];
    dwpe[i] += sum;
}
