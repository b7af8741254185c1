"""Input limits: every size a client controls has a documented, configurable ceiling.

They are checked at the edge before anything is parsed or stored: request bodies from
`Content-Length` and again while the body streams in, JSON nesting right after decoding,
and the counts and lengths inside each route's typed validation. Each setting is
`LOCKGATE_<NAME>` in the environment or `<name>` in the config file (see README, "Limits").
"""

from __future__ import annotations

from dataclasses import dataclass, fields

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_bytes: int = 16 * MiB  # events API and app sync bodies
    max_checkpoint_bytes: int = 16 * MiB  # JS v4 step checkpoints (steps of up to 4 MiB each)
    max_qstash_body_bytes: int = 10 * MiB  # QStash message bodies (Upstash's own paid-plan cap)
    max_json_depth: int = 64  # nesting of objects and arrays in any JSON body
    max_event_id_length: int = 512  # the producer's event `id` (an idempotency key)
    max_functions_per_sync: int = 500  # functions one app may register
    max_graphql_bytes: int = 64 * 1024  # one /v0/gql request
    max_graphql_depth: int = 12  # selection nesting
    max_graphql_aliases: int = 50  # aliased fields in one query
    max_graphql_fields: int = 500  # selected fields in all (the query's cost)

    def __post_init__(self) -> None:
        for name in self.names():
            if getattr(self, name) < 1:
                raise ValueError(f"limit {name} must be a positive number, got {getattr(self, name)}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


DEFAULT = Limits()


def json_depth_exceeds(value: object, limit: int) -> bool:
    """True when `value` nests objects/arrays deeper than `limit`; iterative, so any depth is safe."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
