"""The layering in docs/architecture.md holds in the code: the test reads the doc's table and every import.

Why from the source text and not from ``sys.modules``: an import inside a function is a dependency too (124 of
them once hid a 23-module cycle), and it only shows in the source. Every ``import`` and ``from … import`` at
any depth of every module under ``wizard/`` counts, relative ones resolved; a package is a subpackage of
``wizard`` or a top-level module, and imports inside one package are free. The table is read from the doc, so
the doc and the test cannot drift apart; the checker checks itself on a tiny tree in ``tmp_path``.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
TABLE_START, TABLE_END = "<!-- imports-table", "<!-- /imports-table -->"
# The LINE adapter never imports upward: not the CRM, the wizard, the watch, the pages or the task bodies
# (``tasks`` holds them until the queue is split in two).
LINE_MUST_NOT_IMPORT = {"customers", "steps", "watch", "views", "jobs", "tasks"}
CONSOLE_VIEW_LIMIT = 300


def allowed_table(doc_text: str) -> dict[str, set[str]]:
    """``{package: packages it may import}`` from the rows between the table's markers."""
    start, end = doc_text.index(TABLE_START), doc_text.index(TABLE_END)
    table = {}
    for line in doc_text[start:end].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not line.lstrip().startswith("|") or cells[0] in ("Package", "") \
                or set(cells[0]) <= {"-"}:
            continue
        assert cells[0] not in table, f"{cells[0]} has two rows in the table"
        table[cells[0]] = {name.strip() for name in cells[1].split(",") if name.strip() not in ("", "—", "-")}
    return table


class Import:
    def __init__(self, source: str, target: str, where: str):
        self.source, self.target, self.where = source, target, where

    def __repr__(self):
        return f"{self.where} imports {self.target}"


def _module_name(path: Path, base: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(base).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _is_module(dotted: str, base: Path) -> bool:
    path = base.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(base: Path, top: str) -> list[Import]:
    """Every import of a module of package ``top`` (a folder under ``base``) by another, at package level."""

    def package(dotted: str) -> str | None:
        parts = dotted.split(".")
        if parts[0] != top:
            return None
        return parts[1] if len(parts) > 1 else top

    found = []
    for path in sorted((base / top).rglob("*.py")):
        module, is_package = _module_name(path, base)
        here = module.split(".") if is_package else module.split(".")[:-1]
        where = path.relative_to(base).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), where)):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    start = here[:len(here) - (node.level - 1)]
                    frm = ".".join(start + ([node.module] if node.module else []))
                else:
                    frm = node.module or ""
                # ``from wizard import cli`` imports the module wizard.cli; ``from wizard import create_app`` the
                # factory itself.
                targets = [f"{frm}.{alias.name}" if _is_module(f"{frm}.{alias.name}", base) else frm
                           for alias in node.names]
            else:
                continue
            source = package(module)
            for destination in dict.fromkeys(package(target) for target in targets):
                if destination is not None and destination != source:
                    found.append(Import(source, destination, f"{where}:{node.lineno}"))
    return found


def forbidden(imports: list[Import], table: dict[str, set[str]], top: str) -> list[str]:
    problems = []
    for edge in imports:
        if edge.source not in table:
            problems.append(f"{edge.where} imports {top}.{edge.target}, but {edge.source} has no row in the table")
        elif edge.target not in table[edge.source]:
            problems.append(f"{edge.where} imports {top}.{edge.target}: {edge.source} may not import {edge.target}")
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan), each sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    nodes = set(edges) | {target for targets in edges.values() for target in targets}

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return components


def cycle_report(imports: list[Import]) -> list[str]:
    """Each cycle with the imports that close it, one file:line per package pair."""
    edges, first = {}, {}
    for edge in imports:
        edges.setdefault(edge.source, set()).add(edge.target)
        first.setdefault((edge.source, edge.target), edge.where)
    report = []
    for component in cycles(edges):
        inside = [f"  {where}: {source} → {target}" for (source, target), where in sorted(first.items())
                  if source in component and target in component]
        report.append(f"cycle {' ↔ '.join(component)}:\n" + "\n".join(inside))
    return report


def _fail(problems: list[str], what: str):
    assert not problems, f"{len(problems)} {what} (docs/architecture.md):\n" + "\n".join(problems)


