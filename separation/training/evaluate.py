"""SI-SDR evaluation of a separator on DnR folders, beside two bounds measured on the same items.

* ``separator``: the stems the separator gives through the streaming engine.
* ``mixture``: every stem = the mix (the do-nothing lower bound; its improvement is 0 dB).
* ``oracle_irm``: the ideal ratio mask, ``|S_i| / sum_j |S_j|`` per STFT bin (n_fft 2048,
  hop 512), applied to the mix: what a perfect real-valued mask on this STFT achieves.

Items may be at any sample rate (DnR's are 44.1 kHz): the separator's input is resampled to
its rate and its dialogue and music back (the effects are the rest of the mix), and every
score is taken at the item's own rate.

SI-SDR improvement (SI-SDRi) is ``SI-SDR(estimate, reference) - SI-SDR(mix, reference)``
per item and stem; the global SDR of the Sound Demixing Challenge's cinematic track
(:func:`~.metrics.global_sdr`, not scale-invariant) is reported beside it. Items whose
reference stem is silent are skipped for that stem.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from filmrestore.audio import read_audio
from filmrestore.separation.base import STEMS, Separator
from filmrestore.separation.training.dataset import Item, list_items, resolve_split
from filmrestore.separation.engine import separate_array
from filmrestore.separation.training.metrics import global_sdr, si_sdr

METHODS: tuple[str, str, str] = ("separator", "mixture", "oracle_irm")
_SILENT_RMS = 1e-5
ProgressCallback = Callable[[int, int], None]


def oracle_irm(stems: np.ndarray, n_fft: int = 2048, hop_frames: int = 512) -> np.ndarray:
    """Ideal-ratio-mask estimates [shape=(3, n_channels, n_frames)] from the true stems (same shape)."""
    x = torch.from_numpy(np.ascontiguousarray(stems, dtype=np.float32))
    n_stems, n_channels, n_frames = x.shape
    window = torch.hann_window(n_fft)
    spec = torch.stft(x.reshape(-1, n_frames), n_fft, hop_frames, window=window, return_complex=True)
    spec = spec.reshape(n_stems, n_channels, *spec.shape[-2:])
    magnitude = spec.abs()
    masks = magnitude / magnitude.sum(0, keepdim=True).clamp_min(1e-12)
    est = torch.istft((masks * spec.sum(0, keepdim=True)).reshape(-1, *spec.shape[-2:]), n_fft, hop_frames,
                      window=window, length=n_frames)
    return est.reshape(n_stems, n_channels, n_frames).numpy()


def load_item(item: Item) -> tuple[np.ndarray, np.ndarray]:
    """``(mix [shape=(n_channels, n_frames)], stems [shape=(3, n_channels, n_frames)])``.

    The mix is the item's mix file when it has one, else the sum of the stems.
    """
    stems = np.stack([read_audio(item.stems[s]) for s in STEMS])
    mix = read_audio(item.mix) if item.mix is not None else stems.sum(0)
    return mix, stems


def score_item(estimates: dict[str, np.ndarray], mix: np.ndarray, stems: np.ndarray) -> dict[str, dict]:
    """``{method: {stem: {"si_sdr_db", "si_sdri_db", "sdr_db"}}}`` for one item (silent stems omitted)."""
    out: dict[str, dict] = {m: {} for m in estimates}
    for k, stem in enumerate(STEMS):
        ref = stems[k]
        if np.sqrt(np.mean(np.square(ref, dtype=np.float64))) < _SILENT_RMS:
            continue
        baseline = si_sdr(mix, ref)
        for method, est in estimates.items():
            value = si_sdr(est[k], ref)
            out[method][stem] = {"si_sdr_db": value, "si_sdri_db": value - baseline, "sdr_db": global_sdr(est[k], ref)}
    return out


def evaluate(data_dir: str | Path, separator: Separator, *, device: str = "cpu", max_items: int | None = None,
             segment_s: float = 20.0, overlap_s: float = 2.0,
             on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Evaluate ``separator`` on ``data_dir`` (its ``test/`` folder when there is one).

    Returns a JSON-able report: ``{"data_dir", "separator", "n_items", "summary":
    {method: {stem: {"si_sdr_db": mean, "si_sdri_db": mean, "si_sdri_median_db", "n"}}},
    "items": [{"item", method: {stem: {...}}}]}`` for ``method`` in :data:`METHODS`.
    """
    root = resolve_split(data_dir, "test")
    items = list_items(root, sample_rate_hz=None)[:max_items]  # any rate: the engine resamples
    per_item = []
    for i, item in enumerate(items):
        mix, stems = load_item(item)
        separated = separate_array(separator, mix, device=device, segment_s=segment_s, overlap_s=overlap_s,
                                   sample_rate_hz=item.sample_rate_hz)
        estimates = {"separator": np.stack([separated[s] for s in STEMS]),
                     "mixture": np.stack([mix] * len(STEMS)),
                     "oracle_irm": oracle_irm(stems)}
        per_item.append({"item": item.folder.name, **score_item(estimates, mix, stems)})
        if on_progress is not None:
            on_progress(i + 1, len(items))
    return {"data_dir": str(root), "separator": separator.name, "n_items": len(items),
            "summary": summarise(per_item), "items": per_item}


