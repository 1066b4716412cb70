// tokalign._cuda: Python bindings of the CUDA kernels plus their host-side preparation.
//
// Takes host data (lists of bytes / str, numpy arrays), prepares flat arrays exactly as the CPU
// core orders things (candidate buckets and tie-break order for MinED; the DTW band of
// csrc/align_dtw.cpp), runs the kernels through cuda_api.h and returns numpy arrays. Nothing here
// links against torch. Every heavy part runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cuda_api.h"
#include "dtw_band.h"
#include "dtw_wavefront.h"
#include "mined_scan.h"
#include "tokalign/levenshtein.h"

namespace py = pybind11;

namespace tokalign {
namespace cuda {
namespace {

using IdArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

std::vector<std::string> to_strings(const py::sequence& seq, const char* what) {
    std::vector<std::string> out;
    out.reserve(size_t(py::len(seq)));
    for (const py::handle& item : seq) {
        if (!py::isinstance<py::bytes>(item)) throw py::type_error(std::string(what) + ": expected a sequence of bytes");
        out.emplace_back(item.cast<std::string>());
    }
    return out;
}

std::vector<uint8_t> to_mask(const py::object& obj, size_t n, const char* what) {
    std::vector<uint8_t> out(n, 1);
    if (obj.is_none()) return out;
    auto a = py::array_t<bool, py::array::c_style | py::array::forcecast>::ensure(obj);
    if (!a || a.ndim() != 1 || size_t(a.shape(0)) != n)
        throw std::invalid_argument(std::string(what) + ": expected a bool array with one entry per text");
    for (size_t i = 0; i < n; ++i) out[i] = a.data()[i] ? 1 : 0;
    return out;
}

// ---- MinED ----------------------------------------------------------------------------------

constexpr int kOwnBits = 48;  // as the CPU index: the 48 most frequent units own a signature bit

// The kernel's scan on the host (the test hook behind mined_search(..., emulate=True)): the same
// buckets, bounds and mined_candidate_key code; a round of 32 candidates is scored against the
// list as it was when the round started and then merged, as the warp does.
MinedTiming mined_search_host(const MinedProblem& p, uint64_t* keys) {
    MinedTiming t;
    std::vector<uint64_t> scratch(2 * size_t((kMinedMaxQueryUnits + 63) / 64));
    std::vector<uint64_t> round(32);
    for (int32_t q = 0; q < p.n_query; ++q) {
        uint64_t* top = keys + size_t(q) * size_t(p.top_n);
        for (int k = 0; k < p.top_n; ++k) top[k] = kEmptyKey;
        const int m = p.query_len[q];
        const uint32_t* sq = p.query_units + p.query_start[q];
        for (int delta = 0;; ++delta) {
            if (m - delta < 0 && m + delta > p.max_len) break;
            const uint64_t worst0 = top[p.top_n - 1];
            if (worst0 != kEmptyKey && mined_pack_key(delta, delta, 0) >= worst0) break;
            for (int side = 0; side < (delta == 0 ? 1 : 2); ++side) {
                const int len = side == 0 ? m - delta : m + delta;
                if (len < 0 || len > p.max_len) continue;
                const int b0 = p.bucket_start[len], b1 = p.bucket_start[len + 1];
                t.filtered += b1 - b0;
                for (int base = b0; base < b1; base += 32) {
                    const uint64_t worst = top[p.top_n - 1];
                    const int end = std::min(b1, base + 32);
                    for (int e = base; e < end; ++e) {
                        bool ev = false;
                        round[size_t(e - base)] = mined_candidate_key(sq, m, p.query_sig[q], p.cand_units + p.cand_start[e], len,
                                                                      p.cand_sig[e], p.cand_ord[e], delta, worst,
                                                                      scratch.data(), &ev);
                        t.evaluated += ev;
                    }
                    for (int e = base; e < end; ++e) mined_insert(top, p.top_n, round[size_t(e - base)]);
                }
            }
        }
    }
    return t;
}

struct MinedResult {
    std::vector<int32_t> ids, dists;
    std::vector<uint8_t> cpu_rows;  // queries the GPU does not take (longer than kMinedMaxQueryUnits)
    MinedTiming timing;
    int64_t exact = 0, candidates = 0, gpu_queries = 0;
};

MinedResult mined(const std::vector<std::string>& pivot, const std::vector<uint8_t>& candidate,
                  const std::vector<int64_t>& rank, const std::vector<std::string>& source,
                  const std::vector<uint8_t>& query, int top_n, int device, bool emulate) {
    const size_t np = pivot.size(), ns = source.size();
    MinedResult r;
    r.ids.assign(ns * size_t(top_n), -1);
    r.dists.assign(ns * size_t(top_n), -1);
    r.cpu_rows.assign(ns, 0);

    // Candidates in (rank, id) order: ord = position; the exact table keeps the first per text.
    std::vector<int32_t> by_rank;
    for (size_t i = 0; i < np; ++i)
        if (candidate[i]) by_rank.push_back(int32_t(i));
    std::stable_sort(by_rank.begin(), by_rank.end(), [&](int32_t a, int32_t b) { return rank[a] < rank[b]; });
    r.candidates = int64_t(by_rank.size());
    if (by_rank.empty()) return r;
    std::unordered_map<std::string, int32_t> exact;
    exact.reserve(by_rank.size() * 2);
    std::vector<std::vector<uint32_t>> units(by_rank.size());
    std::unordered_map<uint32_t, int64_t> freq;
    int max_len = 0;
    for (size_t o = 0; o < by_rank.size(); ++o) {
        const std::string& t = pivot[size_t(by_rank[o])];
        exact.emplace(t, by_rank[o]);
        lev::decode_units(reinterpret_cast<const uint8_t*>(t.data()), t.size(), units[o]);
        for (uint32_t u : units[o]) ++freq[u];
        max_len = std::max(max_len, int(units[o].size()));
    }
    if (max_len >= 65535) throw std::invalid_argument("mined: a pivot token longer than 65534 units (GPU key limit)");
    std::vector<std::pair<int64_t, uint32_t>> order;
    order.reserve(freq.size());
    for (const auto& kv : freq) order.push_back({-kv.second, kv.first});
    std::sort(order.begin(), order.end());
    std::unordered_map<uint32_t, uint64_t> bit;
    bit.reserve(order.size() * 2);
    for (size_t k = 0; k < order.size(); ++k)
        bit[order[k].second] = uint64_t(1) << (k < size_t(kOwnBits) ? k : kOwnBits + (k % (64 - kOwnBits)));
    auto signature = [&](const std::vector<uint32_t>& u) {
        uint64_t s = 0;
        for (uint32_t x : u) {
            auto it = bit.find(x);
            s |= it == bit.end() ? (uint64_t(1) << 63) : it->second;  // bit 63: units absent from the pivot
        }
        return s;
    };

    // Buckets: candidates sorted by (length, ord).
    std::vector<int32_t> by_len(by_rank.size());
    for (size_t o = 0; o < by_len.size(); ++o) by_len[o] = int32_t(o);
    std::stable_sort(by_len.begin(), by_len.end(), [&](int32_t a, int32_t b) { return units[a].size() < units[b].size(); });
    std::vector<uint32_t> cand_units;
    std::vector<int32_t> cand_start, cand_ord, bucket(size_t(max_len) + 2, 0);
    std::vector<uint64_t> cand_sig;
    for (int32_t o : by_len) {
        if (cand_units.size() > size_t(INT32_MAX)) throw std::invalid_argument("mined: pivot texts too large for the GPU index");
        cand_start.push_back(int32_t(cand_units.size()));
        cand_units.insert(cand_units.end(), units[o].begin(), units[o].end());
        cand_ord.push_back(o);
        cand_sig.push_back(signature(units[o]));
        ++bucket[units[o].size() + 1];
    }
    for (size_t L = 1; L < bucket.size(); ++L) bucket[L] += bucket[L - 1];

    // Queries: exact matches answered here (the CPU short-circuit), long ones left to the CPU.
    std::vector<uint32_t> q_units, tmp;
    std::vector<int32_t> q_start, q_len, q_row;
    std::vector<uint64_t> q_sig;
    for (size_t s = 0; s < ns; ++s) {
        if (!query[s]) continue;
        auto hit = exact.find(source[s]);
        if (hit != exact.end()) {
            r.ids[s * size_t(top_n)] = hit->second;
            r.dists[s * size_t(top_n)] = 0;
            ++r.exact;
            continue;
        }
        tmp.clear();
        lev::decode_units(reinterpret_cast<const uint8_t*>(source[s].data()), source[s].size(), tmp);
        if (tmp.size() > size_t(kMinedMaxQueryUnits)) {
            r.cpu_rows[s] = 1;
            continue;
        }
        q_start.push_back(int32_t(q_units.size()));
        q_len.push_back(int32_t(tmp.size()));
        q_units.insert(q_units.end(), tmp.begin(), tmp.end());
        q_sig.push_back(signature(tmp));
        q_row.push_back(int32_t(s));
    }
    r.gpu_queries = int64_t(q_row.size());
    MinedProblem p;
    p.cand_units = cand_units.data();
    p.cand_units_total = int64_t(cand_units.size());
    p.cand_start = cand_start.data();
    p.cand_ord = cand_ord.data();
    p.cand_sig = cand_sig.data();
    p.n_cand = int32_t(cand_start.size());
    p.bucket_start = bucket.data();
    p.max_len = max_len;
    p.query_units = q_units.data();
    p.query_units_total = int64_t(q_units.size());
    p.query_start = q_start.data();
    p.query_len = q_len.data();
    p.query_sig = q_sig.data();
    p.n_query = int32_t(q_row.size());
    p.top_n = top_n;
    std::vector<uint64_t> keys(q_row.size() * size_t(top_n));
    r.timing = emulate ? mined_search_host(p, keys.data()) : mined_search(p, keys.data(), device);
    for (size_t q = 0; q < q_row.size(); ++q) {
        const size_t row = size_t(q_row[q]) * size_t(top_n);
        for (int k = 0; k < top_n; ++k) {
            const uint64_t key = keys[q * size_t(top_n) + size_t(k)];
            if (key == kEmptyKey) break;
            r.ids[row + size_t(k)] = by_rank[size_t(key & 0xffffffffu)];
            r.dists[row + size_t(k)] = int32_t(key >> 48);
            if (k == 0 && (key >> 48) == 0) break;  // exact match: one-hot (cannot occur: caught above)
        }
    }
    return r;
}

// ---- DTW ------------------------------------------------------------------------------------

using tokalign::band_weight;  // the CPU TokenTable's weights (tokalign/dtw_band.h)
using tokalign::kBpeMarker;
using tokalign::kSpMarker;

// A vocabulary's code-point strings (raw and marker-stripped) and band weights, with a device
// copy made on first use and kept until the object is destroyed.
class DtwTable {
  public:
    DtwTable(const py::sequence& tokens, const py::object& weights) {
        raw_off_.push_back(0);
        str_off_.push_back(0);
        const Py_ssize_t n = py::len(tokens);
        for (Py_ssize_t k = 0; k < n; ++k) {
            py::object item = tokens[k];
            PyObject* o = item.ptr();
            int64_t len = 0;
            const size_t at = raw_.size();
            if (o != Py_None) {
                if (!PyUnicode_Check(o))
                    throw py::type_error("DtwTable: item " + std::to_string(k) + " is " + Py_TYPE(o)->tp_name +
                                         ", expected str or None");
                len = PyUnicode_GET_LENGTH(o);
                const int kind = PyUnicode_KIND(o);
                const void* data = PyUnicode_DATA(o);
                for (Py_ssize_t c = 0; c < len; ++c) raw_.push_back(uint32_t(PyUnicode_READ(kind, data, c)));
            }
            for (size_t c = at; c < raw_.size(); ++c)
                if (raw_[c] != kSpMarker && raw_[c] != kBpeMarker) str_.push_back(raw_[c]);
            raw_off_.push_back(int64_t(raw_.size()));
            str_off_.push_back(int64_t(str_.size()));
            weight_.push_back(band_weight(raw_.data() + at, len));
            max_len_ = std::max<int64_t>(max_len_, len);
        }
        if (!weights.is_none()) {
            std::vector<int64_t> w = weights.cast<std::vector<int64_t>>();
            if (w.size() != weight_.size())
                throw std::invalid_argument("DtwTable: expected one weight per token (" + std::to_string(weight_.size()) +
                                            "), got " + std::to_string(w.size()));
            for (size_t k = 0; k < w.size(); ++k)
                if (w[k] < 0) throw std::invalid_argument("DtwTable: negative weight at index " + std::to_string(k));
            weight_ = std::move(w);
        }
    }
    ~DtwTable() {
        if (device_) dtw_table_free(device_);
    }
    DtwTable(const DtwTable&) = delete;
    DtwTable& operator=(const DtwTable&) = delete;

