"""Alerts: things an operator should look at (listAlerts shows them)."""

from __future__ import annotations

import logging
from typing import Any

from mgmt.db.models.misc import Alert

log = logging.getLogger("skiff.mgmt.alerts")


async def raise_alert(server: Any, type: int, subject: str, description: str = "",
                      zone: Any = None, pod: Any = None) -> Alert:
    """Record an alert (``type``: a number of mgmt.commands.events.ALERT_TYPES); ``zone`` and
    ``pod`` are the rows it concerns, if any. Logged as a warning too."""
    log.warning("alert %s: %s", type, subject)
    async with server.db.sessions() as session:
        alert = Alert(type=type, subject=subject, description=description or None,
                      zone_id=getattr(zone, "id", None), pod_id=getattr(pod, "id", None))
        session.add(alert)
        await session.commit()
        return alert
