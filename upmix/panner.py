"""Point-source panning of objects onto a BS.2051 layout, as the EBU ADM renderer does it.

This follows ITU-R BS.2127 s6.1 (the point-source panner of the EBU ADM
renderer ``ear``, ``ear/core/point_source.py``), so that a bed we render from
objects is what ``ear-render`` makes of our ADM file:

- the layout's speakers (LFE excluded) are placed on the unit sphere;
- layers without speakers get *extra* speakers copied from the mid layer (below
  every layout here; above it where the upper layer does not reach that far
  round), whose gains are later downmixed 1:1 onto their mid-layer speaker;
- virtual speakers straight down (always) and straight up (unless ``T+000`` or
  ``UH+180`` exists) become the centre of *virtual n-gons* whose gain is
  spread equally over the n real speakers around them;
- the convex hull of all of these, with coplanar triangles merged, gives the
  regions: triangles use VBAP (s6.1.2.1), quadrilaterals the bilinear panner
  of s6.1.2.2;
- 0+2+0 pans on 0+5+0 and folds down with a velocity-preserving BS.775 matrix
  and a level that falls to -3 dB towards the back (s6.1.3.1).

Gains are power-normalised. Positions are ADM polar (azimuth anticlockwise from
the front, elevation up, in degrees); Cartesian vectors follow ADM: x right,
y front, z up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import scipy.spatial

from filmrestore.errors import ConfigError
from filmrestore.layouts import Layout, get_layout

_EPS_TRIPLET = -1e-11
_EPS_QUAD = 1e-10


def cart(azimuth_deg: float | np.ndarray, elevation_deg: float | np.ndarray, distance: float = 1.0) -> np.ndarray:
    """ADM polar -> Cartesian [shape=(..., 3)]: x = -sin(az) cos(el), y = cos(az) cos(el), z = sin(el)."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return distance * np.stack([np.sin(-az) * np.cos(el), np.cos(-az) * np.cos(el), np.sin(el)], axis=-1)


def ngon_vertex_order(vertices: np.ndarray) -> np.ndarray:
    """Order of the vertices [shape=(n, 3)] of a convex, nearly planar polygon around its centre."""
    centre = vertices.mean(axis=0)
    rel = vertices - centre
    a = rel[0]
    b = min(rel[1:], key=lambda v: abs(float(np.dot(v, a))))
    return np.argsort(np.arctan2(rel @ a, rel @ b))


class _Triplet:
    """VBAP over three speakers: gains g >= 0 with g @ positions collinear with the source, |g| = 1."""

    def __init__(self, channels: Sequence[int], positions: np.ndarray) -> None:
        self.channels = np.asarray(channels, dtype=int)
        self._basis = np.linalg.inv(np.asarray(positions, dtype=float))

    def gains(self, position: np.ndarray) -> np.ndarray | None:
        pv = position @ self._basis
        if np.all(pv >= _EPS_TRIPLET):
            return np.clip(pv / np.linalg.norm(pv), 0.0, 1.0)
        return None


class _VirtualNgon:
    """n real speakers around a virtual centre speaker whose gain goes to all n at 1/sqrt(n)."""

    def __init__(self, channels: Sequence[int], positions: np.ndarray, centre: np.ndarray) -> None:
        self.channels = np.asarray(channels, dtype=int)
        n = len(self.channels)
        order = ngon_vertex_order(positions)
        self._triplets = [
            _Triplet([order[i], order[(i + 1) % n], n],
                     np.array([positions[order[i]], positions[order[(i + 1) % n]], centre]))
            for i in range(n)
        ]
        self._downmix = np.full(n, 1.0 / np.sqrt(n))

    def gains(self, position: np.ndarray) -> np.ndarray | None:
        n = len(self.channels)
        for triplet in self._triplets:
            pv = triplet.gains(position)
            if pv is not None:
                full = np.zeros(n + 1)
                full[triplet.channels] = pv
                out = full[:n] + full[n] * self._downmix
                return out / np.linalg.norm(out)
        return None


