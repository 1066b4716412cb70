"""The forward pass of one padded batch and the per-token statistics the store keeps (top-K, logsumexp,
gold-token cross-entropy), computed on the model's device: only ``K + 2`` numbers per token reach the host."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import TokalignError
from .samples import PreparedSample

#: float32 elements of one row chunk of logits processed at once (256 MiB): bounds the temporary memory of the
#: top-K / logsumexp pass independently of the batch size.
ROW_CHUNK_ELEMENTS = 1 << 26


def topk_statistics(logits, next_ids, k: int, id_limit: Optional[int] = None, row_chunk: Optional[int] = None):
    """Top-K, logsumexp and gold-token cross-entropy of one sequence's logits, on their device.

    Args:
        logits: ``[L, V]`` tensor (any float dtype; math in float32).
        next_ids: ``[L - 1]`` long tensor, the gold next tokens ``input_ids[1:]``.
        k: slots per position.
        id_limit: only ids ``< id_limit`` may enter the top-K (the tokenizer's size when the model's output is
            padded); ``logsumexp`` and ``token_ce`` still use the full output (the model's exact distribution).
        row_chunk: rows per pass (default: ``ROW_CHUNK_ELEMENTS // V``), bounding the float32 temporaries.

    Returns ``(topk_ids int32 [L, K], topk_logits float32 [L, K], logsumexp float32 [L], token_ce float32 [L])``
    with ``token_ce[t] = logsumexp[t] - logits[t, next_ids[t]]`` and ``token_ce[L-1] = 0``. NaN/Inf logits stay
    visible (``torch.topk`` ranks NaN first; logsumexp becomes NaN/Inf) so the store flags the sample.
    """
    import torch

    length, vocab = int(logits.shape[0]), int(logits.shape[1])
    limit = vocab if id_limit is None else min(int(id_limit), vocab)
    if row_chunk is None:
        row_chunk = max(1, ROW_CHUNK_ELEMENTS // max(vocab, 1))
    ids_out, vals_out, lse_out, ce_out = [], [], [], []
    next_ids = next_ids.to(device=logits.device, dtype=torch.long)
    for lo in range(0, length, row_chunk):
        hi = min(length, lo + row_chunk)
        x = logits[lo:hi].float()
        lse = torch.logsumexp(x, dim=-1)
        vals, idx = torch.topk(x[:, :limit] if limit < vocab else x, k, dim=-1, largest=True, sorted=True)
        ce = torch.zeros(hi - lo, dtype=torch.float32, device=x.device)
        n_gold = min(hi, length - 1) - lo  # rows of this chunk that have a next token
        if n_gold > 0:
            gold = x[:n_gold].gather(1, next_ids[lo:lo + n_gold, None]).squeeze(1)
            ce[:n_gold] = lse[:n_gold] - gold
        ids_out.append(idx.to(torch.int32))
        vals_out.append(vals)
        lse_out.append(lse)
        ce_out.append(ce)
    return torch.cat(ids_out), torch.cat(vals_out), torch.cat(lse_out), torch.cat(ce_out)


def forward_batch(model, batch: Sequence[PreparedSample], *, device, k: int, vocab_size: int, id_limit: int,
                  pad_id: int = 0) -> List[Dict[str, Any]]:
    """Run one padded batch (right padding, attention mask) and return the store's sample dicts (numpy).

    Right padding leaves every real position's logits unchanged under causal attention; positions start at 0.
    All per-sample statistics are concatenated on the device and copied to the host in one transfer.
    """
    import torch

    lengths = [len(s) for s in batch]
    longest = max(lengths)
    ids = torch.full((len(batch), longest), int(pad_id), dtype=torch.long)
    attn = torch.zeros((len(batch), longest), dtype=torch.long)
    for b, s in enumerate(batch):
        ids[b, :len(s)] = torch.from_numpy(s.input_ids.astype(np.int64))
        attn[b, :len(s)] = 1
    ids, attn = ids.to(device), attn.to(device)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=attn, use_cache=False)
        logits = out.logits if hasattr(out, "logits") else out[0]
        if logits.dim() != 3 or int(logits.shape[-1]) != int(vocab_size):
            raise TokalignError("the model returned logits of shape %s, expected [batch, length, %d]"
                                % (tuple(logits.shape), vocab_size))
        parts = [topk_statistics(logits[b, :n], ids[b, 1:n], k, id_limit=id_limit) for b, n in enumerate(lengths)]
        cat = [torch.cat([p[f] for p in parts]) for f in range(4)]
        topk_ids, topk_vals, lse, ce = (t.cpu().numpy() for t in cat)
    samples = []
    start = 0
    for s, n in zip(batch, lengths):
        sl = slice(start, start + n)
        samples.append({"sample_id": s.sample_id, "input_ids": s.input_ids, "loss_mask": s.loss_mask,
                        "topk_ids": topk_ids[sl], "topk_logits": topk_vals[sl], "logsumexp": lse[sl],
                        "token_ce": ce[sl]})
        start += n
    return samples
