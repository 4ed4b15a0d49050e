"""The built-in metrics: importing this package registers every one of them."""

from repcollapse.analyze.metrics import (  # noqa: F401
    collapse,
    geometry,
    logits,
    lora,
    separability,
    spectrum,
)
