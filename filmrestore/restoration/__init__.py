"""Restoration: detect and remove the legacy damage of optical and magnetic tracks.

Three kinds of damage, each detected and measured before anything is applied, so
a clean input passes through untouched (and, for a two-channel transfer of a mono
track, a lost side or a reversed polarity: :func:`detect_channel_faults`):

- **hum** (:func:`detect_hum`, :class:`HumRemover`): mains hum at 50 or 60 Hz and
  its harmonics, found as narrow peaks of a long-term Welch spectrum and removed
  by narrow IIR notches at the measured frequencies;
- **clicks** (:class:`ClickRemover`): impulses found as outliers of the forward
  *and* backward linear-prediction residual against a robust running level
  (median absolute deviation), kept only when impulsive (residual energy in a few
  frames), not recurring at a pitch period and at most 1.25 ms long, spanned from
  the first forward to the last backward outlier, and repaired by least-squares
  AR interpolation (LSAR);
- **hiss** (:func:`detect_hiss`, :class:`Dehisser`): a stationary broadband noise
  floor estimated from the quietest frames (10th percentile per bin, median per
  1/3-octave band), reduced by a smoothed spectral-subtraction gain with a gain
  floor.

:func:`plan_restoration` decides what to apply from what it finds, a
:class:`Restorer` chains the processors, and :func:`restore_file` streams a file
through them. Every processor streams: ``process(block)`` returns the output
*aligned* with the input (sample ``n`` out belongs to sample ``n`` in) but
possibly lagging behind it; ``flush()`` returns the rest, so the outputs
concatenated have exactly the input's length and no time shift, and equal the
whole-signal output whatever the block sizes.

Arrays are float32 ``(n_channels, n_frames)``; the processing runs in float64.
Pure library code: no Prefect, no printing.
Levels in dBFS are RMS relative to amplitude 1.0 (a full-scale sine reads -3 dBFS).
"""
