"""model_ir: the storage-level graph IR, the memory simulator, formats and plugins."""

from model_ir.errors import FormatError, GraphError, ModelOptError, PluginError, ScheduleError, WrongTypeError
from model_ir.graph import Buffer, Graph, Op
from model_ir.json_format import (
    graph_from_dict,
    graph_to_dict,
    load_graph,
    load_plan,
    plan_from_dict,
    plan_to_dict,
    save_graph,
    save_plan,
)
from model_ir.plan import Placement, Plan, Schedule, program_order
from model_ir.simulator import Lifetime, MemoryProfile, simulate, validate_order, working_set_bound

__version__ = "0.1.0"

__all__ = [
    "Buffer", "FormatError", "Graph", "GraphError", "Lifetime", "MemoryProfile", "ModelOptError",
    "Op", "Placement", "Plan", "PluginError", "Schedule", "ScheduleError", "WrongTypeError", "graph_from_dict",
    "graph_to_dict", "load_graph", "load_plan", "plan_from_dict", "plan_to_dict", "program_order",
    "save_graph", "save_plan", "simulate", "validate_order", "working_set_bound",
]
