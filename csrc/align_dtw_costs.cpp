// DTW cell costs through a table over distinct token pairs (see tokalign/dtw_costs.h).
#include "tokalign/dtw_costs.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <unordered_map>


namespace tokalign {

void DtwRowPattern::prepare(const uint32_t* str, int n) {
    s = str;
    len = n;
    if (len < 1 || len > 64) return;
    std::memset(ascii, 0, sizeof(ascii));
    for (int k = 0; k < len; ++k)
        if (s[k] < 128) ascii[s[k]] |= uint64_t(1) << k;
}

int DtwRowPattern::distance(const uint32_t* t, int tlen, uint32_t* scratch) const {
    if (len == 0) return tlen;
    if (tlen == 0) return len;
    if (len > 64) return levenshtein_small(s, len, t, tlen, scratch);
    uint64_t vp = ~uint64_t(0), vn = 0;
    const uint64_t last = uint64_t(1) << (len - 1);
    int dist = len;
    for (int k = 0; k < tlen; ++k) {
        const uint32_t c = t[k];
        const uint64_t eq = c < 128 ? ascii[c] : lev_small_eq_mask(s, len, c);
        dist = lev_small_step(eq, vp, vn, last, dist);
    }
    return dist;
}

namespace {

// Dense ids by content: local[k] = class of the token at position k, where positions with equal
// raw strings share a class (dtw_tokens builds one table entry per position, so ids alone would
// not repeat); first[r] = a position of class r. Returns the number of classes.
int64_t dense_ids(const TokenTable& t, const int32_t* ids, int64_t n, std::vector<int32_t>& local,
                  std::vector<int32_t>& first) {
    std::vector<int32_t> uniq(ids, ids + n);
    std::sort(uniq.begin(), uniq.end());
    uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
    std::vector<int32_t> cls(uniq.size());
    std::unordered_map<std::u32string_view, int32_t> by_text;
    by_text.reserve(uniq.size() * 2);
    int32_t classes = 0;
    for (size_t u = 0; u < uniq.size(); ++u) {
        const std::u32string_view key(reinterpret_cast<const char32_t*>(t.raw(uniq[u])),
                                      static_cast<size_t>(t.raw_len(uniq[u])));
        cls[u] = by_text.emplace(key, classes).first->second;
        if (cls[u] == classes) ++classes;
    }
    local.resize(static_cast<size_t>(n));
    first.assign(static_cast<size_t>(classes), -1);
    for (int64_t k = 0; k < n; ++k) {
        const int32_t r = cls[std::lower_bound(uniq.begin(), uniq.end(), ids[k]) - uniq.begin()];
        local[k] = r;
        if (first[r] < 0) first[r] = static_cast<int32_t>(k);
    }
    return classes;
}

}  // namespace

DtwPairCosts::DtwPairCosts(const TokenTable& tp, const int32_t* ip, int64_t n, const TokenTable& ts,
                           const int32_t* is, int64_t m)
    : tp_(tp), ts_(ts), ip_(ip), is_(is) {
    p_distinct_ = dense_ids(tp, ip, n, p_local_, p_first_);
    s_distinct_ = dense_ids(ts, is, m, s_local_, s_first_);
    scratch_.assign(static_cast<size_t>(std::max(tp.max_len(), ts.max_len())) + 2, 0);
    if (p_distinct_ * s_distinct_ <= kMaxTableEntries)
        table_.assign(static_cast<size_t>(p_distinct_ * s_distinct_), kUnknown);
}

int DtwPairCosts::distance(int64_t a, const DtwRowPattern& ps, const DtwRowPattern& pr, int64_t b) {
    const int sl = ts_.stripped_len(b);
    // Same rule as dtw_token_cost(): stripped strings unless either is empty.
    if (tp_.stripped_len(a) > 0 && sl > 0) return ps.distance(ts_.stripped(b), sl, scratch_.data());
    return pr.distance(ts_.raw(b), ts_.raw_len(b), scratch_.data());
}

int DtwPairCosts::compute(int64_t j) {
    const int64_t a = ip_[row_];
    if (!row_ready_) {
        pat_str_.prepare(tp_.stripped(a), tp_.stripped_len(a));
        pat_raw_.prepare(tp_.raw(a), tp_.raw_len(a));
        row_ready_ = true;
    }
    const int d = distance(a, pat_str_, pat_raw_, is_[j]);
    if (trow_ && d < kUnknown) trow_[s_local_[j]] = static_cast<uint8_t>(d);
    return d;
}

#if defined(__GNUC__)
#define TA_LEV_SIMD 1
namespace {

// Bit-parallel Levenshtein of W pivot patterns at once (lane k: pattern k, one bit per code
// point; T = uint8 for patterns of <= 8 code points, uint16 for <= 16) against each source text:
// GCC vector extensions, compiled for AVX2 (W = 32 / 16) when the CPU has it, else 16-byte
// vectors (SSE2 on x86). peq[r * W + k]: bits of pattern k equal to the character of rank r.
// out[t * W + k] = distance of pattern k to text t, read off the last column at the end:
// D[len][L] = L + (vertical +1 deltas) - (vertical -1 deltas).
template <class T, int BYTES>
__attribute__((always_inline)) inline void lev_block(const T* peq, const uint32_t* text, const int64_t* off,
                                                     int64_t count, const T* mask, T* out) {
    typedef T V __attribute__((vector_size(BYTES)));
    constexpr int W = BYTES / static_cast<int>(sizeof(T));
    V vm;
    std::memcpy(&vm, mask, BYTES);
    const V zero = {};
    for (int64_t t = 0; t < count; ++t) {
        const uint32_t* c = text + off[t];
        const int L = static_cast<int>(off[t + 1] - off[t]);
        V vp = ~zero, vn = zero;
        for (int q = 0; q < L; ++q) {
            V eq;
            std::memcpy(&eq, peq + static_cast<size_t>(c[q]) * W, BYTES);
            const V d0 = (((eq & vp) + vp) ^ vp) | eq | vn;
            V hp = vn | ~(d0 | vp);
            V hn = d0 & vp;
            hp = (hp << 1) | static_cast<T>(1);
            hn = hn << 1;
            vp = hn | ~(d0 | hp);
            vn = hp & d0;
        }
        // Per-lane popcounts of the +1 and -1 deltas (no vector popcount before AVX-512).
        V x = vp & vm, y = vn & vm;
        x = x - ((x >> 1) & static_cast<T>(0x5555));
        y = y - ((y >> 1) & static_cast<T>(0x5555));
        x = (x & static_cast<T>(0x3333)) + ((x >> 2) & static_cast<T>(0x3333));
        y = (y & static_cast<T>(0x3333)) + ((y >> 2) & static_cast<T>(0x3333));
        x = (x + (x >> 4)) & static_cast<T>(0x0f0f);
        y = (y + (y >> 4)) & static_cast<T>(0x0f0f);
        if (sizeof(T) == 2) {
            x = (x + (x >> 8)) & static_cast<T>(0x1f);
            y = (y + (y >> 8)) & static_cast<T>(0x1f);
        }
        const V dist = static_cast<T>(L) + x - y;
        std::memcpy(out + t * W, &dist, BYTES);
    }
}

using LevBlockFn8 = void (*)(const uint8_t*, const uint32_t*, const int64_t*, int64_t, const uint8_t*, uint8_t*);
using LevBlockFn16 = void (*)(const uint16_t*, const uint32_t*, const int64_t*, int64_t, const uint16_t*, uint16_t*);

void lev_block8_v16(const uint8_t* p, const uint32_t* t, const int64_t* o, int64_t c, const uint8_t* m, uint8_t* r) {
    lev_block<uint8_t, 16>(p, t, o, c, m, r);
}
void lev_block16_v16(const uint16_t* p, const uint32_t* t, const int64_t* o, int64_t c, const uint16_t* m, uint16_t* r) {
    lev_block<uint16_t, 16>(p, t, o, c, m, r);
}
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) void lev_block8_v32(const uint8_t* p, const uint32_t* t, const int64_t* o, int64_t c,
                                                    const uint8_t* m, uint8_t* r) {
    lev_block<uint8_t, 32>(p, t, o, c, m, r);
}
__attribute__((target("avx2"))) void lev_block16_v32(const uint16_t* p, const uint32_t* t, const int64_t* o, int64_t c,
                                                     const uint16_t* m, uint16_t* r) {
    lev_block<uint16_t, 32>(p, t, o, c, m, r);
}
bool have_avx2() {
    static const bool yes = __builtin_cpu_supports("avx2");
    return yes;
}
#else
bool have_avx2() { return false; }
#endif

}  // namespace
#endif

