"""The one plugin manager (project ``model_opt``) and provider lookup by name.

Built-in implementations are registered through the ``model_opt`` entry-point group,
exactly as a third-party package would register its own. Each entry point is loaded
on its own: a broken plugin (a missing module, a hook with a wrong argument or an
unknown name, a hook that raises or returns no list) is reported in one line on
stderr and skipped, so that it cannot break every command. The project's own
providers win every name clash. See ``docs/plugins.md``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

import pluggy

from model_ir import hookspecs
from model_ir.errors import ModelOptError, PluginError, PluginFailedError

PROJECT = "model_opt"
#: Set (to anything but ``0``) to load only model-opt's own layers, like pytest's
#: PYTEST_DISABLE_PLUGIN_AUTOLOAD: the way out when a third-party plugin misbehaves.
DISABLE_AUTOLOAD = "MODEL_OPT_DISABLE_PLUGIN_AUTOLOAD"
#: The project's own distributions, in layer order. Their plugins load first, even
#: with autoloading disabled, and their providers win name clashes.
OWN_DISTRIBUTIONS = ("model-ir", "model-sched", "model-place", "model-runtime", "model-bench")


class ModelOptPluginManager(pluggy.PluginManager):
    """pluggy's manager plus the distribution of each plugin and the problems reported."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.distributions: dict[str, str] = {}  # plugin name -> "distribution version"
        self.builtin: set[str] = set()  # names of the plugins of OWN_DISTRIBUTIONS
        self.problems: list[str] = []

    def describe(self, plugin: object) -> str:
        """``NAME (DISTRIBUTION VERSION)``: how messages name a plugin."""
        name = self.get_name(plugin)
        if name in self.distributions:
            return f"{name} ({self.distributions[name]})"
        # Registered in-process with pm.register(), not through an entry point.
        label = getattr(plugin, "__name__", None) or type(plugin).__name__
        return f"{label} (registered in-process)"

    def is_builtin(self, plugin: object) -> bool:
        return self.get_name(plugin) in self.builtin

    def report(self, message: str) -> None:
        """Print ``message`` once, on one line of stderr (a plugin problem is not fatal)."""
        line = " ".join(message.split())
        if line not in self.problems:
            self.problems.append(line)
            print(f"model-opt: warning: {line}", file=sys.stderr)


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    name = ep.dist.name if ep.dist is not None else ""
    return re.sub(r"[-_.]+", "-", name or "").lower()


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def entry_points() -> tuple[list, list]:
    """The ``model_opt`` entry points: (the project's own, in layer order; the others,
    by distribution, or none when :data:`DISABLE_AUTOLOAD` is set)."""
    found = importlib.metadata.entry_points(group=PROJECT)
    own = sorted((ep for ep in found if _dist_name(ep) in OWN_DISTRIBUTIONS),
                 key=lambda ep: (OWN_DISTRIBUTIONS.index(_dist_name(ep)), ep.name))
    if os.environ.get(DISABLE_AUTOLOAD, "") not in ("", "0"):
        return own, []
    others = sorted((ep for ep in found if _dist_name(ep) not in OWN_DISTRIBUTIONS),
                    key=lambda ep: (_dist_name(ep), ep.name))
    return own, others


def _add_hookspecs_of(pm: ModelOptPluginManager, plugin: object) -> None:
    """Run ``plugin``'s own ``model_opt_add_hookspecs``, so that the specs of a layer
    exist before the next plugin registers (pluggy then checks its arguments)."""
    for impl in pm.hook.model_opt_add_hookspecs.get_hookimpls():
        if impl.plugin is plugin:
            impl.function(**{arg: pm for arg in impl.argnames})


def load_entry_point(pm: ModelOptPluginManager, ep: importlib.metadata.EntryPoint, builtin: bool) -> None:
    """Import and register one entry point; on any error, report it and skip it."""
    dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown distribution"
    if pm.has_plugin(ep.name):
        pm.report(f"plugin {ep.name} ({dist}) is skipped: {pm.describe(pm.get_plugin(ep.name))} "
                  "already has that entry-point name")
        return
    pm.distributions[ep.name] = dist
    if builtin:
        pm.builtin.add(ep.name)
    plugin = None
    try:
        plugin = ep.load()
        if pm.is_registered(plugin):
            raise ValueError(f"{ep.value} is already registered, as plugin {pm.get_name(plugin)}")
        pm.register(plugin, name=ep.name)
        _add_hookspecs_of(pm, plugin)
    except (Exception, SystemExit) as exc:  # (a module parsing sys.argv at import exits)
        # pluggy's validation error names the plugin at fault: this one, or an earlier
        # one whose hook has a wrong argument, found when this one added its specs.
        culprit = exc.plugin if isinstance(exc, pluggy.PluginValidationError) else plugin
        # Never unregister a module registered under another name (pluggy refuses to
        # register one module twice: that error is this entry point's).
        owned = (culprit is not None and pm.is_registered(culprit)
                 and (culprit is not plugin or pm.get_name(plugin) == ep.name))
        who = pm.describe(culprit) if owned else f"{ep.name} ({dist})"
        pm.report(f"plugin {who} is broken and was skipped: {_error(exc)} "
                  f"(uninstall it, or set {DISABLE_AUTOLOAD}=1)")
        if owned:
            pm.unregister(culprit)


