"""The transform engine and the workers around it.

Layers, each with its contract in its module docstring:

- **source** (:mod:`.source`, :mod:`.table`): URL policy and opening, replicas,
  TTree and RNTuple behind one interface, chunked reads of exact branch names.
- **selection** (:mod:`.plan`, :mod:`.evaluate`, :mod:`.kernel_source`,
  :mod:`.kernels`): a parsed query resolved against a file's catalogue, then
  evaluated with awkward (the reference) or compiled numba kernels.
- **sink** (:mod:`.sinks`, :mod:`.copy`): streaming Parquet, Arrow IPC and ROOT
  writers that publish a file atomically or not at all.
- **run** (:mod:`.run`): one file end to end, returning a :class:`FileResult`.
- **workers** (:mod:`.worker`, :mod:`.reporters`, :mod:`.pool`): the long-lived
  loop that joins broker, engine, result store and reporting; the embedded pool.
- **generate** (:mod:`.generate`): NanoAOD-like files for tests, benchmarks and demos.

The engine knows nothing of HTTP, SQL or queues. Names are loaded lazily, so
importing a light module here (say :mod:`.pool`) does not load uproot.
"""

from typing import Any

__all__ = ["FileResult", "TransformOptions", "run_file", "transform_file"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from transformers import run

        return getattr(run, name)
    raise AttributeError(f"module 'transformers' has no attribute {name!r}")
