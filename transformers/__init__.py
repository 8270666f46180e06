"""The transform engine and, later, the worker loop.

Layers, each with its contract in its module docstring:

- **source** (:mod:`.source`, :mod:`.table`): URL policy and opening, replicas,
  TTree and RNTuple behind one interface, chunked reads of exact branch names.
- **selection** (:mod:`.plan`, :mod:`.evaluate`, :mod:`.kernel_source`, :mod:`.kernels`): a parsed
  query resolved against a file's catalogue, then evaluated with awkward
  (the reference) or compiled numba kernels (the fast path for cuts).
- **sink** (:mod:`.sinks`, :mod:`.copy`): streaming Parquet, Arrow IPC and ROOT
  writers that publish a file atomically or not at all.
- **run** (:mod:`.run`): one file end to end, returning a :class:`FileResult`.
- **generate** (:mod:`.generate`): NanoAOD-like files for tests, benchmarks and demos.

The engine knows nothing of HTTP, SQL or queues.
"""

from transformers.run import FileResult, TransformOptions, run_file, transform_file

__all__ = ["FileResult", "TransformOptions", "run_file", "transform_file"]
