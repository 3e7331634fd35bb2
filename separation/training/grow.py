"""Function-preserving growth of a trained band-split network (Net2Net's idea, with residual
blocks): a deeper network that computes exactly what the trained one computes, so that training
goes on from the trained weights with more capacity instead of from scratch.

A :class:`~filmrestore.separation.bandsplit.TimeBlock` whose depthwise taps, tap bias and last
MLP layer are zero, and a :class:`~filmrestore.separation.bandsplit.BandBlock` whose output map
``w2`` and bias ``b2`` are zero, pass their input through unchanged (their residual branches add
nothing); the first layers of their branches keep a random start, so the gradient reaches the
zeroed maps at once and the new blocks begin to learn on the first step.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from filmrestore.separation.bandsplit import BandSplitNet


def deepen(net: BandSplitNet, dilations: tuple[int, ...], seed: int = 0) -> BandSplitNet:
    """``net`` with one identity (time, band) block pair appended per entry of ``dilations``.

    The new network's masks equal ``net``'s for every input; its config lists every layer's
    dilation explicitly. ``net`` is not modified.
    """
    old = net.config
    layers = [old.dilations[i % len(old.dilations)] for i in range(old.n_layers)]
    config = replace(old, n_layers=old.n_layers + len(dilations), dilations=(*layers, *dilations))
    torch.manual_seed(seed)
    grown = BandSplitNet(config)
    state = grown.state_dict()
    state.update(net.state_dict())  # every old tensor keeps its name and shape
    grown.load_state_dict(state)
    with torch.no_grad():
        for k in range(old.n_layers, config.n_layers):
            time_block, band_block = grown.time_blocks[k], grown.band_blocks[k]
            for tensor in (time_block.taps, time_block.tap_bias, time_block.mlp[2].weight,
                           time_block.mlp[2].bias, band_block.w2, band_block.b2):
                tensor.zero_()
    return grown.train(net.training)
