"""Object width: the polar extent panner of ITU-R BS.2127 s7.3.8 (``ear/core/objectbased/extent.py``).

An object with ``width`` > 0 (degrees, edge to edge; ``height`` 0 as this project's plans
write it) is spread over a region around its position: a width x height rectangle in
azimuth-elevation space with maximally rounded corners, fading out over 10 deg. The region
weights a fixed, even grid of virtual sources on the sphere (37 rows, about 5 deg apart), each
panned by the point-source panner; the weighted sum is power-normalised. Below 10 deg of width
the result is a power cross-fade between the point source and the spread of a 10 deg region,
so width 0 is the point source exactly. At the ADM default distance (1) ``ear``'s distance
modification of the extent leaves it unchanged. The steps follow ``ear`` line for line, so
that a bed rendered here is what ``ear-render`` makes of the ADM file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from filmrestore.layouts import Layout
from filmrestore.upmix.panner import cart, panner_for

FADE_WIDTH_DEG = 10.0
GRID_ROWS = 37  # rows of virtual sources from pole to pole: about 5 deg apart


def _even_grid(n_rows: int) -> np.ndarray:
    """Points spread evenly on the sphere [shape=(n, 3)] (ear's ``generate_panning_positions_even``)."""
    positions = []
    for el in np.linspace(-90, 90, num=n_rows, endpoint=True):
        n_points = int(round(np.cos(np.radians(el)) * 2 * (n_rows - 1))) or 1
        positions += [cart(az, el) for az in np.linspace(0, 360, num=n_points, endpoint=False)]
    return np.array(positions)


@functools.lru_cache(maxsize=8)
def _grid_gains(layout_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The virtual sources and their point-source gains (non-LFE channels) on a layout."""
    grid = _even_grid(GRID_ROWS)
    panner = panner_for(layout_name)
    return grid, np.array([panner.gains(p) for p in grid])


def _basis(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Rows x, y, z of a coordinate system whose y points at the position (ear's ``calc_basis``)."""
    az = 0.0 if abs(elevation_deg) > 90 - 1e-5 else azimuth_deg
    return cart(np.array([az - 90.0, az, az]), np.array([0.0, elevation_deg, elevation_deg + 90.0]))


def _on_basis(basis: np.ndarray, az: np.ndarray, el: np.ndarray) -> np.ndarray:
    return np.dot(np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)]).T, basis)


def weight_function(azimuth_deg: float, elevation_deg: float, width_deg: float,
                    height_deg: float) -> Callable[[np.ndarray], np.ndarray]:
    """Weight in [0, 1] of unit vectors [shape=(n, 3)] for a region of this size around the
    position (ear's ``PolarExtentPanner.get_weight_func``)."""
    width, height = np.radians(width_deg) / 2, np.radians(height_deg) / 2
    basis = _basis(azimuth_deg, elevation_deg)
    circle_radius = min(width, height)
    if height > width:
        width, height = height, width
        basis = basis[[2, 1, 0]]
    width_full = np.pi + height  # the width that makes the two ends meet at the back
    width_mod = np.interp(width, [0, np.pi / 2, np.pi], [0, np.pi / 2, width_full])
    width = np.interp(height, [0, np.pi / 4, np.pi / 2, np.pi], [width_mod, width_mod, width, width])
    circle_pos = width - circle_radius
    circles = _on_basis(basis, np.array([-circle_pos, circle_pos]), np.zeros(2))

    def weights(vectors: np.ndarray) -> np.ndarray:
        components = np.clip(np.dot(vectors, basis.T), -1.0, 1.0)
        azimuths = np.arctan2(components[..., 0], components[..., 1])
        elevations = np.arcsin(components[..., 2])
        distances = np.zeros(len(vectors))
        flat = abs(azimuths) <= circle_pos
        distances[flat] = np.abs(elevations[flat]) - circle_radius
        to_circles = np.arccos(np.clip(np.dot(vectors[~flat], circles.T), -1, 1))
        distances[~flat] = np.min(to_circles, axis=1) - circle_radius
        return np.interp(distances, [0, np.radians(FADE_WIDTH_DEG)], [1, 0])

    return weights


@functools.lru_cache(maxsize=4096)
def _extent_gains(layout_name: str, azimuth_mdeg: int, elevation_mdeg: int, width_mdeg: int) -> np.ndarray:
    az, el, width = azimuth_mdeg / 1000.0, elevation_mdeg / 1000.0, width_mdeg / 1000.0
    panner = panner_for(layout_name)
    spread = np.interp(width, [0, FADE_WIDTH_DEG], [0, 1])
    power = 0.0
    if 1.0 - spread > 1e-10:
        power = power + (1.0 - spread) * panner.gains(cart(az, el)) ** 2
    if spread > 1e-10:
        grid, grid_gains = _grid_gains(layout_name)
        weights = weight_function(az, el, max(width, FADE_WIDTH_DEG / 2), FADE_WIDTH_DEG / 2)(grid)
        total = np.dot(weights, grid_gains)
        power = power + spread * (total / np.linalg.norm(total)) ** 2
    layout = panner.layout
    full = np.zeros(layout.n_channels)
    full[[i for i, s in enumerate(layout.speakers) if not s.is_lfe]] = np.sqrt(power)
    full.setflags(write=False)
    return full


def extent_gains(layout: Layout, azimuth_deg: float, elevation_deg: float, width_deg: float) -> np.ndarray:
    """Gains [shape=(n_channels,)] in the layout's WAV order (LFE 0) of an object of this width
    (height 0). Rounded to 1/1000 deg and cached, like the point-source gains."""
    return _extent_gains(layout.name, int(round(azimuth_deg * 1000)), int(round(elevation_deg * 1000)),
                         int(round(width_deg * 1000)))
