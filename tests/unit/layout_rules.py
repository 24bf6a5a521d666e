"""The house rules that used to live in docstrings ("the one home of ..."), as checks on the source.

Pure ``ast`` over the files under ``<root>/comfy_lora_cloud/``: nothing of the package is imported,
so a rule runs the same on the real tree and on a small tree a test writes into a temporary folder.
Each ``check_*`` function takes that root and returns the :class:`Violation` s it found, each
naming the file and the line, so a failing test says where to look.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

PACKAGE = "comfy_lora_cloud"
SERVICE = f"{PACKAGE}.service"


@dataclass(frozen=True, order=True)
class Violation:
    path: str  # relative to the root, with forward slashes
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


# --- the source, read once per root -------------------------------------------------------------

@dataclass(frozen=True)
class ImportRef:
    """One imported module as written, resolved to an absolute dotted name (relative forms too)."""

    line: int
    module: str  # what the statement names: ``a.b`` of ``import a.b`` / ``from a.b import c``
    names: tuple[str, ...]  # the names of a ``from`` import; () for ``import a.b``
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs
    bound: tuple[str, ...] = ()  # the local name each import binds (``as`` names included)


@dataclass
class Module:
    name: str  # dotted: comfy_lora_cloud.service.runs.control
    path: Path
    rel: str  # comfy_lora_cloud/service/runs/control.py
    is_package: bool  # an __init__.py
    text: str
    tree: ast.Module
    imports: list[ImportRef] = field(default_factory=list)

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))

    @cached_property
    def nodes(self) -> list[ast.AST]:
        """Every node, walked once for all the rules."""
        return list(ast.walk(self.tree))


class Tree:
    """Every module of the package under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.modules: dict[str, Module] = {}
        for path in sorted((self.root / PACKAGE).rglob("*.py")):
            rel_parts = path.relative_to(self.root).with_suffix("").parts
            is_package = rel_parts[-1] == "__init__"
            name = ".".join(rel_parts[:-1] if is_package else rel_parts)
            text = path.read_text(encoding="utf-8")
            module = Module(name, path, path.relative_to(self.root).as_posix(), is_package, text,
                            ast.parse(text, filename=str(path)))
            module.imports = _imports_of(module)
            self.modules[name] = module

    def __iter__(self):
        return iter(self.modules.values())

    def existing(self, dotted: str) -> str | None:
        """The module ``dotted`` names, or the longest prefix of it that is one (``a.b.Name``)."""
        parts = dotted.split(".")
        while parts:
            name = ".".join(parts)
            if name in self.modules:
                return name
            parts.pop()
        return None

    def targets(self, ref: ImportRef) -> list[str]:
        """The modules of this package an import names, as written: ``from a import b`` names the
        module ``a.b`` when there is one, else ``a`` (b is a name in it)."""
        if not ref.names:
            return [ref.module]
        return [f"{ref.module}.{n}" if f"{ref.module}.{n}" in self.modules else ref.module for n in ref.names]

    def edges(self, module: Module, *, with_type_only: bool) -> dict[str, int]:
        """The modules of this package ``module`` imports (first line each), itself left out. The
        parent packages an import also runs are left out too: counted, every module that imports a
        sibling would make a cycle with its package's __init__."""
        out: dict[str, int] = {}
        for ref in module.imports:
            if ref.type_only and not with_type_only:
                continue
            for written in self.targets(ref):
                target = self.existing(written) if written.startswith(PACKAGE) else None
                if target and target != module.name and target not in out:
                    out[target] = ref.line
        return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports_of(module: Module) -> list[ImportRef]:
    package = module.parts if module.is_package else module.parts[:-1]
    out: list[ImportRef] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        if isinstance(node, ast.Import):
            out.extend(ImportRef(node.lineno, a.name, (), type_only, (a.asname or a.name.split(".")[0],))
                       for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    return
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ((node.module,) if node.module else ()))
            else:
                name = node.module or ""
            names = [a for a in node.names if a.name != "*"]
            out.append(ImportRef(node.lineno, name, tuple(a.name for a in names), type_only,
                                 tuple(a.asname or a.name for a in names)))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(module.tree, False)
    return out


_TREES: dict[Path, Tree] = {}


def tree_of(root: Path | Tree) -> Tree:
    """The parsed tree under ``root``; the real tree is parsed once per test session."""
    if isinstance(root, Tree):
        return root
    root = Path(root).resolve()
    if root not in _TREES:
        _TREES[root] = Tree(root)
    return _TREES[root]


