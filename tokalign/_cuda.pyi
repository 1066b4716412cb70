# Typed stub of tokalign._cuda, the optional CUDA extension (csrc/cuda/bind_cuda.cpp; built when nvcc is
# found at install time, docs/cuda.md). Every entry point releases the GIL; device memory is managed by the
# extension. `device` is a CUDA device index (tokalign.device.device_index()); `emulate=True` runs the
# kernels' code on the host (tests, no GPU needed). Argument errors raise ValueError / TypeError, CUDA
# failures RuntimeError; Python code calls these through tokalign._native.call (one-line TokalignError).
# tests/test_native.py checks that this stub and the module export the same names.
from typing import Dict, List, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

MINED_MAX_TOP_N: int  # largest top_n the GPU MinED search takes
MINED_MAX_QUERY_UNITS: int  # longer queries (text units) are left to the CPU (cpu_rows)
DTW_MAX_PIVOT: int  # longer pivot sequences are left to the CPU (None results)

class _DeviceInfo(TypedDict):
    count: int  # visible devices; 0 with `error` saying why when none can be used
    error: str
    name: str
    compute_capability: Tuple[int, int]
    total_memory: int  # bytes
    driver_version: int
    runtime_version: int

class _DtwPair(TypedDict):
    path_p: NDArray[np.int32]  # pivot index of each path step
    path_s: NDArray[np.int32]  # source index of each path step
    cost: int
    band: int  # band radius of the result (-1: full matrix)

# Visible CUDA devices. Never raises.
def device_info() -> _DeviceInfo: ...

# All-pairs MinED with the CPU MinEDIndex's result order. candidate: bool per pivot text; rank: int64 per pivot
# text; query: bool per source text (None: all). Returns (ids, dists) int32 (n_source, top_n), -1 where empty;
# cpu_rows (bool, n_source) marking rows left to the CPU (longer than MINED_MAX_QUERY_UNITS units); stats with
# exact, filtered, evaluated, candidates, gpu_queries, kernel_ms, gpu_total_ms.
def mined_search(pivot_texts: Sequence[bytes], candidate: ArrayLike, rank: ArrayLike, source_texts: Sequence[bytes],
                 query: Optional[ArrayLike] = None, top_n: int = 1, device: int = 0, emulate: bool = False
                 ) -> Tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.bool_], Dict[str, Union[int, float]]]: ...

class DtwTable:
    """Token strings (str or None) of one vocabulary as code points, with band weights (the same default as
    tokalign._core.TokenTable); copied to the GPU on first use."""

    # TypeError for items that are neither str nor None; ValueError for a weight count or negative weight.
    def __init__(self, tokens: Sequence[Optional[str]], weights: Optional[Sequence[int]] = None) -> None: ...
    def __len__(self) -> int: ...

# Batched FuseChat DTW. tie: 0 pivot first, 1 source first; band: -1 full matrix, 0 auto, > 0 initial radius.
# Returns (results, stats): per pair a dict or None where the pair is left to the CPU (empty, pivot longer than
# DTW_MAX_PIVOT, more than max_cells band cells, two tokens both longer than 64 code points in one cell);
# stats: kernel_ms (summed cudaEvent time), rounds, launches, cells, cpu_pairs, widened.
def dtw_batch(pivot_table: DtwTable, pivot_ids: Sequence[ArrayLike], source_table: DtwTable,
              source_ids: Sequence[ArrayLike], tie: int = 0, band: int = 0, device: int = 0,
              max_cells: int = 268435456, emulate: bool = False
              ) -> Tuple[List[Optional[_DtwPair]], Dict[str, Union[int, float]]]: ...
