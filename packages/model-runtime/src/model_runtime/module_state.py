"""What of a model's Python state a captured step depends on, checked at every call.

A step is traced once: each module's mode, its plain Python attributes (``Dropout.p``,
``BatchNorm.eps``, Hugging Face's ``gradient_checkpointing``) and its hooks become
constants of the captured ops, and so do the plain values the loss function, the
``before_step`` function, the modules' ``forward`` and the hooks read from their closures, module
globals and, for a method, its object, one level into the dicts, lists and objects found there
(``beta * kl`` with ``beta`` annealed by the loop, ``cfg["beta"]``, ``args.beta``, ``max_norm[0]``);
so do the functions of their own Python module they call (:func:`with_helpers`) and, for a
module's ``forward``, what the module holds one level down and its class attributes
(:func:`module_reads`: ``self.cfg.scale``). The trace inlined the submodules, the
function attributes and the modules and functions those functions call (a global
``criterion``): another bound in the place of one (:func:`is_callee`) changes the step.
So does each tensor that is neither a parameter nor a buffer of the model and that the
step reads where those values are read, or as a module attribute (a loss module's class
``weight``, ``self.scale = torch.tensor(...)``): the step holds that very tensor, so it
follows changes made in place, not another tensor bound in its place. A module the
functions reach (a ``criterion`` a lambda calls, a distillation teacher) has its modes,
hooks and tensors checked as the model's, not its plain attributes (a metric's counter).
Changing one later does not change the step, where it would change eager's next call,
so a call after such a change asks for a new plan
(:class:`~model_runtime.errors.ReoptimizeError`, which the step turns into a replan).
"""

from __future__ import annotations

import collections
import functools
import inspect
import operator
import types
from collections.abc import Callable, Collection

import torch
from torch.utils.hooks import RemovableHandle

from model_ir.torch.function_scope import ABSENT as _ABSENT
from model_ir.torch.function_scope import (
    GLOBAL_MODULE_HOOKS,
    MODULE_HOOKS,
    code_indexes,
    code_strings,
    hook_functions,
    scope_values,
    scopes,
    unwrap_callable,
)
from model_ir.torch.plain_values import is_plain


def _object_reads(obj, code: types.CodeType, names: set[str], kept: Callable[[object], bool],
                  ) -> list[tuple[str, Callable[[], object]]]:
    """``(path, read)`` for the ``kept`` entries of a dict the code indexes with a
    constant (``['beta']``), of a list or tuple it indexes with one (``[0]``), or the
    ``kept`` attributes of an object the code names (``.beta``); modules, classes and
    tensors aside (a module's attributes are checked with the model's)."""
    if isinstance(obj, dict):
        return [(f"[{key!r}]", lambda key=key: obj.get(key, _ABSENT))
                for key in sorted(code_strings(code)) if key in obj and kept(obj[key])]
    if isinstance(obj, (list, tuple)):
        return [(f"[{i}]", lambda i=i: obj[i] if -len(obj) <= i < len(obj) else _ABSENT)
                for i in sorted(code_indexes(code)) if -len(obj) <= i < len(obj) and kept(obj[i])]
    attributes = getattr(obj, "__dict__", None)
    if not isinstance(attributes, dict) or isinstance(obj, (torch.nn.Module, torch.Tensor, types.ModuleType, type,
                                                            types.FunctionType)):
        return []
    reads = [(f".{name}", lambda name=name: attributes.get(name, _ABSENT))
             for name in sorted(names) if name in attributes and kept(attributes[name])]
    # A property the code names reads what the instance holds under another name (Hugging Face's
    # config._attn_implementation returns _attn_implementation_internal): read through it.
    for name in sorted(names):
        if name not in attributes and isinstance(inspect.getattr_static(type(obj), name, None), property):
            try:
                value = getattr(obj, name)
            except Exception:  # noqa: BLE001 - a property that cannot be read now is not one the step read
                continue
            if kept(value):
                reads.append((f".{name}", lambda name=name: getattr(obj, name, _ABSENT)))
    return reads


def function_reads(fn, tensors: Collection[int] = ()) -> list[tuple[str, Callable[[], object]]]:
    """``(what, read)`` for each plain value ``fn`` reads from its closure or its module's
    globals (``read()`` gives the value now), one level into the dicts, lists and objects
    it finds there (their entries the code indexes with a constant, their attributes it
    names), and for a method, of its object (``self.alpha``); a ``partial``'s function,
    and the function a decorator wraps (``__wrapped__``) too. Also for each tensor found
    there whose ``id`` is in ``tensors`` (the step's constants)."""
    def kept(value) -> bool:
        return id(value) in tensors if isinstance(value, torch.Tensor) else is_plain(value)

    reads = []
    for s in scopes(fn):
        for kind, name, read in s.reads:
            value, how = read(), ("of" if kind == "variable" else "read by")
            if isinstance(value, torch.Tensor) or is_plain(value):
                if kept(value):
                    reads.append((f"{kind} {name!r} {how} {s.where}", read))
            elif is_callee(value):  # a criterion or function rebound later changes eager's next call
                reads.append((f"{kind} {name!r} {how} {s.where}", read))
            else:
                reads += [(f"{name}{path} (a {kind} {how} {s.where})", object_read)
                          for path, object_read in _object_reads(value, s.code, s.names, kept)]
        if s.owner is not None:
            reads += [(f"self{path} (read by {s.where})", object_read)
                      for path, object_read in _object_reads(s.owner, s.code, s.names, kept)]
    return reads


