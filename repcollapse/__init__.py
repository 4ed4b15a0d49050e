"""repcollapse: measure representation collapse across sequential post-training.

The pipeline, one sub-package a step: ``repcollapse.train`` (sequential post-training and
behavioural evaluation) -> ``repcollapse.extract`` (each checkpoint once over the probe corpus,
into the store) -> ``repcollapse.store_schema`` (the store contract, shared by both sides) ->
``repcollapse.analyze`` (metrics, statistics, figures and tables from the store alone).
``repcollapse.cli`` is the ``repcollapse`` command.
"""

__version__ = "0.1.0"
