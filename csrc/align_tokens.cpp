// TokenTable: code-point strings of a vocabulary, with markers stripped and band weights.
#include <stdexcept>

#include "tokalign/align.h"

namespace tokalign {
namespace {

constexpr uint32_t kSpMarker = 0x2581;  // '▁' SentencePiece word boundary
constexpr uint32_t kBpeMarker = 0x0120; // 'Ġ' byte-level BPE space

bool is_hex(uint32_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Approximate UTF-8 byte length of the text a token stands for, so that cumulative weights of
// two tokenizations of one text advance alike: SentencePiece byte tokens <0xNN> are one byte,
// markers and the byte-level BPE alphabet (<= U+0143) one byte per code point, other code
// points their UTF-8 length.
int64_t band_weight(const uint32_t* c, int64_t len) {
    if (len == 6 && c[0] == '<' && c[1] == '0' && c[2] == 'x' && is_hex(c[3]) && is_hex(c[4]) && c[5] == '>')
        return 1;
    int64_t w = 0;
    for (int64_t k = 0; k < len; ++k) {
        const uint32_t x = c[k];
        if (x == kSpMarker || x < 0x144) w += 1;
        else if (x < 0x800) w += 2;
        else if (x < 0x10000) w += 3;
        else w += 4;
    }
    return w;
}

}  // namespace

void TokenTable::add(const uint32_t* cps, int64_t len) {
    if (len > (int64_t(1) << 30)) throw std::invalid_argument("token longer than 2^30 code points");
    raw_.insert(raw_.end(), cps, cps + len);
    raw_off_.push_back(static_cast<int64_t>(raw_.size()));
    for (int64_t k = 0; k < len; ++k)
        if (cps[k] != kSpMarker && cps[k] != kBpeMarker) str_.push_back(cps[k]);
    str_off_.push_back(static_cast<int64_t>(str_.size()));
    weight_.push_back(band_weight(cps, len));
    if (len > max_len_) max_len_ = static_cast<int>(len);
}

void TokenTable::set_weights(const std::vector<int64_t>& w) {
    if (static_cast<int64_t>(w.size()) != size())
        throw std::invalid_argument("weights: expected one weight per token (" + std::to_string(size()) + "), got " +
                                    std::to_string(w.size()));
    for (size_t k = 0; k < w.size(); ++k)
        if (w[k] < 0) throw std::invalid_argument("weights: negative weight at index " + std::to_string(k));
    weight_ = w;
}

}  // namespace tokalign
