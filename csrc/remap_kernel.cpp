// Top-k distribution remapping kernel (see include/tokalign/remap.h and docs/remap.md).
// One OpenMP loop over all alignment groups of the batch; each group writes only its own pivot rows,
// so threads never share output. Per position the work is small (k_source entries times the map's
// row length), so duplicates are merged with a linear scan (sort + merge for long candidate lists)
// and the top k_out are chosen with a partial sort; no dense vocabulary-sized buffer exists.
#include "tokalign/remap.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tokalign {
namespace remap {
namespace {

struct Cand {
    int32_t id;
    double p;
};

constexpr size_t kLinearMergeMax = 48;  // below this a quadratic scan beats sorting

inline bool better(const Cand& a, const Cand& b) { return a.p > b.p || (a.p == b.p && a.id < b.id); }

enum Status { ST_OK = 0, ST_NONFINITE = 1, ST_BAD_ID = 2 };

// One map row in 8 bytes: its only entry (pivot id, weight), or pivot = kRowEmpty / kRowMany. Most rows of
// real maps hold at most one entry, and a top-k id is a random access into the map: one cache line here
// instead of three (indptr, indices, data).
struct MapRow {
    int32_t pivot;
    float weight;
};
constexpr int32_t kRowEmpty = -1;
constexpr int32_t kRowMany = -2;

std::vector<MapRow> compact_rows(const Inputs& in) {
    std::vector<MapRow> rows(static_cast<size_t>(in.source_vocab));
    for (int64_t v = 0; v < in.source_vocab; ++v) {
        const int64_t e0 = in.map_indptr[v], e1 = in.map_indptr[v + 1];
        if (e1 == e0)
            rows[v] = {kRowEmpty, 0.0f};
        else if (e1 == e0 + 1)
            rows[v] = {in.map_indices[e0], in.map_data[e0]};
        else
            rows[v] = {kRowMany, 0.0f};
    }
    return rows;
}

// Starts loading the map rows of source row `row`'s top-k ids (random accesses into the map) so that they
// arrive while the previous group is processed.
inline void prefetch_rows(const Inputs& in, const MapRow* rows, int64_t row) {
#if defined(__GNUC__)
    const int32_t* ids = in.source_ids + row * in.k_source;
    for (int64_t k = 0; k < in.k_source; ++k)
        if (ids[k] >= 0 && ids[k] < in.source_vocab) __builtin_prefetch(rows + ids[k]);
#else
    (void)in, (void)rows, (void)row;
#endif
}

// Thread-local state for one position at a time.
struct Worker {
    const Inputs& in;
    const Options& opt;
    Outputs& out;
    const MapRow* rows;
    std::vector<Cand> cand, merged;

    Worker(const Inputs& i, const Options& o, Outputs& u, const MapRow* r) : in(i), opt(o), out(u), rows(r) {}

    // Adds weight * p_k * M[id_k, :] for one source row. Returns the mapped mass sum_k p_k * |M[id_k]|_1
    // through `mapped` (used for the "weighted" policy).
    Status push_source(int64_t row, double weight, double* mapped) {
        const double lse = in.source_lse[row];
        const int32_t* ids = in.source_ids + row * in.k_source;
        const float* lg = in.source_logits + row * in.k_source;
        double m = 0.0;
        bool nonfinite = !std::isfinite(lse);  // keep scanning: an out-of-vocabulary id is an error and wins
        for (int64_t k = 0; k < in.k_source; ++k) {
            const int32_t id = ids[k];
            if (id < 0) continue;  // empty slot
            if (id >= in.source_vocab) return ST_BAD_ID;
            const float l = lg[k];
            if (std::isnan(l) || l == std::numeric_limits<float>::infinity()) nonfinite = true;
            if (nonfinite || l == -std::numeric_limits<float>::infinity()) continue;  // probability 0
            const MapRow row1 = rows[id];
            if (row1.pivot == kRowEmpty) continue;  // unmapped: its mass is lost (skip the exp)
            if (row1.pivot != kRowMany) {  // the CSR loop below for a single entry
                const double w = row1.weight;
                if (w <= 0.0) continue;
                const double p = std::exp(static_cast<double>(l) - lse);
                m += p * w;
                if (weight > 0.0) cand.push_back({row1.pivot, weight * p * w});
                continue;
            }
            const int64_t e0 = in.map_indptr[id], e1 = in.map_indptr[id + 1];
            const double p = std::exp(static_cast<double>(l) - lse);
            for (int64_t e = e0; e < e1; ++e) {
                const double w = in.map_data[e];
                if (w <= 0.0) continue;
                m += p * w;
                if (weight > 0.0) cand.push_back({in.map_indices[e], weight * p * w});
            }
        }
        if (mapped) *mapped = m;
        return nonfinite ? ST_NONFINITE : ST_OK;
    }