def _quad_axis(corners: np.ndarray) -> Callable[[np.ndarray], float | None]:
    """Pan parameter in [0, 1] along one axis of a quadrilateral (BS.2127 s6.1.2.2)."""
    a, b, c, d = corners
    poly = np.array([np.cross(b - a, c - d), np.cross(a, c - d) + np.cross(b - a, d), np.cross(a, d)])

    def axis(position: np.ndarray) -> float | None:
        for root in np.roots(poly @ position):
            if abs(root.imag) < _EPS_QUAD and -_EPS_QUAD < root.real < 1 + _EPS_QUAD:
                return float(np.clip(root.real, 0.0, 1.0))
        return None

    return axis


class _Quad:
    """Four coplanar speakers, panned bilinearly."""

    def __init__(self, channels: Sequence[int], positions: np.ndarray) -> None:
        self.channels = np.asarray(channels, dtype=int)
        self._positions = np.asarray(positions, dtype=float)
        self._order = ngon_vertex_order(self._positions)
        ordered = self._positions[self._order]
        self._pan_x = _quad_axis(ordered)
        self._pan_y = _quad_axis(ordered[[1, 2, 3, 0]])

    def gains(self, position: np.ndarray) -> np.ndarray | None:
        x, y = self._pan_x(position), self._pan_y(position)
        if x is None or y is None:
            return None
        pv = np.zeros(4)
        pv[self._order] = [(1 - x) * (1 - y), x * (1 - y), x * y, (1 - x) * y]
        if pv @ self._positions @ position <= 0:
            return None
        return pv / np.linalg.norm(pv)


def _extra_speakers(azimuths_deg: np.ndarray, elevations_deg: np.ndarray) -> list[tuple[float, float, int]]:
    """Extra (azimuth, elevation, mid-layer index) speakers that fill the upper and lower layers.

    A layer's azimuth reach is its widest speaker + 40 deg; mid-layer speakers
    beyond it get a copy in that layer (all of them when the layer is empty).
    """
    mid = np.flatnonzero(np.abs(elevations_deg) <= 10)
    extra = []
    for layer_el, lo, hi in ((-30.0, -70.0, -10.0), (30.0, 10.0, 70.0)):
        layer = (elevations_deg >= lo) & (elevations_deg <= hi)
        if layer.any():
            az_limit = float(np.max(np.abs(azimuths_deg[layer]))) + 40.0
            layer_el = float(np.mean(elevations_deg[layer]))
        else:
            az_limit = 0.0
        extra += [(float(azimuths_deg[i]), layer_el, int(i)) for i in mid
                  if abs(azimuths_deg[i]) >= az_limit - 1e-5]
    return extra


def _hull_facets(positions: np.ndarray) -> list[set[int]]:
    """Facets of the convex hull, coplanar triangles merged into polygons."""
    hull = scipy.spatial.ConvexHull(positions)
    facets: list[tuple[np.ndarray, set[int]]] = []
    for simplex, equation in zip(hull.simplices, hull.equations):
        for facet_eqn, verts in facets:
            if np.linalg.norm(facet_eqn - equation) < 1e-5:
                verts.update(int(v) for v in simplex)
                break
        else:
            facets.append((equation, {int(v) for v in simplex}))
    return [verts for _, verts in facets]


