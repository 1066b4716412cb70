// Host side of the GPU DTW (declared in dtw_host.h): token tables, band preparation and chunked
// launches, and the kernel's schedule run on the host (the emulate=True test hook).
#include "dtw_host.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dtw_diagonals.h"

namespace tokalign {
namespace cuda {

using tokalign::band_weight;  // the CPU TokenTable's weights (tokalign/dtw_band.h)
using tokalign::kBpeMarker;
using tokalign::kSpMarker;

DtwTable::DtwTable(std::vector<uint32_t> raw, std::vector<int64_t> raw_off, const std::vector<int64_t>* weights)
    : raw_(std::move(raw)), raw_off_(std::move(raw_off)) {
    str_off_.push_back(0);
    for (size_t k = 0; k + 1 < raw_off_.size(); ++k) {
        const int64_t at = raw_off_[k], len = raw_off_[k + 1] - at;
        for (int64_t c = at; c < at + len; ++c)
            if (raw_[size_t(c)] != kSpMarker && raw_[size_t(c)] != kBpeMarker) str_.push_back(raw_[size_t(c)]);
        str_off_.push_back(int64_t(str_.size()));
        weight_.push_back(band_weight(raw_.data() + at, len));
        max_len_ = std::max<int64_t>(max_len_, len);
    }
    if (weights) {
        if (weights->size() != weight_.size())
            throw std::invalid_argument("DtwTable: expected one weight per token (" + std::to_string(weight_.size()) +
                                        "), got " + std::to_string(weights->size()));
        for (size_t k = 0; k < weights->size(); ++k)
            if ((*weights)[k] < 0) throw std::invalid_argument("DtwTable: negative weight at index " + std::to_string(k));
        weight_ = *weights;
    }
}

DtwTable::~DtwTable() {
    if (device_) dtw_table_free(device_);
}

const void* DtwTable::on_device(int device) {
    if (device_ && device_index_ != device) {
        dtw_table_free(device_);
        device_ = nullptr;
    }
    if (!device_) {
        DtwTableHost h{raw_.data(), raw_off_.data(), str_.data(), str_off_.data(), size(), int64_t(raw_.size()),
                       int64_t(str_.size())};
        device_ = dtw_table_upload(h, device);
        device_index_ = device;
    }
    return device_;
}

namespace {

// The kernel's schedule on the host, one diagonal after another (the test hook behind
// dtw_batch(..., emulate=True)): same layout, same wave_cell / wave_traceback code.
void dtw_run_host(const DtwTable& tab_p, const DtwTable& tab_s, const DtwLaunch& L, DtwOutput& out) {
    const TableView tp = tab_p.host_view(), ts = tab_s.host_view();
    std::vector<int32_t> dbuf(3 * size_t(std::max(L.max_n, 1)));
    std::vector<uint8_t> moves(size_t(L.cells_total) + 1);
    for (int32_t k = 0; k < L.count; ++k) {
        const int n = L.n[k], m = L.m[k];
        const int32_t* pid = L.pivot_ids + L.pivot_off[k];
        const int32_t* sid = L.source_ids + L.source_off[k];
        const int32_t* dlo = L.diag_lo + L.diag_off[k];
        const int32_t* dhi = L.diag_hi + L.diag_off[k];
        const int64_t* dcell = L.diag_cell + L.diag_off[k];
        uint8_t* mv = moves.data() + L.cell_base[k];
        WaveRing r(dbuf.data(), dbuf.data() + L.max_n, dbuf.data() + 2 * L.max_n);
        bool needs_cpu = false;
        for (int d = 0; d < n + m - 1; ++d) {
            const int lo = dlo[d], hi = dhi[d];
            uint8_t* mrow = mv + dcell[d] - lo;
            for (int i = lo; i < hi; ++i)
                if (!wave_cell(i, d, r.lo1, r.hi1, r.lo2, r.hi2, r.p1, r.p2, tp, pid, ts, sid, L.tie, r.cur, mrow))
                    needs_cpu = true;
            r.advance(lo, hi);
        }
        if (needs_cpu) {
            out.status[k] = kDtwNeedsCpu;
            out.path_len[k] = 0;
            continue;
        }
        out.cost[k] = r.p1[n - 1];
        out.status[k] = wave_traceback(n, m, dlo, dhi, dcell, mv, L.full[k] != 0, out.path + 2 * L.path_off[k],
                                       &out.path_len[k]);
    }
}

}  // namespace

std::vector<PairState> dtw_batch(DtwTable& tp, const std::vector<std::vector<int32_t>>& P, DtwTable& ts,
                                 const std::vector<std::vector<int32_t>>& S, int tie, int64_t band, int device,
                                 int64_t max_cells, bool emulate, DtwStats& stats) {
    const size_t count = P.size();
    std::vector<PairState> st(count);
    const int64_t max_cost = std::max<int64_t>(std::max<int64_t>(tp.max_len(), ts.max_len()), 1);
    std::vector<size_t> pending;
    for (size_t k = 0; k < count; ++k) {
        const int64_t n = int64_t(P[k].size()), m = int64_t(S[k].size());
        for (int32_t id : P[k])
            if (id < 0 || id >= tp.size()) throw std::invalid_argument("dtw: pivot id outside the pivot table");
        for (int32_t id : S[k])
            if (id < 0 || id >= ts.size()) throw std::invalid_argument("dtw: source id outside the source table");
        // Empty pairs, pivots too long for shared memory, costs that might overflow int32: CPU.
        if (n == 0 || m == 0 || n > kDtwMaxPivot || (n + m) * max_cost >= int64_t(kDtwInf32) / 2) {
            st[k].status = 2;
            continue;
        }
        if (band >= 0) {
            band_inputs(tp.weights(), P[k], ts.weights(), S[k], band, st[k].pc, st[k].sc, st[k].radius);
        } else {
            st[k].full = true;
        }
        pending.push_back(k);
    }
    const void* dp = pending.empty() || emulate ? nullptr : tp.on_device(device);
    const void* ds = pending.empty() || emulate ? nullptr : ts.on_device(device);
    std::vector<BandRows> bands(count);
    while (!pending.empty()) {
        ++stats.rounds;
        std::vector<size_t> run;
        for (size_t k : pending) {
            const int64_t n = int64_t(P[k].size()), m = int64_t(S[k].size());
            const double total = double(n) * double(m);
            if (!st[k].full) {
                bands[k] = weight_band(st[k].pc, st[k].sc, n, m, st[k].radius);
                if (double(bands[k].band_cells) >= 0.5 * total) st[k].full = true;  // cheaper to do it all
            }
            if (st[k].full) {
                if (total > double(kMaxFullCellsCpu) || int64_t(total) > max_cells) {
                    st[k].status = 2;  // the CPU path raises / handles it
                    continue;
                }
                bands[k] = full_band(n, m);
            }
            if (bands[k].band_cells > max_cells) {
                st[k].status = 2;
                continue;
            }
            run.push_back(k);
        }
        pending.clear();
        // Chunks of at most max_cells move bytes.
        size_t at = 0;
        while (at < run.size()) {
            size_t end = at;
            int64_t cells = 0;
            while (end < run.size() && (end == at || cells + bands[run[end]].band_cells <= max_cells))
                cells += bands[run[end++]].band_cells;
            DtwLaunch L;
            std::vector<int32_t> pid, sid, nn, mm, dlo, dhi;
            std::vector<int64_t> poff, soff, dcell, doff, cbase, poff_path;
            std::vector<uint8_t> full;
            int64_t cell_total = 0, path_total = 0;
            int32_t max_n = 0, max_width = 0;
            for (size_t r = at; r < end; ++r) {
                const size_t k = run[r];
                const int32_t n = int32_t(P[k].size()), m = int32_t(S[k].size());
                poff.push_back(int64_t(pid.size()));
                soff.push_back(int64_t(sid.size()));
                pid.insert(pid.end(), P[k].begin(), P[k].end());
                sid.insert(sid.end(), S[k].begin(), S[k].end());
                nn.push_back(n);
                mm.push_back(m);
                doff.push_back(int64_t(dlo.size()));
                cbase.push_back(cell_total);
                const size_t first = dlo.size();
                cell_total += diagonal_ranges(bands[k], n, m, dlo, dhi, dcell);
                for (size_t e = first; e < dlo.size(); ++e) max_width = std::max(max_width, dhi[e] - dlo[e]);
                full.push_back(st[k].full ? 1 : 0);
                poff_path.push_back(path_total);
                path_total += int64_t(n) + m - 1;
                max_n = std::max(max_n, n);
            }
            L.count = int32_t(end - at);
            L.pivot_ids = pid.data();
            L.source_ids = sid.data();
            L.pivot_off = poff.data();
            L.source_off = soff.data();
            L.n = nn.data();
            L.m = mm.data();
            L.diag_lo = dlo.data();
            L.diag_hi = dhi.data();
            L.diag_cell = dcell.data();
            L.diag_off = doff.data();
            L.cell_base = cbase.data();
            L.full = full.data();
            L.path_off = poff_path.data();
            L.ids_total_p = int64_t(pid.size());
            L.ids_total_s = int64_t(sid.size());
            L.diag_total = int64_t(dlo.size());
            L.cells_total = cell_total;
            L.path_total = path_total;
            L.max_n = max_n;
            L.max_width = max_width;
            L.tie = tie;
            std::vector<int32_t> status(size_t(L.count)), cost(size_t(L.count)), plen(size_t(L.count));
            std::vector<int32_t> path(size_t(path_total) * 2);
            DtwOutput out{status.data(), cost.data(), plen.data(), path.data()};
            if (emulate)
                dtw_run_host(tp, ts, L, out);
            else
                stats.kernel_ms += dtw_run(dp, ds, L, out, device);
            ++stats.launches;
            stats.cells += cell_total;
            for (size_t r = at; r < end; ++r) {
                const size_t k = run[r], c = r - at;
                PairState& s = st[k];
                if (status[c] == kDtwOk) {
                    const int32_t len = plen[c];
                    const int32_t* pth = path.data() + 2 * poff_path[c];
                    s.path_p.resize(size_t(len));
                    s.path_s.resize(size_t(len));
                    for (int32_t t = 0; t < len; ++t) {  // stored from the end backwards
                        s.path_p[size_t(t)] = pth[2 * (len - 1 - t)];
                        s.path_s[size_t(t)] = pth[2 * (len - 1 - t) + 1];
                    }
                    s.cost = cost[c];
                    s.band = s.full ? -1 : int64_t(s.radius);
                    s.status = 0;
                } else if (status[c] == kDtwTouched) {
                    s.radius *= 2.0;  // the CPU rule: double the radius and run again
                    ++stats.widened;
                    pending.push_back(k);
                } else {
                    s.status = 2;
                }
            }
            at = end;
        }
    }
    for (const auto& s : st) stats.cpu_pairs += s.status == 2;
    return st;
}

}  // namespace cuda
}  // namespace tokalign
