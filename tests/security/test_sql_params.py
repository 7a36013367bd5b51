"""Static check: SQL takes values as parameters, never by string formatting.

Over ``materialize/*.py`` and ``schemas/*.py`` (with ``ast``), every string that looks like SQL
(an upper-case SQL keyword in its literal text) and is built by an f-string, ``%``, ``.format``
or ``+`` may only splice in *identifiers we control*:

* constants: ALL_CAPS names imported from ``schemas`` or assigned at module level in the file
  (``SESSIONS``, ``LOADED_SEGMENTS``, ``TRAINING_ROWS``);
* local names bound only to such things: string literals, conditionals between literals,
  f-strings of safe parts, another safe local, or a ``for`` loop over a safe constant;
* a short, reviewed list of identifiers that come from the code's own fixed layouts (below, each
  with the reason); the test fails if an entry no longer matches anything, so the list cannot rot.

Anything else (a value, a ticker, a path, a DSN) would be an injection hole and is reported with
file, line and expression. ``%s`` placeholders in literal text are of course fine.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted([*ROOT.glob("materialize/*.py"), *ROOT.glob("schemas/*.py")])
SQL = re.compile(
    r"(SELECT|INSERT|UPDATE|DELETE|CREATE|COPY|DROP|ALTER|WITH|VALUES|WHERE|FROM|JOIN|SET|"
    r"AND|OR|ORDER|GROUP|UNION|CASE|WHEN|COALESCE|CAST)\b"
)

# (file, function, expression) -> why it is an identifier the code controls.
REVIEWED: dict[tuple[str, str, str], str] = {
    ("materialize/targets.py", "insert_arrow", "table_name"): (
        "the loader passes only schemas.tables constants (checked by test_table_name_callers)"
    ),
    ("materialize/targets.py", "count", "table_name"): (
        "called with schemas.tables constants only (checked by test_table_name_callers)"
    ),
    ("materialize/targets.py", "insert_arrow", "col_list"): (
        "column names of the loader's own Arrow tables, built from fixed layouts"
    ),
    ("materialize/targets.py", "insert_arrow", "cols"): (
        "column names of the loader's own Arrow tables, built from fixed layouts"
    ),
    ("materialize/targets.py", "insert_arrow", "view"): (
        "f'_materialize_src_{self._n}': a fixed prefix and an int counter"
    ),
}


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    function: str
    expr: str
    how: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}(): {self.how} splices {self.expr!r}"


def _literal_text(node: ast.AST) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            _literal_text(v) if not isinstance(v, ast.FormattedValue) else "?" for v in node.values
        )
    return ""


def _is_sql(node: ast.AST) -> bool:
    """SQL text starts with a keyword (after blanks and parentheses); prose that merely quotes
    a query in a message ("query: SELECT ...") does not."""
    return bool(SQL.match(_literal_text(node).lstrip(" \t\n(")))


def _module_constants(tree: ast.Module) -> set[str]:
    """ALL_CAPS module-level names, and anything imported from ``schemas`` (constants, enums)."""
    safe: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("schemas"):
            safe |= {a.asname or a.name for a in node.names}
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for t in targets:
            if isinstance(t, ast.Name) and t.id.isupper():
                safe.add(t.id)
    return safe


def _escapes_quotes(fn: ast.FunctionDef) -> bool:
    """A literal-quoting helper: ``text.replace("'", "''")`` (DuckDB view text cannot take
    parameters, so such helpers are how a constant string becomes a SQL literal)."""
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "replace"
            and [ast.unparse(a) for a in node.args] in (['"\'"', "\"''\""], ['"\'"', "\"''\""])
        ):
            return True
    return False


def _walk(node: ast.AST) -> list[ast.AST]:
    """``ast.walk`` that does not enter nested functions (they are scopes of their own)."""
    out: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(node))
    while todo:
        n = todo.pop()
        out.append(n)
        if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(n))
    return out


class _Module:
    """Module-local facts: which private functions return safe SQL and take safe arguments."""

    def __init__(self, tree: ast.Module) -> None:
        self.constants = _module_constants(tree)
        # module-level and nested functions (a nested one is called only by its enclosing
        # function); methods are left out: their callers are anywhere
        methods = {id(m) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for m in c.body}
        self.funcs = {
            n.name: n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and id(n) not in methods
        }
        self.escapers = {n for n, f in self.funcs.items() if _escapes_quotes(f)}  # type: ignore[arg-type]
        called = {
            id(c.func)
            for c in ast.walk(tree)
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
        }
        escaping_refs = {
            n.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Name) and n.id in self.funcs and id(n) not in called
        }
        # public functions (and private ones used as values) may get anything from anywhere
        self.unsafe_params: dict[str, set[str]] = {
            name: (
                {a.arg for a in f.args.args + f.args.kwonlyargs}
                if not name.startswith("_") or name in escaping_refs
                else set()
            )
            for name, f in self.funcs.items()
        }
        self.unsafe_returns: set[str] = set()
        self.tree = tree

    def solve(self) -> None:
        """Greatest fixed point: start trusting private helpers, withdraw trust on evidence."""
        changed = True
        while changed:
            changed = False
            for name, fn in self.funcs.items():
                v = _Function("", name, self, [])
                v.bind_locals(fn, self.safe_params(name))
                rets = [n.value for n in _walk(fn) if isinstance(n, ast.Return) and n.value]
                if name not in self.unsafe_returns and not all(v.safe(r) for r in rets):
                    self.unsafe_returns.add(name)
                    changed = True
            for scope in [self.tree, *self.funcs.values()]:
                owner = (
                    scope.name
                    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef)
                    else "<module>"
                )
                v = _Function("", owner, self, [])
                v.bind_locals(scope, self.safe_params(owner) if owner in self.funcs else set())
                for c in _walk(scope):
                    if not (isinstance(c, ast.Call) and isinstance(c.func, ast.Name)):
                        continue
                    f = self.funcs.get(c.func.id)
                    if f is None:
                        continue
                    params = [a.arg for a in f.args.args]
                    pairs = list(zip(params, c.args, strict=False)) + [
                        (k.arg, k.value) for k in c.keywords if k.arg
                    ]
                    for p, a in pairs:
                        if p not in self.unsafe_params[f.name] and not v.safe(a):
                            self.unsafe_params[f.name].add(p)
                            changed = True

    def safe_params(self, name: str) -> set[str]:
        f = self.funcs[name]
        return {a.arg for a in f.args.args + f.args.kwonlyargs} - self.unsafe_params[name]


class _Function(ast.NodeVisitor):
    """Find unsafe splices in one function (or the module body)."""

    def __init__(self, file: str, name: str, module: _Module, findings: list[Finding]):
        self.file = file
        self.name = name
        self.module = module
        self.findings = findings
        self.local_safe: set[str] = set()
        self.hits: set[tuple[str, str, str]] = set()

    def bind_locals(self, fn: ast.AST, params: set[str]) -> None:
        """Safe parameters, and locals assigned only safe values (to a fixed point)."""
        self.local_safe = set(params)
        assigned: dict[str, list[ast.expr]] = {}
        for node in _walk(fn):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        assigned.setdefault(t.id, []).append(node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if node.value is not None:
                    assigned.setdefault(node.target.id, []).append(node.value)
            elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                assigned.setdefault(node.target.id, []).append(node.value)
            elif isinstance(node, ast.For | ast.comprehension):
                # every name unpacked from an element of the iterable
                for tn in ast.walk(node.target):
                    if isinstance(tn, ast.Name):
                        assigned.setdefault(tn.id, []).append(
                            ast.Subscript(value=node.iter, slice=ast.Constant(0))
                        )
        changed = True
        while changed:
            changed = False
            for name, values in assigned.items():
                if name not in self.local_safe and all(self.safe(v) for v in values):
                    self.local_safe.add(name)
                    changed = True

    def safe(self, node: ast.AST) -> bool:
        m = self.module
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str | int | float | type(None))
        if isinstance(node, ast.Name):
            return node.id in m.constants or node.id in self.local_safe
        if isinstance(node, ast.Attribute):  # Kind.IN.value, SOME_ENUM.name
            return self.safe(node.value)
        if isinstance(node, ast.JoinedStr):
            return all(
                self.safe(v.value) if isinstance(v, ast.FormattedValue) else True
                for v in node.values
            )
        if isinstance(node, ast.IfExp):
            return self.safe(node.body) and self.safe(node.orelse)
        if isinstance(node, ast.BinOp):
            return self.safe(node.left) and self.safe(node.right)
        if isinstance(node, ast.Starred):
            return self.safe(node.value)
        if isinstance(node, ast.UnaryOp):
            return self.safe(node.operand)
        if isinstance(node, ast.Subscript):  # an element of a safe constant (for loops)
            return self.safe(node.value)
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return all(self.safe(e) for e in node.elts)
        if isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp):
            return self._with_targets(node.generators, node.elt)
        if isinstance(node, ast.Dict):
            return all(self.safe(v) for v in [*node.keys, *node.values] if v is not None)
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in m.escapers:
                return True  # quoted and escaped: a literal, whatever went in
            if isinstance(f, ast.Name) and f.id in (
                "str",
                "int",
                "list",
                "tuple",
                "sorted",
                "range",
                "zip",
                "enumerate",
            ):
                return all(self.safe(a) for a in node.args)
            if isinstance(f, ast.Name) and f.id in m.funcs:
                # its parameters already account for every call site's arguments
                return f.id not in m.unsafe_returns
            if isinstance(f, ast.Attribute) and f.attr == "join":
                return self.safe(f.value) and all(self.safe(a) for a in node.args)
            if isinstance(f, ast.Attribute) and f.attr in ("items", "keys", "values"):
                return self.safe(f.value) and not node.args
        return False

    def _with_targets(self, gens: list[ast.comprehension], elt: ast.expr) -> bool:
        """``elt`` with the loop names bound: safe when drawn from a safe iterable, unsafe
        otherwise (an escaping helper makes even those safe)."""
        names = {n.id for g in gens for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        iters_safe = all(self.safe(g.iter) for g in gens)
        saved = set(self.local_safe)
        self.local_safe = (saved | names) if iters_safe else (saved - names)
        try:
            return self.safe(elt)
        finally:
            self.local_safe = saved

    def report(self, node: ast.AST, expr: ast.AST, how: str) -> None:
        src = ast.unparse(expr)
        key = (self.file, self.name, src)
        if key in REVIEWED:
            self.hits.add(key)
            return
        self.findings.append(Finding(self.file, node.lineno, self.name, src, how))  # type: ignore[attr-defined]

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        if _is_sql(node):
            for v in node.values:
                if isinstance(v, ast.FormattedValue) and not self.safe(v.value):
                    self.report(node, v.value, "f-string SQL")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.Mod) and _is_sql(node.left) and not self.safe(node.right):
            self.report(node, node.right, "%-formatted SQL")
        elif isinstance(node.op, ast.Add):
            for a, b in ((node.left, node.right), (node.right, node.left)):
                # a BinOp or f-string operand is visited on its own
                if _is_sql(a) and not self.safe(b) and not isinstance(b, ast.BinOp | ast.JoinedStr):
                    self.report(node, b, "concatenated SQL")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "format" and _is_sql(f.value):
            for a in [*node.args, *(k.value for k in node.keywords)]:
                if not self.safe(a):
                    self.report(node, a, ".format() SQL")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        return  # nested functions are checked on their own

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]
    visit_Lambda = visit_FunctionDef  # type: ignore[assignment]


def scan(files: list[Path]) -> tuple[list[Finding], set[tuple[str, str, str]]]:
    findings: list[Finding] = []
    hits: set[tuple[str, str, str]] = set()
    for path in files:
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
        tree = ast.parse(path.read_text(), filename=rel)
        module = _Module(tree)
        module.solve()
        scopes: list[tuple[str, ast.AST, list[ast.stmt]]] = [
            ("<module>", tree, [n for n in tree.body if not isinstance(n, ast.ClassDef)])
        ]
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                scopes.append((node.name, node, list(node.body)))
        for name, owner, body in scopes:
            v = _Function(rel, name, module, findings)
            params = (
                module.safe_params(name)
                if name in module.funcs and owner is module.funcs[name]
                else set()
            )
            v.bind_locals(owner, params)
            for stmt in body:
                if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                    v.visit(stmt)
            hits |= v.hits
    return findings, hits


def test_sql_splices_only_identifiers_from_the_schema_module() -> None:
    assert FILES, "nothing to scan"
    findings, _ = scan(FILES)
    assert not findings, "SQL built from values:\n" + "\n".join(map(str, findings))


def test_reviewed_exceptions_still_exist() -> None:
    _, hits = scan(FILES)
    stale = set(REVIEWED) - hits
    assert not stale, f"reviewed entries that no longer match any code (remove them): {stale}"


REVIEWED_CALLS: dict[tuple[str, str], str] = {
    ("loader.py", "target.insert_arrow(name, data)"): (
        "name: a key of SegmentRows.tables, a dict literal keyed by schemas.tables constants"
    ),
    ("loader.py", "target.count(name)"): "in table_counts(), whose callers pass ALL_TABLES",
}


def test_table_name_callers() -> None:
    """``insert_arrow(table, ...)`` and ``count(table)`` get a schemas.tables constant (or a
    name bound to one, or a reviewed one) at every call site in materialize/."""
    bad: list[str] = []
    seen: set[tuple[str, str]] = set()
    for path in sorted(ROOT.glob("materialize/*.py")):
        tree = ast.parse(path.read_text())
        module = _Module(tree)
        module.solve()
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            v = _Function(path.name, fn.name, module, [])
            v.bind_locals(fn, set())
            for node in _walk(fn):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("insert_arrow", "count")
                    and node.args
                    and not v.safe(node.args[0])
                ):
                    key = (path.name, ast.unparse(node))
                    if key in REVIEWED_CALLS:
                        seen.add(key)
                    else:
                        bad.append(f"{path.name}:{node.lineno} {key[1]}")
    assert not bad, "table names not from schemas.tables:\n" + "\n".join(bad)
    assert seen == set(REVIEWED_CALLS), f"stale reviewed calls: {set(REVIEWED_CALLS) - seen}"


def test_the_checker_catches_injection(tmp_path: Path) -> None:
    """The checker itself: values spliced into SQL are found, identifiers are not."""
    src = """