class PointSourcePanner:
    """Gains of a point source on a layout's non-LFE speakers. See the module docstring.

    :meth:`gains` returns [shape=(n_non_lfe,)] in the layout's speaker order
    (WAV order, LFE left out); :meth:`gains_full` includes LFE as 0.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        speakers = layout.non_lfe
        self.n_outputs = len(speakers)
        labels = [s.label for s in speakers]
        az = np.array([s.azimuth_deg for s in speakers])
        el = np.array([s.elevation_deg for s in speakers])
        extra = _extra_speakers(az, el)
        all_az = np.concatenate([az, [e[0] for e in extra]])
        all_el = np.concatenate([el, [e[1] for e in extra]])
        positions = cart(all_az, all_el)
        downmix = np.zeros((self.n_outputs, len(all_az)))
        downmix[np.arange(self.n_outputs), np.arange(self.n_outputs)] = 1.0
        for k, (_, _, mid_index) in enumerate(extra):
            downmix[mid_index, self.n_outputs + k] = 1.0
        virtual = [np.array([0.0, 0.0, -1.0])]
        if not ("T+000" in labels or "UH+180" in labels):
            virtual.append(np.array([0.0, 0.0, 1.0]))
        self._downmix = downmix
        self._regions = self._regions_for(np.vstack([positions, *virtual]), len(all_az), len(virtual))

    @staticmethod
    def _regions_for(positions: np.ndarray, n_real: int, n_virtual: int) -> list:
        facets = _hull_facets(positions)
        virtual_verts = set(range(n_real, n_real + n_virtual))
        regions: list = []
        for v in sorted(virtual_verts):
            ring = sorted(set().union(*[f - {v} for f in facets if v in f]) - {v})
            regions.append(_VirtualNgon(ring, positions[ring], positions[v]))
        for facet in facets:
            if facet & virtual_verts:
                continue
            verts = sorted(facet)
            if len(verts) == 3:
                regions.append(_Triplet(verts, positions[verts]))
            elif len(verts) == 4:
                regions.append(_Quad(verts, positions[verts]))
            else:
                raise ConfigError(f"hull facet with {len(verts)} speakers: layout not supported")
        return regions

    def gains(self, position: np.ndarray) -> np.ndarray:
        """Power-normalised gains [shape=(n_non_lfe,)] for a Cartesian direction [shape=(3,)]."""
        n_all = self._downmix.shape[1]
        for region in self._regions:
            pv = region.gains(position)
            if pv is not None:
                full = np.zeros(n_all)
                full[region.channels] = pv
                out = self._downmix @ full
                return out / np.linalg.norm(out)
        raise ConfigError(f"no panning region of {self.layout.name} covers direction {position.tolist()}")


class StereoPanner:
    """0+2+0: pan on 0+5+0, fold down preserving the velocity vector, -3 dB towards the back."""

    _DOWNMIX = np.array([[1.0, 0.0, np.sqrt(3) / 3, np.sqrt(0.5), 0.0],
                         [0.0, 1.0, np.sqrt(3) / 3, 0.0, np.sqrt(0.5)]])

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.n_outputs = 2
        self._five = PointSourcePanner(get_layout("0+5+0"))  # non-LFE order M+030 M-030 M+000 M+110 M-110

    def gains(self, position: np.ndarray) -> np.ndarray:
        pv = self._five.gains(position)
        out = self._DOWNMIX @ pv
        out /= np.linalg.norm(out)
        front, back = np.max(pv[:3]), np.max(pv[3:])
        return out * 0.5 ** (0.5 * back / (front + back))


@functools.lru_cache(maxsize=16)
def panner_for(layout_name: str) -> PointSourcePanner | StereoPanner:
    """The (cached) point-source panner of a layout."""
    layout = get_layout(layout_name)
    return StereoPanner(layout) if layout.name == "0+2+0" else PointSourcePanner(layout)


@functools.lru_cache(maxsize=65536)
def _polar_gains(layout_name: str, azimuth_mdeg: int, elevation_mdeg: int) -> np.ndarray:
    panner = panner_for(layout_name)
    layout = panner.layout
    g = panner.gains(cart(azimuth_mdeg / 1000.0, elevation_mdeg / 1000.0))
    full = np.zeros(layout.n_channels)
    full[[i for i, s in enumerate(layout.speakers) if not s.is_lfe]] = g
    full.setflags(write=False)
    return full


def point_source_gains(layout: Layout, azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Gains [shape=(n_channels,)] in the layout's WAV order (LFE 0) of a point source.

    Directions are rounded to 1/1000 deg and cached: plans repeat positions.
    """
    if not (np.isfinite(azimuth_deg) and np.isfinite(elevation_deg)):
        raise ConfigError(f"object direction must be finite, got az={azimuth_deg}, el={elevation_deg}")
    return _polar_gains(layout.name, int(round(azimuth_deg * 1000)), int(round(elevation_deg * 1000)))
