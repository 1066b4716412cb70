// Sequence alignment core: token tables, DTW (full / banded), span alignment, result building.
#pragma once
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace tokalign {

// Code-point strings of one vocabulary (or of one token list), built once and shared by all
// alignments. Per entry: the raw string, the string with U+2581/U+0120 removed, and a band
// weight (approximate UTF-8 byte length of the text the token stands for).
class TokenTable {
   public:
    TokenTable() { raw_off_.push_back(0); str_off_.push_back(0); }

    // Appends one token given as code points.
    void add(const uint32_t* cps, int64_t len);
    // Overrides the band weights (one per entry, >= 0).
    void set_weights(const std::vector<int64_t>& w);

    int64_t size() const { return static_cast<int64_t>(raw_off_.size()) - 1; }
    const uint32_t* raw(int64_t id) const { return raw_.data() + raw_off_[id]; }
    int raw_len(int64_t id) const { return static_cast<int>(raw_off_[id + 1] - raw_off_[id]); }
    const uint32_t* stripped(int64_t id) const { return str_.data() + str_off_[id]; }
    int stripped_len(int64_t id) const { return static_cast<int>(str_off_[id + 1] - str_off_[id]); }
    int64_t weight(int64_t id) const { return weight_[id]; }
    int max_len() const { return max_len_; }

   private:
    std::vector<uint32_t> raw_, str_;
    std::vector<int64_t> raw_off_, str_off_, weight_;
    int max_len_ = 0;
};

// Allocator whose resize() leaves new elements uninitialised: result arrays are written exactly
// once, so value-initialising them first would only add a pass over fresh memory.
template <class T>
struct UninitAllocator : std::allocator<T> {
    using std::allocator<T>::allocator;
    UninitAllocator() noexcept = default;
    template <class U>
    UninitAllocator(const UninitAllocator<U>&) noexcept {}
    template <class U>
    struct rebind {
        using other = UninitAllocator<U>;
    };
    template <class U>
    void construct(U* p) noexcept {
        ::new (static_cast<void*>(p)) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
};
template <class T>
using OutVec = std::vector<T, UninitAllocator<T>>;

// One alignment: the monotone path plus CSR maps both ways and groups. A monotone path is
// sorted by (pivot, source) and by (source, pivot), so the CSR index arrays are the path's
// columns themselves: p2s_indices == path_s and s2p_indices == path_p (not stored twice).
struct AlignResult {
    int64_t n = 0, m = 0;
    OutVec<int32_t> path_p, path_s;         // path cells in order
    OutVec<int64_t> p2s_indptr, s2p_indptr;  // n+1, m+1
    OutVec<int64_t> groups;                  // G*4: p_start, p_end, s_start, s_end
    int64_t kinds[4] = {0, 0, 0, 0};         // 1:1, 1:n, n:1, n:m
    int64_t cost = -1;                       // DTW cost (-1 for span)
    int64_t band = -1;                       // final band radius, -1 = full matrix
};

// Fills the CSR pointers, groups and kind counts from path_p/path_s (already set in r: a path
// from (0, 0) to (n-1, m-1) with unit steps, or empty).
void finish_result(AlignResult& r);

// Band argument: < 0 full matrix, 0 automatic, > 0 initial radius in weight units.
constexpr int64_t kBandFull = -1;
constexpr int64_t kBandAuto = 0;
// Default cell budget: the full matrix (2 bits per cell => 1 GiB of moves) and each pass of the
// exact banded DTW refuse more cells than this.
constexpr int64_t kMaxFullCells = INT64_C(1) << 32;

// DTW of pivot ids (in tp) against source ids (in ts). Throws std::invalid_argument on bad
// input or when a pass would evaluate more than max_cells cells. Empty sequences give an empty
// path. Banded results equal the full DTW exactly (see align_dtw.cpp).
AlignResult dtw_align(const TokenTable& tp, const int32_t* ip, int64_t n, const TokenTable& ts,
                      const int32_t* is, int64_t m, int tie, int64_t band, int64_t max_cells = kMaxFullCells);

// Span alignment of char offsets ([n,2] / [m,2], row-major) over the same text.
// dirty flags (may be null) mark tokens whose chars are not in the shared text; consecutive
// groups containing a dirty token are merged into stretches (p0, p1, s0, s1) returned in
// `stretches`; their path cells are a placeholder to be replaced by DTW.
AlignResult span_align(const int64_t* po, int64_t n, const int64_t* so, int64_t m, const uint8_t* pdirty,
                       const uint8_t* sdirty, std::vector<int64_t>* stretches);

// Matching blocks (a_start, b_start, len) between two code-point texts (Myers O(ND) diff after
// trimming the common prefix and suffix). If the middle needs more than max_d edits the whole
// middle is reported as one differing stretch.
std::vector<int64_t> text_blocks(const uint32_t* a, int64_t na, const uint32_t* b, int64_t nb, int64_t max_d);

}  // namespace tokalign