    int64_t size() const { return int64_t(weight_.size()); }
    int64_t max_len() const { return max_len_; }
    const std::vector<int64_t>& weights() const { return weight_; }
    TableView host_view() const { return TableView{raw_.data(), raw_off_.data(), str_.data(), str_off_.data()}; }

    const void* on_device(int device) {
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

  private:
    std::vector<uint32_t> raw_, str_;
    std::vector<int64_t> raw_off_, str_off_, weight_;
    int64_t max_len_ = 0;
    void* device_ = nullptr;
    int device_index_ = -1;
};

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

struct PairState {
    std::vector<double> pc, sc;  // cumulative weights, source rescaled (the CPU's band inputs)
    double radius = 0;
    bool full = false;
    int status = -1;  // -1 pending, 0 done, 2 cpu
    std::vector<int32_t> path_p, path_s;
    int64_t cost = -1, band = -1;
};

struct DtwStats {
    double kernel_ms = 0;
    int64_t rounds = 0, launches = 0, cells = 0, cpu_pairs = 0, widened = 0;
};

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

template <class T>
py::array_t<T> to_array(const std::vector<T>& v) {
    py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
    if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
    return a;
}

}  // namespace
}  // namespace cuda
}  // namespace tokalign

using namespace tokalign::cuda;

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "tokalign CUDA kernels: batched banded DTW and all-pairs MinED. Host arrays in, host arrays out; "
              "device memory is managed here (cudaMalloc). Every entry point releases the GIL.";
    m.attr("MINED_MAX_TOP_N") = kMinedMaxTopN;
    m.attr("MINED_MAX_QUERY_UNITS") = kMinedMaxQueryUnits;
    m.attr("DTW_MAX_PIVOT") = kDtwMaxPivot;

