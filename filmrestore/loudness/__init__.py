"""Loudness: BS.1770-4 / EBU Tech 3341-3342 metering, channel weights, speech-gated
(dialogue) loudness, delivery specs and the true-peak limiter. Pure library code: no
Prefect, no printing."""