def forget(root: Path) -> None:
    _TREES.pop(Path(root).resolve(), None)


def _dotted(node: ast.AST) -> list[str]:
    """``self.core.provider`` -> ["self", "core", "provider"]; [] when it is not a plain chain."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return list(reversed(parts))
    return []


def _attrs(node: ast.AST) -> list[str]:
    """The names along a receiver, through calls and awaits: ``(await r.app()).instances`` ->
    ["r", "app", "instances"]."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, (ast.Await, ast.Subscript)):
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return list(reversed(parts))
        else:
            return list(reversed(parts))


def _callee(node: ast.Call) -> str:
    """The name a call is made by: ``update_run`` of ``self.state.update_run(...)``."""
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _docstrings(nodes: list[ast.AST]) -> set[int]:
    """ids of the string constants that are statements of their own (docstrings, attribute notes):
    prose, never a value the code uses."""
    return {id(n.value) for n in nodes
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}


def _under(module: Module, *prefixes: str) -> bool:
    return any(module.rel == p or module.rel.startswith(p.rstrip("/") + "/") for p in prefixes)


# --- (a) no import cycle --------------------------------------------------------------------------
# Imports inside functions count: a cycle hidden in a function is still two modules that cannot be
# understood (or split) one without the other, and it runs on the first call instead of at import.
# Imports under ``if TYPE_CHECKING:`` do not count: they never run, and they are how a lower module
# names the type of an object a higher one passes in (the layering's "pass an object in").