def summarise(per_item: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean SI-SDR, mean and median SI-SDRi and mean global SDR per method and stem over the items."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for method in METHODS:
        summary[method] = {}
        for stem in STEMS:
            rows = [r[method][stem] for r in per_item if stem in r.get(method, {})]
            if not rows:
                continue
            sdr = np.array([r["si_sdr_db"] for r in rows])
            sdri = np.array([r["si_sdri_db"] for r in rows])
            summary[method][stem] = {"si_sdr_db": float(sdr.mean()), "si_sdri_db": float(sdri.mean()),
                                     "si_sdri_median_db": float(np.median(sdri)),
                                     "sdr_db": float(np.mean([r["sdr_db"] for r in rows])), "n": len(rows)}
    return summary


def paired_difference(report: dict[str, Any], baseline: dict[str, Any]) -> dict[str, dict[str, float]]:
    """How much ``report``'s separator gains over ``baseline``'s on the same items, SI-SDRi in dB.

    Per stem and over all (item, stem) pairs that both scored: the mean difference, its standard
    error and n. Two separators differ far less from item to item than items do, so a difference
    of a tenth of a dB can be told from chance on a few dozen items where the two means alone
    could not. Raises ``ValueError`` when the reports share no scored item.
    """
    before = {(r["item"], stem): v["si_sdri_db"] for r in baseline["items"]
              for stem, v in r.get("separator", {}).items()}
    pairs = [(stem, v["si_sdri_db"] - before[(r["item"], stem)]) for r in report["items"]
             for stem, v in r.get("separator", {}).items() if (r["item"], stem) in before]
    if not pairs:
        raise ValueError("the two reports share no scored item")
    out: dict[str, dict[str, float]] = {}
    for name in (*STEMS, "all"):
        d = np.array([diff for stem, diff in pairs if name in ("all", stem)])
        if d.size:
            stderr = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
            out[name] = {"mean_db": float(d.mean()), "stderr_db": stderr, "n": int(d.size)}
    return out


def format_paired(paired: dict[str, dict[str, float]], name: str, baseline_name: str) -> str:
    """One line: ``name`` against ``baseline_name``, mean SI-SDRi difference +- standard error per stem and in all."""
    cells = "  ".join(f"{k} {v['mean_db']:+.3f} +- {v['stderr_db']:.3f} (n {v['n']})" for k, v in paired.items())
    return f"{name} - {baseline_name}, SI-SDRi dB, paired by item: {cells}"


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of the summary: one row per method; SI-SDR, SI-SDRi and global SDR per
    stem (dB), and the SI-SDRi mean over the stems."""
    head = f"{'method':<12}" + "".join(f"{s + ' SI-SDR':>17}{'SI-SDRi':>9}{'SDR':>7}" for s in STEMS) \
        + f"{'mean SI-SDRi':>14}"
    lines = [f"{report['data_dir']}: {report['n_items']} items, separator {report['separator']!r}", head]
    for method in METHODS:
        cells = report["summary"].get(method, {})
        row = f"{method:<12}"
        for stem in STEMS:
            c = cells.get(stem)
            row += f"{c['si_sdr_db']:>17.2f}{c['si_sdri_db']:>+9.2f}{c['sdr_db']:>7.2f}" if c else f"{'-':>33}"
        gains = [c["si_sdri_db"] for c in cells.values()]
        row += f"{np.mean(gains):>+14.2f}" if gains else f"{'-':>14}"
        lines.append(row)
    worst = lowest_items(report)
    if worst:
        lines.append("separator, median and lowest item SI-SDRi (its mixture's SI-SDR): " + "  ".join(
            f"{stem} {report['summary']['separator'][stem]['si_sdri_median_db']:+.2f}, {w['item']} "
            f"{w['si_sdri_db']:+.2f} ({w['mixture_si_sdr_db']:+.1f})" for stem, w in worst.items()))
    return "\n".join(lines)


def lowest_items(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per stem, the item where the separator's SI-SDRi is lowest, with its mixture's SI-SDR: where
    the mean is lost. A stem that nearly is the mix (mixture SI-SDR of +20 dB or more) leaves a
    separator nothing to gain and every leak to lose."""
    out: dict[str, dict[str, Any]] = {}
    for stem in STEMS:
        rows = [(r["separator"][stem]["si_sdri_db"], r) for r in report.get("items", [])
                if stem in r.get("separator", {}) and stem in r.get("mixture", {})]
        if rows:
            value, row = min(rows, key=lambda x: x[0])
            out[stem] = {"item": row["item"], "si_sdri_db": value,
                         "mixture_si_sdr_db": row["mixture"][stem]["si_sdr_db"]}
    return out
