"""Real public data sets read from files inside pinned PyPI packages (docs/data.md).

One module per source; each ``load()`` returns the source's records as ``Example`` objects in
file order, with ``source``/``license`` set, or raises ``MissingSource`` naming the package.
"""