def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components with more than one node, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _shortest_cycle(graph: dict[str, dict[str, int]], start: str, members: set[str]) -> list[str]:
    """start -> ... -> start inside one component (breadth first, so the cycle is a short one)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph.get(node, {})):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return list(reversed(path)) + [start]
                if child not in came_from:
                    came_from[child] = node
                    nxt.append(child)
        frontier = nxt
    return [start, start]  # unreachable for a real component


def _cycle_violations(graph: dict[str, dict[str, int]], where: dict[tuple[str, str], tuple[str, int]],
                      what: str) -> list[Violation]:
    out = []
    for component in _strongly_connected(graph):
        cycle = _shortest_cycle(graph, component[0], set(component))
        steps = [where[(a, b)] for a, b in zip(cycle, cycle[1:])]
        detail = "; ".join(f"{p}:{line} imports {b}" for (p, line), b in zip(steps, cycle[1:]))
        more = ""
        if len(component) > len(cycle) - 1:
            more = f" ({len(component)} {what}s in this knot: {', '.join(component)})"
        out.append(Violation(steps[0][0], steps[0][1], f"import cycle {' -> '.join(cycle)}: {detail}{more}"))
    return sorted(out)


def check_import_cycles(root: Path | Tree) -> list[Violation]:
    """(a) Modules of the package that import each other, directly or round a ring."""
    tree = tree_of(root)
    graph: dict[str, dict[str, int]] = {}
    where: dict[tuple[str, str], tuple[str, int]] = {}
    for module in tree:
        graph[module.name] = tree.edges(module, with_type_only=False)
        for target, line in graph[module.name].items():
            where[(module.name, target)] = (module.rel, line)
    return _cycle_violations(graph, where, "module")


def service_unit(name: str, packages: set[str]) -> str:
    """The layering's unit a module belongs to: its package under service/ (``service.runs``), or
    the module itself (``service.app``, ``storage.gcs``)."""
    face = ".".join(name.split(".")[:3])
    return face if face in packages else name


def check_service_package_cycles(root: Path | Tree) -> list[Violation]:
    """(a) The service's packages stay layered (home < money, library < runs, templates < sessions
    < guard < app): no two of them, nor a package and a module of service/, import each other,
    however the modules inside are arranged."""
    tree = tree_of(root)
    packages = service_packages(tree)
    graph: dict[str, dict[str, int]] = {}
    where: dict[tuple[str, str], tuple[str, int]] = {}
    for module in tree:
        unit = service_unit(module.name, packages)
        if not unit.startswith(SERVICE + "."):
            continue  # the layering of the other packages is test_imports_point_one_way's
        graph.setdefault(unit, {})
        for target, line in tree.edges(module, with_type_only=False).items():
            other = service_unit(target, packages)
            if other == unit or not other.startswith(SERVICE + "."):
                continue
            if (unit, other) not in where or (module.rel, line) < where[(unit, other)]:
                where[(unit, other)] = (module.rel, line)
            graph[unit][other] = line
    return _cycle_violations(graph, where, "unit")


# --- (b) service packages meet each other, and the edges, through their public face ----------------

def service_packages(tree: Tree) -> set[str]:
    """``comfy_lora_cloud.service.runs`` and the like: the folders of service/ with an __init__."""
    return {m.name for m in tree if m.is_package and m.name.startswith(SERVICE + ".") and len(m.parts) == 3}


EDGES = (f"{PACKAGE}/cli", f"{PACKAGE}/comfy")


def check_public_faces(root: Path | Tree) -> list[Violation]:
    """(b) A module in service/P (or in an edge) importing ``service.Q.<module>`` of another
    package Q instead of ``service.Q`` itself. Type-only imports count: the face exports the types
    too, so a reader learns a package from its __init__."""
    tree = tree_of(root)
    packages = service_packages(tree)
    out = []
    for module in tree:
        if _under(module, *EDGES):
            home = None
        elif module.name.startswith(SERVICE + ".") and ".".join(module.parts[:3]) in packages:
            home = ".".join(module.parts[:3])
        else:
            continue
        for ref in module.imports:
            for written in dict.fromkeys(tree.targets(ref)):
                parts = written.split(".")
                face = ".".join(parts[:3])
                if len(parts) > 3 and face in packages and face != home:
                    out.append(Violation(module.rel, ref.line, f"imports {written}, inside {face}: "
                                                               f"import it from {face} (its public face)"))
    return sorted(out)


# --- (c) one place destroys an instance -------------------------------------------------------------

DESTROY_HOME = f"{PACKAGE}/service/money/destroy.py"
# where a destroy call is not the controller's: the providers implement it; worker/ is the rented
# instance itself, which may only destroy itself (self_destroy.py, injected into the trainer and the
# inference worker as ``destroy``) since the layering keeps providers out of its reach
DESTROY_EXEMPT = (DESTROY_HOME, f"{PACKAGE}/providers", f"{PACKAGE}/worker")
DESTROY_NAMES = {"destroy", "destroy_instance"}
# services whose own ``destroy`` is a door that hands over to the destroy home (the user's "destroy
# this instance" from the CLI and the sidebar): ``<...>.instances.destroy(id)`` is not the provider's.
# A service that holds the destroy home as an injected object adds the attribute's name here.
DESTROY_DOORS = {"instances"}
DESTROY_MODULES = {f"{SERVICE}.money", f"{SERVICE}.money.destroy"}


def _names_from(module: Module, sources: set[str]) -> set[str]:
    """Local names bound by importing ``sources`` (one of the modules, or a name out of one)."""
    names = set()
    for ref in module.imports:
        if not ref.names:
            names |= {b for b in ref.bound if ref.module in sources and b != ref.module.split(".")[0]}
        else:
            names |= {b for n, b in zip(ref.names, ref.bound)
                      if ref.module in sources or f"{ref.module}.{n}" in sources}
    return names


def check_destroy_calls(root: Path | Tree) -> list[Violation]:
    """(c) A call to a destroy (``x.destroy(...)``, ``destroy_instance(...)``) outside the one
    destroy home, the providers and the instance's own self-destroy."""
    tree = tree_of(root)
    out = []
    for module in tree:
        if _under(module, *DESTROY_EXEMPT):
            continue
        from_home = _names_from(module, DESTROY_MODULES)
        for node in module.nodes:
            if not isinstance(node, ast.Call) or _callee(node) not in DESTROY_NAMES:
                continue
            chain = _attrs(node.func)
            if isinstance(node.func, ast.Name) and node.func.id in from_home:
                continue  # the destroy home's own function, imported from it
            if isinstance(node.func, ast.Attribute) and len(chain) >= 2 and \
                    (chain[-2] in DESTROY_DOORS or (chain[0] in from_home and _dotted(node.func))):
                continue
            shown = ".".join(chain)
            out.append(Violation(module.rel, node.lineno, f"calls {shown}(...): an instance is destroyed "
                                                          f"only by {DESTROY_HOME}"))
    return sorted(out)


# --- (d) one place ends a run -------------------------------------------------------------------------

