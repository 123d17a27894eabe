// The optimizer's kernels: the global gradient norm and clipping, and AdamW, over the flat
// parameter and gradient buffers.

#define NORM_BLOCKS 1024

// partial (NORM_BLOCKS,) = this block's sum of g^2, in double; a grid-stride loop over the
// fixed grid, so the sums never depend on the device
template <typename T> __global__ void sum_squares(const T* g, double* partial, i64 n) {
    __shared__ double shared[32];
    double sum = 0;
    for (i64 i = thread_index(); i < n; i += (i64)gridDim.x * blockDim.x) {
        double v = g[i];
        sum += v * v;
    }
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// norm_scale[0] = ||g||, norm_scale[1] = max_norm / (||g|| + 1e-6) if ||g|| > max_norm > 0,
// else 1 (also for a NaN norm). One block.
template <typename T> __global__ void clip_scale(const double* partial, T* norm_scale, double max_norm) {
    __shared__ double shared[32];
    double sum = 0;
    for (int i = threadIdx.x; i < NORM_BLOCKS; i += blockDim.x) sum += partial[i];
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) {
        double norm = sqrt(sum);
        norm_scale[0] = (T)norm;
        norm_scale[1] = (T)(max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0);
    }
}

template <typename T> __global__ void scale_by(T* g, const T* norm_scale, i64 n) {
    i64 i = thread_index();
    if (i < n) g[i] *= norm_scale[1];
}

// One AdamW step on element i (minigrad/optim.py adamw_update, in its order of operations).
// decay_bounds: the sorted starts and stops of the weight-decayed ranges; i decays when an
// odd number of them are <= i. The scalars come from the host in T: decay = 1 - lr wd,
// bias1 = 1 - beta1^t, bias2 = 1 - beta2^t.
template <typename T>
__global__ void adamw_update(T* p, const T* g, T* m, T* v, const i64* decay_bounds, int n_bounds, i64 n, T lr,
                             T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T decay, T bias1,
                             T bias2) {
    i64 i = thread_index();
    if (i >= n) return;
    int lo = 0, hi = n_bounds;
    while (lo < hi) {                                  // bounds <= i
        int mid = (lo + hi) / 2;
        if (decay_bounds[mid] <= i) lo = mid + 1; else hi = mid;
    }
    T param = (lo & 1) ? p[i] * decay : p[i];
    T grad = g[i];
    T mi = m[i] * beta1 + one_minus_beta1 * grad;
    T vi = v[i] * beta2 + one_minus_beta2 * grad * grad;
    m[i] = mi;
    v[i] = vi;
    p[i] = param - lr * (mi / bias1) / (sqrt(vi / bias2) + eps);
}
