// Softmax cross-entropy over logits (N, Vp), of which the first V columns are the
// vocabulary: one thread block per row. The forward keeps each row's max and sum of exp;
// the backward overwrites the logits with their gradient in place.

// rowmax, rowsum (N,): max z and sum exp(z - max) over the vocabulary; nll (N,): -log
// softmax(z)[target], 0 where the target is ignore_index (NaN for a target outside [0, V)).
template <typename T>
__global__ void crossentropy_forward(const T* logits, const i64* targets, T* rowmax, T* rowsum, T* nll, int V, int Vp,
                                     i64 ignore_index) {
    __shared__ T shared[32];
    i64 row = blockIdx.x;
    const T* z = logits + row * Vp;
    T m = -MG_INF;
    for (int c = threadIdx.x; c < V; c += blockDim.x) m = max(m, z[c]);
    m = block_max(m, shared);
    T sum = 0;
    for (int c = threadIdx.x; c < V; c += blockDim.x) sum += exp(z[c] - m);
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) {
        i64 t = targets[row];
        rowmax[row] = m;
        rowsum[row] = sum;
        nll[row] = t == ignore_index ? T(0) : (t < 0 || t >= V) ? T(MG_NAN) : log(sum) - (z[t] - m);
    }
}

// out[0] = sum(nll) / max(1, n_valid), out[1] = max(1, n_valid): one block, a fixed order.
template <typename T>
__global__ void crossentropy_loss(const T* nll, const i64* targets, T* out, i64 N, i64 ignore_index) {
    __shared__ T shared[32];
    T sum = 0, count = 0;
    for (i64 i = threadIdx.x; i < N; i += blockDim.x) {
        sum += nll[i];
        count += targets[i] != ignore_index ? T(1) : T(0);
    }
    sum = block_sum(sum, shared);
    count = block_sum(count, shared);
    if (threadIdx.x == 0) {
        T n = max(count, T(1));
        out[0] = sum / n;
        out[1] = n;
    }
}

// logits (N, Vp) in place -> (softmax - onehot(target)) * dloss / n_valid on the vocabulary
// columns of rows with a target; 0 on padding columns and ignored rows.
template <typename T>
__global__ void crossentropy_backward(T* logits, const T* rowmax, const T* rowsum, const i64* targets,
                                      const T* loss_and_count, T dloss, int V, int Vp, i64 ignore_index) {
    i64 row = blockIdx.x;
    T* z = logits + row * Vp;
    i64 t = targets[row];
    T scale = t == ignore_index ? T(0) : dloss / loss_and_count[1];
    T m = rowmax[row], sum = rowsum[row];
    for (int c = threadIdx.x; c < Vp; c += blockDim.x)
        z[c] = c < V ? (exp(z[c] - m) / sum - (c == t ? T(1) : T(0))) * scale : T(0);
}