LIFECYCLE_HOME = f"{PACKAGE}/service/runs/lifecycle.py"
# worker/ and training/ are the trainer on the rented GPU: it reports its own end (done, failed, out
# of time) into its status.json, which every controller then reads; the lifecycle home is where a
# controller ends a run, and a trainer's own end wins there.
LIFECYCLE_EXEMPT = (LIFECYCLE_HOME, f"{PACKAGE}/worker", f"{PACKAGE}/training")
TERMINAL = {"DONE": "done", "FAILED": "failed", "TIMED_OUT": "timed_out", "STOPPED": "stopped", "LOST": "lost"}
RUN_WRITERS = {"update_run", "put_run", "insert_run", "insert", "add_run", "save_run"}  # the state store
BUCKET_ENDERS = {"end_run_in_bucket"}  # writes an end into status.json, whatever it is given
RUN_RECORDS = {"Run", "RunStatus"}  # records of a run: built with a state, they are built to be saved
SQL_WRITES = ("UPDATE", "INSERT", "REPLACE")
THREAD_HOPS = {"to_thread": 0, "run_in_executor": 1, "partial": 0}  # f(*args) called through these


def _terminal_enum(node: ast.AST) -> str | None:
    """``RunState.FAILED``, ``RunState.FAILED.value``, ``RunState("failed")``: the state's name."""
    if isinstance(node, ast.Attribute) and node.attr == "value":
        node = node.value
    if isinstance(node, ast.Attribute) and node.attr in TERMINAL and _dotted(node.value)[-1:] == ["RunState"]:
        return node.attr
    if isinstance(node, ast.Call) and _dotted(node.func)[-1:] == ["RunState"] and node.args and \
            isinstance(node.args[0], ast.Constant) and node.args[0].value in TERMINAL.values():
        return str(node.args[0].value).upper()
    return None