void DtwPairCosts::fill_all() {
    if (table_.empty()) return;
    auto store = [this](int64_t u, int64_t v, int d) {
        table_[static_cast<size_t>(u * s_distinct_ + v)] = static_cast<uint8_t>(d < kUnknown ? d : kUnknown);
    };
    auto fill_scalar = [&](int64_t u, const std::vector<int32_t>& vs) {
        const int64_t a = ip_[p_first_[u]];
        pat_str_.prepare(tp_.stripped(a), tp_.stripped_len(a));
        pat_raw_.prepare(tp_.raw(a), tp_.raw_len(a));
        for (int32_t v : vs) store(u, v, distance(a, pat_str_, pat_raw_, is_[s_first_[v]]));
    };
    std::vector<int32_t> all_s(static_cast<size_t>(s_distinct_));
    for (int64_t v = 0; v < s_distinct_; ++v) all_s[v] = static_cast<int32_t>(v);
#if defined(TA_LEV_SIMD)
    // Pivot tokens with stripped strings of 1..16 code points go W at a time through lev_block
    // against every source token with a stripped string of 1..200 code points (the distance fits
    // the lanes); everything else (raw strings compared, long tokens) one pair at a time.
    std::vector<int32_t> p8, p16, p_other, s_str, s_other;
    for (int64_t u = 0; u < p_distinct_; ++u) {
        const int len = tp_.stripped_len(ip_[p_first_[u]]);
        (len >= 1 && len <= 8 ? p8 : len >= 9 && len <= 16 ? p16 : p_other).push_back(static_cast<int32_t>(u));
    }
    for (int64_t v = 0; v < s_distinct_; ++v) {
        const int len = ts_.stripped_len(is_[s_first_[v]]);
        (len >= 1 && len <= 200 ? s_str : s_other).push_back(static_cast<int32_t>(v));
    }
    // Characters as ranks in the pivot patterns' alphabet (rank A-1: in no pattern).
    std::vector<uint32_t> alpha;
    for (int64_t u = 0; u < p_distinct_; ++u) {
        const int64_t a = ip_[p_first_[u]];
        alpha.insert(alpha.end(), tp_.stripped(a), tp_.stripped(a) + tp_.stripped_len(a));
    }
    std::sort(alpha.begin(), alpha.end());
    alpha.erase(std::unique(alpha.begin(), alpha.end()), alpha.end());
    const int64_t A = static_cast<int64_t>(alpha.size()) + 1;
    auto rank = [&alpha, A](uint32_t c) {
        const auto it = std::lower_bound(alpha.begin(), alpha.end(), c);
        return it != alpha.end() && *it == c ? static_cast<uint32_t>(it - alpha.begin()) : static_cast<uint32_t>(A - 1);
    };
    std::vector<uint32_t> s_text;
    std::vector<int64_t> s_off(s_str.size() + 1, 0);
    for (size_t k = 0; k < s_str.size(); ++k) {
        const int64_t b = is_[s_first_[s_str[k]]];
        for (int q = 0; q < ts_.stripped_len(b); ++q) s_text.push_back(rank(ts_.stripped(b)[q]));
        s_off[k + 1] = static_cast<int64_t>(s_text.size());
    }
    const int64_t S = static_cast<int64_t>(s_str.size());
    const bool wide = have_avx2();
    auto run_group = [&](const std::vector<int32_t>& group, auto lane_type, auto kernel, int W) {
        using T = decltype(lane_type);
        std::vector<T> peq(static_cast<size_t>(A * W)), mask(static_cast<size_t>(W)), out(static_cast<size_t>(S * W));
        for (size_t b0 = 0; b0 < group.size(); b0 += static_cast<size_t>(W)) {
            const size_t lanes = std::min(group.size() - b0, static_cast<size_t>(W));
            std::fill(peq.begin(), peq.end(), T(0));
            std::fill(mask.begin(), mask.end(), T(0));
            for (size_t k = 0; k < lanes; ++k) {
                const int64_t a = ip_[p_first_[group[b0 + k]]];
                const int len = tp_.stripped_len(a);
                for (int q = 0; q < len; ++q) peq[rank(tp_.stripped(a)[q]) * W + k] |= static_cast<T>(1u << q);
                mask[k] = static_cast<T>((1u << len) - 1u);
            }
            kernel(peq.data(), s_text.data(), s_off.data(), S, mask.data(), out.data());
            for (size_t k = 0; k < lanes; ++k) {
                uint8_t* row = table_.data() + group[b0 + k] * s_distinct_;
                const T* col = out.data() + k;
                for (int64_t t = 0; t < S; ++t) row[s_str[t]] = static_cast<uint8_t>(col[t * W]);
                fill_scalar(group[b0 + k], s_other);
            }
        }
    };
#if defined(__x86_64__) || defined(__i386__)
    if (wide) {
        run_group(p8, uint8_t(0), lev_block8_v32, 32);
        run_group(p16, uint16_t(0), lev_block16_v32, 16);
    }
#endif
    if (!wide) {
        run_group(p8, uint8_t(0), lev_block8_v16, 16);
        run_group(p16, uint16_t(0), lev_block16_v16, 8);
    }
    for (int32_t u : p_other) fill_scalar(u, all_s);
#else
    for (int64_t u = 0; u < p_distinct_; ++u) fill_scalar(u, all_s);
#endif
    row_ready_ = false;  // the patterns now belong to another token, not to row_
    complete_ = true;
}

bool DtwPairCosts::row_rest_bounds(std::vector<int64_t>& rest) const {
    if (!complete_) return false;
    std::vector<int64_t> row_min(static_cast<size_t>(p_distinct_));
    for (int64_t u = 0; u < p_distinct_; ++u) {
        const uint8_t* r = table_.data() + u * s_distinct_;
        uint8_t best = kUnknown;  // kUnknown stands for >= 255: still a lower bound
        for (int64_t v = 0; v < s_distinct_; ++v) best = r[v] < best ? r[v] : best;
        row_min[u] = best;
    }
    const int64_t n = static_cast<int64_t>(p_local_.size());
    rest.assign(static_cast<size_t>(n + 1), 0);
    for (int64_t i = n - 1; i >= 0; --i) rest[i] = rest[i + 1] + row_min[p_local_[i]];
    return true;
}

}  // namespace tokalign
