"""ADM BWF files: stream a scene's tracks into BW64 (``chna`` before the audio, ``axml`` after it,
``ds64`` past 4 GiB), and read 24-bit PCM back from RIFF or BW64."""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType

import numpy as np

from filmrestore.audio import AudioWriter, read_chunks
from filmrestore.errors import AudioFormatError
from filmrestore.upmix.adm.axml import axml_body
from filmrestore.upmix.adm.chna import chna_body
from filmrestore.upmix.adm.scene import AdmScene


class AdmSceneWriter:
    """Stream a scene's tracks into an ADM BWF (BW64 + chna + axml) file.

    :meth:`write` takes a :class:`~filmrestore.upmix.render.RenderedBlock`-like
    pair (bed [shape=(12, n)], feeds [shape=(5, n)]) or the tracks directly
    (:meth:`write_tracks`, [shape=(n_tracks, n)]). ``chna`` goes before the
    audio, ``axml`` (which holds the duration) after it at :meth:`close`; past
    4 GiB the file becomes BW64 with ``ds64``. On an exception inside ``with``
    the partial file is removed.
    """

    def __init__(self, path: str | Path, scene: AdmScene, title: str) -> None:
        self.scene = scene
        self.title = title
        self._closed = False
        self.writer = AudioWriter(path, scene.sample_rate_hz, scene.n_tracks, subtype="PCM_24", channel_mask=0,
                                  head_chunks=[(b"chna", chna_body(scene))], large_magic=b"BW64")

    def write(self, bed: np.ndarray, feeds: np.ndarray) -> None:
        """Append a block given the bed [shape=(12, n)] and feeds [shape=(5, n)] of the renderer."""
        self.write_tracks(np.vstack([bed, feeds])[list(self.scene.track_rows)])

    def write_tracks(self, tracks: np.ndarray) -> None:
        """Append [shape=(n_tracks, n_frames)] in the scene's track order."""
        self.writer.write(tracks)

    def close(self, publish: bool = True) -> Path:
        """Append ``axml`` with the final duration and rename the file into place (``publish=False``:
        leave it complete under its temporary name, see :meth:`AudioWriter.close`)."""
        axml = axml_body(self.scene, self.writer.n_frames, self.title)
        self._closed = True
        return self.writer.close(tail_chunks=[(b"axml", axml)], publish=publish)

    def abort(self) -> None:
        self.writer.abort()

    @property
    def content_hash(self) -> str:
        return self.writer.content_hash

    def __enter__(self) -> AdmSceneWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.writer.abort()
        elif not self._closed:
            self.close()


def read_pcm24_frames(path: str | Path, start_frame: int, n_frames: int) -> np.ndarray:
    """Frames of a 24-bit RIFF/BW64 file [shape=(n_channels, n)] float32 (libsndfile does not open BW64)."""
    chunks = read_chunks(path, (b"fmt ",))
    n_channels, bits = struct.unpack("<H", chunks[b"fmt "][2:4])[0], struct.unpack("<H", chunks[b"fmt "][14:16])[0]
    if bits != 24:
        raise AudioFormatError(path, f"{bits}-bit samples; this reader reads 24-bit PCM")
    offset, size = struct.unpack("<QQ", chunks[b"data@"])
    frame_bytes = 3 * n_channels
    n_frames = max(0, min(n_frames, size // frame_bytes - start_frame))
    with open(path, "rb") as f:
        f.seek(offset + start_frame * frame_bytes)
        raw = np.frombuffer(f.read(n_frames * frame_bytes), np.uint8).reshape(-1, 3).astype(np.int32)
    ints = (raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)) << 8 >> 8  # sign-extend 24 -> 32 bits
    return (ints.reshape(n_frames, n_channels).T / np.float32(2**23)).astype(np.float32)
