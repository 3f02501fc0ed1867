"""Fail when any two modules of bridge/ and handlers/ import each other, directly or round a loop.

The layers contract in pyproject.toml (`lint-imports`) keeps the packages in one direction; this
catches loops inside a package too. Imports under TYPE_CHECKING and inside functions count.
"""

import sys

import grimp


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.find_modules_directly_imported_by(module):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def main() -> int:
    graph = grimp.build_graph("bridge", "handlers")
    groups = cycles(graph)
    for group in groups:
        print("import cycle:", " <-> ".join(group), file=sys.stderr)
    print(f"import cycles: {len(groups)} in {len(graph.modules)} modules")
    return 1 if groups else 0


if __name__ == "__main__":
    sys.exit(main())