def test_every_import_is_one_the_table_allows():
    _fail(forbidden(imports_of(ROOT, "wizard"), allowed_table(DOC.read_text(encoding="utf-8")), "wizard"),
          "imports the table does not allow")


def test_no_two_packages_import_each_other():
    _fail(cycle_report(imports_of(ROOT, "wizard")), "cycles between packages")


def test_line_imports_nothing_of_the_crm_the_wizard_the_watch_the_views_or_the_task_bodies():
    _fail([f"{edge.where} imports wizard.{edge.target}" for edge in imports_of(ROOT, "wizard")
           if edge.source == "line" and edge.target in LINE_MUST_NOT_IMPORT], "upward imports from line/")


def test_the_console_view_is_under_300_lines():
    console = ROOT / "wizard" / "views" / "console.py"
    if console.exists():
        lines = len(console.read_text(encoding="utf-8").splitlines())
        assert lines < CONSOLE_VIEW_LIMIT, f"wizard/views/console.py has {lines} lines; the read model goes " \
                                           f"beside the domain it reads (docs/architecture.md)"


def test_the_table_is_itself_a_layering():
    """The doc may not allow what the tests forbid: no cycle in the table, line's row is clean, and every
    package it names has its own row."""
    table = allowed_table(DOC.read_text(encoding="utf-8"))
    assert {"line", "customers", "outgoing", "queue", "jobs", "views", "wizard"} <= set(table)
    assert not cycles(table), cycles(table)
    assert not table["line"] & LINE_MUST_NOT_IMPORT
    named = {name for names in table.values() for name in names}
    assert named <= set(table), f"named but without a row: {sorted(named - set(table))}"
    # Every package in the code has a row (a new one is placed in the layering when it is added).
    packages = {path.stem for path in (ROOT / "wizard").glob("*.py") if path.stem != "__init__"} \
        | {path.parent.name for path in (ROOT / "wizard").glob("*/__init__.py")}
    missing = packages - set(table) - {"tasks"}
    assert not missing, f"packages without a row in docs/architecture.md: {sorted(missing)}"


def _write(base: Path, relative: str, text: str):
    path = base / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_checker_reports_a_forbidden_import_with_its_file_and_line(tmp_path):
    """A tiny package: ``low`` may import nothing, yet imports ``high`` inside a function, relatively; ``high``
    imports ``low``, which the table allows. The checker names the file and line of the forbidden one and sees
    the cycle the two make; the allowed import is not reported."""
    _write(tmp_path, "pkg/__init__.py", "from . import low  # the factory wires everything\n")
    _write(tmp_path, "pkg/low.py", '"""Bottom."""\nimport os\n\n\ndef later():\n    from .high import rules\n'
                                   "    return rules, os\n")
    _write(tmp_path, "pkg/high/__init__.py", "")
    _write(tmp_path, "pkg/high/rules.py", "from pkg import low\nfrom .. import low as again\n")
    doc = ("intro\n" + TABLE_START + " -->\n| Package | May import |\n|---|---|\n| low | — |\n| high | low |\n"
           "| pkg | low, high |\n" + TABLE_END + "\n")
    table = allowed_table(doc)
    assert table == {"low": set(), "high": {"low"}, "pkg": {"low", "high"}}

    imports = imports_of(tmp_path, "pkg")
    assert forbidden(imports, table, "pkg") == ["pkg/low.py:6 imports pkg.high: low may not import high"]
    report = cycle_report(imports)
    assert len(report) == 1 and report[0].startswith("cycle high ↔ low")
    assert "pkg/high/rules.py:1: high → low" in report[0] and "pkg/low.py:6: low → high" in report[0]

    # Removing the function-level import leaves a clean tree.
    _write(tmp_path, "pkg/low.py", '"""Bottom."""\nimport os\n')
    imports = imports_of(tmp_path, "pkg")
    assert forbidden(imports, table, "pkg") == [] and cycle_report(imports) == []
    # A package the table does not know may import nothing.
    _write(tmp_path, "pkg/stray.py", "import pkg.high.rules\n")
    assert forbidden(imports_of(tmp_path, "pkg"), table, "pkg") == [
        "pkg/stray.py:1 imports pkg.high, but stray has no row in the table"]
