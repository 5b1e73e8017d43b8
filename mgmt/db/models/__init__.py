"""The management server's tables, one module per area; import everything from here.

core: tenancy, sessions, zones, jobs, events, configuration. infra: pods,
clusters, hosts, physical networks, public IP ranges. catalog: offerings,
templates and ISOs, OS types. Each area's tables arrive in its own Alembic
revision (0001 core, 0002 infra, 0003 catalog).
"""

from mgmt.db.models import (  # noqa: F401  (register tables)
    catalog,
    compute,
    infra,
    misc,
    networks,
    rules,
    systemvms,
)
from mgmt.db.models.core import *  # noqa: F403
from mgmt.db.models.core import (  # noqa: F401  (explicit names for type checkers)
    Account,
    AccountType,
    ApiSession,
    AsyncJob,
    Base,
    Common,
    Configuration,
    Domain,
    Event,
    JobStatus,
    Project,
    ProjectAccount,
    Role,
    RoleType,
    User,
    Zone,
)
