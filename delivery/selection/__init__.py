"""The selection model shared by the client, the API and the transformers.

- :mod:`.model`: the ``uproot-raw`` JSON list of tree and copy queries, strictly validated.
- :mod:`.expr`: our expression language, parsed with :mod:`ast` into a small IR.
- :mod:`.types`: static checks of that IR against the branches a file has.

Nothing here imports uproot, awkward or numba, so the client stays light.
"""

from delivery.selection.expr import Expr, parse_expression
from delivery.selection.model import CopyQuery, Selection, TreeQuery, parse_selection

__all__ = ["CopyQuery", "Expr", "Selection", "TreeQuery", "parse_expression", "parse_selection"]
