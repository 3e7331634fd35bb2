"""The ``chna`` chunk of a scene: one audioID (track, audioTrackUID, track and pack format) per track."""

from __future__ import annotations

import struct

from filmrestore.upmix.adm.scene import AdmScene, pack_format_id, track_format_id, track_uid


def chna_body(scene: AdmScene) -> bytes:
    """``chna``: numTracks, numUIDs, then one 40-byte audioID per track (EBU Tech 3285 s7 / BS.2088)."""
    body = struct.pack("<HH", scene.n_tracks, scene.n_tracks)
    pack = pack_format_id(scene.bed_layout)
    for i, label in enumerate(scene.bed_labels, start=1):
        body += struct.pack("<H12s14s11sx", i, track_uid(i).encode(), track_format_id(label).encode(),
                            pack.encode())
    for k, _ in enumerate(scene.objects, start=1):
        i = len(scene.bed_labels) + k
        body += struct.pack("<H12s14s11sx", i, track_uid(i).encode(), f"AT_0003{0x1000 + k:04x}_01".encode(),
                            f"AP_0003{0x1000 + k:04x}".encode())
    return body
