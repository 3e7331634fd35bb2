"""The interface every dialogue/music/effects separator implements."""

from __future__ import annotations

import abc

import torch

from filmrestore import STEMS

__all__ = ["STEMS", "Separator"]


class Separator(torch.nn.Module, abc.ABC):
    """A model that splits a soundtrack into the three DME stems.

    Subclasses implement :meth:`forward`. The streaming engine
    (:mod:`filmrestore.separation.engine`) runs them over a file in overlapping
    segments and enforces mixture consistency afterwards, so a separator only
    has to be good, not exact.
    """

    #: Rate the separator works at (the pipeline's internal rate).
    sample_rate_hz: int = 48000
    #: Short name, recorded in stage manifests.
    name: str = "separator"
    #: Hint: frames of context on each side that the separator needs before its
    #: output is stable. The engine's segment overlap should cover twice this.
    context_frames: int = 0
    #: Whether the engine may run :meth:`forward` under CUDA bf16 autocast.
    supports_autocast: bool = True

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Separate a batch of segments.

        Args:
            x: mixture [shape=(batch, n_channels, n_samples)], float, at
                :attr:`sample_rate_hz`.

        Returns:
            stems [shape=(batch, 3, n_channels, n_samples)] in :data:`STEMS` order.
        """