def is_callee(value) -> bool:
    """A module or function the step's code calls: held by identity, as the trace inlined
    the one it found (another bound in its place would change eager's next call)."""
    return isinstance(value, (torch.nn.Module, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                              functools.partial))


def _shown_pair(now, then) -> tuple[str, str]:
    """``now`` and ``then`` for a message: plain values as themselves, a module or a
    function by its kind (a model's repr is pages long)."""
    if then is _ABSENT:  # an attribute the module did not hold (a ``forward`` patched on since)
        return f"a {type(now).__name__}", "none"
    if is_plain(then):
        return _shown(now), repr(then)
    return _shown(now) if now is _ABSENT else f"another {type(now).__name__}", f"the {type(then).__name__} it held"


def module_reads(modules, tensors: Collection[int] = ()) -> list[tuple[str, Callable[[], object]]]:
    """``(what, read)`` for the values of its own a module's ``forward`` reads beyond its
    plain attributes (checked with the model's): one level into the dicts, lists and
    objects it holds and names (``self.cfg.scale``, ``self.flags[0]``, ``self.opts["p"]``,
    a Hugging Face module's ``self.config.*``), and the plain class attributes it names
    that its instance does not hold (``self.scale`` set on the class). Each value once,
    however many modules share it (one config)."""
    def kept(value) -> bool:
        return id(value) in tensors if isinstance(value, torch.Tensor) else is_plain(value)

    found: dict[tuple[int, str], tuple[str, Callable[[], object]]] = {}
    forwards: dict[type, list] = {}  # the scopes of each class's forward (GPT-2: 160 modules, 13 classes)
    for name, m in modules:
        label = f"module {name or 'model'!r} ({type(m).__name__})"
        attributes, cls = vars(m), type(m)
        if cls not in forwards:
            forwards[cls] = scopes(cls.forward)
        for s in forwards[cls]:
            for key in sorted(s.names):
                value = attributes.get(key, _ABSENT)
                if value is _ABSENT:
                    static = inspect.getattr_static(cls, key, _ABSENT)
                    if is_plain(static):
                        found.setdefault((id(cls), key), (f"class attribute {key!r} of {label}",
                                                          functools.partial(inspect.getattr_static, cls, key, _ABSENT)))
                elif not (is_plain(value) or isinstance(value, torch.Tensor)):  # those: with the model's
                    for path, read in _object_reads(value, s.code, s.names, kept):
                        found.setdefault((id(value), path), (f"self.{key}{path} (of {label})", read))
    return list(found.values())


def with_helpers(functions) -> list:
    """``functions`` (Nones and modules aside), then the plain functions they reach that
    are defined in their own module (a forward's ``helper(h)`` that reads a global), and
    those such helpers reach, each once."""
    found: dict[int, object] = {}
    todo = collections.deque(f for f in functions if f is not None and not isinstance(f, torch.nn.Module))
    while todo:
        fn = todo.popleft()
        if id(fn) in found:
            continue
        found[id(fn)] = fn
        function = unwrap_callable(fn)[0]
        home = getattr(function, "__module__", None)
        todo.extend(value for s in scopes(fn) for _, _, read in s.reads for value in [read()]
                    if isinstance(value, types.FunctionType) and value.__module__ == home)
    return list(found.values())


def _reachable(fn) -> list[tuple[str, object]]:
    """``(name, value)`` of what ``fn`` reaches outside its arguments
    (:func:`~model_ir.torch.function_scope.scope_values`), and the arguments a ``partial``
    binds, its defaults and, for a method of a module (a Lightning module's
    ``training_step``), the module itself."""
    found = [(where.split(" ", 1)[0], value) for where, value in scope_values(fn)]
    while isinstance(fn, functools.partial):
        found += [(f"argument {k}", v) for k, v in enumerate(fn.args)] + list(fn.keywords.items())
        fn = fn.func
    for s in scopes(fn):
        if isinstance(s.owner, torch.nn.Module):
            found.append(("self", s.owner))
    function = unwrap_callable(fn)[0]
    if function is not None:
        code, defaults = function.__code__, function.__defaults__ or ()
        found += list(zip(code.co_varnames[code.co_argcount - len(defaults):code.co_argcount], defaults))
        found += list((function.__kwdefaults__ or {}).items())
    return found


