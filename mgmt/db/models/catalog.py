"""Catalogue tables: service, disk, network and VPC offerings, templates, ISOs, OS types.
(Revision 0003.)"""

from __future__ import annotations