    m.def(
        "device_info",
        []() {
            DeviceInfo info;
            {
                py::gil_scoped_release release;
                info = device_info();
            }
            py::dict d;
            d["count"] = info.count;
            d["error"] = info.error;
            d["name"] = info.name;
            d["compute_capability"] = py::make_tuple(info.cc_major, info.cc_minor);
            d["total_memory"] = info.total_memory;
            d["driver_version"] = info.driver_version;
            d["runtime_version"] = info.runtime_version;
            return d;
        },
        "Visible CUDA devices: dict(count, error, name, compute_capability, total_memory, driver_version, "
        "runtime_version). Never raises; count == 0 with `error` saying why when no device can be used.");

    m.def(
        "mined_search",
        [](const py::sequence& pivot_texts, py::object candidate, py::array_t<int64_t, py::array::c_style | py::array::forcecast> rank,
           const py::sequence& source_texts, py::object query, int top_n, int device, bool emulate) {
            const auto pt = to_strings(pivot_texts, "mined_search pivot_texts");
            const auto stexts = to_strings(source_texts, "mined_search source_texts");
            if (top_n < 1 || top_n > kMinedMaxTopN)
                throw std::invalid_argument("mined_search: top_n must be in 1.." + std::to_string(kMinedMaxTopN));
            const auto cand = to_mask(candidate, pt.size(), "mined_search candidate");
            const auto q = to_mask(query, stexts.size(), "mined_search query");
            if (rank.ndim() != 1 || size_t(rank.shape(0)) != pt.size())
                throw std::invalid_argument("mined_search: rank needs one entry per pivot text");
            std::vector<int64_t> rk(rank.data(), rank.data() + rank.shape(0));
            MinedResult r;
            {
                py::gil_scoped_release release;
                r = mined(pt, cand, rk, stexts, q, top_n, device, emulate);
            }
            const py::ssize_t n = py::ssize_t(stexts.size());
            py::array_t<int32_t> ids({n, py::ssize_t(top_n)}), dists({n, py::ssize_t(top_n)});
            if (!r.ids.empty()) {
                std::memcpy(ids.mutable_data(), r.ids.data(), r.ids.size() * sizeof(int32_t));
                std::memcpy(dists.mutable_data(), r.dists.data(), r.dists.size() * sizeof(int32_t));
            }
            py::array_t<bool> cpu_rows(n);
            for (py::ssize_t i = 0; i < n; ++i) cpu_rows.mutable_data()[i] = r.cpu_rows[size_t(i)] != 0;
            py::dict st;
            st["exact"] = r.exact;
            st["filtered"] = r.timing.filtered;
            st["evaluated"] = r.timing.evaluated;
            st["candidates"] = r.candidates;
            st["gpu_queries"] = r.gpu_queries;
            st["kernel_ms"] = r.timing.kernel_ms;
            st["gpu_total_ms"] = r.timing.total_ms;
            return py::make_tuple(ids, dists, cpu_rows, st);
        },
        py::arg("pivot_texts"), py::arg("candidate"), py::arg("rank"), py::arg("source_texts"), py::arg("query") = py::none(),
        py::arg("top_n") = 1, py::arg("device") = 0, py::arg("emulate") = false,
        "All-pairs MinED on the GPU with the CPU MinEDIndex's result order. Returns (ids, dists, cpu_rows, stats):\n"
        "int32 (n_source, top_n), -1 where empty; cpu_rows marks queried rows left to the CPU (longer than\n"
        "MINED_MAX_QUERY_UNITS units); stats has the cudaEvent kernel time (kernel_ms).\n"
        "emulate=True runs the kernel's scan on the host (tests; no device needed).");