    // Adds the pivot model's own distribution at pivot row `row`.
    Status push_pivot(int64_t row) {
        const double lse = in.pivot_lse[row];
        bool nonfinite = !std::isfinite(lse);
        const int32_t* ids = in.pivot_topk_ids + row * in.k_pivot;
        const float* lg = in.pivot_topk_logits + row * in.k_pivot;
        for (int64_t k = 0; k < in.k_pivot; ++k) {
            const int32_t id = ids[k];
            if (id < 0) continue;
            if (id >= in.pivot_vocab) return ST_BAD_ID;
            const float l = lg[k];
            if (std::isnan(l) || l == std::numeric_limits<float>::infinity()) nonfinite = true;
            if (nonfinite || l == -std::numeric_limits<float>::infinity()) continue;
            const double p = std::exp(static_cast<double>(l) - lse);
            if (p > 0.0) cand.push_back({id, p});
        }
        return nonfinite ? ST_NONFINITE : ST_OK;
    }

    // Merges duplicate ids in `cand` (sum), keeps the k_out most probable, writes pivot row `row`.
    // Returns the retained mass.
    double emit(int64_t row) {
        merged.clear();
        if (cand.size() <= kLinearMergeMax) {
            for (const Cand& c : cand) {
                bool found = false;
                for (Cand& m : merged)
                    if (m.id == c.id) {
                        m.p += c.p;
                        found = true;
                        break;
                    }
                if (!found) merged.push_back(c);
            }
        } else {
            // stable: equal ids keep their push order, so the sum order matches the linear path
            std::stable_sort(cand.begin(), cand.end(), [](const Cand& a, const Cand& b) { return a.id < b.id; });
            for (const Cand& c : cand) {
                if (!merged.empty() && merged.back().id == c.id)
                    merged.back().p += c.p;
                else
                    merged.push_back(c);
            }
        }
        cand.clear();
        const size_t k_out = static_cast<size_t>(opt.k_out);
        const size_t n_keep = std::min(k_out, merged.size());
        if (merged.size() <= kLinearMergeMax) {
            // insertion sort: typical rows hold a handful of entries
            for (size_t a = 1; a < merged.size(); ++a) {
                const Cand c = merged[a];
                size_t b = a;
                while (b > 0 && better(c, merged[b - 1])) {
                    merged[b] = merged[b - 1];
                    --b;
                }
                merged[b] = c;
            }
        } else {
            std::partial_sort(merged.begin(), merged.begin() + n_keep, merged.end(), better);
        }
        int32_t* ids = out.ids + row * opt.k_out;
        float* lg = out.logits + row * opt.k_out;
        double kept = 0.0;
        size_t j = 0;
        for (; j < n_keep && merged[j].p > 0.0; ++j) {
            ids[j] = merged[j].id;
            lg[j] = static_cast<float>(std::log(merged[j].p));
            kept += merged[j].p;
        }
        for (; j < k_out; ++j) {
            ids[j] = -1;
            lg[j] = -std::numeric_limits<float>::infinity();
        }
        return kept;
    }

