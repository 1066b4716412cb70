// Exact character offsets from canonical token bytes: the C++ port of canonical.exact_offsets_reference().
//
// Per item, the kept (not inserted) tokens' canonical bytes must concatenate to the text, where some tokens
// may carry a *phantom* leading space (the SentencePiece dummy prefix) that is not in the text. Candidate
// phantom sets are tried in the reference's order; the first that adds up wins. Byte spans are then mapped
// to character spans: a token starts at the character holding its first byte and ends one past the
// character holding its last byte (so byte-level pieces of one character share its span).
#include <cstring>

#include "tokalign/offsets.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tokalign {

void CanonicalTable::add(const uint8_t* p, int64_t len, bool is_added) {
    if (begin.empty()) begin.push_back(0);
    bytes.insert(bytes.end(), p, p + len);
    begin.push_back(static_cast<int64_t>(bytes.size()));
    added.push_back(is_added ? 1 : 0);
    space_first.push_back(len > 0 && p[0] == ' ' ? 1 : 0);
}

namespace {

enum class Candidate { kNone, kFirst, kEvery };

// True when the kept tokens' bytes (a phantom token's first byte must be the phantom b" " and is not
// in the text) equal the text; the total length was checked by the caller.
bool verify(const CanonicalTable& t, const OffsetItem& it, const uint8_t* phantom) {
    int64_t pos = 0;
    for (int64_t k = 0; k < it.n; ++k) {
        if (it.inserted && it.inserted[k]) continue;
        const int32_t id = it.ids[k];
        const uint8_t* p = t.bytes.data() + t.begin[id];
        int64_t len = t.begin[id + 1] - t.begin[id];
        if (phantom && phantom[k]) {
            if (len < 1 || p[0] != ' ') return false;
            ++p;
            --len;
        }
        if (len && std::memcmp(p, it.text + pos, static_cast<size_t>(len)) != 0) return false;
        pos += len;
    }
    return true;
}

}  // namespace

bool exact_offsets_one(const CanonicalTable& t, const OffsetItem& it, std::vector<uint8_t>& scratch) {
    const int64_t n = it.n;
    if (n == 0) return true;
    // Kept tokens: their total byte length and the "every segment start" phantom set.
    int64_t total = 0, kept = 0, n_every = 0;
    bool any_inserted = false;
    const bool prepend = t.prepend != Prepend::kNever;
    if (prepend) scratch.assign(static_cast<size_t>(n), 0);
    int64_t first_kept = -1;
    bool prev_added = true;  // a segment starts at the first kept token
    for (int64_t k = 0; k < n; ++k) {
        if (it.inserted && it.inserted[k]) {
            any_inserted = true;
            continue;
        }
        const int32_t id = it.ids[k];
        total += t.begin[id + 1] - t.begin[id];
        if (first_kept < 0) first_kept = k;
        ++kept;
        if (prepend) {
            const bool add = t.added[id] != 0;
            if (!add && prev_added && t.space_first[id]) {
                scratch[k] = 1;
                ++n_every;
            }
            prev_added = add;
        }
    }
    // Candidate order as in the reference: always -> [every, first, none]; first -> [first, every, none].
    Candidate order[3] = {Candidate::kNone, Candidate::kNone, Candidate::kNone};
    int n_cand = 1;
    if (prepend && kept > 0) {
        n_cand = 3;
        if (t.prepend == Prepend::kAlways) {
            order[0] = Candidate::kEvery;
            order[1] = Candidate::kFirst;
        } else {
            order[0] = Candidate::kFirst;
            order[1] = Candidate::kEvery;
        }
    }
    const int64_t first_phantom = (prepend && kept > 0 && scratch[first_kept]) ? 1 : 0;
    std::vector<uint8_t> first_only;  // only allocated when needed (rare)
    const uint8_t* phantom = nullptr;
    bool found = false;
    for (int c = 0; c < n_cand && !found; ++c) {
        int64_t cnt = 0;
        if (order[c] == Candidate::kEvery) {
            cnt = n_every;
            phantom = scratch.data();
        } else if (order[c] == Candidate::kFirst) {
            cnt = first_phantom;
            if (cnt == n_every) {
                phantom = scratch.data();  // the same set as "every"
            } else {
                first_only.assign(static_cast<size_t>(n), 0);
                first_only[first_kept] = 1;
                phantom = first_only.data();
            }
            if (cnt == 0) phantom = nullptr;
        } else {
            cnt = 0;
            phantom = nullptr;
        }
        if (total - cnt != it.text_len) continue;
        found = verify(t, it, phantom);
    }
    if (!found) return false;

    // Byte spans -> character spans. For valid UTF-8, byte length == character count iff all ASCII.
    bool ascii = true;
    for (int64_t b = 0; b < it.text_len; ++b)
        if (it.text[b] & 0x80) {
            ascii = false;
            break;
        }
    int64_t cursor_b = 0, cursor_c = 0;  // chars (lead bytes) in text[0, cursor_b)
    auto chars_before = [&](int64_t x) {
        while (cursor_b < x) {
            cursor_c += (it.text[cursor_b] & 0xC0) != 0x80;
            ++cursor_b;
        }
        return cursor_c;
    };
    int64_t pos = 0, last_end = 0;
    for (int64_t k = 0; k < n; ++k) {
        int64_t* o = it.out + 2 * k;
        if (any_inserted && it.inserted[k]) {
            o[0] = o[1] = last_end;  // empty span at the end of the previous kept token
            continue;
        }
        const int32_t id = it.ids[k];
        const int64_t real = t.begin[id + 1] - t.begin[id] - ((phantom && phantom[k]) ? 1 : 0);
        const int64_t s = pos, e = pos + real;
        pos = e;
        if (ascii) {
            o[0] = s;
            o[1] = e;
        } else if (e > s) {
            o[0] = chars_before(s + 1) - 1;
            o[1] = chars_before(e);
        } else {
            o[0] = o[1] = chars_before(s);
        }
        last_end = o[1];
    }
    return true;
}

void exact_offsets_batch(const CanonicalTable& table, const std::vector<OffsetItem>& items, uint8_t* ok) {
    const int64_t m = static_cast<int64_t>(items.size());
    int64_t work = 0;
    for (const auto& it : items) work += it.n + it.text_len;
    // Threads pay only past a few hundred microseconds of work (about 1 ns per byte/token).
    const bool parallel = m > 1 && work > (1 << 18);
#pragma omp parallel if (parallel)
    {
        std::vector<uint8_t> scratch;
#pragma omp for schedule(dynamic, 8)
        for (int64_t k = 0; k < m; ++k) ok[k] = exact_offsets_one(table, items[k], scratch) ? 1 : 0;
    }
}

}  // namespace tokalign