def _terminal_string(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in TERMINAL.values():
        return node.value.upper()
    return None


def _unhop(call: ast.Call) -> tuple[str, list[ast.expr], list[ast.keyword]]:
    """``asyncio.to_thread(store.update_run, id, state=X)`` -> ("update_run", [id], [state=X])."""
    name = _callee(call)
    if name in THREAD_HOPS and len(call.args) > THREAD_HOPS[name]:
        fn = call.args[THREAD_HOPS[name]]
        inner = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
        return inner, list(call.args[THREAD_HOPS[name] + 1:]), list(call.keywords)
    return name, list(call.args), list(call.keywords)


def _end_writes(node: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each write of a terminal run state in this node (not its children)."""
    found = []
    if isinstance(node, ast.Call):
        name, args, keywords = _unhop(node)
        state_kw = [k.value for k in keywords if k.arg == "state"]
        if name in BUCKET_ENDERS:
            found.append(f"{name}(...) ends a run in the bucket")
        elif name in RUN_WRITERS:
            hit = next((t for t in (*(_terminal_enum(a) for a in (*args, *state_kw)),
                                    *(_terminal_string(k) for k in state_kw)) if t), None)
            if hit:
                found.append(f"{name}(...) writes the terminal state {hit}")
        elif name in RUN_RECORDS or name == "replace":
            hit = next((t for t in (*(_terminal_enum(k) for k in state_kw),
                                    *((_terminal_string(k) for k in state_kw) if name in RUN_RECORDS else ())) if t),
                       None)
            if hit:
                found.append(f"{name}(state={hit}) builds an ended run record")
        elif name == "update":  # a status reporter's update(state=...) writes status.json
            hit = next((t for t in (_terminal_enum(k) for k in state_kw) if t), None)
            if hit:
                found.append(f"update(state={hit}) writes the terminal state into a status")
        elif name in ("execute", "executemany") and args and isinstance(args[0], ast.Constant) and \
                isinstance(args[0].value, str) and args[0].value.lstrip().upper().startswith(SQL_WRITES):
            hit = next((t for a in args[1:] for sub in ast.walk(a) if (t := _terminal_enum(sub))), None)
            if hit:
                found.append(f"SQL {args[0].value.split()[0].upper()} writes the terminal state {hit}")
    elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        hit = _terminal_enum(node.value) if node.value is not None else None
        if hit and any(_is_state_slot(t) for t in targets):
            found.append(f"assigns the terminal state {hit} to a state field")
    elif isinstance(node, ast.Dict):
        for key, value in zip(node.keys, node.values):
            hit = _terminal_enum(value)
            if hit and isinstance(key, ast.Constant) and key.value == "state":
                found.append(f'builds {{"state": {hit}}}, a run record to be saved')
    return [(node.lineno, what) for what in found]


def _is_state_slot(target: ast.AST) -> bool:
    if isinstance(target, ast.Attribute):
        return target.attr == "state"
    if isinstance(target, ast.Subscript):
        return isinstance(target.slice, ast.Constant) and target.slice.value == "state"
    if isinstance(target, (ast.Tuple, ast.List)):
        return any(_is_state_slot(e) for e in target.elts)
    return False


def check_terminal_writes(root: Path | Tree) -> list[Violation]:
    """(d) A terminal run state (done, failed, timed_out, stopped, lost) written into the store,
    the bucket or a run record outside the lifecycle home; reading and comparing one is fine."""
    tree = tree_of(root)
    out = []
    for module in tree:
        if _under(module, *LIFECYCLE_EXEMPT):
            continue
        for node in module.nodes:
            for line, what in _end_writes(node):
                out.append(Violation(module.rel, line, f"{what}: a run is ended only by {LIFECYCLE_HOME}"))
    return sorted(out)


# --- (e) every event name in one module -------------------------------------------------------------

EVENTS_HOME = f"{PACKAGE}/service/events.py"
EVENT_NAME = re.compile(r"lora_cloud\.[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
FILE_SUFFIXES = (".json", ".toml", ".txt", ".log", ".db", ".py", ".js", ".css", ".safetensors")  # a file name


def check_event_names(root: Path | Tree) -> list[Violation]:
    """(e) An ``*_EVENT`` constant given a value, or a ``"lora_cloud.<name>"`` string, outside the
    events module (docstrings and comments may name events)."""
    tree = tree_of(root)
    found = []
    for module in tree:
        if module.rel == EVENTS_HOME:
            continue
        prose = _docstrings(module.nodes)
        defined: dict[int, Violation] = {}
        named: dict[int, Violation] = {}
        for node in module.nodes:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""
                    if name.endswith("_EVENT") and any(
                            isinstance(n, ast.JoinedStr) or (isinstance(n, ast.Constant) and isinstance(n.value, str))
                            for n in ast.walk(node.value)):
                        defined[node.lineno] = Violation(module.rel, node.lineno, f"defines the event {name}: event "
                                                         f"names are defined only in {EVENTS_HOME}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose \
                    and EVENT_NAME.fullmatch(node.value) and not node.value.endswith(FILE_SUFFIXES):
                named[node.lineno] = Violation(module.rel, node.lineno, f"names the event {node.value!r}: use "
                                               f"its constant from {EVENTS_HOME}")
        found += [*defined.values(), *(v for line, v in named.items() if line not in defined)]
    return sorted(found)


# --- (f) one module writes the settings files ---------------------------------------------------------

# today's module, and the package it is becoming (its files.py is the one writer)
SETTINGS_WRITERS = (f"{PACKAGE}/settings.py", f"{PACKAGE}/settings/files.py")
SETTINGS_FILE_STRINGS = {"config.toml", "secrets.toml", ".last-good"}
SETTINGS_FILE_NAMES = {"CONFIG_FILE", "SECRETS_FILE", "LAST_GOOD_DIR"}
# calls that write (or replace, move, remove) the file the argument at that position names
PATH_ARG_WRITES = {("os", "replace"): (0, 1), ("os", "rename"): (0, 1), ("os", "remove"): (0,),
                   ("os", "unlink"): (0,), ("os", "chmod"): (0,), ("shutil", "move"): (0, 1),
                   ("shutil", "copy"): (1,), ("shutil", "copy2"): (1,), ("shutil", "copyfile"): (1,),
                   ("shutil", "copytree"): (1,), ("shutil", "rmtree"): (0,)}
RECEIVER_WRITES = {"write_text", "write_bytes", "touch", "unlink", "chmod", "mkdir", "rmdir"}
RECEIVER_MOVES = {"rename", "replace"}  # Path.rename(target): both the file and the target change
WRITE_MODES = re.compile(r"[wax+]")


def _mentions(node: ast.AST, tainted: set[str]) -> bool:
    """Does this expression name a settings file (its name, the constant for it, or a local
    variable made from one)?"""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and \
                any(s in sub.value for s in SETTINGS_FILE_STRINGS):
            return True
        if isinstance(sub, ast.Name) and (sub.id in SETTINGS_FILE_NAMES or sub.id in tainted):
            return True
        if isinstance(sub, ast.Attribute) and sub.attr in SETTINGS_FILE_NAMES:
            return True
    return False


def _assigned_names(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _scopes(tree: ast.Module) -> list[tuple[ast.AST, list[str], list[ast.AST]]]:
    """The module and each function in it, with the function's parameters and the nodes that are
    its own (not those of the functions nested in it): the units a name flows in. One pass."""
    found: dict[int, tuple[ast.AST, list[str], list[ast.AST]]] = {id(tree): (tree, [], [])}
    todo: list[tuple[ast.AST, ast.AST]] = [(child, tree) for child in ast.iter_child_nodes(tree)]
    while todo:
        node, scope = todo.pop()
        found[id(scope)][2].append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            found[id(node)] = (node, [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)], [])
            scope = node
        todo.extend((child, scope) for child in ast.iter_child_nodes(node))
    return list(found.values())


def _file_writes(nodes: list[ast.AST], tainted: set[str]) -> list[int]:
    """Lines of the writes in ``nodes`` whose file is a settings file (by ``tainted``)."""
    lines = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            continue
        f, chain = node.func, _dotted(node.func)
        args = list(node.args)
        if tuple(chain[-2:]) in PATH_ARG_WRITES:
            if any(i < len(args) and _mentions(args[i], tainted) for i in PATH_ARG_WRITES[tuple(chain[-2:])]):
                lines.append(node.lineno)
        elif isinstance(f, ast.Attribute) and f.attr in RECEIVER_WRITES:
            if _mentions(f.value, tainted):
                lines.append(node.lineno)
        elif isinstance(f, ast.Attribute) and f.attr in RECEIVER_MOVES and len(args) == 1:  # str.replace has two
            if _mentions(f.value, tainted) or _mentions(args[0], tainted):
                lines.append(node.lineno)
        elif chain[-1:] == ["open"] or (isinstance(f, ast.Attribute) and f.attr == "open"):
            on_path = chain == ["open"] or chain[-2:] in (["io", "open"], ["os", "open"])
            path = args[0] if on_path and args else (f.value if isinstance(f, ast.Attribute) else None)
            mode_args = args[1:2] if on_path else args[:1]
            mode = [k.value for k in node.keywords if k.arg in ("mode", "flags")] + mode_args
            writes = any((isinstance(m, ast.Constant) and isinstance(m.value, str) and WRITE_MODES.search(m.value))
                         or any(isinstance(s, ast.Attribute) and s.attr in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")
                                for s in ast.walk(m)) for m in mode)
            if path is not None and writes and _mentions(path, tainted):
                lines.append(node.lineno)
    return lines


_BINDINGS = (ast.Assign, ast.AnnAssign, ast.NamedExpr, ast.withitem, ast.For, ast.comprehension)


def _taint(nodes: list[ast.AST], seeds: set[str]) -> set[str]:
    """Names in a scope that hold a settings file's path: assigned from an expression naming one,
    round and round until nothing new (``path = home / CONFIG_FILE; tmp = path.with_suffix(...)``)."""
    tainted = set(seeds)
    assigns = [n for n in nodes if isinstance(n, _BINDINGS)]
    changed = True
    while changed:
        changed = False
        for node in assigns:
            if isinstance(node, ast.withitem):
                value, targets = node.context_expr, [node.optional_vars] if node.optional_vars else []
            elif isinstance(node, (ast.For, ast.comprehension)):
                value, targets = node.iter, [node.target]
            elif isinstance(node, ast.Assign):
                value, targets = node.value, node.targets
            else:
                value, targets = node.value, [node.target]
            if value is None or not _mentions(value, tainted):
                continue
            for name in (n for t in targets for n in _assigned_names(t)):
                if name not in tainted:
                    tainted.add(name)
                    changed = True
    return tainted


def _may_write(node: ast.AST) -> bool:
    """A call that writes some file (which one is checked after): most scopes have none."""
    if not isinstance(node, ast.Call):
        return False
    f, chain = node.func, _dotted(node.func)
    return tuple(chain[-2:]) in PATH_ARG_WRITES or chain[-1:] == ["open"] or \
        (isinstance(f, ast.Attribute) and f.attr in RECEIVER_WRITES | RECEIVER_MOVES | {"open"})


def check_settings_writes(root: Path | Tree) -> list[Violation]:
    """(f) config.toml, secrets.toml or a .last-good copy written (created, replaced, moved,
    removed) outside the settings writer. Calling the writer's own functions is how others write."""
    tree = tree_of(root)
    scopes_of = {}
    # helpers (outside the writer) that write the file a parameter names: a call handing one of
    # them a settings file is a write too. By function name, across the package.
    helpers: dict[str, set[int]] = {}  # name -> the positions of the call's arguments that are written
    for module in tree:
        if module.rel in SETTINGS_WRITERS:
            continue
        scopes_of[module.name] = scopes = [(scope, params, nodes, [n for n in nodes if _may_write(n)])
                                           for scope, params, nodes in _scopes(module.tree)]
        for scope, params, nodes, writes in scopes:
            if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue  # a helper is called by its name
            skip = 1 if params[:1] in (["self"], ["cls"]) else 0  # a method is called on its object
            for i, p in enumerate(params[skip:] if writes else ()):
                if _file_writes(writes, _taint(nodes, {p})):
                    helpers.setdefault(scope.name, set()).add(i)
    out = []
    for module in tree:
        if module.rel in SETTINGS_WRITERS:
            continue
        for scope, params, nodes, writes in scopes_of[module.name]:
            helper_calls = [n for n in nodes if isinstance(n, ast.Call) and _callee(n) in helpers]
            if not writes and not helper_calls:
                continue
            tainted = _taint(nodes, set())
            lines = set(_file_writes(writes, tainted))
            for node in helper_calls:
                if any(i < len(node.args) and _mentions(node.args[i], tainted) for i in helpers[_callee(node)]):
                    lines.add(node.lineno)
            out += [Violation(module.rel, line, f"writes a settings file: only {SETTINGS_WRITERS[0]} "
                                                f"(or {SETTINGS_WRITERS[1]}) writes them") for line in lines]
    return sorted(set(out))


# --- (g) modules a reader can hold in their head -------------------------------------------------------

MAX_LINES = 500


def check_module_sizes(root: Path | Tree, allowed: dict[str, str]) -> list[Violation]:
    """(g) A module over MAX_LINES lines not in ``allowed`` (path -> why), and an allowance that is
    no longer needed (the module shrank or is gone), so the list only ever shrinks."""
    tree = tree_of(root)
    out = []
    sizes = {m.rel: len(m.text.splitlines()) for m in tree}
    for rel, size in sizes.items():
        if size > MAX_LINES and rel not in allowed:
            out.append(Violation(rel, size, f"{size} lines (over {MAX_LINES}): split it along its "
                                            f"responsibilities, or name it in the allow-list with why"))
    for rel in allowed:
        if sizes.get(rel, 0) <= MAX_LINES:
            out.append(Violation(rel, 1, f"allowed over {MAX_LINES} lines but has {sizes.get(rel, 0)}: "
                                         f"take it off the allow-list"))
    return sorted(out)


# --- (h) one background event loop per process --------------------------------------------------------

LOOP_HOME = f"{PACKAGE}/service/loop.py"
# Everything else may run inside ComfyUI's process, where what outlives a call (the guard, the event
# pollers, the SSH tunnels) lives on the one loop LOOP_HOME owns, handed in by the wiring. cli/ and
# worker/ are the entry points of processes of their own (a `lora-cloud` command; the trainer and the
# inference supervisor on the rented GPU): none of their code runs in ComfyUI's, and each runs its
# own loop on its own main thread.
LOOP_EXEMPT = (LOOP_HOME, f"{PACKAGE}/cli", f"{PACKAGE}/worker")
LOOP_MAKERS = {"new_event_loop", "Runner"}  # asyncio.new_event_loop(), asyncio.Runner(): a loop of one's own
LOOP_RUNS = {"run_forever", "run_until_complete"}  # loop.run_forever(): the thread becomes that loop's
# calls that hand a function to another thread: the position of the function among the arguments
THREAD_STARTS = {"Thread": 1, "start_new_thread": 0, "to_thread": 0, "submit": 0, "run_in_executor": 1}


def _asyncio_run_names(module: Module) -> set[str]:
    """Local names of ``asyncio.run`` (``from asyncio import run``, ``as`` names too)."""
    return {b for ref in module.imports if ref.module == "asyncio" for n, b in zip(ref.names, ref.bound)
            if n == "run"}


def _runs_a_loop(node: ast.AST, run_names: set[str]) -> str | None:
    """What in this expression or body runs an event loop (``asyncio.run(...)``,
    ``loop.run_forever()``, ``asyncio.new_event_loop()``), or None."""
    for sub in ast.walk(node):
        if not isinstance(sub, ast.Call):
            continue
        chain = _dotted(sub.func)
        if chain == ["asyncio", "run"] or (len(chain) == 1 and chain[0] in run_names):
            return "asyncio.run(...)"
        if _callee(sub) in LOOP_RUNS | LOOP_MAKERS:
            return f"{'.'.join(chain) or _callee(sub)}(...)"
    return None


def _target_runs_a_loop(target: ast.AST, functions: dict[str, list[ast.AST]], run_names: set[str]) -> str | None:
    """Does the function handed to a thread run an event loop? ``asyncio.run`` or
    ``loop.run_forever`` itself, a lambda, or a function or method of this module (by name)."""
    if isinstance(target, ast.Call) and _callee(target) == "partial" and target.args:
        target = target.args[0]  # functools.partial(f, ...) runs f
    chain = _dotted(target)
    if chain == ["asyncio", "run"] or (len(chain) == 1 and chain[0] in run_names):
        return "asyncio.run"
    if isinstance(target, ast.Attribute) and target.attr in LOOP_RUNS:
        return ".".join(chain) or target.attr
    if isinstance(target, ast.Lambda):
        return _runs_a_loop(target.body, run_names)
    name = target.attr if isinstance(target, ast.Attribute) else target.id if isinstance(target, ast.Name) else ""
    for fn in functions.get(name, ()):
        found = _runs_a_loop(fn, run_names)
        if found:
            return f"{name}, which calls {found}"
    return None


def _waited_at_once(call: ast.Call, parents: dict[int, ast.AST]) -> bool:
    """``await asyncio.to_thread(...)``, ``pool.submit(...).result()``: the caller waits for the
    thread's work, so a loop it runs ends with the call (a blocking call made from inside a loop),
    never a background loop."""
    parent = parents.get(id(call))
    if isinstance(parent, ast.Await):
        return True
    if isinstance(parent, ast.Attribute) and parent.attr == "result":
        return isinstance(parents.get(id(parent)), ast.Call)
    return False


def check_background_loops(root: Path | Tree) -> list[Violation]:
    """(h) An event loop made outside the one loop module: ``asyncio.new_event_loop()`` (or
    ``asyncio.Runner()``), a thread whose target runs a loop (``threading.Thread(target=f)`` where f
    calls ``asyncio.run`` or ``run_forever``; the same handed to ``to_thread``, an executor's
    ``submit`` or ``run_in_executor`` and not waited on there and then), or a ``threading.Thread``
    subclass whose ``run`` runs one. Function targets are followed by name within their module."""
    tree = tree_of(root)
    out = []
    for module in tree:
        if _under(module, *LOOP_EXEMPT):
            continue
        run_names = _asyncio_run_names(module)
        functions: dict[str, list[ast.AST]] = {}
        parents: dict[int, ast.AST] = {}
        for node in module.nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.setdefault(node.name, []).append(node)
            for child in ast.iter_child_nodes(node):
                parents[id(child)] = node
        found: dict[int, str] = {}
        for node in module.nodes:
            if isinstance(node, ast.Call) and _callee(node) in LOOP_MAKERS:
                found.setdefault(node.lineno, f"makes an event loop ({'.'.join(_dotted(node.func))}(...))")
            elif isinstance(node, ast.Call) and _callee(node) in THREAD_STARTS:
                at = THREAD_STARTS[_callee(node)]
                target = next((k.value for k in node.keywords if k.arg == "target"), None)
                if target is None and len(node.args) > at:
                    target = node.args[at]
                if target is None or (_callee(node) != "Thread" and _waited_at_once(node, parents)):
                    continue
                runs = _target_runs_a_loop(target, functions, run_names)
                if runs:
                    found.setdefault(node.lineno, f"starts a thread that runs an event loop ({runs})")
            elif isinstance(node, ast.ClassDef) and any(_dotted(b)[-1:] == ["Thread"] for b in node.bases):
                for fn in node.body:
                    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name == "run":
                        runs = _runs_a_loop(fn, run_names)
                        if runs:
                            found.setdefault(fn.lineno, f"a Thread whose run() runs an event loop ({runs})")
        out += [Violation(module.rel, line, f"{what}: a process has one background loop, {LOOP_HOME}; "
                                            f"hand the work to the Loop the wiring passes in")
                for line, what in found.items()]
    return sorted(out)


RULES = {
    "a. import cycles": check_import_cycles,
    "a. service package cycles": check_service_package_cycles,
    "b. public faces": check_public_faces,
    "c. destroy calls": check_destroy_calls,
    "d. terminal run states written": check_terminal_writes,
    "e. event names": check_event_names,
    "f. settings files written": check_settings_writes,
    "h. background event loops": check_background_loops,
}


def main(argv: list[str]) -> int:
    """``python -m tests.unit.layout_rules [root]``: every violation, and a count per rule (the
    size rule without the test's allow-list)."""
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2]
    results = {**{name: check(root) for name, check in RULES.items()},
               f"g. modules over {MAX_LINES} lines": check_module_sizes(root, {})}
    for name, found in results.items():
        print(f"{name}: {len(found)}")
        for v in found:
            print(f"    {v}")
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