    py::class_<DtwTable>(m, "DtwTable",
                         "Token strings (str or None) of one vocabulary as code points, with band weights (the same\n"
                         "default as tokalign._core.TokenTable); copied to the GPU on first use.")
        .def(py::init([](const py::sequence& tokens, py::object weights) { return new DtwTable(tokens, weights); }),
             py::arg("tokens"), py::arg("weights") = py::none())
        .def("__len__", &DtwTable::size);

    m.def(
        "dtw_batch",
        [](DtwTable& tp, const std::vector<IdArray>& ps, DtwTable& ts, const std::vector<IdArray>& ss, int tie, int64_t band,
           int device, int64_t max_cells, bool emulate) {
            if (ps.size() != ss.size()) throw std::invalid_argument("dtw_batch: pivot and source lists differ in length");
            if (tie != 0 && tie != 1) throw std::invalid_argument("dtw_batch: unknown tie-break code");
            std::vector<std::vector<int32_t>> P(ps.size()), S(ss.size());
            for (size_t k = 0; k < ps.size(); ++k) {
                P[k].assign(ps[k].data(), ps[k].data() + ps[k].size());
                S[k].assign(ss[k].data(), ss[k].data() + ss[k].size());
            }
            std::vector<PairState> res;
            DtwStats stats;
            {
                py::gil_scoped_release release;
                res = dtw_batch(tp, P, ts, S, tie, band, device, max_cells, emulate, stats);
            }
            py::list out;
            for (auto& s : res) {
                if (s.status != 0) {
                    out.append(py::none());
                    continue;
                }
                py::dict d;
                d["path_p"] = to_array(s.path_p);
                d["path_s"] = to_array(s.path_s);
                d["cost"] = s.cost;
                d["band"] = s.band;
                out.append(d);
            }
            py::dict st;
            st["kernel_ms"] = stats.kernel_ms;
            st["rounds"] = stats.rounds;
            st["launches"] = stats.launches;
            st["cells"] = stats.cells;
            st["cpu_pairs"] = stats.cpu_pairs;
            st["widened"] = stats.widened;
            return py::make_tuple(out, st);
        },
        py::arg("pivot_table"), py::arg("pivot_ids"), py::arg("source_table"), py::arg("source_ids"), py::arg("tie") = 0,
        py::arg("band") = 0, py::arg("device") = 0, py::arg("max_cells") = int64_t(1) << 28, py::arg("emulate") = false,
        "Batched FuseChat DTW on the GPU. band: -1 full matrix, 0 auto, >0 initial radius (as tokalign._core).\n"
        "Returns (results, stats): per pair a dict(path_p, path_s, cost, band) or None where the pair is left to\n"
        "the CPU (empty, pivot longer than DTW_MAX_PIVOT, more than max_cells band cells, or two tokens both\n"
        "longer than 64 code points in one cell); stats has the summed cudaEvent kernel time (kernel_ms).\n"
        "emulate=True runs the kernel's per-cell and traceback code on the host (tests; no device needed).");
}
