"""Traffic routers. The engine imports this package only, never its modules (an import-linter
contract): what a router is made of stays behind ``TrafficRouter`` (``_base.py``)."""

from canaryctl.mesh._base import (
    AUTO,
    ROUTERS,
    TrafficRouter,
    Workloads,
    detect,
    get_router,
)
from canaryctl.mesh.collapse import Collapse, Ops
from canaryctl.mesh.routes import Destination, Target, apply_patch

__all__ = [
    "AUTO",
    "ROUTERS",
    "Collapse",
    "Destination",
    "Ops",
    "Target",
    "TrafficRouter",
    "Workloads",
    "apply_patch",
    "detect",
    "get_router",
]