    void clear_row(int64_t row) {
        cand.clear();
        int32_t* ids = out.ids + row * opt.k_out;
        float* lg = out.logits + row * opt.k_out;
        for (int64_t j = 0; j < opt.k_out; ++j) {
            ids[j] = -1;
            lg[j] = -std::numeric_limits<float>::infinity();
        }
    }
};

}  // namespace

std::string run(const Inputs& in, const Options& opt, Outputs& out, Counts& counts) {
    if (opt.k_out < 1) return "remap: k_out must be >= 1";
    if (opt.inside < INSIDE_ONEHOT || opt.inside > INSIDE_MASK) return "remap: unknown inside policy";
    if (opt.one_to_many < OTM_LAST || opt.one_to_many > OTM_WEIGHTED) return "remap: unknown one-to-many policy";
    if (opt.inside == INSIDE_PIVOT && (in.pivot_topk_ids == nullptr || in.pivot_lse == nullptr))
        return "remap: inside policy 'pivot' needs the pivot model's top-k distributions";
    const int64_t S = in.n_seq;
    if (in.group_offsets[0] != 0 || in.group_offsets[S] != in.n_groups)
        return "remap: group offsets must start at 0 and end at the number of groups";
    if (in.source_offsets[0] != 0 || in.source_offsets[S] != in.n_source)
        return "remap: source offsets must start at 0 and end at the number of source positions";
    if (in.pivot_offsets[0] != 0 || in.pivot_offsets[S] != in.n_pivot)
        return "remap: pivot offsets must start at 0 and end at the number of pivot positions";

    int n_threads = 1;
#ifdef _OPENMP
    n_threads = opt.num_threads > 0 ? opt.num_threads : omp_get_max_threads();
#endif

    // Pass 1 (per sequence): offsets monotone, groups contiguous, in order and covering both sequences,
    // pivot ids inside the vocabulary. Records the first failing sequence (smallest index) for a stable message.
    int64_t first_bad = S;
    std::string message;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 64)
    for (int64_t seq = 0; seq < S; ++seq) {
        std::string err;
        const int64_t g0 = in.group_offsets[seq], g1 = in.group_offsets[seq + 1];
        const int64_t P0 = in.pivot_offsets[seq], P1 = in.pivot_offsets[seq + 1];
        const int64_t S0 = in.source_offsets[seq], S1 = in.source_offsets[seq + 1];
        if (g1 < g0 || P1 < P0 || S1 < S0) {
            err = "offsets decrease";
        } else {
            int64_t p = 0, s = 0;
            for (int64_t g = g0; g < g1 && err.empty(); ++g) {
                const int64_t* r = in.groups + 4 * g;
                if (r[0] != p || r[2] != s || r[1] < r[0] || r[3] < r[2])
                    err = "group " + std::to_string(g - g0) + " is not contiguous with the previous one or has end < start";
                p = r[1];
                s = r[3];
            }
            if (err.empty() && (p != P1 - P0 || s != S1 - S0))
                err = "groups cover pivot [0, " + std::to_string(p) + ") and source [0, " + std::to_string(s) +
                      ") but the sequences have " + std::to_string(P1 - P0) + " pivot and " +
                      std::to_string(S1 - S0) + " source positions";
            for (int64_t t = P0; t < P1 && err.empty(); ++t)
                if (in.pivot_ids[t] < 0 || in.pivot_ids[t] >= in.pivot_vocab)
                    err = "pivot id " + std::to_string(in.pivot_ids[t]) + " at position " + std::to_string(t - P0) +
                          " outside the pivot vocabulary (" + std::to_string(in.pivot_vocab) + ")";
        }
        if (!err.empty()) {
#pragma omp critical(tokalign_remap_error)
            if (seq < first_bad) {
                first_bad = seq;
                message = "remap: sequence " + std::to_string(seq) + ": " + err;
            }
        }
    }
    if (first_bad < S) return message;

    // Sequence index of every group (cheap, O(n_groups)).
    std::vector<int64_t> group_seq(static_cast<size_t>(in.n_groups));
    for (int64_t seq = 0; seq < S; ++seq)
        for (int64_t g = in.group_offsets[seq]; g < in.group_offsets[seq + 1]; ++g) group_seq[g] = seq;

