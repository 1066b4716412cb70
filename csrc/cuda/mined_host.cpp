// Host side of the GPU MinED search (declared in mined_host.h): candidate and query preparation in
// the CPU core's order, and the kernel's scan run on the host (the emulate=True test hook).
#include "mined_host.h"

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mined_scan.h"
#include "tokalign/levenshtein.h"

namespace tokalign {
namespace cuda {
namespace {

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

}  // namespace

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

}  // namespace cuda
}  // namespace tokalign
