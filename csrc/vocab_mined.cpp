// All-pairs MinED (minimum edit distance) with length buckets, signature filter and
// bit-parallel Levenshtein; see MinEDIndex in tokalign/vocab.h.
#include <algorithm>
#include <climits>
#include <cstring>
#include <iterator>
#include <stdexcept>

#include "tokalign/levenshtein.h"
#include "tokalign/vocab.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// The signature filter is popcount-bound; the portable x86-64 baseline has no popcnt
// instruction, so build a popcnt clone and let the loader pick it where the CPU has one.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define TA_POPCNT_CLONES __attribute__((target_clones("popcnt", "default")))
#else
#define TA_POPCNT_CLONES
#endif

namespace tokalign {
namespace vocab {

namespace {

constexpr int kOwnBits = 48;  // the 48 most frequent units get a signature bit of their own
constexpr int kSeeds = 2;     // seed candidates per side of the query in prefix / suffix order

struct Result {
    int32_t dist;
    int32_t delta;  // |L - m|
    int64_t rank;
    int32_t id;
    bool operator<(const Result& o) const {
        if (dist != o.dist) return dist < o.dist;
        if (delta != o.delta) return delta < o.delta;
        if (rank != o.rank) return rank < o.rank;
        return id < o.id;
    }
};

// The per-thread pattern table: peq[unit * blocks + block] (dense units, so a flat array).
struct PatternTable {
    std::vector<uint64_t> table;
    int blocks = 1;
    uint64_t operator()(int block, uint32_t unit) const { return table[size_t(unit) * blocks + block]; }
};

// Scans the buckets for one source pattern; `best` receives up to top_n results in key order.
struct Scanner {
    const std::vector<uint32_t>* units;
    int top_n;

    // Worst distance a candidate at |L - m| == delta may have and still enter `best` (ties on
    // distance go to the smaller delta, then rank and id, checked on insertion).
    int limit(const std::vector<Result>& best, int delta) const {
        if (int(best.size()) < top_n) return INT_MAX / 2;
        const Result& worst = best.back();
        return delta <= worst.delta ? worst.dist : worst.dist - 1;
    }

