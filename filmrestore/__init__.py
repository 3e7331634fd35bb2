"""filmrestore: film-soundtrack restoration and immersive upmix.

The import package maps the repository's top-level folders:
``filmrestore.flows`` (flows/), ``filmrestore.tasks`` (tasks/),
``filmrestore.separation`` (separation/) and ``filmrestore.upmix`` (upmix/).
This folder holds what they all share (errors, audio file I/O, manifests, the stem names) and
the libraries of media decoding (``filmrestore.media``), loudness (``filmrestore.loudness``)
and restoration (``filmrestore.restoration``).
"""

__version__ = "0.1.0"

SAMPLE_RATE_HZ = 48_000
"""Internal sample rate of every stage."""

STEMS: tuple[str, str, str] = ("dialogue", "music", "effects")
"""The three DME stems, in the order every stage, file and model output uses."""

DEFAULT_SEPARATOR = "neural"
"""The separator `run`, `separate`, the flows and the tasks use unless told otherwise: the one that
measures best on the legacy test split (README, *Measured figures*)."""
