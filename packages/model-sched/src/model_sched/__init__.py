"""model_sched: operator orders with the smallest peak of live bytes, with proven bounds.

``schedule(graph)`` runs the forced-liveness lower bound, PyTorch's greedy orders,
and exact search (whole graph or windows around the peak) within a time limit, and
returns a validated :class:`ScheduleResult`.
"""

from model_sched.api import DEFAULT_TIME_LIMIT, default_solver, schedule, scheduler_names, solver_backend
from model_sched.bounds import ForcedBound, forced_bound
from model_sched.control import Progress
from model_sched.errors import SchedError, SolverUnavailableError
from model_sched.liveness import Liveness, liveness, peak, timeline
from model_sched.result import ScheduleResult

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIME_LIMIT", "default_solver", "ForcedBound", "Liveness", "Progress", "SchedError",
    "ScheduleResult", "SolverUnavailableError", "forced_bound", "liveness", "peak", "schedule",
    "scheduler_names", "solver_backend", "timeline",
]
