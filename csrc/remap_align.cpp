// Batch alignment of stored token-id sequences (see include/tokalign/remap_align.h).
// This is tokalign.align.span (Python, align.py) with the texts built from token bytes, moved to C++ so
// that a whole batch aligns in one GIL-free OpenMP loop. Each step mirrors the Python code it replaces
// (named in the comments) so that the groups are identical; tests/test_remap_store.py checks that.
#include "tokalign/remap_align.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "tokalign/align.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tokalign {
namespace remap {
namespace {

// Text (bytes) and [start, end) byte offsets of one id sequence (cli/remap.py: token_byte_offsets).
void spell(const TokenBytes& tb, const int32_t* ids, int64_t n, const char* side, std::vector<uint8_t>& text,
           std::vector<int64_t>& offsets) {
    offsets.resize(static_cast<size_t>(2 * n));
    int64_t at = 0;  // pass 1: check the ids, offsets
    for (int64_t t = 0; t < n; ++t) {
        const int32_t id = ids[t];
        if (id < 0 || id >= tb.size)
            throw std::invalid_argument(std::string(side) + " token id " + std::to_string(id) + " at position " +
                                        std::to_string(t) + " is outside the tokenizer (" + std::to_string(tb.size) +
                                        " tokens)");
        offsets[2 * t] = at;
        at += tb.offsets[id + 1] - tb.offsets[id];
        offsets[2 * t + 1] = at;
    }
    text.resize(static_cast<size_t>(at));  // pass 2: the bytes (tokens are short: a plain loop beats memcpy calls)
    uint8_t* out = text.data();
    for (int64_t t = 0; t < n; ++t) {
        const uint8_t* src = tb.data + tb.offsets[ids[t]];
        for (int64_t c = offsets[2 * t], e = offsets[2 * t + 1]; c < e; ++c) out[c] = *src++;
    }
}

// align.py _merged_coords: shared characters (diff blocks) get one position; inside each differing hunk
// the pivot's characters come first, then the source's.
void merged_coords(const std::vector<int64_t>& blocks, int64_t len_a, int64_t len_b, std::vector<int64_t>& pos_a,
                   std::vector<int64_t>& pos_b, std::vector<uint8_t>& shared_a, std::vector<uint8_t>& shared_b) {
    pos_a.assign(static_cast<size_t>(len_a + 1), 0);
    pos_b.assign(static_cast<size_t>(len_b + 1), 0);
    shared_a.assign(static_cast<size_t>(len_a), 0);
    shared_b.assign(static_cast<size_t>(len_b), 0);
    int64_t x = 0, y = 0, z = 0;
    const size_t nb = blocks.size() / 3;
    for (size_t q = 0; q <= nb; ++q) {
        const int64_t a0 = q < nb ? blocks[3 * q] : len_a, b0 = q < nb ? blocks[3 * q + 1] : len_b;
        const int64_t ln = q < nb ? blocks[3 * q + 2] : 0;
        for (int64_t i = x; i < a0; ++i) pos_a[i] = z++;
        for (int64_t i = y; i < b0; ++i) pos_b[i] = z++;
        for (int64_t i = 0; i < ln; ++i) {
            pos_a[a0 + i] = z + i;
            pos_b[b0 + i] = z + i;
            shared_a[a0 + i] = 1;
            shared_b[b0 + i] = 1;
        }
        z += ln;
        x = a0 + ln;
        y = b0 + ln;
    }
    pos_a[len_a] = z;
    pos_b[len_b] = z;
}

// align.py _map_offsets: offsets in merged coordinates and a flag for tokens touching a non-shared char.
void map_offsets(const std::vector<int64_t>& off, const std::vector<int64_t>& pos, const std::vector<uint8_t>& shared,
                 std::vector<int64_t>& merged, std::vector<uint8_t>& dirty) {
    const size_t n = off.size() / 2;
    merged.resize(off.size());
    dirty.assign(n, 0);
    for (size_t t = 0; t < n; ++t) {
        const int64_t s = off[2 * t], e = off[2 * t + 1];
        merged[2 * t] = pos[s];
        merged[2 * t + 1] = e > s ? pos[e - 1] + 1 : merged[2 * t];
        for (int64_t c = s; c < e; ++c)
            if (!shared[c]) {
                dirty[t] = 1;
                break;
            }
    }
}

// Token texts of offsets [t0, t1) as a TokenTable (one code point per byte, like the latin-1 strings
// align.span slices from its texts).
TokenTable slice_table(const std::vector<uint8_t>& text, const std::vector<int64_t>& off, int64_t t0, int64_t t1,
                       std::vector<uint32_t>& buf) {
    TokenTable table;
    for (int64_t t = t0; t < t1; ++t) {
        const int64_t s = off[2 * t], e = off[2 * t + 1];
        buf.resize(static_cast<size_t>(e - s) + 1);
        for (int64_t c = s; c < e; ++c) buf[c - s] = text[c];
        table.add(buf.data(), e - s);
    }
    return table;
}

struct Scratch {
    std::vector<uint8_t> tp, ts, pdirty, sdirty, shared_a, shared_b;
    std::vector<int64_t> po, so, pos_a, pos_b, pm, sm, stretches;
    std::vector<uint32_t> ca, cb, buf;
    std::vector<int32_t> ip, is;
};

// One pair; returns its groups (flattened) and the AlignPath used.
uint8_t align_one(const TokenBytes& pb, const int32_t* pids, int64_t n, const TokenBytes& sb, const int32_t* sids,
                  int64_t m, int64_t max_diff, int tie, Scratch& w, OutVec<int64_t>& groups) {
    spell(pb, pids, n, "pivot", w.tp, w.po);
    spell(sb, sids, m, "source", w.ts, w.so);
    if (n == 0 || m == 0) {
        groups.clear();
        return ALIGN_EMPTY;
    }
    if (w.tp == w.ts) {  // align.span: equal texts -> _core.span
        AlignResult r = span_align(w.po.data(), n, w.so.data(), m, nullptr, nullptr, nullptr);
        groups.swap(r.groups);
        return ALIGN_SAME_TEXT;
    }
    const int64_t la = static_cast<int64_t>(w.tp.size()), lb = static_cast<int64_t>(w.ts.size());
    w.ca.assign(w.tp.begin(), w.tp.end());
    w.cb.assign(w.ts.begin(), w.ts.end());
    const std::vector<int64_t> blocks = text_blocks(w.ca.data(), la, w.cb.data(), lb, max_diff);
    merged_coords(blocks, la, lb, w.pos_a, w.pos_b, w.shared_a, w.shared_b);
    map_offsets(w.po, w.pos_a, w.shared_a, w.pm, w.pdirty);
    map_offsets(w.so, w.pos_b, w.shared_b, w.sm, w.sdirty);
    w.stretches.clear();
    AlignResult raw = span_align(w.pm.data(), n, w.sm.data(), m, w.pdirty.data(), w.sdirty.data(), &w.stretches);
    if (w.stretches.empty()) {
        groups.swap(raw.groups);
        return ALIGN_DIFF;
    }
    // align.span: replace the path inside every stretch by the DTW path of its token texts
    AlignResult full;
    full.n = n;
    full.m = m;
    full.cost = -1;
    const OutVec<int32_t>& path_p = raw.path_p;
    const OutVec<int32_t>& path_s = raw.path_s;
    size_t at = 0;
    for (size_t q = 0; q < w.stretches.size() / 4; ++q) {
        const int64_t p0 = w.stretches[4 * q], p1 = w.stretches[4 * q + 1];
        const int64_t s0 = w.stretches[4 * q + 2], s1 = w.stretches[4 * q + 3];
        const size_t a = static_cast<size_t>(std::lower_bound(path_p.begin(), path_p.end(), p0) - path_p.begin());
        const size_t b = static_cast<size_t>(std::lower_bound(path_p.begin(), path_p.end(), p1) - path_p.begin());
        TokenTable tpt = slice_table(w.tp, w.po, p0, p1, w.buf);
        TokenTable tst = slice_table(w.ts, w.so, s0, s1, w.buf);
        w.ip.resize(static_cast<size_t>(p1 - p0));
        w.is.resize(static_cast<size_t>(s1 - s0));
        for (size_t k = 0; k < w.ip.size(); ++k) w.ip[k] = static_cast<int32_t>(k);
        for (size_t k = 0; k < w.is.size(); ++k) w.is[k] = static_cast<int32_t>(k);
        AlignResult sub = dtw_align(tpt, w.ip.data(), p1 - p0, tst, w.is.data(), s1 - s0, tie, kBandAuto);
        full.path_p.insert(full.path_p.end(), path_p.begin() + at, path_p.begin() + a);
        full.path_s.insert(full.path_s.end(), path_s.begin() + at, path_s.begin() + a);
        for (size_t k = 0; k < sub.path_p.size(); ++k) {
            full.path_p.push_back(static_cast<int32_t>(sub.path_p[k] + p0));
            full.path_s.push_back(static_cast<int32_t>(sub.path_s[k] + s0));
        }
        at = b;
    }
    full.path_p.insert(full.path_p.end(), path_p.begin() + at, path_p.end());
    full.path_s.insert(full.path_s.end(), path_s.begin() + at, path_s.end());
    finish_result(full);
    groups.swap(full.groups);
    return ALIGN_DIFF_DTW;
}

}  // namespace

std::string align_batch(const TokenBytes& pivot_bytes, const int32_t* pivot_ids, const int64_t* pivot_offsets,
                        const TokenBytes& source_bytes, const int32_t* source_ids, const int64_t* source_offsets,
                        int64_t n_seq, int64_t max_diff, int tie, int num_threads, AlignBatchOutput& out) {
    for (int64_t k = 0; k < n_seq; ++k)
        if (pivot_offsets[k + 1] < pivot_offsets[k] || source_offsets[k + 1] < source_offsets[k])
            return "align: sequence " + std::to_string(k) + ": offsets decrease";
    int n_threads = 1;
#ifdef _OPENMP
    n_threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#else
    (void)num_threads;
#endif
    std::vector<OutVec<int64_t>>& groups = out.groups;
    groups.assign(static_cast<size_t>(n_seq), OutVec<int64_t>());
    out.path.assign(static_cast<size_t>(n_seq), ALIGN_EMPTY);
    int64_t first_bad = n_seq;
    std::string message;
#pragma omp parallel num_threads(n_threads)
    {
        Scratch w;
#pragma omp for schedule(dynamic, 4)
        for (int64_t k = 0; k < n_seq; ++k) {
            try {
                const int64_t p0 = pivot_offsets[k], s0 = source_offsets[k];
                out.path[k] = align_one(pivot_bytes, pivot_ids + p0, pivot_offsets[k + 1] - p0, source_bytes,
                                        source_ids + s0, source_offsets[k + 1] - s0, max_diff, tie, w, groups[k]);
            } catch (const std::exception& e) {
#pragma omp critical(tokalign_remap_align_error)
                if (k < first_bad) {
                    first_bad = k;
                    message = "align: sequence " + std::to_string(k) + ": " + e.what();
                }
            }
        }
    }
    if (first_bad < n_seq) return message;
    out.group_offsets.assign(static_cast<size_t>(n_seq + 1), 0);
    for (int64_t k = 0; k < n_seq; ++k)
        out.group_offsets[k + 1] = out.group_offsets[k] + static_cast<int64_t>(groups[k].size() / 4);
    return "";
}

void AlignBatchOutput::copy_groups(int64_t* dst) const {
    for (size_t k = 0; k < groups.size(); ++k)
        if (!groups[k].empty()) std::memcpy(dst + 4 * group_offsets[k], groups[k].data(), groups[k].size() * sizeof(int64_t));
}

}  // namespace remap
}  // namespace tokalign
