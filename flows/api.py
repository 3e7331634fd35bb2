"""Where a run reports: the Prefect API that is configured or answering on this machine, or none.

Apart from the flows so that the CLI can ask before it imports the pipeline (a title it finds
finished needs nothing more, :mod:`filmrestore.titles`).
"""

from __future__ import annotations

LOCAL_SERVER = "http://127.0.0.1:4200/api"  # where ``filmrestore server`` listens by default


def prefect_api_url() -> str | None:
    """The Prefect API a run reports to: ``PREFECT_API_URL`` when configured (environment or
    Prefect profile), else a Prefect server answering on this machine's default port
    (``filmrestore server``), else None: the flow then runs in this process without Prefect
    (same stages, resume, lock and files; no temporary server to start)."""
    import urllib.request

    from prefect.settings import get_current_settings

    configured = get_current_settings().api.url
    if configured:
        return configured
    try:
        with urllib.request.urlopen(f"{LOCAL_SERVER}/health", timeout=0.5) as reply:
            return LOCAL_SERVER if reply.status == 200 and reply.read().strip() == b"true" else None
    except (OSError, ValueError):
        return None
