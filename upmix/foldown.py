"""Fold-down of a 7.1.4 bed to stereo and 5.1, and octave-band levels to check it.

Coefficients follow ITU-R BS.775 (Table 2: centre and surrounds into the
fronts at -3 dB, LFE omitted) extended in the usual Dolby way to the extra
channels of 7.1.4: side and rear surrounds each at -3 dB, each height at -3 dB
into the ear-level channel on its own side. Fold-down is a memoryless matrix,
so block-wise and whole-signal results are identical.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.signal

from filmrestore.errors import ConfigError
from filmrestore.layouts import BED_7_1_4, Layout, Speaker, get_layout

MINUS_3_DB = float(np.sqrt(0.5))  # -3.01 dB, the BS.775 downmix coefficient
OCTAVE_CENTRES_HZ: tuple[float, ...] = (125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)

_TO_5_1: dict[str, dict[str, float]] = {
    "M+030": {"M+030": 1.0, "U+045": MINUS_3_DB},
    "M-030": {"M-030": 1.0, "U-045": MINUS_3_DB},
    "M+000": {"M+000": 1.0},
    "LFE1": {"LFE1": 1.0},
    "M+110": {"M+090": MINUS_3_DB, "M+135": MINUS_3_DB, "U+135": MINUS_3_DB},
    "M-110": {"M-090": MINUS_3_DB, "M-135": MINUS_3_DB, "U-135": MINUS_3_DB},
}


def _stereo_gains(speaker: Speaker) -> tuple[float, float]:
    """(left, right) gains of one speaker in a stereo fold-down, BS.775 Table 2 generalised:
    ear-level fronts up to 30 deg at 1.0 into their side, the centre at -3 dB into both,
    every other speaker (surrounds, rears, heights) at -3 dB into its side, LFE dropped."""
    if speaker.is_lfe:
        return 0.0, 0.0
    if speaker.azimuth_deg == 0.0:
        return MINUS_3_DB, MINUS_3_DB
    gain = 1.0 if speaker.elevation_deg == 0.0 and abs(speaker.azimuth_deg) <= 30.0 else MINUS_3_DB
    return (gain, 0.0) if speaker.azimuth_deg > 0 else (0.0, gain)


def fold_down_matrix(target: str = "stereo", source: Layout = BED_7_1_4) -> np.ndarray:
    """Gains [shape=(n_target_channels, n_source_channels)] in both layouts' WAV order.

    Any layout folds to stereo; 5.1 is made from the 4+7+0 bed only.
    """
    target_layout = get_layout(target)
    if target_layout.name == "0+2+0":
        return np.array([_stereo_gains(spk) for spk in source.speakers], dtype=np.float64).T
    if source.name != "4+7+0" or target_layout.name != "0+5+0":
        raise ConfigError(f"no fold-down from {source.name} to {target!r}; supported: any -> stereo, 4+7+0 -> 5.1")
    rules = _TO_5_1
    matrix = np.zeros((target_layout.n_channels, source.n_channels), dtype=np.float64)
    for row, label in enumerate(target_layout.labels):
        for src_label, gain in rules[label].items():
            matrix[row, source.index(src_label)] = gain
    return matrix


def fold_down(bed: np.ndarray, target: str = "stereo", source: Layout = BED_7_1_4) -> np.ndarray:
    """Fold a bed [shape=(12, n_frames)] down to stereo (2, n_frames) or 5.1 (6, n_frames)."""
    if bed.ndim != 2 or bed.shape[0] != source.n_channels:
        raise ValueError(f"expected a ({source.n_channels}, frames) {source.name} bed, got shape {bed.shape}")
    matrix = fold_down_matrix(target, source).astype(np.float32)
    bed = bed.astype(np.float32, copy=False)
    # Each output channel is the sum of its weighted sources in a fixed order, element by element:
    # a BLAS product rounds differently with the threads it gets, and it gets fewer when another
    # thread is in BLAS at the time (the render writes this fold-down on its writer thread), so
    # the same title gave fold-downs that differed in their last bits from run to run.
    out = np.zeros((matrix.shape[0], bed.shape[1]), dtype=np.float32)
    term = np.empty(bed.shape[1], dtype=np.float32)
    for row, weights in zip(out, matrix):
        for k in np.flatnonzero(weights):
            row += np.multiply(bed[k], weights[k], out=term)
    return out


#: Channel counts of a source the upmix takes: mono and stereo; 3.0, 4.0, 5.0, 5.1, 7.1 and 7.1.4
#: (WAV order) kept in place (:class:`~filmrestore.upmix.render.SourceRouting`).
SOURCE_CHANNELS = (1, 2, 3, 4, 5, 6, 8, 12)


def downmix_to_stereo(x: np.ndarray, source: Layout | None = None) -> np.ndarray:
    """Fold a multichannel signal in WAV order [shape=(n_channels, n_frames)] of layout ``source``
    (default: the usual layout of its channel count) to stereo (2, n_frames)."""
    from filmrestore.layouts import source_layout

    return fold_down(x, "stereo", source or source_layout(x.shape[0]))


def octave_band_levels_db(
    x: np.ndarray, sample_rate_hz: int, centres_hz: tuple[float, ...] = OCTAVE_CENTRES_HZ, overlap: float = 0.5,
) -> np.ndarray:
    """Power per octave band (fc/sqrt2 .. fc*sqrt2), in dB, from a Welch PSD (Hann segments of
    8192 frames overlapping by ``overlap``; 0 is a quarter of the work, for streams that are
    measured block after block).

    ``x`` is [shape=(n_channels, n_frames)] or (n_frames,); returns
    [shape=(n_channels, n_bands)] or (n_bands,). Silence gives -inf.
    """
    nperseg = int(min(x.shape[-1], 8192))
    if overlap:
        freqs_hz, psd = scipy.signal.welch(x.astype(np.float64, copy=False), fs=sample_rate_hz, nperseg=nperseg,
                                           noverlap=int(overlap * nperseg), axis=-1)
    else:
        freqs_hz, psd = _welch_no_overlap(x, sample_rate_hz, nperseg)
    levels = []
    for fc in centres_hz:
        band = (freqs_hz >= fc / np.sqrt(2.0)) & (freqs_hz < fc * np.sqrt(2.0))
        with np.errstate(divide="ignore"):
            levels.append(10.0 * np.log10(np.sum(psd[..., band], axis=-1, dtype=np.float64)))
    return np.stack(levels, axis=-1)


def _welch_no_overlap(x: np.ndarray, sample_rate_hz: int, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """scipy's Welch PSD (periodic Hann, no overlap, no detrend, one-sided density) in float32, as
    one batched FFT of the whole segments (scipy's ShortTimeFFT transforms them one by one)."""
    n_seg = x.shape[-1] // nperseg
    window = scipy.signal.get_window("hann", nperseg).astype(np.float32)
    segments = np.asarray(x, np.float32)[..., :n_seg * nperseg].reshape(*x.shape[:-1], n_seg, nperseg) * window
    spectra = scipy.fft.rfft(segments, axis=-1)
    psd = np.mean(spectra.real ** 2 + spectra.imag ** 2, axis=-2) / np.float32(sample_rate_hz * np.sum(window ** 2))
    psd[..., 1:(nperseg + 1) // 2] *= 2.0  # one-sided: every bin but DC (and Nyquist for an even length) twice
    return scipy.fft.rfftfreq(nperseg, 1.0 / sample_rate_hz), psd
