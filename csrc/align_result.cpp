// Path -> CSR pointers (both directions), groups (connected components) and kind counts.
#include "tokalign/align.h"

namespace tokalign {

void finish_result(AlignResult& r) {
    const int64_t L = static_cast<int64_t>(r.path_p.size());
    const int32_t* P = r.path_p.data();
    const int32_t* S = r.path_s.data();
    r.p2s_indptr.resize(static_cast<size_t>(r.n + 1));
    r.s2p_indptr.resize(static_cast<size_t>(r.m + 1));
    int64_t* pp = r.p2s_indptr.data();
    int64_t* sp = r.s2p_indptr.data();
    for (int q = 0; q < 4; ++q) r.kinds[q] = 0;
    if (L == 0) {
        for (int64_t i = 0; i <= r.n; ++i) pp[i] = 0;
        for (int64_t j = 0; j <= r.m; ++j) sp[j] = 0;
        r.groups.clear();
        return;
    }
    // Unit steps: row i's entries start where the path first reaches row i (likewise columns).
    // Pass 1: pointers and the number of groups (a diagonal step starts a new one).
    pp[0] = 0;
    sp[0] = 0;
    int64_t G = 1;
    for (int64_t k = 1; k < L; ++k) {
        const bool dp = P[k] != P[k - 1], ds = S[k] != S[k - 1];
        if (dp) pp[P[k]] = k;
        if (ds) sp[S[k]] = k;
        G += dp & ds;
    }
    pp[r.n] = L;
    sp[r.m] = L;
    // Pass 2: groups and kinds.
    r.groups.resize(static_cast<size_t>(4 * G));
    int64_t* g = r.groups.data();
    int64_t start = 0;
    for (int64_t k = 1; k <= L; ++k) {
        if (k < L && !(P[k] != P[k - 1] && S[k] != S[k - 1])) continue;
        const int64_t p0 = P[start], p1 = P[k - 1] + 1, s0 = S[start], s1 = S[k - 1] + 1;
        g[0] = p0;
        g[1] = p1;
        g[2] = s0;
        g[3] = s1;
        g += 4;
        ++r.kinds[(p1 - p0 > 1 ? 2 : 0) + (s1 - s0 > 1 ? 1 : 0)];
        start = k;
    }
}

}  // namespace tokalign
