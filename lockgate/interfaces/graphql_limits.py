"""Bound a GraphQL query's size before it is validated or run: tokens, depth, aliases, cost.

The cost is the number of fields the query selects once fragments are expanded, so a
query's work is known before any resolver runs. Walks are iterative and stop as soon as a
limit is passed, so a hostile query costs no more than the limit to refuse.
"""

from __future__ import annotations

from graphql import DocumentNode, GraphQLError, parse
from graphql.language import FieldNode, FragmentDefinitionNode, FragmentSpreadNode, InlineFragmentNode, OperationDefinitionNode

from lockgate.limits import Limits


class QueryTooComplex(ValueError):
    pass


def parse_bounded(query: str, limits: Limits) -> DocumentNode:
    """Parse with a token cap (no deep recursion on huge inputs), then check the shape."""
    # Each selection level takes at least two tokens ({ and a name), so the cap also bounds nesting.
    max_tokens = max(200, limits.max_graphql_fields * 4)
    try:
        document = parse(query, no_location=False, max_tokens=max_tokens)
    except GraphQLError as exc:
        raise QueryTooComplex(f"the query does not parse: {exc.message}") from None
    except RecursionError:
        raise QueryTooComplex("the query nests too deeply to parse") from None
    check_shape(document, limits)
    return document


def check_shape(document: DocumentNode, limits: Limits) -> None:
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    fields = aliases = 0
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        # (selection set, depth, fragments expanded on the way here)
        stack = [(definition.selection_set, 1, frozenset())]
        while stack:
            selection_set, depth, expanded = stack.pop()
            if selection_set is None:
                continue
            if depth > limits.max_graphql_depth:
                raise QueryTooComplex(f"the query nests deeper than {limits.max_graphql_depth} levels "
                                      "(LOCKGATE_MAX_GRAPHQL_DEPTH)")
            for node in selection_set.selections:
                if isinstance(node, FieldNode):
                    fields += 1
                    aliases += node.alias is not None
                    if fields > limits.max_graphql_fields:
                        raise QueryTooComplex(f"the query selects more than {limits.max_graphql_fields} fields "
                                              "(LOCKGATE_MAX_GRAPHQL_FIELDS)")
                    if aliases > limits.max_graphql_aliases:
                        raise QueryTooComplex(f"the query uses more than {limits.max_graphql_aliases} aliases "
                                              "(LOCKGATE_MAX_GRAPHQL_ALIASES)")
                    stack.append((node.selection_set, depth + 1, expanded))
                elif isinstance(node, InlineFragmentNode):
                    stack.append((node.selection_set, depth, expanded))
                elif isinstance(node, FragmentSpreadNode):
                    name = node.name.value
                    fragment = fragments.get(name)
                    if fragment is not None and name not in expanded:  # a cycle is left to validation
                        stack.append((fragment.selection_set, depth, expanded | {name}))