def _reached_modules(functions, known: set[int]) -> list[tuple[str, torch.nn.Module]]:
    """``(name, module)`` for the modules ``functions`` reach (:func:`_reachable`:
    ``criterion``, ``self.teacher``, a ``partial``'s ``teacher=``) and their submodules,
    those in ``known`` (ids) aside; named as the functions name them."""
    found = []
    for fn in functions:
        for label, value in _reachable(fn):
            if isinstance(value, torch.nn.Module) and id(value) not in known:
                for name, m in value.named_modules():
                    if id(m) not in known:
                        known.add(id(m))
                        found.append((f"{label}.{name}".rstrip("."), m))
    return found


def graph_constants(gm: torch.fx.GraphModule) -> set[int]:
    """The ``id`` of each tensor ``gm`` holds as a constant (``get_attr``): tensors of the
    user's the trace read that are not inputs of the step."""
    return {id(t) for n in gm.graph.nodes if n.op == "get_attr"
            for t in [operator.attrgetter(n.target)(gm)] if isinstance(t, torch.Tensor)}


def _shown(value) -> str:
    return "deleted" if value is _ABSENT else repr(value)


def _hooks_mark(hooks: dict) -> tuple:
    """Changes when a hook is added (a new, larger handle id last) or removed (fewer)."""
    return len(hooks), next(reversed(hooks), None)


