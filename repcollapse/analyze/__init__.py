"""Every metric, statistic and figure from the activation store alone.

Never imports torch, transformers, peft, trl, train or extract (tests/test_import_boundary.py).
The metric pipeline: ``repcollapse.analyze.engine.runner.run_metrics`` (CLI: ``repcollapse analyze metrics``); the
metric registry: ``repcollapse.analyze.registry``; the one-pass accumulator: ``repcollapse.analyze.engine.moments``.
"""
