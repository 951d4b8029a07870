"""Type stubs of hopfield_gpu (see __init__.py for the documentation)."""

import dataclasses
import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from ._native import METHOD_PARAMS as METHOD_PARAMS
from ._native import METHODS as METHODS
from ._native import Context as Context
from ._native import Layer as Layer
from ._native import MemoryBank as MemoryBank
from ._native import Retrieval as Retrieval
from ._native import ShardedBank as ShardedBank
from ._native import adapters as adapters

@dataclasses.dataclass
class Partial:
    method: str
    rows: int
    value_dim: int
    offset: int
    memories: int
    beta: float
    one_d: bool = ...
    k: Optional[int] = ...
    z: Optional[np.ndarray] = ...
    log_sum_exp: Optional[np.ndarray] = ...
    max_score: Optional[np.ndarray] = ...
    argmax: Optional[np.ndarray] = ...
    scores: Optional[np.ndarray] = ...
    indices: Optional[np.ndarray] = ...
    values: Optional[np.ndarray] = ...

def default_context() -> Context: ...
def retrieve(memories: Any, queries: Any, beta: float, *, values: Any = ..., **options: Any) -> Retrieval: ...
def merge(parts: Sequence[Partial]) -> Retrieval: ...
def load_layer(
    config: Union[str, os.PathLike[str]],
    weights: Union[str, os.PathLike[str]],
    method: Optional[str] = ...,
    *,
    device: Optional[str] = ...,
    stop: str = ...,
    **params: Any,
) -> Layer: ...