from schemas.tables import DELTAS
LIMIT = 10
def bad(con, ticker, n):
    con.execute(f"SELECT * FROM {DELTAS} WHERE market_ticker = '{ticker}'")
    con.execute("DELETE FROM t WHERE id = %d" % n)
    con.execute("SELECT * FROM t WHERE x = " + ticker)
    con.execute("SELECT {} FROM t".format(ticker))
    con.execute(f"SELECT * FROM t {_where(ticker)}")
def _where(x):
    return f"WHERE a = '{x}'"
def _quote(x):
    return "'" + x.replace("'", "''") + "'"
def good(con, ticker, d, paths):
    kind = "JSONB" if d else "JSON"
    con.execute(f"CREATE TABLE {DELTAS} (x {kind})")
    con.execute(f"SELECT * FROM {DELTAS} WHERE market_ticker = %s LIMIT {LIMIT}", (ticker,))
    cols = ", ".join(f"{c}_{i}" for c in ("a", "b") for i in range(3))
    con.execute(f"SELECT {cols} FROM read_parquet([{', '.join(_quote(p) for p in paths)}])")
    print(f"query: SELECT * FROM {ticker}")  # prose quoting a query is not SQL
"""
    probe = tmp_path / "probe.py"
    probe.write_text(src)
    findings, _ = scan([probe])
    assert sorted((f.function, f.expr) for f in findings) == [
        ("_where", "x"),  # a private helper fed a caller's value
        ("bad", "_where(ticker)"),
        ("bad", "n"),  # %
        ("bad", "ticker"),  # f-string
        ("bad", "ticker"),  # +
        ("bad", "ticker"),  # .format
    ], findings
