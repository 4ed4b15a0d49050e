from __future__ import annotations

import sys
from pathlib import Path

# tests/ helpers (tiny_model, make_golden) are importable as plain modules.
sys.path.insert(0, str(Path(__file__).parent))