    static void insert(std::vector<Result>& best, const Result& r, int top_n) {
        for (const Result& b : best)
            if (b.id == r.id) return;  // seeded earlier
        auto pos = std::upper_bound(best.begin(), best.end(), r);
        if (int(pos - best.begin()) >= top_n) return;
        best.insert(pos, r);
        if (int(best.size()) > top_n) best.pop_back();
    }
};

template <class Bucket>
TA_POPCNT_CLONES void scan_bucket(const Bucket& bk, int bucket_len, int m, int delta, uint64_t src_sig,
                                  const PatternTable& peq, const std::vector<uint32_t>& units, int top_n,
                                  std::vector<Result>& best, std::vector<uint64_t>& scratch, int64_t& filtered,
                                  int64_t& evaluated) {
    const Scanner sc{&units, top_n};
    const size_t count = bk.sig.size();
    const int d_len = m - bucket_len;  // signed length difference
    int lim = sc.limit(best, delta);
    filtered += int64_t(count);
    // d >= excess of either side (units it has that the other lacks), and the signatures bound
    // the excesses from below; excess_a - excess_b == m - L adds the length difference.
    const int add_a = std::max(0, -d_len), add_b = std::max(0, d_len);
    auto lower_bound = [&](uint64_t s) {
        return std::max(__builtin_popcountll(src_sig & ~s) + add_a, __builtin_popcountll(s & ~src_sig) + add_b);
    };
    // Filter 64 entries at a time without branches, then visit the survivors: the bound test is
    // unpredictable, a branch per entry would cost more than the test.
    for (size_t base = 0; base < count; base += 64) {
        const size_t end = std::min(count, base + 64);
        uint64_t pass = 0;
        for (size_t e = base; e < end; ++e) pass |= uint64_t(lower_bound(bk.sig[e]) <= lim) << (e - base);
        while (pass) {
            const size_t e = base + size_t(__builtin_ctzll(pass));
            pass &= pass - 1;
            if (lower_bound(bk.sig[e]) > lim) continue;  // lim may have tightened since
            ++evaluated;
            const int d = lev::distance(peq, m, units.data() + bk.start[e], bucket_len, lim, scratch.data());
            if (d > lim) continue;
            const Result r{d, delta, bk.rank[e], bk.id[e]};
            if (int(best.size()) == top_n && !(r < best.back())) continue;
            Scanner::insert(best, r, top_n);
            lim = sc.limit(best, delta);
        }
    }
}

}  // namespace

UnitTexts decode_texts(const std::vector<std::string>& texts) {
    UnitTexts out;
    out.offsets.reserve(texts.size() + 1);
    size_t total = 0;
    for (const auto& t : texts) total += t.size();
    out.units.reserve(total);
    for (const auto& t : texts) {
        lev::decode_units(reinterpret_cast<const uint8_t*>(t.data()), t.size(), out.units);
        out.offsets.push_back(int64_t(out.units.size()));
    }
    return out;
}

MinEDIndex::MinEDIndex(const std::vector<std::string>& pivot_texts, const std::vector<uint8_t>& candidate,
                       const std::vector<int64_t>& rank) {
    const size_t n = pivot_texts.size();
    if (candidate.size() != n || rank.size() != n)
        throw std::invalid_argument("MinEDIndex: candidate and rank must have one entry per pivot text");
    const UnitTexts raw = decode_texts(pivot_texts);

    // Dense alphabet over the candidate texts, ids in order of decreasing frequency, so the
    // most frequent units own a signature bit and the rest share the remaining 16 by id.
    std::unordered_map<uint32_t, int64_t> freq;
    for (size_t i = 0; i < n; ++i)
        if (candidate[i])
            for (int k = 0; k < raw.length(int64_t(i)); ++k) ++freq[raw.data(int64_t(i))[k]];
    std::vector<std::pair<int64_t, uint32_t>> order;
    order.reserve(freq.size());
    for (const auto& kv : freq) order.push_back({-kv.second, kv.first});
    std::sort(order.begin(), order.end());
    sig_bit_.assign(order.size() + 1, 0);
    sig_bit_[0] = uint64_t(1) << 63;  // units absent from every pivot candidate
    for (size_t r = 0; r < order.size(); ++r) {
        const uint32_t id = uint32_t(r + 1);
        alphabet_[order[r].second] = id;
        sig_bit_[id] = uint64_t(1) << (r < size_t(kOwnBits) ? r : kOwnBits + (r % (64 - kOwnBits)));
    }

    // Buckets by length, each sorted by (rank, id) so scans meet preferred tokens first.
    std::vector<size_t> ids;
    int max_len = 0;
    for (size_t i = 0; i < n; ++i)
        if (candidate[i]) {
            ids.push_back(i);
            max_len = std::max(max_len, raw.length(int64_t(i)));
        }
    std::sort(ids.begin(), ids.end(), [&](size_t a, size_t b) { return rank[a] != rank[b] ? rank[a] < rank[b] : a < b; });
    buckets_.assign(size_t(max_len) + 1, Bucket{});
    for (size_t i : ids) {
        const int len = raw.length(int64_t(i));
        Bucket& bk = buckets_[size_t(len)];
        uint64_t sig = 0;
        bk.start.push_back(int64_t(units_.size()));
        for (int k = 0; k < len; ++k) {
            const uint32_t u = alphabet_[raw.data(int64_t(i))[k]];
            units_.push_back(u);
            sig |= sig_bit_[u];
        }
        bk.sig.push_back(sig);
        bk.id.push_back(int32_t(i));
        bk.rank.push_back(rank[i]);
        cand_start_.push_back(bk.start.back());
        cand_len_.push_back(len);
        cand_id_.push_back(int32_t(i));
        cand_rank_.push_back(rank[i]);
        exact_.emplace(pivot_texts[i], int32_t(i));  // first (best-ranked) one wins
    }
    n_candidates_ = int64_t(ids.size());
    prefix_order_.resize(ids.size());
    for (size_t k = 0; k < ids.size(); ++k) prefix_order_[k] = int32_t(k);
    suffix_order_ = prefix_order_;
    const uint32_t* u = units_.data();
    std::sort(prefix_order_.begin(), prefix_order_.end(), [&](int32_t a, int32_t b) {
        return std::lexicographical_compare(u + cand_start_[a], u + cand_start_[a] + cand_len_[a], u + cand_start_[b],
                                            u + cand_start_[b] + cand_len_[b]);
    });
    std::sort(suffix_order_.begin(), suffix_order_.end(), [&](int32_t a, int32_t b) {
        using R = std::reverse_iterator<const uint32_t*>;
        return std::lexicographical_compare(R(u + cand_start_[a] + cand_len_[a]), R(u + cand_start_[a]),
                                            R(u + cand_start_[b] + cand_len_[b]), R(u + cand_start_[b]));
    });
}

uint32_t MinEDIndex::dense(uint32_t unit) const {
    auto it = alphabet_.find(unit);
    return it == alphabet_.end() ? 0u : it->second;
}

uint64_t MinEDIndex::signature_bit(uint32_t dense_unit) const { return sig_bit_[dense_unit]; }

MinEDStats MinEDIndex::query(const std::vector<std::string>& source_texts, const uint8_t* query_mask, int top_n,
                             int threads, int32_t* ids, int32_t* dists) const {
    if (top_n < 1) throw std::invalid_argument("MinEDIndex.query: top_n must be >= 1");
    const int64_t count = int64_t(source_texts.size());
    std::fill(ids, ids + count * top_n, -1);
    std::fill(dists, dists + count * top_n, -1);
    MinEDStats total;
    if (n_candidates_ == 0) return total;
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#else
    threads = 1;
#endif
    const int max_len = int(buckets_.size()) - 1;
    int64_t exact = 0, filtered = 0, evaluated = 0;

#pragma omp parallel num_threads(threads) reduction(+ : exact, filtered, evaluated)
    {
        PatternTable peq;
        std::vector<uint32_t> pattern;
        std::vector<uint64_t> scratch(4);
        std::vector<Result> best;
        best.reserve(size_t(top_n) + 1);
#pragma omp for schedule(dynamic, 64)
        for (int64_t q = 0; q < count; ++q) {
            if (query_mask && !query_mask[q]) continue;
            const std::string& text = source_texts[size_t(q)];
            int32_t* row_ids = ids + q * top_n;
            int32_t* row_d = dists + q * top_n;
            auto hit = exact_.find(text);
            if (hit != exact_.end()) {
                row_ids[0] = hit->second;
                row_d[0] = 0;
                ++exact;
                continue;
            }
            pattern.clear();
            lev::decode_units(reinterpret_cast<const uint8_t*>(text.data()), text.size(), pattern);
            const int m = int(pattern.size());
            const int blocks = std::max(1, (m + 63) / 64);
            const size_t need = (alphabet_.size() + 1) * size_t(blocks);
            if (peq.blocks != blocks || peq.table.size() != need) {
                peq.blocks = blocks;
                peq.table.assign(need, 0);
            }
            if (scratch.size() < size_t(2 * blocks)) scratch.resize(size_t(2 * blocks));
            uint64_t src_sig = 0;
            for (int i = 0; i < m; ++i) {
                const uint32_t u = dense(pattern[size_t(i)]);
                pattern[size_t(i)] = u;
                src_sig |= signature_bit(u);
                peq.table[size_t(u) * blocks + size_t(i / 64)] |= uint64_t(1) << (i % 64);
            }
            const Scanner sc{&units_, top_n};
            best.clear();
            {
                // Seeds: the pivot tokens next to the query in prefix and in suffix order share a
                // long prefix / suffix with it, so they are usually close to the best and make the
                // bounds of the scan below tight from its first bucket on.
                const uint32_t* u = units_.data();
                const uint32_t* pb = pattern.data();
                const uint32_t* pe = pattern.data() + m;
                auto pos_pre = std::lower_bound(prefix_order_.begin(), prefix_order_.end(), 0, [&](int32_t a, int) {
                    return std::lexicographical_compare(u + cand_start_[a], u + cand_start_[a] + cand_len_[a], pb, pe);
                }) - prefix_order_.begin();
                using R = std::reverse_iterator<const uint32_t*>;
                auto pos_suf = std::lower_bound(suffix_order_.begin(), suffix_order_.end(), 0, [&](int32_t a, int) {
                    return std::lexicographical_compare(R(u + cand_start_[a] + cand_len_[a]), R(u + cand_start_[a]), R(pe), R(pb));
                }) - suffix_order_.begin();
                const int64_t nc = int64_t(prefix_order_.size());
                for (int side = 0; side < 2; ++side) {
                    const std::vector<int32_t>& order = side == 0 ? prefix_order_ : suffix_order_;
                    const int64_t pos = side == 0 ? pos_pre : pos_suf;
                    for (int64_t k = std::max<int64_t>(0, pos - kSeeds); k < std::min(nc, pos + kSeeds); ++k) {
                        const int32_t c = order[size_t(k)];
                        const int lim = sc.limit(best, std::abs(cand_len_[c] - m));
                        ++evaluated;
                        const int d = lev::distance(peq, m, u + cand_start_[c], cand_len_[c], lim, scratch.data());
                        if (d > lim) continue;
                        const Result r{d, std::abs(cand_len_[c] - m), cand_rank_[c], cand_id_[c]};
                        if (int(best.size()) == top_n && !(r < best.back())) continue;
                        Scanner::insert(best, r, top_n);
                    }
                }
            }
            // One pass outward over the length buckets; |L - m| bounds the distance from below,
            // so the scan ends once it exceeds what the worst kept result allows.
            for (int delta = 0;; ++delta) {
                if (m - delta < 0 && m + delta > max_len) break;
                if (delta > sc.limit(best, delta)) break;
                const int sides[2] = {m - delta, m + delta};
                for (int s = 0; s < (delta == 0 ? 1 : 2); ++s) {
                    const int len = sides[s];
                    if (len < 0 || len > max_len || buckets_[size_t(len)].sig.empty()) continue;
                    scan_bucket(buckets_[size_t(len)], len, m, delta, src_sig, peq, units_, top_n, best, scratch,
                                filtered, evaluated);
                }
            }
            for (int i = 0; i < m; ++i) peq.table[size_t(pattern[size_t(i)]) * blocks + size_t(i / 64)] = 0;
            for (size_t r = 0; r < best.size(); ++r) {
                row_ids[r] = best[r].id;
                row_d[r] = best[r].dist;
            }
        }
    }
    total.exact = exact;
    total.filtered = filtered;
    total.evaluated = evaluated;
    return total;
}

}  // namespace vocab
}  // namespace tokalign
