"""Reading and writing graphs (``model-ir/1``) and plans (``model-plan/1``) as JSON.

The schema is documented in ``packages/model-ir/docs/format.md``. Load errors name the
file, the field (e.g. ``ops[3].inputs[1]``) and the problem.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from model_ir.arguments import check_graph, check_type
from model_ir.errors import FormatError, GraphError, ScheduleError
from model_ir.graph import MAX_TOTAL_BYTES, Buffer, Graph, Op
from model_ir.output_files import write_output
from model_ir.plan import Placement, Plan, Schedule, order_indices
from model_ir.placement_check import placement_problem
from model_ir.simulator import EAGER_IN_PLACE, simulate_indices, validate_order

GRAPH_FORMAT = "model-ir/1"
PLAN_FORMAT = "model-plan/1"

_GRAPH_FIELDS = {"format", "name", "meta", "buffers", "ops"}
_PLAN_FIELDS = {"format", "order", "figures", "arena_bytes", "offsets", "graph"}
_BUFFER_FIELDS = {"id", "size", "kind", "persistent", "output", "dtype", "shape", "meta"}
_OP_FIELDS = {"id", "inputs", "outputs", "mutates", "after", "target", "meta"}


def _positive_int(v: Any) -> bool:
    return _is_int(v) and v > 0


def _count(v: Any) -> bool:
    return _is_int(v) and v >= 0


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str_or_null(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(x) for x in v)


def _flops_object(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0
                                       for x in v.values())


def _reduction(v: Any) -> bool:
    if not (isinstance(v, dict) and _int_list(v.get("shape")) and _int_list(v.get("strides"))
            and (v.get("dims") is None or _int_list(v.get("dims"))) and isinstance(v.get("dtype"), str)):
        return False
    rank = len(v["shape"])
    return (len(v["strides"]) == rank and min(v["shape"], default=0) >= 0
            and all(-rank <= d < rank for d in v["dims"] or ()))


#: ``meta`` fields the layers read, with the check a loaded value must pass; any other
#: ``meta`` field is free-form. A wrong type here would otherwise fail deep inside a
#: command (``int("abc")`` in the simulator) instead of naming the field.
_STR_OR_NULL = (_str_or_null, "a string or null")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
_GRAPH_META = {
    "granularity": (_positive_int, "a positive integer (bytes)"),
    "batch_size": (_count, "a non-negative integer"),
    "cuda_capability": (lambda v: _int_list(v) and len(v) == 2, "[major, minor] integers"),
    "cuda_sm_count": (_positive_int, "a positive integer"),
    "flops": (_flops_object, "an object of non-negative numbers"),
    "arena_fallbacks": (_str_list, "a list of buffer ids"),
    "arena_temporaries": (lambda v: isinstance(v, dict) and all(_count(n) for n in v.values()),
                          "an object of op ids to non-negative integers (bytes)"),
    **dict.fromkeys(("device", "frontend", "kernels", "mode", "model", "optimizer", "workspaces"), _STR_OR_NULL),
    **dict.fromkeys(("train", "keep_grads", "return_outputs"), _BOOL),
}
_OP_META = {
    "phase": (lambda v: isinstance(v, str), "a string"),
    EAGER_IN_PLACE: (lambda v: isinstance(v, str), "a buffer id"),
    "flops": (_count, "a non-negative integer"),
    "folded": (_str_list, "a list of node names"),
    "reduction": (_reduction, 'an object {"shape": [...], "strides": [as many], "dims": [dims of the shape] '
                              'or null, "dtype": "..."}'),
}
_BUFFER_META = {
    "released_after": (lambda v: isinstance(v, str), "an op id"),
    "grad_of": (lambda v: isinstance(v, str), "a string"),
}

#: Deepest nesting of arrays and objects inside a free-form field (``meta``,
#: ``figures``). Deeper values would break Python's recursive JSON encoder when the
#: graph is saved again.
MAX_NESTING = 64


class _Reader:
    """Typed field access that reports ``source: field: problem``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str) -> FormatError:
        return FormatError(f"{self.source}: {where or 'top level'}: {problem}")

    def obj(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {type(value).__name__}")
        return value

    def get(self, data: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in data:
            if default is ...:
                raise self.fail(where, f"missing required field {key!r}")
            return default
        value = data[key]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _tuple(kind))
        if not ok:
            raise self.fail(_field(where, key), f"expected {_kind_name(kind)}, got {_show(value)}")
        if isinstance(value, str) and _has_surrogate(value):
            raise self.fail(_field(where, key), f"contains a lone UTF-16 surrogate: {_show(value)}")
        return value

    def str_list(self, data: Mapping[str, Any], key: str, where: str) -> list[str]:
        value = self.get(data, key, where, list, [])
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise self.fail(f"{where}.{key}[{i}]", f"expected a string id, got {_show(v)}")
            if _has_surrogate(v):
                raise self.fail(f"{where}.{key}[{i}]", f"contains a lone UTF-16 surrogate: {_show(v)}")
        return value

    def free_form(self, data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
        """An optional object of any JSON values (``meta``, ``figures``), checked for
        nesting depth and lone surrogates."""
        value = self.get(data, key, where, dict, {})
        problem = value and _bad_value(value, [_field(where, key)], 1)
        if problem:
            raise self.fail(*problem)
        return value

    def meta(self, data: Mapping[str, Any], where: str, known: Mapping[str, tuple]) -> dict[str, Any]:
        """:meth:`free_form` ``meta``, whose fields in ``known`` pass their check."""
        value = self.free_form(data, "meta", where)
        for key, (ok, expected) in known.items():
            if key in value and not ok(value[key]):
                raise self.fail(_field(_field(where, "meta"), key), f"expected {expected}, got {_show(value[key])}")
        return value

    def unknown(self, data: Mapping[str, Any], allowed: set[str], where: str) -> None:
        extra = sorted(set(data) - allowed)
        if extra:
            raise self.fail(where, f"unknown field {extra[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _field(where: str, key: str) -> str:
    """``where.key``, or ``key`` alone at the top level."""
    return key if where in ("", "top level") else f"{where}.{key}"


def _bad_value(value: Any, where: list[str], depth: int) -> tuple[str, str] | None:
    """``(field, problem)`` for the first value nested deeper than :data:`MAX_NESTING`
    or holding a lone surrogate in a string or key; None when all is well."""
    if depth > MAX_NESTING:
        return "".join(where), f"nested deeper than {MAX_NESTING} levels"
    if isinstance(value, str):
        if _has_surrogate(value):
            return "".join(where), f"contains a lone UTF-16 surrogate: {_show(value)}"
        return None
    if isinstance(value, dict):
        for k in value:
            if isinstance(k, str) and _has_surrogate(k):
                return "".join(where), f"a key contains a lone UTF-16 surrogate: {_show(k)}"
        items = ((f".{k}", v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for label, v in items:
        if isinstance(v, (dict, list, str)):
            where.append(label)
            problem = _bad_value(v, where, depth + 1)
            where.pop()
            if problem:
                return problem
    return None


def _has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone UTF-16 surrogate (``"\\ud800"`` in a JSON file),
    which cannot be printed or written as UTF-8."""
    if text.isascii():  # constant time: the common case costs nothing
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _show(value: Any) -> str:
    """``value`` as JSON for a message, cut to 60 characters (its type if it has no JSON)."""
    try:
        return json.dumps(value)[:60]
    except (RecursionError, TypeError, ValueError):
        return type(value).__name__


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", bool: "true or false", list: "a list", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in _tuple(kind))


def graph_from_dict(data: Any, source: str = "<graph>") -> Graph:
    """Build a :class:`Graph` from parsed ``model-ir/1`` JSON; errors name ``source``."""
    r = _Reader(source)
    data = r.obj(data, "top level")
    fmt = r.get(data, "format", "top level", str)
    if fmt != GRAPH_FORMAT:
        raise r.fail("format", f"expected {GRAPH_FORMAT!r}, got {fmt!r}")
    r.unknown(data, _GRAPH_FIELDS, "top level")
    buffers = []
    for i, b in enumerate(r.get(data, "buffers", "top level", list)):
        w = f"buffers[{i}]"
        b = r.obj(b, w)
        r.unknown(b, _BUFFER_FIELDS, w)
        size = r.get(b, "size", w, int)
        if size < 0:
            raise r.fail(f"{w}.size", f"must be >= 0, got {size}")
        if size > MAX_TOTAL_BYTES:
            raise r.fail(f"{w}.size", f"must be < 2**62 bytes (4 EiB), got {size}")
        shape = r.get(b, "shape", w, (list, type(None)), None)
        if shape is not None and not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise r.fail(f"{w}.shape", "expected a list of non-negative integers")
        buffers.append(
            Buffer(
                id=r.get(b, "id", w, str),
                size=size,
                kind=r.get(b, "kind", w, (str, type(None)), None),
                persistent=r.get(b, "persistent", w, bool, False),
                output=r.get(b, "output", w, bool, False),
                dtype=r.get(b, "dtype", w, (str, type(None)), None),
                shape=shape,
                meta=r.meta(b, w, _BUFFER_META),
            )
        )
    ops = []
    for i, o in enumerate(r.get(data, "ops", "top level", list)):
        w = f"ops[{i}]"
        o = r.obj(o, w)
        r.unknown(o, _OP_FIELDS, w)
        ops.append(
            Op(
                id=r.get(o, "id", w, str),
                inputs=r.str_list(o, "inputs", w),
                outputs=r.str_list(o, "outputs", w),
                mutates=r.str_list(o, "mutates", w),
                after=r.str_list(o, "after", w),
                target=r.get(o, "target", w, (str, type(None)), None),
                meta=r.meta(o, w, _OP_META),
            )
        )
    try:
        graph = Graph(
            buffers=buffers,
            ops=ops,
            name=r.get(data, "name", "top level", str, "graph"),
            meta=r.meta(data, "top level", _GRAPH_META),
        )
    except GraphError as e:
        raise FormatError(f"{source}: invalid graph: {e}") from None
    _check_meta_references(graph, r)
    return graph


def _check_meta_references(graph: Graph, r: _Reader) -> None:
    """The ids the layers look up from ``meta`` fields name a buffer or op of the graph
    (an unknown one failed deep inside a command, or was silently ignored)."""
    for where, ids, index, what in [
        ("meta.arena_fallbacks", graph.meta.get("arena_fallbacks", ()), graph.buffer_index, "buffer"),
        ("meta.arena_temporaries", graph.meta.get("arena_temporaries", {}), graph.op_index, "op"),
        *((f"buffers[{k}].meta.released_after", [b.meta["released_after"]], graph.op_index, "op")
          for k, b in enumerate(graph.buffers) if "released_after" in b.meta),
        *((f"ops[{k}].meta.{EAGER_IN_PLACE}", [o.meta[EAGER_IN_PLACE]], graph.buffer_index, "buffer")
          for k, o in enumerate(graph.ops) if EAGER_IN_PLACE in o.meta),
    ]:
        unknown = next((i for i in ids if i not in index), None)
        if unknown is not None:
            raise r.fail(where, f"names no {what} of the graph: {_show(unknown)}")


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    """The ``model-ir/1`` JSON object of ``graph``; optional fields only when set."""
    buffers = []
    for b in graph.buffers:
        d: dict[str, Any] = {"id": b.id, "size": b.size}
        if b.kind is not None:
            d["kind"] = b.kind
        if b.persistent:
            d["persistent"] = True
        if b.output:
            d["output"] = True
        if b.dtype is not None:
            d["dtype"] = b.dtype
        if b.shape is not None:
            d["shape"] = list(b.shape)
        if b.meta:
            d["meta"] = dict(b.meta)
        buffers.append(d)
    ops = []
    for o in graph.ops:
        d = {"id": o.id, "inputs": list(o.inputs), "outputs": list(o.outputs)}
        if o.mutates:
            d["mutates"] = list(o.mutates)
        if o.after:
            d["after"] = list(o.after)
        if o.target is not None:
            d["target"] = o.target
        if o.meta:
            d["meta"] = dict(o.meta)
        ops.append(d)
    out: dict[str, Any] = {"format": GRAPH_FORMAT, "name": graph.name, "buffers": buffers, "ops": ops}
    if graph.meta:
        out["meta"] = dict(graph.meta)
    return out


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of file ``path`` (UTF-8; a byte order mark, as editors on Windows write,
    skipped), read once: a pipe (``<(zcat graph.json.gz)``) cannot be read again. I/O
    problems, and a device (``/dev/zero`` never ends), are :class:`FormatError`."""
    check_type(path, (str, os.PathLike), "path", "a file path (str or os.PathLike)")
    p = Path(path)
    try:
        if stat.S_ISCHR(mode := p.stat().st_mode) or stat.S_ISBLK(mode):
            raise FormatError(f"{p}: is a device, expected a file")
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FormatError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{p}: is a directory, expected a file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{p}: cannot read: {e}") from None


def parse_json(text: str, source: str) -> Any:
    """Parse JSON ``text`` read from ``source``, syntax problems as :class:`FormatError`.

    Nesting too deep for Python's parser and integers of more than 4300 digits are
    syntax errors here; the readers of each format check the rest (lone surrogates,
    depth of free-form fields).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        msg = e.msg.removesuffix(" at")  # "Unterminated string starting at", then the place
        raise FormatError(f"{source}: not valid JSON: {msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise FormatError(f"{source}: not valid JSON: arrays or objects nested too deeply") from None
    except ValueError as e:  # Python's limit on integer literals (4300 digits)
        raise FormatError(f"{source}: not valid JSON: a number has more than 4300 digits "
                          f"({e.__class__.__name__})") from None


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file (:func:`read_text`, then :func:`parse_json`)."""
    return parse_json(read_text(path), str(Path(path)))


def load_graph(path: str | os.PathLike[str]) -> Graph:
    """Load a ``model-ir/1`` graph file, or the graph inside a ``model-plan/1`` file."""
    data = read_json(path)
    if isinstance(data, dict) and data.get("format") == PLAN_FORMAT:
        return plan_from_dict(data, str(path)).graph
    return graph_from_dict(data, str(path))


def _checked_text(data: dict[str, Any], parse: Callable[[Any, str], Any], what: str) -> str:
    """``data`` as JSON text, after the checks its loader makes (``parse``): a file
    written here loads again, and a bad object never replaces a good file."""
    try:
        text = json.dumps(data, indent=1) + "\n"
    except (TypeError, ValueError) as e:  # a set or a numpy number in meta or figures
        raise FormatError(f"the {what} to save has a value JSON cannot hold: {e}") from None
    parse(json.loads(text), f"the {what} to save")
    return text


def save_graph(graph: Graph, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """Write ``graph`` as ``model-ir/1`` JSON (atomically; an existing file is replaced
    unless ``overwrite`` is False), after the checks :func:`load_graph` makes."""
    text = _checked_text(graph_to_dict(check_graph(graph)), graph_from_dict, "graph")
    write_output(path, text, overwrite=overwrite)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The ``model-plan/1`` JSON object: the graph, the order, offsets and figures."""
    out: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "order": list(plan.schedule.order),
        "figures": dict(plan.figures),
    }
    if plan.placement is not None:
        out["arena_bytes"] = plan.placement.arena_bytes
        out["offsets"] = dict(plan.placement.offsets)
    out["graph"] = graph_to_dict(plan.graph)
    return out


def plan_from_dict(data: Any, source: str = "<plan>") -> Plan:
    """Build a :class:`Plan` from parsed ``model-plan/1`` JSON; the order is validated."""
    r = _Reader(source)
    data = r.obj(data, "top level")
    fmt = r.get(data, "format", "top level", str)
    if fmt != PLAN_FORMAT:
        raise r.fail("format", f"expected {PLAN_FORMAT!r}, got {fmt!r}")
    r.unknown(data, _PLAN_FIELDS, "top level")
    graph = graph_from_dict(r.get(data, "graph", "top level", dict), f"{source}: graph")
    schedule = Schedule(r.str_list(data, "order", "top level"))
    try:
        order = order_indices(graph, schedule)
        validate_order(graph, order)
        # each instance of a recomputed buffer has its own lifetime (``b@2``: model_ir.recompute)
        lifetimes = simulate_indices(graph, order).lifetimes
    except ScheduleError as e:
        raise FormatError(f"{source}: order: {e}") from None
    placement = None
    if "offsets" in data or "arena_bytes" in data:
        offsets = r.get(data, "offsets", "top level", dict)
        placeable = {lt.id for lt in lifetimes}
        for k, v in offsets.items():
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < MAX_TOTAL_BYTES:
                raise r.fail(f"offsets.{k}", f"expected a non-negative integer below 2**62, got {_show(v)}")
            if k not in placeable:
                raise r.fail(f"offsets.{k}", "names no buffer of the graph nor an instance the order recomputes"
                             if k not in graph.buffer_index else "a persistent buffer, which lives outside the arena")
        arena_bytes = r.get(data, "arena_bytes", "top level", int)
        if not 0 <= arena_bytes < MAX_TOTAL_BYTES:
            raise r.fail("arena_bytes", f"must be >= 0 and below 2**62, got {arena_bytes}")
        # The buffers it places (an executor may leave some to PyTorch's allocator) fit and never overlap.
        problem = placement_problem([lt for lt in lifetimes if lt.id in offsets], offsets, arena_bytes)
        if problem:
            raise r.fail("offsets", problem)
        placement = Placement(offsets, arena_bytes)
    return Plan(graph, schedule, placement, r.free_form(data, "figures", "top level"))


def load_plan(path: str | os.PathLike[str]) -> Plan:
    return plan_from_dict(read_json(path), str(path))


def save_plan(plan: Plan, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """Write ``plan`` as ``model-plan/1`` JSON (atomically; an existing file is replaced
    unless ``overwrite`` is False), after the checks :func:`load_plan` makes (a valid
    order; offsets that fit the arena and never overlap)."""
    text = _checked_text(plan_to_dict(check_type(plan, Plan, "plan", "a model_ir.Plan")), plan_from_dict, "plan")
    write_output(path, text, overwrite=overwrite)
