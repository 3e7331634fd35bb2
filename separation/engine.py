"""Run a separator over a signal or file of any length, in overlapping segments.

Modelled on Demucs' ``apply.py``: the signal is cut into segments on a fixed
grid (segment ``k`` covers frames ``[k * stride, k * stride + segment)``, the
last one moved back to end with the signal, so that every segment the model
sees is the programme, never zero padding: a half-empty segment changes the
model's input level and context, and cost 0.2-0.4 dB SI-SDRi at the end of a
30 s item), several segments go through the model in one batch,
each output is multiplied by a cross-fade weight, the weighted outputs and
the weights are summed, and the sum is divided by the summed weight at the
end. Because the grid and the batch composition depend only on the signal's
length, never on how the file is read, :func:`separate_file` and
:func:`separate_array` give the same result, and memory stays constant in
the file's length (at most ``batch_size`` segments are held).

Mixture consistency is enforced for every separator: whatever the model
returns, the residual ``input - sum(stems)`` of each segment is shared out to
the stems in proportion to their energy, so dialogue + music + effects
equals the input (to float32 rounding) and M&E = music + effects exactly.

A signal at another sample rate than the model's (a 44.1 kHz DnR item, a 96 kHz
transfer, a 16 kHz archive copy) is resampled to the model's rate on the way in and
its dialogue and music back on the way out, streaming (the SoX resampler through
``soxr``, its high-quality setting: 20-bit precision); the effects are the rest of the input. The
stems come back at the input's rate and length, and add up to the input there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
import torch

from filmrestore.audio import AudioInfo, AudioWriter, iter_blocks, read_channel_mask, read_info
from filmrestore.errors import AudioFormatError, ConfigError, EmptyAudioError
from filmrestore.manifest import FileRecord
from filmrestore.separation.base import STEMS, Separator

ProgressCallback = Callable[[int, int], None]
DEFAULT_SEGMENT_S = 20.0
DEFAULT_OVERLAP_S = 2.0
_EPS = 1e-12


def resolve_device(spec: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises :class:`ConfigError` for any other name, or for CUDA when no CUDA device is usable.
    """
    name = str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        return _cuda_device(name)
    raise ConfigError(f"unknown device {spec!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def _cuda_device(name: str) -> torch.device:
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine "
                          "(use --device cpu or auto)")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"invalid CUDA device {name!r} ({exc})") from exc
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} "
                          "CUDA device(s) exist")
    return device


