"""Guest networks, as records (orchestration comes with the routers). (Revision 0005.)"""

from __future__ import annotations
