// LayerNorm over rows of C, one thread block per row (forward) or per group of rows
// (backward). Each thread holds at most LN_COLS columns of a row in registers, at
// c = threadIdx.x + j * blockDim.x, so C <= LN_COLS * blockDim.x.

#define LN_COLS 8

// One row: xhat = (x - mean) * rstd, out = xhat * w + b (mean, then the variance about it).
template <typename T>
__device__ void layernorm_row(const T* x, const T* w, const T* b, T* out, T* xhat, T* rstd, int C, T eps,
                              T* shared) {
    T v[LN_COLS];
    T sum = 0;
    for (int j = 0; j < LN_COLS; j++) {
        int c = threadIdx.x + j * blockDim.x;
        v[j] = c < C ? x[c] : T(0);
        sum += v[j];
    }
    T mean = block_sum(sum, shared) / T(C);
    T squares = 0;
    for (int j = 0; j < LN_COLS; j++) {
        int c = threadIdx.x + j * blockDim.x;
        if (c < C) squares += (v[j] - mean) * (v[j] - mean);
    }
    T r = T(1) / sqrt(block_sum(squares, shared) / T(C) + eps);
    for (int j = 0; j < LN_COLS; j++) {
        int c = threadIdx.x + j * blockDim.x;
        if (c < C) {
            T h = (v[j] - mean) * r;
            xhat[c] = h;
            out[c] = h * w[c] + b[c];
        }
    }
    if (threadIdx.x == 0) *rstd = r;
}

// x, out, xhat (N, C); rstd (N,)
template <typename T>
__global__ void layernorm_forward(const T* x, const T* w, const T* b, T* out, T* xhat, T* rstd, int C, T eps) {
    __shared__ T shared[32];
    i64 row = blockIdx.x, offset = row * C;
    layernorm_row(x + offset, w, b, out + offset, xhat + offset, rstd + row, C, eps, shared);
}

// s = x + a (the residual add), then out = layernorm(s); s is written for the next block
template <typename T>
__global__ void residual_layernorm_forward(const T* x, const T* a, T* s, const T* w, const T* b, T* out, T* xhat,
                                           T* rstd, int C, T eps) {
    __shared__ T shared[32];
    i64 row = blockIdx.x, offset = row * C;
    for (int j = 0; j < LN_COLS; j++) {        // each thread reads back only what it wrote
        int c = threadIdx.x + j * blockDim.x;
        if (c < C) s[offset + c] = x[offset + c] + a[offset + c];
    }
    layernorm_row(s + offset, w, b, out + offset, xhat + offset, rstd + row, C, eps, shared);
}

// dx = rstd (g - avg(g) - xhat avg(g xhat)), g = dout * w, for rows [blockIdx.x * rows_per_block, ...);
// partial (gridDim.x, 2, C): this block's column sums of dout * xhat (dweight) and dout (dbias).
template <typename T>
__global__ void layernorm_backward(const T* dout, const T* xhat, const T* rstd, const T* w, T* dx, T* partial,
                                   int N, int C, int rows_per_block) {
    __shared__ T shared[32];
    T wv[LN_COLS], dw[LN_COLS], db[LN_COLS];
    for (int j = 0; j < LN_COLS; j++) {
        int c = threadIdx.x + j * blockDim.x;
        wv[j] = c < C ? w[c] : T(0);
        dw[j] = db[j] = T(0);
    }
    int first = blockIdx.x * rows_per_block, last = min(first + rows_per_block, N);
    for (int row = first; row < last; row++) {
        i64 offset = (i64)row * C;
        T d[LN_COLS], h[LN_COLS];
        T sum_g = 0, sum_gx = 0;
        for (int j = 0; j < LN_COLS; j++) {
            int c = threadIdx.x + j * blockDim.x;
            d[j] = c < C ? dout[offset + c] : T(0);
            h[j] = c < C ? xhat[offset + c] : T(0);
            T g = d[j] * wv[j];
            sum_g += g;
            sum_gx += g * h[j];
            dw[j] += d[j] * h[j];
            db[j] += d[j];
        }
        T avg_g = block_sum(sum_g, shared) / T(C);
        T avg_gx = block_sum(sum_gx, shared) / T(C);
        T r = rstd[row];
        for (int j = 0; j < LN_COLS; j++) {
            int c = threadIdx.x + j * blockDim.x;
            if (c < C) dx[offset + c] = r * (d[j] * wv[j] - avg_g - h[j] * avg_gx);
        }
    }
    for (int j = 0; j < LN_COLS; j++) {
        int c = threadIdx.x + j * blockDim.x;
        if (c < C) {
            partial[(2 * (i64)blockIdx.x) * C + c] = dw[j];
            partial[(2 * (i64)blockIdx.x + 1) * C + c] = db[j];
        }
    }
}

// dweight += sum over blocks of partial[:, 0], dbias += of partial[:, 1], in block order
template <typename T>
__global__ void layernorm_param_grads(const T* partial, T* dweight, T* dbias, int n_blocks, int C) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= 2 * C) return;
    int which = i / C, c = i % C;
    T sum = 0;
    for (int k = 0; k < n_blocks; k++) sum += partial[(2 * (i64)k + which) * C + c];
    (which == 0 ? dweight : dbias)[c] += sum;
}
