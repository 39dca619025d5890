"""The strategy catalogue: built-ins, plugins and saved expression strategies as one service.

What ``/strategies`` (web/handlers.py), the Python client and ``gpu-backtest strategies``
call. Saved strategies live in the job database (`core.strategystore`); their documents are
expression strategies (docs/strategies.md, "Expression strategies"), validated and put in
canonical form by `core.expr.strategy` before they are stored. A registered strategy's name
cannot be taken by a saved one, so a name in a spec always means one thing: the registry's
strategy first, else the saved strategy. `inline_saved` turns a spec that names a saved
strategy (``"name"`` or ``"name@version"``) into one that carries the document itself, with
its name and version, so a job runs — and can be rerun — exactly what was saved when it was
submitted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import NotFoundError, SpecError
from .registry import Registry
from .strategystore import NAME_RE, SavedStrategy, StrategyExists, StrategyStore, check_name

__all__ = ["StrategyCatalog"]

_VERSIONED = re.compile(r"([a-z][a-z0-9_]{0,63})@([1-9][0-9]{0,8})")
MAX_DESCRIPTION = 2000


def _expr() -> Any:
    from .expr import strategy as expr

    return expr


class StrategyCatalog:
    """Registered strategies (read-only) and saved ones (``store``; None: none can be saved)."""

    def __init__(self, registry: Registry, store: StrategyStore | None) -> None:
        self.registry = registry
        self.store = store

    # -- reading -------------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """Every strategy's schema: the registered ones (``source`` builtin or plugin), then the
        saved ones (``source`` saved, with ``version`` and ``versions``)."""
        out = []
        for name, strat in self.registry.strategies().items():
            prov = self.registry.provenance(name)
            source = "builtin" if prov.get("distribution") == "gpu-backtest" else "plugin"
            out.append({**strat.schema(), "source": source, "version": None, "versions": None})
        if self.store is not None:
            versions = self.store.all_versions()  # one query, not one per strategy
            for saved in self.store.latest():
                out.append(self._saved_schema(saved, versions.get(saved.name, [saved.version])))
        return out

    def _saved_schema(self, saved: SavedStrategy, versions: list[int]) -> dict[str, Any]:
        strat = _expr().expression_strategy(saved.doc)
        return {**strat.schema(), "name": saved.name, "description": saved.description or strat.description,
                "source": "saved", "version": saved.version, "versions": versions, "digest": saved.digest,
                "created_at": saved.created_at.isoformat()}

    def get(self, name: str, version: int | None = None) -> dict[str, Any]:
        """One saved strategy version's document (``GET /strategies/{name}``)."""
        check_name(name)
        saved = self._store().get(name, version)
        return {**saved.to_dict(), "versions": self._store().versions(name)}

    # -- writing -------------------------------------------------------------------------------
    def save(self, body: Any, name: str | None = None) -> SavedStrategy:
        """``POST /strategies`` (``name`` None: the body's ``name``, a new strategy) or ``PUT
        /strategies/{name}`` (a new version; the body's ``name``, if any, must match)."""
        store = self._store()
        new = name is None
        if not isinstance(body, Mapping):
            raise SpecError("", f"must be a JSON object (an expression strategy), got {type(body).__name__}")
        doc = dict(body)
        given = doc.pop("name", None)
        doc.pop("version", None)  # the store numbers versions; a body's (e.g. a GET's document sent back) is not kept
        if name is None:
            if given is None:
                raise SpecError("name", "is required: the strategy's name")
            name = check_name(given)
        else:
            check_name(name)
            if given is not None and given != name:
                raise SpecError("name", f"is {given!r} but the URL names {name!r}")
        description = doc.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise SpecError("description", f"must be a string of at most {MAX_DESCRIPTION} characters")
        if name in self.registry.strategies():
            raise StrategyExists(f"{name!r} is a registered strategy (built-in or plugin); choose another name",
                                 {"name": name})
        expr = _expr()
        try:
            canonical = expr.canonical({**doc, "name": name}, path="strategy")
        except SpecError as exc:  # name the body's own field (signals.entry), not a spec's (strategy.signals.entry)
            raise SpecError(exc.path.removeprefix("strategy").lstrip("."), exc.reason) from None
        return store.save(name, canonical, expr.strategy_digest(canonical), description, new=new)

    def delete(self, name: str) -> int:
        """``DELETE /strategies/{name}``: every version."""
        check_name(name)
        if name in self.registry.strategies():
            raise SpecError("name", f"{name!r} is a registered strategy; only saved strategies can be deleted")
        return self._store().delete(name)

    def _store(self) -> StrategyStore:
        if self.store is None:
            raise NotFoundError("saved strategies need a job database", {})
        return self.store

    # -- specs ---------------------------------------------------------------------------------
    def inline_saved(self, spec: Any) -> Any:
        """``spec`` with a saved strategy's name replaced by its document (``name``,
        ``version`` and the expressions); any other spec as it is. SpecError on ``strategy``
        when it names no known strategy or a missing version."""
        if not isinstance(spec, Mapping) or not isinstance(spec.get("strategy"), str) or self.store is None:
            return spec
        ref = spec["strategy"]
        if ref in self.registry.strategies():
            return spec
        m = _VERSIONED.fullmatch(ref)
        name, version = (m.group(1), int(m.group(2))) if m else (ref, None)
        if not NAME_RE.fullmatch(name):
            return spec  # not a saved name: the engine names the known strategies
        try:
            saved = self.store.get(name, version)
        except NotFoundError as exc:
            if version is None:
                return spec  # unknown: the engine's error lists the known strategies
            raise SpecError("strategy", exc.message) from None
        return {**spec, "strategy": {**saved.doc, "name": saved.name, "version": saved.version}}
