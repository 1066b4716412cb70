// Path -> CSR maps (both directions), groups (connected components) and kind counts.
#include <stdexcept>

#include "tokalign/align.h"

namespace tokalign {

void finish_result(AlignResult& r) {
    const int64_t L = static_cast<int64_t>(r.path_p.size());
    r.p2s_indptr.assign(r.n + 1, 0);
    r.s2p_indptr.assign(r.m + 1, 0);
    for (int64_t k = 0; k < L; ++k) {
        ++r.p2s_indptr[r.path_p[k] + 1];
        ++r.s2p_indptr[r.path_s[k] + 1];
    }
    for (int64_t i = 0; i < r.n; ++i) r.p2s_indptr[i + 1] += r.p2s_indptr[i];
    for (int64_t j = 0; j < r.m; ++j) r.s2p_indptr[j + 1] += r.s2p_indptr[j];
    // A monotone path is sorted by (p, s) and by (s, p): path order fills both maps sorted.
    r.p2s_indices.assign(L, 0);
    r.s2p_indices.assign(L, 0);
    std::vector<int64_t> fill_s(r.s2p_indptr.begin(), r.s2p_indptr.end() - (r.m > 0 ? 1 : 0));
    for (int64_t k = 0; k < L; ++k) {
        r.p2s_indices[k] = r.path_s[k];
        r.s2p_indices[fill_s[r.path_s[k]]++] = r.path_p[k];
    }
    // Connected components of the path: a diagonal step starts a new one.
    r.groups.clear();
    for (int q = 0; q < 4; ++q) r.kinds[q] = 0;
    int64_t start = 0;
    for (int64_t k = 1; k <= L; ++k) {
        const bool cut = k == L || (r.path_p[k] != r.path_p[k - 1] && r.path_s[k] != r.path_s[k - 1]);
        if (!cut) continue;
        const int64_t p0 = r.path_p[start], p1 = r.path_p[k - 1] + 1;
        const int64_t s0 = r.path_s[start], s1 = r.path_s[k - 1] + 1;
        r.groups.insert(r.groups.end(), {p0, p1, s0, s1});
        const bool pmany = p1 - p0 > 1, smany = s1 - s0 > 1;
        ++r.kinds[(pmany ? 2 : 0) + (smany ? 1 : 0)];
        start = k;
    }
}

}  // namespace tokalign
