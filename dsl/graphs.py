"""Cycles in the small directed graphs of a project: imports between files, links between flows."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TypeVar

__all__ = ["back_edges"]

N = TypeVar("N", bound=Hashable)
E = TypeVar("E")


def back_edges(starts: Iterable[N], children: Callable[[N], Iterable[tuple[N, E]]]) -> Iterator[tuple[list[N], N, E]]:
    """Every edge that closes a cycle, found by a depth-first walk from ``starts`` in their order.

    Yields ``(cycle, node, edge)``: the nodes of the cycle with its first node repeated at the end, the node the
    edge leaves, and the edge's own data (e.g. the span of the `import` that writes it). Iterative, so a long
    chain does not meet Python's recursion limit.
    """
    state: dict[N, int] = {}  # 1 = on the current path, 2 = done
    for start in starts:
        if start in state:
            continue
        stack: list[tuple[N, Iterator[tuple[N, E]]]] = [(start, iter(children(start)))]
        trail = [start]
        state[start] = 1
        while stack:
            node, pending = stack[-1]
            step = next(pending, None)
            if step is None:
                state[node] = 2
                stack.pop()
                trail.pop()
                continue
            child, edge = step
            if state.get(child) == 1:
                yield [*trail[trail.index(child):], child], node, edge
            elif child not in state:
                state[child] = 1
                trail.append(child)
                stack.append((child, iter(children(child))))