def drop_unknown_hooks(pm: ModelOptPluginManager) -> None:
    """Unregister every plugin implementing a hook nobody specifies (a misspelt name)."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            unknown = [c.name for c in pm.get_hookcallers(exc.plugin) or () if not c.has_spec()]
            pm.report(f"plugin {pm.describe(exc.plugin)} is broken and was skipped: it implements "
                      f"unknown hook {', '.join(unknown)} (a misspelt name?)")
            pm.unregister(exc.plugin)


@functools.cache
def plugin_manager() -> ModelOptPluginManager:
    """The process-wide plugin manager, with every installed plugin that loads loaded."""
    pm = ModelOptPluginManager()
    pm.add_hookspecs(hookspecs)
    own, others = entry_points()
    for ep in own:
        load_entry_point(pm, ep, builtin=True)
    for ep in others:
        load_entry_point(pm, ep, builtin=False)
    drop_unknown_hooks(pm)
    return pm


class PluginProvider:
    """A third-party provider: an unexpected exception from any of its methods becomes a
    :class:`PluginFailedError` naming the plugin, instead of a traceback or an exit
    status the command uses for something else."""

    def __init__(self, provider: Any, origin: str):
        self._provider = provider
        self.plugin_origin = origin

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # no proxying of pickling and copying protocols
            raise AttributeError(attr)
        value = getattr(self._provider, attr)
        if not callable(value) or isinstance(value, type):
            return value

        @functools.wraps(value)
        def call(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            except ModelOptError:
                raise  # an error the plugin meant to report, with its own exit status
            except (Exception, SystemExit) as exc:  # sys.exit(1) would read as the command's own status
                raise PluginFailedError(f"plugin {self.plugin_origin} failed: {_error(exc)}") from exc

        return call

    def __repr__(self) -> str:
        return f"<{self._provider!r} of plugin {self.plugin_origin}>"


def invalid_answer(provider: Any, what: str, error: ModelOptError) -> ModelOptError:
    """The error to raise when ``provider``'s answer failed validation (``error``):
    ``what`` (e.g. ``scheduler 'x'``) and, for a third-party provider, its plugin are
    named, with :class:`PluginFailedError`'s exit status (a bug in the plugin)."""
    origin = getattr(provider, "plugin_origin", None)
    if origin is None:
        return type(error)(f"{what} gave an invalid answer: {error}")
    return PluginFailedError(f"plugin {origin} failed: {what} gave an invalid answer: {error}")


def providers(hook: str, reserved: Iterable[str] = ()) -> dict[str, Any]:
    """All providers returned by ``hook``, by name.

    The project's own plugins come first and win every name clash (as do the
    ``reserved`` names the caller gives a meaning, such as placers' ``auto``);
    a clash, a hook that raises, returns something else than a list, or a provider
    without a ``name`` are reported and skipped. Third-party providers are wrapped
    in :class:`PluginProvider`.
    """
    pm = plugin_manager()
    caller = getattr(pm.hook, hook, None)
    if caller is None or not caller.has_spec():
        raise PluginError(f"no plugin defines the hook {hook!r}; is the layer that owns it installed?")
    owner: dict[str, str] = {name: "model-opt" for name in reserved}
    found: dict[str, Any] = {}
    # The project's own first, then by load order (distribution name): not pluggy's call
    # order, which a plugin's tryfirst/trylast would let it jump.
    loaded = {name: k for k, name in enumerate(pm.distributions)}
    impls = sorted(caller.get_hookimpls(), key=lambda impl: (not pm.is_builtin(impl.plugin),
                                                             loaded.get(pm.get_name(impl.plugin), len(loaded))))
    for impl in impls:
        who = pm.describe(impl.plugin)
        builtin = pm.is_builtin(impl.plugin)
        try:
            result = impl.function()  # provider hooks take no arguments
        except (Exception, SystemExit) as exc:
            pm.report(f"plugin {who}: {hook} failed and its providers are skipped: {_error(exc)}")
            continue
        if result is None:
            continue
        if not isinstance(result, (list, tuple)):
            pm.report(f"plugin {who}: {hook} returned a {type(result).__name__}, not a list of providers; skipped")
            continue
        for p in result:
            try:
                name = getattr(p, "name", None)
            except (Exception, SystemExit) as exc:
                pm.report(f"plugin {who}: {hook} returned a provider whose name raised {_error(exc)}; skipped")
                continue
            if not isinstance(name, str) or not name:
                pm.report(f"plugin {who}: {hook} returned a provider without a name (a {type(p).__name__}); skipped")
            elif name in owner:
                pm.report(f"plugin {who}: {hook} provider {name!r} is ignored: {owner[name]} already "
                          "provides that name")
            else:
                owner[name] = "model-opt" if builtin else f"plugin {who}"
                found[name] = p if builtin else PluginProvider(p, who)
    return found


def provider(hook: str, name: str, what: str, reserved: Iterable[str] = ()) -> Any:
    """The provider called ``name`` of ``hook``; ``what`` names the family in errors
    (``reserved``: as for :func:`providers`, names the caller handles itself)."""
    found = providers(hook, reserved)
    try:
        return found[name]
    except KeyError:
        names = ", ".join(sorted([*found, *reserved])) or "none"
        raise PluginError(f"unknown {what} {name!r}; available: {names}") from None
