"""ADM BWF export (ITU-R BS.2076-2 ``axml`` + ``chna`` in BW64) of a bed and objects, profiles, and a checker.

One concern a module, as the EBU ADM renderer keeps ``fileio/adm`` and ``fileio/bw64`` apart:

- :mod:`.profile`: what the ``ebu`` and ``dolby`` profiles allow;
- :mod:`.scene`: a plan laid out for a profile (bed tracks, objects, track order), with the
  BS.2094 common-definition IDs and the BS.2127 polar-to-Cartesian conversion;
- :mod:`.axml` and :mod:`.chna`: the two ADM chunks of a scene;
- :mod:`.bw64`: streaming a scene's tracks into a BW64 file, and reading 24-bit PCM back;
- :mod:`.check`: what in a file (RIFF or BW64 with ``ds64``) breaks a profile.

ADM time (the 10 us grid that plans, the renderer and the writer share) is
:mod:`filmrestore.upmix.admtime`, outside this package: the plan and the renderer need it, and
this package needs them.
"""

from __future__ import annotations

from filmrestore.upmix.adm.bw64 import AdmSceneWriter, read_pcm24_frames
from filmrestore.upmix.adm.check import check_adm_file
from filmrestore.upmix.adm.profile import PROFILES, AdmProfile, get_profile
from filmrestore.upmix.adm.scene import AdmScene, polar_to_cartesian, scene_for

__all__ = [
    "PROFILES", "AdmProfile", "AdmScene", "AdmSceneWriter", "check_adm_file", "get_profile", "polar_to_cartesian",
    "read_pcm24_frames", "scene_for",
]
