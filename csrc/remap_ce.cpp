// The two CE fields of a remapped store, per pivot position, for a batch of aligned sequences:
//  * source_nll_by_group: token_ce, the source model's own NLL of the text spread over the pivot positions of
//    each alignment group (semantics and conventions: tokalign/remap/ce.py);
//  * remapped_token_ce: the remap_ce diagnostic, -log q(next pivot token) under the stored remapped
//    distribution (tokalign/remap/stores.py, remapped_token_ce_packed).
// One pass per sequence, OpenMP over sequences; the binding (bind_remap.cpp) checks shapes and offsets and
// releases the GIL. The numpy versions these replace are kept as the references in
// tests/remap_ce_reference.py (tests/test_remap_ce.py compares them with hypothesis).
#include "tokalign/remap_ce.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace tokalign {
namespace remap {
namespace {

// What is wrong with sequence k's groups, 0 when nothing: checked in this order for every sequence, and the
// caller reports the first problem kind over all sequences (negative lengths first, as the numpy version did).
enum GroupError : int { GROUPS_OK = 0, GROUP_NEGATIVE = 1, GROUP_COVERAGE = 2, GROUP_OUTSIDE = 3 };

}  // namespace

void source_nll_by_group(const float* ce, const float* ls, const int64_t* so, const int64_t* g, const int64_t* go,
                         const int64_t* po, int64_t S, int threads, float* out) {
    std::vector<int> error(static_cast<size_t>(S), GROUPS_OK);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 16)
    for (int64_t k = 0; k < S; ++k) {
        const int64_t lp = po[k + 1] - po[k], ls_len = so[k + 1] - so[k];
        int64_t cover_p = 0, cover_s = 0;
        bool negative = false, outside = false;
        for (int64_t j = go[k]; j < go[k + 1]; ++j) {
            const int64_t* r = g + 4 * j;
            negative |= r[1] < r[0] || r[3] < r[2];
            outside |= r[0] < 0 || r[1] > lp || r[2] < 0 || r[3] > ls_len;
            cover_p += r[1] - r[0];
            cover_s += r[3] - r[2];
        }
        int err = negative ? GROUP_NEGATIVE : (cover_p != lp || cover_s != ls_len) ? GROUP_COVERAGE
                                                                                   : outside ? GROUP_OUTSIDE : 0;
        float* o = out + po[k];
        std::fill(o, o + lp, 0.0f);
        if (err) {
            error[static_cast<size_t>(k)] = err;
            continue;
        }
        const float* c = ce + so[k];
        const float* l = ls ? ls + so[k] : nullptr;
        for (int64_t j = go[k]; j < go[k + 1]; ++j) {
            const int64_t* r = g + 4 * j;
            // NLL of the group's source tokens: token_ce at the positions predicting them, [s0 - 1, s1 - 1)
            const int64_t lo = std::max<int64_t>(r[2] - 1, 0), hi = std::max<int64_t>(r[3] - 1, 0);
            double nll = 0.0;
            bool unknown = false;
            for (int64_t t = lo; t < hi; ++t) {
                const bool bad = !std::isfinite(c[t]) || (l && !std::isfinite(l[t]));
                unknown |= bad;
                nll += bad ? 0.0 : static_cast<double>(c[t]);
            }
            if (unknown) nll = std::nan("");
            // spread over the positions predicting the group's pivot tokens i in [max(p0, 1), p1): i - 1
            const int64_t first = std::max<int64_t>(r[0], 1);
            if (r[1] <= first) continue;
            const float share = static_cast<float>(nll / static_cast<double>(r[1] - first));
            for (int64_t i = first; i < r[1]; ++i) o[i - 1] = share;
        }
        if (lp > 0) o[lp - 1] = 0.0f;  // the last position predicts nothing
    }
    int worst = 0;
    int64_t at = -1;
    for (int kind : {GROUP_NEGATIVE, GROUP_COVERAGE, GROUP_OUTSIDE}) {
        for (int64_t k = 0; k < S && at < 0; ++k)
            if (error[static_cast<size_t>(k)] == kind) at = k, worst = kind;
        if (at >= 0) break;
    }
    if (worst == GROUP_NEGATIVE) throw std::invalid_argument("source_nll_by_group: a group ends before it starts");
    if (worst != 0) {
        int64_t cover_p = 0, cover_s = 0;
        for (int64_t j = go[at]; j < go[at + 1]; ++j) cover_p += g[4 * j + 1] - g[4 * j], cover_s += g[4 * j + 3] - g[4 * j + 2];
        const std::string k = std::to_string(at);
        if (worst == GROUP_COVERAGE)
            throw std::invalid_argument("sequence " + k + ": the groups cover " + std::to_string(cover_p) + " pivot / " +
                                        std::to_string(cover_s) + " source tokens, the sequences have " +
                                        std::to_string(po[at + 1] - po[at]) + " / " + std::to_string(so[at + 1] - so[at]));
        throw std::invalid_argument("sequence " + k + ": a group lies outside the sequences (" +
                                    std::to_string(po[at + 1] - po[at]) + " pivot / " +
                                    std::to_string(so[at + 1] - so[at]) + " source tokens)");
    }
}

void remapped_token_ce(const int32_t* ids, const float* lg, const float* kept, const uint8_t* ok, const int32_t* nxt,
                       const int64_t* off, int64_t S, int64_t K, int threads, float* out) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 16)
    for (int64_t k = 0; k < S; ++k) {
        for (int64_t t = off[k]; t < off[k + 1]; ++t) {
            if (t + 1 >= off[k + 1] || !ok[t]) {  // a sequence's last position, invalid positions: 0
                out[t] = 0.0f;
                continue;
            }
            const int32_t want = nxt[t + 1];
            float q = 0.0f;
            bool found = false;
            for (int64_t j = 0; j < K; ++j)
                if (ids[t * K + j] == want) q += lg[t * K + j], found = true;
            out[t] = found ? -q : static_cast<float>(-std::log(std::max(1.0 - static_cast<double>(kept[t]), 1e-6)));
        }
    }
}

}  // namespace remap
}  // namespace tokalign