@dataclass(frozen=True)
class SegmentGrid:
    """Fixed segment positions and the cross-fade weight, in frames."""

    segment_frames: int
    overlap_frames: int

    @classmethod
    def from_seconds(cls, segment_s: float, overlap_s: float, sample_rate_hz: int) -> SegmentGrid:
        segment_frames = int(round(segment_s * sample_rate_hz))
        overlap_frames = int(round(overlap_s * sample_rate_hz))
        if segment_frames <= 0 or overlap_frames < 0 or overlap_frames * 2 > segment_frames:
            raise ConfigError(f"segment_s={segment_s} and overlap_s={overlap_s} are invalid: need "
                              "segment_s > 0 and 0 <= overlap_s <= segment_s / 2")
        return cls(segment_frames, overlap_frames)

    @property
    def stride_frames(self) -> int:
        return self.segment_frames - self.overlap_frames

    def n_segments(self, n_frames: int) -> int:
        """Segments needed to cover ``n_frames`` (0 for an empty signal)."""
        if n_frames <= 0:
            return 0
        return 1 + max(0, -(-(n_frames - self.segment_frames) // self.stride_frames))

    def starts(self, n_frames: int) -> np.ndarray:
        """First frame of each segment [shape=(n_segments,)]: every ``stride_frames``, except the
        last, which ends at ``n_frames`` (so it overlaps its neighbour by at least the overlap)
        when the signal is at least one segment long."""
        starts = np.arange(self.n_segments(n_frames), dtype=np.int64) * self.stride_frames
        if len(starts) > 1:
            starts[-1] = n_frames - self.segment_frames
        return starts

    def weight(self) -> np.ndarray:
        """Cross-fade weight [shape=(segment_frames,)]: flat, with raised-cosine ramps over
        the overlap. Ramps of neighbouring segments sum to one; no value is zero."""
        weight = np.ones(self.segment_frames, dtype=np.float32)
        if self.overlap_frames:
            phase = (np.arange(self.overlap_frames) + 0.5) / self.overlap_frames
            ramp = (0.5 - 0.5 * np.cos(np.pi * phase)).astype(np.float32)
            weight[: self.overlap_frames] = ramp
            weight[-self.overlap_frames:] = ramp[::-1]
        return weight


def mixture_consistent(stems: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """Share the residual out to the stems in proportion to their energy.

    Args:
        stems: [shape=(batch, n_stems, n_channels, n_samples)] model output.
        mixture: [shape=(batch, n_channels, n_samples)] model input.

    Returns:
        stems whose sum over the stem axis equals ``mixture`` (per channel and
        segment; stems that are all silent share the residual equally).
    """
    residual = mixture - stems.sum(1)
    energy = stems.square().sum(-1, keepdim=True) + _EPS
    share = energy / energy.sum(1, keepdim=True)
    return stems + share * residual.unsqueeze(1)


class _OverlapAdd:
    """Streaming core: push input blocks, get back finished stem blocks.

    Holds the input from the next unprocessed segment's start, and the
    weighted output sums from the first unfinished frame.
    """

    def __init__(self, model: Separator, n_channels: int, n_frames: int, grid: SegmentGrid,
                 device: torch.device, batch_size: int) -> None:
        self.model, self.grid, self.device, self.batch_size = model, grid, device, batch_size
        self.n_frames = n_frames
        self.starts = grid.starts(n_frames)
        self.n_segments = len(self.starts)
        # A signal shorter than a segment is one segment of its own length (at least 1 s, so a
        # model's STFT and receptive field still fit: only then is there padding).
        self.segment_frames = min(grid.segment_frames, max(n_frames, model.sample_rate_hz))
        self.weight = grid.weight() if self.segment_frames == grid.segment_frames \
            else np.ones(self.segment_frames, dtype=np.float32)
        self.next_segment = 0
        self.in_start = 0
        self.in_buf = np.zeros((n_channels, 0), dtype=np.float32)
        self.out_start = 0
        self.acc = np.zeros((len(STEMS), n_channels, 0), dtype=np.float32)
        self.weight_sum = np.zeros(0, dtype=np.float32)

    def push(self, block: np.ndarray) -> Iterator[np.ndarray]:
        """Add input frames [shape=(n_channels, n)]; yield finished [shape=(3, n_channels, m)]."""
        self.in_buf = np.concatenate([self.in_buf, block.astype(np.float32, copy=False)], axis=1)
        while self._batch_ready():
            self._run_batch()
            yield from self._drain()

    def _batch_ready(self) -> bool:
        remaining = self.n_segments - self.next_segment
        if remaining <= 0:
            return False
        last = self.next_segment + min(self.batch_size, remaining) - 1
        needed_end = min(self.n_frames, int(self.starts[last]) + self.segment_frames)
        return self.in_start + self.in_buf.shape[1] >= needed_end

    def _run_batch(self) -> None:
        count = min(self.batch_size, self.n_segments - self.next_segment)
        starts = [int(s) for s in self.starts[self.next_segment: self.next_segment + count]]
        batch = np.zeros((count, self.in_buf.shape[0], self.segment_frames), dtype=np.float32)
        for i, start in enumerate(starts):
            piece = self.in_buf[:, start - self.in_start: start - self.in_start + self.segment_frames]
            batch[i, :, : piece.shape[1]] = piece
        stems = run_model(self.model, batch, self.device)
        for i, start in enumerate(starts):
            self._accumulate(stems[i], start)
        self.next_segment += count
        self._drop_consumed_input()

    def _accumulate(self, stems: np.ndarray, start: int) -> None:
        """Add one segment's weighted stems [shape=(3, n_channels, segment_frames)]."""
        end = min(self.n_frames, start + self.segment_frames)
        grow = end - self.out_start - self.weight_sum.shape[0]
        if grow > 0:
            self.acc = np.concatenate([self.acc, np.zeros((*self.acc.shape[:2], grow), np.float32)], 2)
            self.weight_sum = np.concatenate([self.weight_sum, np.zeros(grow, np.float32)])
        a, n = start - self.out_start, end - start
        self.acc[:, :, a: a + n] += stems[:, :, :n] * self.weight[:n]
        self.weight_sum[a: a + n] += self.weight[:n]

    def _next_start(self) -> int:
        """First frame of the next unprocessed segment (``n_frames`` once all are done)."""
        return int(self.starts[self.next_segment]) if self.next_segment < self.n_segments else self.n_frames

    def _drop_consumed_input(self) -> None:
        keep_from = self._next_start()
        self.in_buf = self.in_buf[:, keep_from - self.in_start:]
        self.in_start = keep_from

    def _drain(self) -> Iterator[np.ndarray]:
        """Yield the frames no later segment touches."""
        final_end = self._next_start()
        n = final_end - self.out_start
        if n <= 0:
            return
        out = self.acc[:, :, :n] / self.weight_sum[:n]
        self.acc, self.weight_sum = self.acc[:, :, n:], self.weight_sum[n:]
        self.out_start = final_end
        yield out


def run_model(model: Separator, batch: np.ndarray, device: torch.device) -> np.ndarray:
    """One forward pass: [shape=(batch, n_channels, n)] -> mixture-consistent
    [shape=(batch, 3, n_channels, n)] float32. bf16 autocast on CUDA only."""
    x = torch.from_numpy(batch).to(device)
    use_autocast = device.type == "cuda" and model.supports_autocast
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
        stems = model(x)
    expected = (batch.shape[0], len(STEMS), *batch.shape[1:])
    if tuple(stems.shape) != expected:
        raise ConfigError(f"separator {model.name!r} returned shape {tuple(stems.shape)}, "
                          f"expected {expected}")
    with torch.inference_mode():
        stems = mixture_consistent(stems.float(), x)
    return stems.cpu().numpy()


def _default_batch_size(device: torch.device) -> int:
    # On a CPU one segment at a time keeps the working set small (large
    # allocations cost page faults); a GPU wants many segments per pass.
    return 8 if device.type == "cuda" else 1


def _separate_blocks(model: Separator, blocks: Iterable[np.ndarray], n_channels: int, n_frames: int,
                     device: str | torch.device, segment_s: float, overlap_s: float,
                     batch_size: int | None, sample_rate_hz: int | None = None) -> Iterator[np.ndarray]:
    """Shared driver of :func:`separate_array` and :func:`separate_file`: ``blocks`` of the input
    [shape=(n_channels, n)] at ``sample_rate_hz`` (None: the model's) in, blocks of stems
    [shape=(3, n_channels, n)] at the same rate out, ``n_frames`` in all."""
    dev = resolve_device(device)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    rate = sample_rate_hz or model.sample_rate_hz
    grid = SegmentGrid.from_seconds(segment_s, overlap_s, model.sample_rate_hz)
    model.to(dev).eval()
    if rate == model.sample_rate_hz:
        core = _OverlapAdd(model, n_channels, n_frames, grid, dev, batch_size or _default_batch_size(dev))
        for block in blocks:
            yield from core.push(block)
        return
    # Another rate: resample in, separate, resample dialogue and music out; effects are the rest
    # of the input as it was read (so the stems add up to it exactly, and what the model's rate
    # cannot carry, above 24 kHz in a 96 kHz transfer, stays with the effects).
    n_model = resampled_length(n_frames, rate, model.sample_rate_hz)
    core = _OverlapAdd(model, n_channels, n_model, grid, dev, batch_size or _default_batch_size(dev))
    read = _Fifo()

    def inputs() -> Iterator[np.ndarray]:
        for block in blocks:
            read.push(block)
            yield block

    def stems_at_model_rate() -> Iterator[np.ndarray]:
        for block in _exact_length(resample_blocks(inputs(), rate, model.sample_rate_hz), n_model):
            for out in core.push(block):
                yield out[:2].reshape(2 * n_channels, -1)  # dialogue, music

    for out in _exact_length(resample_blocks(stems_at_model_rate(), model.sample_rate_hz, rate), n_frames):
        dialogue, music = out.reshape(2, n_channels, -1)
        yield np.stack([dialogue, music, read.pop(out.shape[-1]) - dialogue - music])


def resampled_length(n_frames: int, from_hz: int, to_hz: int) -> int:
    """Frames of ``n_frames`` at ``from_hz`` resampled to ``to_hz`` (the nearest whole frame)."""
    return (n_frames * to_hz + from_hz // 2) // from_hz


def resample_blocks(blocks: Iterable[np.ndarray], from_hz: int, to_hz: int) -> Iterator[np.ndarray]:
    """Blocks [shape=(n_channels, n)] at ``from_hz`` as one stream at ``to_hz`` (the SoX resampler's
    high-quality setting, 20-bit precision, its delay compensated), float32; block sizes vary."""
    stream = None
    n_channels = 0
    for block in blocks:
        if stream is None:
            n_channels = block.shape[0]
            stream = soxr.ResampleStream(from_hz, to_hz, n_channels, dtype="float32", quality="HQ")
        out = stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32))
        if out.shape[0]:
            yield np.ascontiguousarray(out.T)
    if stream is not None:
        out = stream.resample_chunk(np.zeros((0, n_channels), np.float32), last=True)
        if out.shape[0]:
            yield np.ascontiguousarray(out.T)


def _exact_length(blocks: Iterable[np.ndarray], n_frames: int) -> Iterator[np.ndarray]:
    """``blocks`` cut or zero-padded at the end to ``n_frames`` in all (a resampler's last frame
    may fall either side of the nearest whole one)."""
    done, n_channels = 0, None
    for block in blocks:
        n_channels = block.shape[0]
        block = block[:, : max(0, n_frames - done)]
        if block.shape[1]:
            done += block.shape[1]
            yield block
    if done < n_frames and n_channels is not None:
        yield np.zeros((n_channels, n_frames - done), np.float32)


class _Fifo:
    """Blocks [shape=(n_channels, n)] in, runs of frames out, in order."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []

    def push(self, block: np.ndarray) -> None:
        self.parts.append(np.asarray(block, np.float32))

    def pop(self, n: int) -> np.ndarray:
        held = np.concatenate(self.parts, axis=1) if len(self.parts) > 1 else self.parts[0]
        self.parts = [held[:, n:]]
        return np.ascontiguousarray(held[:, :n])


def separate_array(model: Separator, x: np.ndarray, *, device: str | torch.device = "cpu",
                   segment_s: float = DEFAULT_SEGMENT_S, overlap_s: float = DEFAULT_OVERLAP_S,
                   batch_size: int | None = None, sample_rate_hz: int | None = None,
                   on_progress: ProgressCallback | None = None) -> dict[str, np.ndarray]:
    """Separate an in-memory signal.

    Args:
        model: the separator (moved to ``device``).
        x: mixture [shape=(n_channels, n_frames)] at ``sample_rate_hz`` (None: the model's
            ``model.sample_rate_hz``; another rate is resampled, and the stems come back at it).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        segment_s, overlap_s: segment length and overlap of neighbouring segments, seconds.
        batch_size: segments per forward pass (default 1 on CPU, 8 on CUDA).
        on_progress: called with ``(done_frames, total_frames)``.

    Returns:
        ``{stem: [shape=(n_channels, n_frames)] float32}`` for each of :data:`STEMS`.
    """
    if x.ndim != 2:
        raise ValueError(f"expected a (n_channels, n_frames) array, got shape {x.shape}")
    n_channels, n_frames = x.shape
    parts = []
    done = 0
    for out in _separate_blocks(model, [x], n_channels, n_frames, device, segment_s, overlap_s,
                                batch_size, sample_rate_hz):
        parts.append(out)
        done += out.shape[2]
        if on_progress is not None:
            on_progress(done, n_frames)
    stems = np.concatenate(parts, axis=2) if parts else np.zeros((3, n_channels, 0), np.float32)
    return {name: stems[i] for i, name in enumerate(STEMS)}


def separate_file(model: Separator, in_path: str | Path, out_paths: dict[str, Path], *,
                  device: str | torch.device = "cpu", subtype: str = "FLOAT",
                  on_progress: ProgressCallback | None = None,
                  segment_s: float = DEFAULT_SEGMENT_S, overlap_s: float = DEFAULT_OVERLAP_S,
                  batch_size: int | None = None,
                  read_block_frames: int | None = None) -> dict[str, FileRecord]:
    """Separate a WAV/BW64 file into one file per stem, streaming (memory constant in length).

    Args:
        model: the separator.
        in_path: mixture file, any channel count, any sample rate (the stems are written at its rate).
        out_paths: ``{stem: path}`` for each of :data:`STEMS`; each written atomically.
        device, segment_s, overlap_s, batch_size, on_progress: as in :func:`separate_array`.
        subtype: ``"FLOAT"`` (intermediate) or ``"PCM_24"``.
        read_block_frames: frames per read (default: one segment stride).

    Returns:
        ``{stem: FileRecord}``; the stems keep the input's channel count and length.
    """
    info = _check_input(model, in_path)
    missing = set(STEMS) - set(out_paths)
    if missing or set(out_paths) - set(STEMS):
        raise ConfigError(f"out_paths must name exactly the stems {STEMS}, got {sorted(out_paths)}")
    grid = SegmentGrid.from_seconds(segment_s, overlap_s, model.sample_rate_hz)
    blocks = _finite_blocks(in_path, iter_blocks(in_path, read_block_frames or grid.stride_frames),
                            info.sample_rate_hz)
    done = 0
    with contextlib.ExitStack() as stack:
        mask = read_channel_mask(in_path)  # stems keep the mix's speaker layout
        writers = {s: stack.enter_context(AudioWriter(out_paths[s], info.sample_rate_hz,
                                                      info.n_channels, subtype, mask)) for s in STEMS}
        for out in _separate_blocks(model, blocks, info.n_channels, info.n_frames, device,
                                    segment_s, overlap_s, batch_size, info.sample_rate_hz):
            for i, name in enumerate(STEMS):
                writers[name].write(out[i])
            done += out.shape[2]
            if on_progress is not None:
                on_progress(done, info.n_frames)
        for writer in writers.values():
            writer.close()
    return {name: FileRecord.from_writer(w) for name, w in writers.items()}


def _finite_blocks(path: str | Path, blocks: Iterable[np.ndarray], sample_rate_hz: int) -> Iterator[np.ndarray]:
    """``blocks`` unchanged; raises :class:`AudioFormatError` at the first NaN or infinite sample
    (a damaged float WAV would otherwise give all-NaN stems; the stem files are then removed)."""
    start = 0
    for block in blocks:
        if not np.isfinite(block).all():
            bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=0))[0])
            raise AudioFormatError(path, f"NaN or infinite sample at {bad / sample_rate_hz:.3f} s "
                                   f"(frame {bad}); nothing separated")
        start += block.shape[1]
        yield block


def _check_input(model: Separator, in_path: str | Path) -> AudioInfo:
    info = read_info(in_path)
    if info.n_frames == 0:
        raise EmptyAudioError(in_path, "the audio has no samples to separate")
    return info