class ModuleState:
    """The state of ``model``'s modules a step was captured with: their modes (``modes``:
    for a training step, which keeps each module's own; an eval step puts all in eval),
    plain attributes, hooks, the values its functions read and the tensors of all these
    the step holds (``constants``: the ``id`` of each, :func:`graph_constants`).
    :meth:`changed` costs one pass over them in list
    comprehensions (GPT-2: 160 modes and 730 attributes), and a look at
    the hooks only when one was registered anywhere since (``RemovableHandle.next_id``)
    or the modules had some."""

    def __init__(self, model: torch.nn.Module, *, modes: bool, volatile=(), functions=(),
                 constants: Collection[int] = ()):
        # A loss module counts as one of the model's (its attributes: a focal loss's gamma).
        owned = list(model.named_modules()) + [
            (f"loss_fn.{n}".rstrip("."), m) for f in functions if isinstance(f, torch.nn.Module)
            for n, m in f.named_modules()]
        # A module the functions reach (a criterion a lambda calls, a teacher): its modes,
        # hooks and the tensors the step holds; not its plain attributes, which a metric or
        # a counter changes at every call without the step reading them.
        modules = owned + _reached_modules([f for f in [*functions, *hook_functions(model)]
                                            if f is not None and not isinstance(f, torch.nn.Module)],
                                           {id(m) for _, m in owned})
        self.mode_modules = modules if modes else []
        self.modes = [m.training for _, m in self.mode_modules]
        # ``volatile``: (module, attribute) the forward itself changes (a call counter, a
        # tensor it replaces): eager calls between steps change them, no configuration does.
        volatile = set(volatile)
        self.attribute_keys = [(name, m, vars(m), key) for name, m in owned for key, value in vars(m).items()
                               if key != "training" and is_plain(value) and (name, key) not in volatile]
        # A buffer or parameter registered as None (``register_buffer("mask", None)``) that the
        # forward tests (``if self.mask is not None``): set to a tensor later, eager's branch changes.
        self.attribute_keys += [(name, m, d, key) for name, m in owned for d in (m._buffers, m._parameters)
                                for key, value in d.items() if value is None and (name, key) not in volatile]
        self.attributes = [d[key] for _, _, d, key in self.attribute_keys]
        # Their submodules and the functions they hold (``self.act = F.gelu``, a ``forward``
        # patched on the instance), by identity: the trace inlined the ones it found.
        self.callee_keys = [(f"{'submodule' if d is m._modules else 'attribute'} {key!r} of module "
                             f"{name or 'model'!r} ({type(m).__name__})", d, key)
                            for name, m in owned for d in (m._modules, vars(m)) for key, value in d.items()
                            if (d is m._modules or is_callee(value)) and (name, key) not in volatile]
        self.callee_keys += [(f"attribute 'forward' of module {name or 'model'!r} ({type(m).__name__})", vars(m),
                              "forward") for name, m in owned if "forward" not in vars(m)]
        self._callee_dicts = [d for _, d, _ in self.callee_keys]
        self._callee_names = [key for _, _, key in self.callee_keys]
        self._absent = [_ABSENT] * len(self.callee_keys)
        self.callees = self._callees_now()
        # The tensors of theirs the step holds (``constants``: ids of its graph's tensors),
        # a loss module's buffers and parameters among them: checked by identity.
        self.tensor_slots = [(f"{kind} {key!r} of module {name or 'model'!r} ({type(m).__name__})", d, key)
                             for name, m in modules
                             for kind, d in [("tensor attribute", vars(m)), ("buffer", m._buffers),
                                             ("parameter", m._parameters)]
                             for key, value in d.items() if isinstance(value, torch.Tensor) and id(value) in constants
                             and (name, key) not in volatile]
        hooked = torch.nn.modules.module
        self.hook_dicts = [(f"the {key.strip('_').replace('_', ' ')} of module {name or 'model'!r} "
                            f"({type(m).__name__})", getattr(m, key)) for name, m in modules for key in MODULE_HOOKS
                           if isinstance(getattr(m, key, None), dict)]
        self.hook_dicts += [(f"the global module {key.strip('_').removeprefix('global_').replace('_', ' ')}",
                             getattr(hooked, key)) for key in GLOBAL_MODULE_HOOKS
                            if isinstance(getattr(hooked, key, None), dict)]
        self.hook_marks = [_hooks_mark(d) for _, d in self.hook_dicts]
        forwards = dict.fromkeys(type(m).forward for _, m in modules)
        reads = [r for fn in with_helpers([*functions, *forwards, *hook_functions(model)])
                 for r in function_reads(fn, constants)]
        reads += module_reads(owned, constants)
        self.tensor_reads = [(what, read) for what, read in reads if isinstance(read(), torch.Tensor)]
        self.tensors = self._tensors_now()
        self.reads = [(what, read) for what, read in reads if not isinstance(read(), torch.Tensor)]
        self.read_values = [read() for _, read in self.reads]
        self.hooked = [i for i, (n, _) in enumerate(self.hook_marks) if n]  # a removal shows there only
        self.next_hook_id = RemovableHandle.next_id

    def _callees_now(self) -> list:
        return list(map(dict.get, self._callee_dicts, self._callee_names, self._absent))

    def _tensors_now(self) -> list:
        return [d.get(key, _ABSENT) for _, d, key in self.tensor_slots] + [read() for _, read in self.tensor_reads]

    def changed(self) -> str | None:
        """What changed since the capture (one line), or None."""
        if self.modes and [m.training for _, m in self.mode_modules] != self.modes:
            name, module = next((n, m) for (n, m), t in zip(self.mode_modules, self.modes) if m.training != t)
            now, then = ("training", "eval") if module.training else ("eval", "training")
            return (f"module {name or 'model'!r} ({type(module).__name__}) is in {now} mode, the step was planned "
                    f"with it in {then} mode")
        if [d.get(key, _ABSENT) for _, _, d, key in self.attribute_keys] != self.attributes:
            for (name, module, d, key), value in zip(self.attribute_keys, self.attributes):
                now = d.get(key, _ABSENT)
                if now != value:
                    return (f"attribute {key!r} of module {name or 'model'!r} ({type(module).__name__}) is "
                            f"{_shown(now)}, the step was planned with {value!r}")
        callees = self._callees_now()
        if any(map(operator.is_not, callees, self.callees)):
            what, now, then = next((what, now, then) for (what, _, _), now, then in
                                   zip(self.callee_keys, callees, self.callees) if now is not then)
            shown, held = _shown_pair(now, then)
            return f"{what} is {shown}, the step was planned with {held}"
        if [read() for _, read in self.reads] != self.read_values:
            for (what, read), value in zip(self.reads, self.read_values):
                now = read()
                if now != value:
                    if is_callee(value):
                        shown, held = _shown_pair(now, value)
                        return f"{what} is {shown}, the step was planned with {held}"
                    return (f"{what} is {_shown(now)}, the step was planned with {value!r} (a value that changes "
                            "at every step is better passed as a tensor: a 0-dim tensor input or target)")
        now = self._tensors_now()
        if any(map(operator.is_not, now, self.tensors)):
            whats = [what for what, _, _ in self.tensor_slots] + [what for what, _ in self.tensor_reads]
            for what, now, then in zip(whats, now, self.tensors):
                if now is not then:
                    shown = "deleted" if now is _ABSENT else "another tensor than the one the step was planned with"
                    return (f"{what} is {shown} (the step holds the tensor it was captured with: a change made in "
                            "place, such as .copy_(), keeps the plan; a tensor that changes at every step is better "
                            "passed as an input or target)")
        registered = RemovableHandle.next_id
        for i in range(len(self.hook_dicts)) if registered != self.next_hook_id else self.hooked:
            if _hooks_mark(self.hook_dicts[i][1]) != self.hook_marks[i]:
                return f"{self.hook_dicts[i][0]} changed since the step was planned"
        self.next_hook_id = registered  # none of those hooks was ours: look again only after the next one
        return None
