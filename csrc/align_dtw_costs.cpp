// DTW cell costs through a table over distinct token pairs (see tokalign/dtw_costs.h).
#include "tokalign/dtw_costs.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <unordered_map>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

#if defined(__SSE2__)
namespace {

// Per 16-bit lane popcount (SSE2 has none).
inline __m128i popcount16(__m128i x) {
    const __m128i m1 = _mm_set1_epi16(0x5555), m2 = _mm_set1_epi16(0x3333), m4 = _mm_set1_epi16(0x0f0f);
    x = _mm_sub_epi16(x, _mm_and_si128(_mm_srli_epi16(x, 1), m1));
    x = _mm_add_epi16(_mm_and_si128(x, m2), _mm_and_si128(_mm_srli_epi16(x, 2), m2));
    x = _mm_and_si128(_mm_add_epi16(x, _mm_srli_epi16(x, 4)), m4);
    return _mm_and_si128(_mm_add_epi16(x, _mm_srli_epi16(x, 8)), _mm_set1_epi16(0x1f));
}

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
#if defined(__SSE2__)
    // Eight pivot tokens at once (16-bit lanes of one SSE2 register, patterns of <= 16 code
    // points: nearly every token), run over each source token's stripped string: the match masks
    // of a character for all eight patterns are one 16-byte load from a table indexed by the
    // character's rank in the pair's alphabet. The distance is read off the last column:
    // D[len][t] = t + (vertical +1 deltas) - (vertical -1 deltas).
    std::vector<uint32_t> alpha;
    for (int64_t u = 0; u < p_distinct_; ++u) {
        const int64_t a = ip_[p_first_[u]];
        alpha.insert(alpha.end(), tp_.stripped(a), tp_.stripped(a) + tp_.stripped_len(a));
    }
    std::vector<int32_t> s_str, s_raw;  // source classes with / without a stripped string
    for (int64_t v = 0; v < s_distinct_; ++v)
        (ts_.stripped_len(is_[s_first_[v]]) > 0 ? s_str : s_raw).push_back(static_cast<int32_t>(v));
    std::sort(alpha.begin(), alpha.end());
    alpha.erase(std::unique(alpha.begin(), alpha.end()), alpha.end());
    const int64_t A = static_cast<int64_t>(alpha.size()) + 1;  // rank A-1: not in any pivot pattern
    // Source stripped strings as alphabet ranks, concatenated.
    std::vector<uint32_t> s_text;
    std::vector<int64_t> s_off(s_str.size() + 1, 0);
    for (size_t k = 0; k < s_str.size(); ++k) {
        const int64_t b = is_[s_first_[s_str[k]]];
        for (int q = 0; q < ts_.stripped_len(b); ++q) {
            const uint32_t c = ts_.stripped(b)[q];
            const auto it = std::lower_bound(alpha.begin(), alpha.end(), c);
            s_text.push_back(it != alpha.end() && *it == c ? static_cast<uint32_t>(it - alpha.begin())
                                                           : static_cast<uint32_t>(A - 1));
        }
        s_off[k + 1] = static_cast<int64_t>(s_text.size());
    }
    std::vector<int32_t> block;  // pivot classes of the current block
    std::vector<uint16_t> peq(static_cast<size_t>(A) * 8);
    alignas(16) uint16_t lanes[8];
    auto run_block = [&]() {
        std::fill(peq.begin(), peq.end(), 0);
        alignas(16) uint16_t mask[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (size_t k = 0; k < block.size(); ++k) {
            const int64_t a = ip_[p_first_[block[k]]];
            const int len = tp_.stripped_len(a);
            for (int q = 0; q < len; ++q) {
                const int64_t r = std::lower_bound(alpha.begin(), alpha.end(), tp_.stripped(a)[q]) - alpha.begin();
                peq[static_cast<size_t>(r * 8 + static_cast<int64_t>(k))] |= static_cast<uint16_t>(1u << q);
            }
            mask[k] = static_cast<uint16_t>((1u << len) - 1u);
        }
        const __m128i vmask = _mm_load_si128(reinterpret_cast<const __m128i*>(mask));
        const __m128i ones = _mm_set1_epi16(-1), one = _mm_set1_epi16(1);
        for (size_t k = 0; k < s_str.size(); ++k) {
            const uint32_t* t = s_text.data() + s_off[k];
            const int L = static_cast<int>(s_off[k + 1] - s_off[k]);
            __m128i vp = ones, vn = _mm_setzero_si128();
            for (int q = 0; q < L; ++q) {
                const __m128i eq = _mm_loadu_si128(reinterpret_cast<const __m128i*>(peq.data() + t[q] * 8));
                const __m128i d0 = _mm_or_si128(
                    _mm_or_si128(_mm_xor_si128(_mm_add_epi16(_mm_and_si128(eq, vp), vp), vp), eq), vn);
                __m128i hp = _mm_or_si128(vn, _mm_xor_si128(_mm_or_si128(d0, vp), ones));
                __m128i hn = _mm_and_si128(d0, vp);
                hp = _mm_or_si128(_mm_slli_epi16(hp, 1), one);
                hn = _mm_slli_epi16(hn, 1);
                vp = _mm_or_si128(hn, _mm_xor_si128(_mm_or_si128(d0, hp), ones));
                vn = _mm_and_si128(hp, d0);
            }
            const __m128i dist = _mm_add_epi16(_mm_set1_epi16(static_cast<int16_t>(L)),
                                               _mm_sub_epi16(popcount16(_mm_and_si128(vp, vmask)),
                                                             popcount16(_mm_and_si128(vn, vmask))));
            _mm_store_si128(reinterpret_cast<__m128i*>(lanes), dist);
            for (size_t lane = 0; lane < block.size(); ++lane) store(block[lane], s_str[k], lanes[lane]);
        }
        for (int32_t u : block) fill_scalar(u, s_raw);  // raw strings compared
        block.clear();
    };
    for (int64_t u = 0; u < p_distinct_; ++u) {
        const int len = tp_.stripped_len(ip_[p_first_[u]]);
        if (len < 1 || len > 16) {
            fill_scalar(u, all_s);
            continue;
        }
        block.push_back(static_cast<int32_t>(u));
        if (block.size() == 8) run_block();
    }
    if (!block.empty()) run_block();
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
