"""An immutable snapshot of the active functions, indexed for trigger matching.

Matching runs for every event, so triggers are indexed by exact event name, and
wildcards (`app/*`) by their prefix. A sync builds a new snapshot and swaps it in
whole, which is safe to read from any thread.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from lockgate.expressions import Expression, compile_expression
from lockgate.models import Function


@dataclass(frozen=True, slots=True)
class EventTrigger:
    function: Function
    expression: Expression | None


@dataclass(slots=True)
class Registry:
    by_id: dict[str, Function] = field(default_factory=dict)
    by_slug: dict[str, Function] = field(default_factory=dict)
    exact: dict[str, list[EventTrigger]] = field(default_factory=dict)
    wildcard: list[tuple[str, EventTrigger]] = field(default_factory=list)

    @classmethod
    def build(cls, functions: list[Function]) -> "Registry":
        reg = cls()
        for fn in functions:
            reg.by_id[fn.id] = fn
            reg.by_slug[fn.slug] = fn
            for trig in fn.triggers:
                name = trig.get("event")
                if not name:
                    continue
                expr_src = trig.get("expression")
                trigger = EventTrigger(fn, compile_expression(expr_src) if expr_src else None)
                if name.endswith("*"):
                    reg.wildcard.append((name[:-1], trigger))
                else:
                    reg.exact.setdefault(name, []).append(trigger)
        return reg

    def find(self, ref: str) -> Function | None:
        """Look a function up by slug or internal id (what invoke and the APIs accept)."""
        return self.by_slug.get(ref) or self.by_id.get(ref)

    def match(self, event_payload: dict) -> list[Function]:
        """Functions this event starts, each at most once even when several triggers match."""
        name = event_payload["name"]
        candidates = list(self.exact.get(name, ()))
        for prefix, trigger in self.wildcard:
            if name.startswith(prefix):
                candidates.append(trigger)
        if not candidates:
            return []
        matched: dict[str, Function] = {}
        variables = None
        for trigger in candidates:
            if trigger.function.id in matched:
                continue
            if trigger.expression is not None:
                if variables is None:
                    variables = {"event": event_payload}
                if not trigger.expression.matches(variables):
                    continue
            matched[trigger.function.id] = trigger.function
        return list(matched.values())


def why_nothing_started(registry: Registry, event_name: str) -> str:
    """Why an event matched no function: nothing synced, a name no trigger uses (with the
    closest one), or triggers whose `if` expression was false for it."""
    if not registry.by_id:
        return ("no app is synced yet: start your app pointed at lockgate (INNGEST_DEV=<this server's URL>)"
                " and name it with `lockgate dev -u <app URL>`")
    named = list(registry.exact.get(event_name, ())) + [t for prefix, t in registry.wildcard
                                                        if event_name.startswith(prefix)]
    if named:
        slugs = ", ".join(sorted({t.function.slug for t in named}))
        return f"the `if` expression of every function triggered by {event_name!r} ({slugs}) was false for it"
    known = sorted(registry.exact) + [prefix + "*" for prefix, _ in registry.wildcard]
    close = difflib.get_close_matches(event_name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"no function is triggered by {event_name!r}{hint}"
