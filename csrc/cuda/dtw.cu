// Batched FuseChat token DTW on the GPU: one pair per block, anti-diagonal wavefront.
//
// The host lays out each pair's band (the same rows [lo, hi) as the CPU path: a band around the
// diagonal of cumulative text lengths, or the full matrix) as per-diagonal ranges of pivot
// positions. A block walks the anti-diagonals d = i + j in order; the cells of one diagonal are
// independent, so its threads compute them in parallel (cell cost = Levenshtein of the two token
// strings via levenshtein_small.h, update and tie-break via dtw.h: exactly the CPU arithmetic),
// keeping the D values of the last three diagonals in shared memory and writing one move byte
// per cell. Thread 0 then traces the path back from (n-1, m-1) and, for a band that is not the
// whole matrix, reports whether a path cell had a predecessor outside the band (the CPU rule for
// widening). D values are int32 here; the host only sends pairs whose worst cost fits.
#include "cuda_api.h"
#include "cuda_util.cuh"
#include <algorithm>

#include "dtw_wavefront.h"

namespace tokalign {
namespace cuda {
namespace {

constexpr int kDtwThreads = 128;  // the most threads per block; narrow bands use fewer

struct TableOwner {
    DeviceBuffer<uint32_t> raw, str;
    DeviceBuffer<int64_t> raw_off, str_off;
    int device = 0;
    TableView view() const { return TableView{raw.get(), raw_off.get(), str.get(), str_off.get()}; }
};

struct LaunchDev {
    const int32_t* pivot_ids;
    const int32_t* source_ids;
    const int64_t* pivot_off;
    const int64_t* source_off;
    const int32_t* n;
    const int32_t* m;
    const int32_t* diag_lo;
    const int32_t* diag_hi;
    const int64_t* diag_cell;
    const int64_t* diag_off;
    const int64_t* cell_base;
    const uint8_t* full;
    const int64_t* path_off;
    int32_t max_n;
    int tie;
};

__global__ void __launch_bounds__(kDtwThreads) dtw_kernel(TableView tp, TableView ts, LaunchDev L, uint8_t* moves,
                                                            int32_t* status, int32_t* cost_out, int32_t* path_len,
                                                            int32_t* path) {
    extern __shared__ int32_t dbuf[];  // three diagonals of D values, indexed by pivot position
    __shared__ int needs_cpu;
    const int k = int(blockIdx.x);
    const int n = L.n[k], m = L.m[k];
    const int32_t* pid = L.pivot_ids + L.pivot_off[k];
    const int32_t* sid = L.source_ids + L.source_off[k];
    const int32_t* dlo = L.diag_lo + L.diag_off[k];
    const int32_t* dhi = L.diag_hi + L.diag_off[k];
    const int64_t* dcell = L.diag_cell + L.diag_off[k];
    uint8_t* mv = moves + L.cell_base[k];
    const int tie = L.tie;
    if (threadIdx.x == 0) needs_cpu = 0;
    __syncthreads();

    WaveRing r(dbuf, dbuf + L.max_n, dbuf + 2 * L.max_n);  // diagonals d, d-1, d-2
    const int diagonals = n + m - 1;
    for (int d = 0; d < diagonals; ++d) {
        const int lo = dlo[d], hi = dhi[d];
        uint8_t* mrow = mv + dcell[d] - lo;
        for (int i = lo + int(threadIdx.x); i < hi; i += int(blockDim.x)) {
            if (!wave_cell(i, d, r.lo1, r.hi1, r.lo2, r.hi2, r.p1, r.p2, tp, pid, ts, sid, tie, r.cur, mrow))
                needs_cpu = 1;
        }
        __syncthreads();
        r.advance(lo, hi);
    }
    if (threadIdx.x != 0) return;
    if (needs_cpu) {
        status[k] = kDtwNeedsCpu;
        path_len[k] = 0;
        return;
    }
    cost_out[k] = r.p1[n - 1];  // the last diagonal holds only (n-1, m-1)
    int32_t len = 0;
    const int32_t st = wave_traceback(n, m, dlo, dhi, dcell, mv, L.full[k] != 0, path + 2 * L.path_off[k], &len);
    status[k] = st;
    path_len[k] = len;
}

}  // namespace

void* dtw_table_upload(const DtwTableHost& t, int device) {
    set_device(device);
    TableOwner* owner = new TableOwner();
    try {
        owner->device = device;
        owner->raw.upload(t.raw, size_t(t.raw_total) + 1);
        owner->str.upload(t.str, size_t(t.str_total) + 1);
        owner->raw_off.upload(t.raw_off, size_t(t.size) + 1);
        owner->str_off.upload(t.str_off, size_t(t.size) + 1);
    } catch (...) {
        delete owner;
        throw;
    }
    return owner;
}

void dtw_table_free(void* handle) { delete static_cast<TableOwner*>(handle); }

float dtw_run(const void* pivot_table, const void* source_table, const DtwLaunch& in, DtwOutput& out, int device) {
    if (in.count == 0) return 0.0f;
    if (in.max_n > kDtwMaxPivot) throw std::invalid_argument("dtw_run: pivot sequence longer than the GPU limit");
    set_device(device);
    const TableOwner* tp = static_cast<const TableOwner*>(pivot_table);
    const TableOwner* ts = static_cast<const TableOwner*>(source_table);
    const size_t c = size_t(in.count);
    DeviceBuffer<int32_t> pid, sid, n, m, dlo, dhi, status, cost, plen, path;
    DeviceBuffer<int64_t> poff, soff, dcell, doff, cbase, pathoff;
    DeviceBuffer<uint8_t> full, moves;
    pid.upload(in.pivot_ids, size_t(in.ids_total_p));
    sid.upload(in.source_ids, size_t(in.ids_total_s));
    poff.upload(in.pivot_off, c);
    soff.upload(in.source_off, c);
    n.upload(in.n, c);
    m.upload(in.m, c);
    dlo.upload(in.diag_lo, size_t(in.diag_total));
    dhi.upload(in.diag_hi, size_t(in.diag_total));
    dcell.upload(in.diag_cell, size_t(in.diag_total));
    doff.upload(in.diag_off, c);
    cbase.upload(in.cell_base, c);
    full.upload(in.full, c);
    pathoff.upload(in.path_off, c);
    moves.allocate(size_t(in.cells_total));
    status.allocate(c);
    cost.allocate(c);
    plen.allocate(c);
    path.allocate(size_t(in.path_total) * 2);
    LaunchDev L{pid.get(), sid.get(), poff.get(), soff.get(), n.get(), m.get(), dlo.get(), dhi.get(), dcell.get(),
                doff.get(), cbase.get(), full.get(), pathoff.get(), in.max_n, in.tie};
    const size_t smem = 3 * size_t(in.max_n) * sizeof(int32_t);
    check(cudaFuncSetAttribute(dtw_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "cudaFuncSetAttribute(dtw)");
    EventTimer timer;
    timer.start();
    // A band of ~30 cells per diagonal would leave most of 128 threads idle at every barrier.
    const int threads = std::min(kDtwThreads, std::max(32, (in.max_width + 31) / 32 * 32));
    dtw_kernel<<<in.count, threads, smem>>>(tp->view(), ts->view(), L, moves.get(), status.get(), cost.get(),
                                                plen.get(), path.get());
    check(cudaGetLastError(), "dtw_kernel launch");
    const float ms = timer.stop_ms();
    check(cudaDeviceSynchronize(), "dtw_kernel");
    status.download(out.status, c);
    cost.download(out.cost, c);
    plen.download(out.path_len, c);
    path.download(out.path, size_t(in.path_total) * 2);
    return ms;
}

}  // namespace cuda
}  // namespace tokalign
