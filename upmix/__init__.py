"""filmrestore.upmix: BS.2051 layouts, placement plans, object panning, the 7.1.4 renderer, fold-down, ADM BWF."""

from filmrestore.upmix.adm.bw64 import AdmSceneWriter
from filmrestore.upmix.adm.check import check_adm_file
from filmrestore.upmix.adm.profile import AdmProfile, get_profile
from filmrestore.upmix.foldown import fold_down, fold_down_matrix, octave_band_levels_db
from filmrestore.layouts import BED_7_1_4, LAYOUTS, Layout, Speaker, get_layout
from filmrestore.upmix.panner import PointSourcePanner, panner_for, point_source_gains
from filmrestore.upmix.plan import BedRules, Block, ImageAnalysis, ObjectPlan, Plan, load_plan, make_plan
from filmrestore.upmix.render import RenderedBlock, SceneRenderer, render_bed

__all__ = [
    "BED_7_1_4", "LAYOUTS", "AdmProfile", "AdmSceneWriter", "BedRules", "Block", "ImageAnalysis", "Layout",
    "ObjectPlan", "Plan", "PointSourcePanner", "RenderedBlock", "SceneRenderer", "Speaker", "check_adm_file",
    "fold_down", "fold_down_matrix", "get_layout", "get_profile", "load_plan", "make_plan",
    "octave_band_levels_db", "panner_for", "point_source_gains", "render_bed",
]
