// Pairwise Levenshtein distances (single pair, and batches of index pairs for MS/FuseChat).
#include <algorithm>
#include <unordered_map>

#include "tokalign/levenshtein.h"
#include "tokalign/vocab.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tokalign {
namespace vocab {

namespace {

// Pattern table over a dense alphabet: table[unit * blocks + block].
struct DenseTable {
    const std::vector<uint64_t>* table;
    int blocks;
    uint64_t operator()(int block, uint32_t unit) const { return (*table)[size_t(unit) * blocks + block]; }
};

// Pattern table for arbitrary units (one pair): a small map from unit to its masks.
struct MapTable {
    const std::unordered_map<uint32_t, std::vector<uint64_t>>* masks;
    uint64_t operator()(int block, uint32_t unit) const {
        auto it = masks->find(unit);
        return it == masks->end() ? 0 : it->second[size_t(block)];
    }
};

bool contains(const uint32_t* hay, int n, const uint32_t* needle, int m) {
    if (m == 0) return true;
    if (m > n) return false;
    return std::search(hay, hay + n, needle, needle + m) != hay + n;
}

}  // namespace

int levenshtein(const uint32_t* a, int m, const uint32_t* b, int n) {
    const int blocks = std::max(1, (m + 63) / 64);
    std::unordered_map<uint32_t, std::vector<uint64_t>> masks;
    for (int i = 0; i < m; ++i) {
        auto& v = masks[a[i]];
        if (v.empty()) v.assign(size_t(blocks), 0);
        v[size_t(i / 64)] |= uint64_t(1) << (i % 64);
    }
    std::vector<uint64_t> scratch(size_t(2 * blocks));
    return lev::distance(MapTable{&masks}, m, b, n, m + n + 1, scratch.data());
}

void levenshtein_pairs(const UnitTexts& a, const UnitTexts& b, const int64_t* ia, const int64_t* ib, int64_t count,
                       int threads, int32_t* dist, uint8_t* contains_flag) {
    // One dense alphabet over both sides keeps the pattern table a flat array.
    std::unordered_map<uint32_t, uint32_t> alphabet;
    for (uint32_t u : a.units) alphabet.emplace(u, uint32_t(alphabet.size() + 1));
    for (uint32_t u : b.units) alphabet.emplace(u, uint32_t(alphabet.size() + 1));
    auto to_dense = [&](const UnitTexts& t) {
        std::vector<uint32_t> d(t.units.size());
        for (size_t i = 0; i < d.size(); ++i) d[i] = alphabet.at(t.units[i]);
        return d;
    };
    const std::vector<uint32_t> da = to_dense(a), db = to_dense(b);
    const size_t k = alphabet.size() + 1;
#ifdef _OPENMP
    if (threads <= 0) threads = omp_get_max_threads();
#else
    threads = 1;
#endif
#pragma omp parallel num_threads(threads)
    {
        std::vector<uint64_t> table;
        std::vector<uint64_t> scratch(4);
        int blocks = 0;
#pragma omp for schedule(dynamic, 256)
        for (int64_t p = 0; p < count; ++p) {
            const int64_t x = ia[p], y = ib[p];
            const int m = a.length(x), n = b.length(y);
            const uint32_t* pa = da.data() + a.offsets[x];
            const uint32_t* pb = db.data() + b.offsets[y];
            const int need = std::max(1, (m + 63) / 64);
            if (need != blocks) {
                blocks = need;
                table.assign(k * size_t(blocks), 0);
                scratch.resize(size_t(2 * blocks));
            }
            for (int i = 0; i < m; ++i) table[size_t(pa[i]) * blocks + size_t(i / 64)] |= uint64_t(1) << (i % 64);
            dist[p] = lev::distance(DenseTable{&table, blocks}, m, pb, n, m + n + 1, scratch.data());
            for (int i = 0; i < m; ++i) table[size_t(pa[i]) * blocks + size_t(i / 64)] = 0;
            if (contains_flag) contains_flag[p] = (contains(pa, m, pb, n) || contains(pb, n, pa, m)) ? 1 : 0;
        }
    }
}

}  // namespace vocab
}  // namespace tokalign
