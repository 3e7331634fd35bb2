"""Hiss: a stationary broadband noise floor estimated from the quietest frames, reduced by a
smoothed spectral-subtraction gain with a gain floor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage, signal

from filmrestore.errors import ConfigError
from filmrestore.restoration.blocks import Sample, as_segments, check_block, hann



HISS_MIN_FLOOR_DBFS = -80.0  # 16-bit TPDF dither is about -96 dBFS: -80 is clearly above it
HISS_MAX_SPREAD_DB = 6.0  # floor estimates of time slices must agree within 6 dB (stationary)
HISS_MIN_HEADROOM_DB = 15.0  # programme (90th percentile) at least 15 dB above the floor
HISS_MIN_FLATNESS = 0.1  # broadband: white noise 1.0, pink 0.3, leakage of steady tones ~1e-5
HISS_MIN_EXPOSED_BANDS = 4  # the floor shows in >= 4 third-octave bands (4/3 octave) at least

HISS_N_FFT = 2048  # 43 ms frames at 48 kHz: the noise profile is per bin of this transform
HISS_DETECT_HOP = 1024
HISS_BAND_LOW_HZ = 100.0  # below this lies hum and programme rumble, not hiss
HISS_BANDS_PER_OCTAVE = 3
HISS_QUANTILE = 0.10  # the quietest 10 % of frames in each band
HISS_N_SLICES = 4  # stationarity: floor estimates of 4 time slices must agree
DEHISS_SMOOTHING = 0.5  # recursive smoothing of the frame power, against musical noise
DEHISS_MAX_REDUCTION_DB = 12.0  # at strength 1; the gain never falls below this


@dataclass(frozen=True)
class HissReport:
    """A stationary broadband noise floor and whether it qualifies for dehissing.

    ``floor_dbfs`` is the RMS of the estimated noise above 100 Hz (loudest
    channel); ``spread_db`` how far the floor estimates of time slices disagree;
    ``headroom_db`` how far the programme (90th percentile of frame power)
    stands above the floor; ``flatness`` the spectral flatness (geometric over
    arithmetic mean) of the floor across 1/3-octave bands.
    ``noise_psd`` [shape=(n_channels, n_fft/2+1)] is the
    noise power per bin of a Hann-windowed ``n_fft`` frame, for :class:`Dehisser`.
    """

    floor_dbfs: float
    spread_db: float
    headroom_db: float
    flatness: float
    detected: bool
    noise_psd: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros((1, 0)))
    n_fft: int = HISS_N_FFT

    def to_dict(self) -> dict[str, Any]:
        return {"floor_dbfs": self.floor_dbfs, "spread_db": self.spread_db,
                "headroom_db": self.headroom_db, "flatness": self.flatness, "detected": self.detected}


def _frame_power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|^2 of ``x`` [shape=(n_channels, n)] -> [shape=(n_channels, n_frames, n_fft/2+1)]."""
    if x.shape[1] < n_fft:
        return np.zeros((x.shape[0], 0, n_fft // 2 + 1))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop]
    spec = np.fft.rfft(frames * hann(n_fft), axis=-1)
    return spec.real ** 2 + spec.imag ** 2


def _bands(sample_rate_hz: int, n_fft: int) -> tuple[np.ndarray, int]:
    """Band index of each rfft bin (-1 outside 100 Hz..20 kHz) and the number of bands."""
    top_hz = min(20000.0, 0.5 * sample_rate_hz)
    n_bands = int(np.floor(np.log2(top_hz / HISS_BAND_LOW_HZ) * HISS_BANDS_PER_OCTAVE))
    edges = HISS_BAND_LOW_HZ * 2.0 ** (np.arange(n_bands + 1) / HISS_BANDS_PER_OCTAVE)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate_hz)
    band = np.digitize(freqs, edges) - 1
    band[(freqs < edges[0]) | (freqs >= edges[-1])] = -1
    return band, n_bands


def _floor_per_band(power: np.ndarray, band: np.ndarray, n_bands: int) -> np.ndarray:
    """Noise power per bin in each band [shape=(n_channels, n_bands)] from frame powers.

    Each bin's 10th percentile over frames, divided by its bias (the power of a
    noise bin is exponential: its 10th percentile is -ln(0.9) = 0.105 of its
    mean); the median of these over the band's bins (so that steady tones and
    their leakage, a few bins, are not taken for noise); then a median filter
    over 5 bands, against tones in narrow low bands.
    """
    per_bin = np.quantile(power, HISS_QUANTILE, axis=1) / -np.log1p(-HISS_QUANTILE)
    out = np.empty((power.shape[0], n_bands))
    for b in range(n_bands):
        out[:, b] = np.median(per_bin[:, band == b], axis=1)
    log_floor = ndimage.median_filter(np.log(out + 1e-30), size=(1, 5), mode="nearest")
    return np.exp(log_floor)


def _power_to_dbfs(bin_power_sum: np.ndarray, n_fft: int) -> np.ndarray:
    """Signal power (dBFS) from the summed one-sided |X_k|^2 of a Hann frame (Parseval)."""
    window_energy = np.sum(signal.windows.hann(n_fft, sym=False) ** 2)
    return 10.0 * np.log10(2.0 * bin_power_sum / (n_fft * window_energy) + 1e-30)


def _floor_dbfs(power: np.ndarray, band: np.ndarray, n_bands: int, n_fft: int, where_shown: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel floor level (dBFS), per-bin noise power [shape=(n_channels, n_bins)]
    and per-channel spectral flatness of the floor over the bands where it shows.

    Hiss is broadband, but where the programme never pauses (a film mix with
    music or ambience throughout) the quietest frames of a band are programme,
    and only the bands above the programme's bandwidth (a legacy track stops at
    7-10 kHz) show the noise. So the floor is modelled as broadband noise at the
    level where it shows: the 20th percentile of the band floors above 1 kHz,
    capped per band by that band's own floor. The flatness is measured over the
    bands within 3 dB of that level (``HISS_MIN_EXPOSED_BANDS`` of them at least;
    fewer gives 0). With ``where_shown`` False the band floors are taken as they
    are (programme with pauses shows the noise in every band, whatever its tilt)
    and the flatness is over all bands.
    """
    per_band = _floor_per_band(power, band, n_bands)
    if not where_shown:
        noise_psd = per_band[:, np.clip(band, 0, n_bands - 1)]
        noise_psd[:, (band < 0) & (np.arange(len(band)) < len(band) // 2)] = per_band[:, :1]
        level = _power_to_dbfs(noise_psd[:, band >= 0].sum(axis=-1), n_fft)
        flatness = np.exp(np.mean(np.log(per_band), axis=1)) / np.mean(per_band, axis=1)
        return level, noise_psd, flatness
    centres = HISS_BAND_LOW_HZ * 2.0 ** ((np.arange(n_bands) + 0.5) / HISS_BANDS_PER_OCTAVE)
    shown = np.quantile(per_band[:, centres >= 1000.0], 0.2, axis=1, keepdims=True)
    model = np.minimum(per_band, shown)
    noise_psd = model[:, np.clip(band, 0, n_bands - 1)]
    noise_psd[:, (band < 0) & (np.arange(len(band)) < len(band) // 2)] = model[:, :1]
    level = _power_to_dbfs(noise_psd[:, band >= 0].sum(axis=-1), n_fft)
    exposed = per_band <= 2.0 * shown
    flatness = np.zeros(per_band.shape[0])
    for c in range(per_band.shape[0]):
        bands = per_band[c, exposed[c]]
        if len(bands) >= HISS_MIN_EXPOSED_BANDS:
            flatness[c] = np.exp(np.mean(np.log(bands))) / np.mean(bands)
    return level, noise_psd, flatness


def detect_hiss(x: Sample, sample_rate_hz: int, n_fft: int = HISS_N_FFT) -> HissReport:
    """Estimate the broadband noise floor of ``x`` [shape=(n_channels, n_frames)] (or segments).

    Rule: dehiss when the floor is clearly above the digital floor (>= -80 dBFS;
    16-bit dither sits near -96), stationary (the floors of 4 time slices agree
    within 6 dB), broadband (spectral flatness >= 0.1 over 1/3-octave bands) and
    below the programme (its 90th-percentile frame power at least 15 dB above
    the floor), so that continuous programme or steady tones are never taken
    for noise. The band floors are first taken as measured (the programme pauses:
    white, pink or brown noise shows in every band); when that fails, the floor is
    modelled as white noise where it shows above a programme that never pauses
    (see :func:`_floor_dbfs`; >= 4 bands on it).
    """
    power = np.concatenate([_frame_power(s, n_fft, HISS_DETECT_HOP) for s in as_segments(x)], axis=1)
    n_channels, n_frames = power.shape[:2]
    if n_frames < 2 * HISS_N_SLICES:
        return HissReport(-200.0, 0.0, 0.0, 0.0, False, np.zeros((n_channels, n_fft // 2 + 1)), n_fft)
    band, n_bands = _bands(sample_rate_hz, n_fft)
    frame_dbfs = _power_to_dbfs(power[:, :, band >= 0].sum(axis=-1), n_fft)
    slices = np.array_split(np.arange(n_frames), HISS_N_SLICES)
    report = None
    for where_shown in (False, True):  # the floors as measured (pauses), else where it shows
        level, noise_psd, flatness = _floor_dbfs(power, band, n_bands, n_fft, where_shown)
        floor_dbfs = float(level.max())
        flat = float(flatness[np.argmax(level)])
        slice_dbfs = [_floor_dbfs(power[:, idx], band, n_bands, n_fft, where_shown)[0].max() for idx in slices]
        spread_db = float(np.max(slice_dbfs) - np.min(slice_dbfs))
        headroom_db = float(np.min(np.quantile(frame_dbfs, 0.9, axis=1) - level))
        detected = (floor_dbfs >= HISS_MIN_FLOOR_DBFS and spread_db <= HISS_MAX_SPREAD_DB
                    and flat >= HISS_MIN_FLATNESS and headroom_db >= HISS_MIN_HEADROOM_DB)
        report = HissReport(round(max(floor_dbfs, -200.0), 2), round(spread_db, 2),
                            round(min(headroom_db, 200.0), 2), round(flat, 4), bool(detected), noise_psd, n_fft)
        if detected:
            break
    assert report is not None
    return report


class Dehisser:
    """Streaming spectral-subtraction dehisser [blocks of shape=(n_channels, n_frames)].

    STFT with Hann analysis and synthesis windows, ``n_fft = 2*(n_bins-1)``,
    hop ``n_fft/4`` (the squared windows overlap-add to 1.5, divided out). Per
    bin the gain is ``sqrt(max(g_min^2, 1 - alpha * N / P))`` with ``P`` the frame
    power smoothed over frames (factor 0.5, against musical noise), ``N`` the
    noise profile ``noise_psd`` [shape=(n_channels or 1, n_bins)],
    ``alpha = 1 + 2 * strength`` (over-subtraction) and ``g_min`` =
    ``-12 dB * strength``. The frame grid starts ``n_fft - hop`` frames before
    the signal, so output is aligned with input; ``process`` lags by at most
    ``latency_frames``; ``flush`` returns the rest.
    """

    def __init__(self, sample_rate_hz: int, n_channels: int, noise_psd: np.ndarray, strength: float = 1.0,
                 max_reduction_db: float = DEHISS_MAX_REDUCTION_DB) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"hiss strength must be in [0, 1], got {strength}")
        noise_psd = np.atleast_2d(np.asarray(noise_psd, dtype=np.float64))
        if noise_psd.shape[0] not in (1, n_channels) or noise_psd.shape[1] < 3:
            raise ConfigError(f"noise profile of shape {noise_psd.shape} does not fit {n_channels} channels")
        self.n_channels = n_channels
        self.n_fft = 2 * (noise_psd.shape[1] - 1)
        self.hop = self.n_fft // 4
        self.latency_frames = self.n_fft - self.hop
        self._noise = noise_psd[:, None, :]  # broadcast over frames
        self._alpha = 1.0 + 2.0 * strength
        self._g_min_sq = 10.0 ** (-max_reduction_db * strength / 10.0)
        self._window = signal.windows.hann(self.n_fft, sym=False)
        self._norm = float((self._window ** 2).reshape(4, self.hop).sum(axis=0)[0])
        self._in = np.zeros((n_channels, self.latency_frames))  # the virtual lead-in
        self._tail = np.zeros((n_channels, self.n_fft - self.hop))
        self._zi = np.zeros((n_channels, 1, self.n_fft // 2 + 1))
        self._to_drop = self.latency_frames
        self._n_in = 0
        self._n_out = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Take one block; return the output frames that are complete (aligned, float32)."""
        x = check_block(block, self.n_channels)
        self._in = np.concatenate([self._in, x], axis=1)
        self._n_in += x.shape[1]
        return self._emit(self._run_frames())

    def flush(self) -> np.ndarray:
        """Finish with zeros after the end; returns the remaining aligned frames."""
        self._in = np.concatenate([self._in, np.zeros((self.n_channels, self.n_fft))], axis=1)
        return self._emit(self._run_frames())

    def _gains(self, power: np.ndarray) -> np.ndarray:
        smoothed, self._zi = signal.lfilter([1.0 - DEHISS_SMOOTHING], [1.0, -DEHISS_SMOOTHING], power,
                                            axis=1, zi=self._zi)
        ratio = self._noise / np.maximum(smoothed, 1e-30)
        return np.sqrt(np.maximum(self._g_min_sq, 1.0 - self._alpha * ratio))

    def _run_frames(self) -> np.ndarray:
        n_frames = (self._in.shape[1] - self.n_fft) // self.hop + 1
        if n_frames <= 0:
            return np.zeros((self.n_channels, 0))
        frames = np.lib.stride_tricks.sliding_window_view(self._in, self.n_fft, axis=-1)
        frames = frames[:, ::self.hop][:, :n_frames]
        spec = np.fft.rfft(frames * self._window, axis=-1)
        spec *= self._gains(spec.real ** 2 + spec.imag ** 2)
        out_frames = np.fft.irfft(spec, self.n_fft, axis=-1) * self._window
        acc = np.zeros((self.n_channels, (n_frames + 3) * self.hop))
        acc[:, : self.n_fft - self.hop] += self._tail
        for r in range(4):  # overlap-add: quarter r of frame f lands at hop f + r
            chunk = out_frames[:, :, r * self.hop:(r + 1) * self.hop]
            acc[:, r * self.hop:(r + n_frames) * self.hop] += chunk.reshape(self.n_channels, -1)
        self._tail = acc[:, n_frames * self.hop:]
        self._in = self._in[:, n_frames * self.hop:]
        return acc[:, : n_frames * self.hop] / self._norm

    def _emit(self, done: np.ndarray) -> np.ndarray:
        drop = min(self._to_drop, done.shape[1])
        self._to_drop -= drop
        done = done[:, drop: drop + self._n_in - self._n_out]
        self._n_out += done.shape[1]
        return done.astype(np.float32)


