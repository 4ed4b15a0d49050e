"""Every metric, statistic and figure from the activation store alone.

Never imports torch, transformers, peft, trl, train or extract (tests/test_import_boundary.py).
The metric pipeline: ``repcollapse.analyze.engine.runner.run_metrics`` (CLI: ``repcollapse analyze metrics``); the
metric registry: ``repcollapse.analyze.registry``; the one-pass accumulator: ``repcollapse.analyze.engine.moments``.

Importing the package registers the built-in metrics (``repcollapse.analyze.metrics``), so the
registry, which imports none of its clients, is never seen without them.
"""

import repcollapse.analyze.metrics  # noqa: F401  (registers the built-in metrics)
