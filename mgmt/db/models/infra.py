"""Infrastructure tables: pods, clusters, hosts, physical networks, public IP ranges.
(Revision 0002.)"""

from __future__ import annotations
