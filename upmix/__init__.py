"""filmrestore.upmix: BS.2051 layouts, the 7.1.4 bed renderer, fold-down and ADM BWF export."""

from filmrestore.upmix.adm import bed_adm_chunks, open_adm_writer, write_adm_bwf
from filmrestore.upmix.foldown import fold_down, fold_down_matrix, octave_band_levels_db
from filmrestore.upmix.layouts import BED_7_1_4, Layout, Speaker, get_layout
from filmrestore.upmix.render import BedRenderer, UpmixParams

__all__ = [
    "BED_7_1_4", "BedRenderer", "Layout", "Speaker", "UpmixParams", "bed_adm_chunks", "fold_down",
    "fold_down_matrix", "get_layout", "octave_band_levels_db", "open_adm_writer", "write_adm_bwf",
]
