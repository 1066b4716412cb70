// TokenTable: code-point strings of a vocabulary, with markers stripped and band weights.
#include <stdexcept>

#include "tokalign/align.h"
#include "tokalign/dtw_band.h"

namespace tokalign {

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
