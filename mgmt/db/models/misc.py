"""Tags, alerts and project invitations. (Revision 0004.)"""

from __future__ import annotations