    const std::vector<MapRow> map_rows = compact_rows(in);
    int64_t n_masked = 0, n_nonfinite = 0, n_empty = 0;
    int64_t bad_row = std::numeric_limits<int64_t>::max();
    bool bad_is_pivot = false;
#pragma omp parallel num_threads(n_threads) reduction(+ : n_masked, n_nonfinite, n_empty)
    {
        Worker w(in, opt, out, map_rows.data());
        std::vector<double> mass;
#pragma omp for schedule(dynamic, 256)
        for (int64_t g = 0; g < in.n_groups; ++g) {
            if (g + 1 < in.n_groups && in.groups[4 * (g + 1) + 3] > in.groups[4 * (g + 1) + 2])
                prefetch_rows(in, map_rows.data(), in.source_offsets[group_seq[g + 1]] + in.groups[4 * (g + 1) + 3] - 1);
            const int64_t seq = group_seq[g];
            const int64_t P0 = in.pivot_offsets[seq], S0 = in.source_offsets[seq];
            const int64_t Lp = in.pivot_offsets[seq + 1] - P0;
            const int64_t* r = in.groups + 4 * g;
            const int64_t np = r[1] - r[0], ns = r[3] - r[2];
            if (np == 0) continue;  // source-only group: no pivot position to fill
            for (int64_t t = r[0]; t < r[1]; ++t) {
                const int64_t row = P0 + t;
                const bool is_end = (t == r[1] - 1);
                uint8_t kind;
                if (ns == 0)
                    kind = KIND_PIVOT_ONLY;
                else if (!is_end)
                    kind = ns == 1 ? KIND_N_1_INSIDE : KIND_N_M_INSIDE;
                else if (np == 1)
                    kind = ns == 1 ? KIND_1_1 : KIND_1_N;
                else
                    kind = ns == 1 ? KIND_N_1_END : KIND_N_M_END;
                out.kind[row] = kind;
                out.source_pos[row] = -1;
                Status st = ST_OK;
                bool has_target = true;
                if (is_end && ns > 0) {
                    out.source_pos[row] = static_cast<int32_t>(r[3] - 1);
                    if (ns > 1 && opt.one_to_many == OTM_WEIGHTED) {
                        // weights w_j = m_j / sum m, m_j = mapped mass of source position j (docs/remap.md)
                        mass.assign(static_cast<size_t>(ns), 0.0);
                        double total = 0.0;
                        for (int64_t j = 0; j < ns && st != ST_BAD_ID; ++j) {
                            const Status sj = w.push_source(S0 + r[2] + j, 0.0, &mass[j]);
                            if (sj != ST_OK) st = sj;
                            total += mass[j];
                        }
                        if (st == ST_OK && total > 0.0)
                            for (int64_t j = 0; j < ns && st == ST_OK; ++j)
                                if (mass[j] > 0.0) st = w.push_source(S0 + r[2] + j, mass[j] / total, nullptr);
                    } else {
                        st = w.push_source(S0 + r[3] - 1, 1.0, nullptr);
                    }
                } else if (opt.inside == INSIDE_ONEHOT) {
                    if (t + 1 < Lp)
                        w.cand.push_back({in.pivot_ids[row + 1], 1.0});
                    else
                        has_target = false;  // pivot-only group at the very end: no next token
                } else if (opt.inside == INSIDE_PIVOT) {
                    st = w.push_pivot(row);
                } else {
                    has_target = false;
                }
                if (st == ST_BAD_ID) {
#pragma omp critical(tokalign_remap_error)
                    if (row < bad_row) {
                        bad_row = row;
                        bad_is_pivot = !(is_end && ns > 0);
                    }
                    w.clear_row(row);
                    out.retained[row] = 0.0f;
                    out.valid[row] = 0;
                    continue;
                }
                if (st == ST_NONFINITE || !has_target) {
                    w.clear_row(row);
                    out.retained[row] = 0.0f;
                    out.valid[row] = 0;
                    if (st == ST_NONFINITE)
                        ++n_nonfinite;
                    else
                        ++n_masked;
                    continue;
                }
                const double kept = w.emit(row);
                out.retained[row] = static_cast<float>(kept);
                out.valid[row] = kept > 0.0 ? 1 : 0;
                if (!(kept > 0.0)) ++n_empty;
            }
        }
    }
    if (bad_row != std::numeric_limits<int64_t>::max()) {
        int64_t seq = 0;
        while (in.pivot_offsets[seq + 1] <= bad_row) ++seq;
        return "remap: sequence " + std::to_string(seq) + ", pivot position " +
               std::to_string(bad_row - in.pivot_offsets[seq]) + ": " +
               (bad_is_pivot ? "pivot top-k id outside the pivot vocabulary (" + std::to_string(in.pivot_vocab) + ")"
                             : "source top-k id outside the source vocabulary (" + std::to_string(in.source_vocab) + ")");
    }
    counts.masked = n_masked;
    counts.nonfinite = n_nonfinite;
    counts.empty = n_empty;
    return "";
}

}  // namespace remap
}  // namespace tokalign
