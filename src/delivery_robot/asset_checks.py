"""Static checks of the assets only robots and Gazebo machines run: launch files, the bridge
config, Nav2 parameters, the robot description (ROS-free part of tools/check_assets.py).

`launch` / `launch_ros` / Gazebo do not install on CI machines, so launch files are read with
`ast`, never imported: `read_launch_file` finds the launch actions (Node, IncludeLaunchDescription,
ExecuteProcess, DeclareLaunchArgument) and resolves the strings they are given where that is
possible without running anything: literals, names assigned once or a few times, f-strings,
`os.path.join` / `PathJoinSubstitution`, `get_package_share_directory` / `FindPackageShare`
(-> "$share/<package>/..."), and launch arguments (-> their declared choices, else default).
What cannot be resolved is reported, not guessed, so the launch files are written to be
checkable. The checks that need real ROS (which parameters a node declares, which topics it
creates, which params-file sections rcl applies to a node) live in the tool, with rclpy.
"""

from __future__ import annotations

import ast
import itertools
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

SHARE = "$share/"  # resolved get_package_share_directory(pkg) / FindPackageShare(pkg) prefix
_MAX_VALUES = 64  # combinations a resolved expression may take before we give up

Level = Literal["error", "pending", "info"]

# ros_gz_bridge (ROS 2 Jazzy, ros_gz 1.0.x) type pairs this project may use. From
# ros_gz_bridge's mappings; TwistStamped <-> gz.msgs.Twist is in Jazzy since ros_gz 1.0.0
# (gazebosim/ros_gz#468).
BRIDGE_TYPE_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("geometry_msgs/msg/Twist", "gz.msgs.Twist"),
    ("geometry_msgs/msg/TwistStamped", "gz.msgs.Twist"),
    ("geometry_msgs/msg/PoseStamped", "gz.msgs.Pose"),
    ("nav_msgs/msg/Odometry", "gz.msgs.Odometry"),
    ("nav_msgs/msg/Odometry", "gz.msgs.OdometryWithCovariance"),
    ("rosgraph_msgs/msg/Clock", "gz.msgs.Clock"),
    ("sensor_msgs/msg/BatteryState", "gz.msgs.BatteryState"),
    ("sensor_msgs/msg/CameraInfo", "gz.msgs.CameraInfo"),
    ("sensor_msgs/msg/Image", "gz.msgs.Image"),
    ("sensor_msgs/msg/Imu", "gz.msgs.IMU"),
    ("sensor_msgs/msg/JointState", "gz.msgs.Model"),
    ("sensor_msgs/msg/LaserScan", "gz.msgs.LaserScan"),
    ("sensor_msgs/msg/PointCloud2", "gz.msgs.PointCloudPacked"),
    ("std_msgs/msg/Bool", "gz.msgs.Boolean"),
    ("tf2_msgs/msg/TFMessage", "gz.msgs.Pose_V"),
})
BRIDGE_KEYS = frozenset({"topic_name", "ros_topic_name", "gz_topic_name", "ros_type_name",
                         "gz_type_name", "direction", "publisher_queue", "subscriber_queue",
                         "lazy"})
BRIDGE_DIRECTIONS = ("BIDIRECTIONAL", "GZ_TO_ROS", "ROS_TO_GZ")


@dataclass(frozen=True)
class Finding:
    """One result: `error` fails the check, `pending` is known missing work, `info` is news."""

    level: Level
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper():7} {self.where}: {self.message}"


# == launch files ==============================================================================


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str | None  # None: no literal default (a substitution, or none at all)
    has_default: bool
    choices: tuple[str, ...] | None
    description: str
    line: int


@dataclass(frozen=True)
class ParamEntry:
    """One element of a Node's `parameters` list: params files or a dict of overrides."""

    files: tuple[str, ...] | None = None  # resolved paths (alternatives); None: not a file
    keys: tuple[str, ...] | None = None  # dict keys; None: not a dict
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # resolvable values
    placeholders: bool = False  # the file goes through nav2_common ReplaceString
    unresolved: str = ""  # what could not be read statically (source text)


@dataclass(frozen=True)
class NodeAction:
    package: str | None
    executable: str | None
    name: str | None
    namespaced: bool  # given a namespace (per robot)
    params: tuple[ParamEntry, ...]
    remappings: tuple[tuple[str, str], ...]
    line: int


@dataclass(frozen=True)
class IncludeAction:
    paths: tuple[str, ...] | None
    arguments: tuple[str, ...]  # launch_arguments keys passed on
    line: int


@dataclass
class LaunchFile:
    path: Path
    error: str = ""
    has_generate: bool = False
    arguments: dict[str, LaunchArgument] = field(default_factory=dict)
    used_arguments: set[str] = field(default_factory=set)
    nodes: list[NodeAction] = field(default_factory=list)
    includes: list[IncludeAction] = field(default_factory=list)
    python_modules: list[tuple[str, int]] = field(default_factory=list)  # ExecuteProcess -m
    share_paths: list[tuple[str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_launch_file(path: Path) -> LaunchFile:
    """Parse a launch file and collect its actions; never imports or runs it."""
    info = LaunchFile(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except SyntaxError as error:
        info.error = f"not valid Python: {error.msg} (line {error.lineno})"
        return info
    except OSError as error:
        info.error = f"cannot read: {error}"
        return info
    generate = [n for n in tree.body if isinstance(n, ast.FunctionDef)
                and n.name == "generate_launch_description"]
    info.has_generate = bool(generate) and any(
        isinstance(r, ast.Return) and isinstance(r.value, ast.Call)
        and _call_name(r.value) == "LaunchDescription"
        for r in ast.walk(generate[0]))
    resolver = _Resolver(tree)
    for call, scope in resolver.calls():
        kind = _call_name(call)
        if kind == "DeclareLaunchArgument":
            argument = _launch_argument(call, resolver, scope)
            if argument is not None:
                info.arguments[argument.name] = argument
    resolver.arguments = info.arguments
    for call, scope in resolver.calls():
        kind = _call_name(call)
        if kind == "LaunchConfiguration" and call.args:
            name = _const_str(call.args[0])
            if name is not None:
                info.used_arguments.add(name)
        elif kind == "Node":
            info.nodes.append(_node_action(call, resolver, scope, info))
        elif kind == "IncludeLaunchDescription":
            info.includes.append(_include_action(call, resolver, scope))
        elif kind == "ExecuteProcess":
            info.python_modules += _python_modules(call, resolver, scope)
        elif kind in ("join", "PathJoinSubstitution"):
            for value in resolver.resolve(call, scope) or ():
                if value.startswith(SHARE):
                    info.share_paths.append((value, call.lineno))
    return info


def check_launch_file(info: LaunchFile, console_scripts: Mapping[str, str], root: Path,
                      package: str = "delivery_robot",
                      pending: Mapping[str, str] = MappingProxyType({})) -> list[Finding]:
    """What can be judged from the file alone plus setup.py and the repository tree.

    `pending` maps executables that are being written (not yet in setup.py) to their params
    file: their absence is reported as `pending`, not as an error."""
    pending_files = {f"{SHARE}{package}/{path}" for path in pending.values()}
    where = str(info.path.relative_to(root)) if info.path.is_relative_to(root) else str(
        info.path)
    out: list[Finding] = []
    if info.error:
        return [Finding("error", where, info.error)]
    if not info.has_generate:
        out.append(Finding("error", where, "defines no generate_launch_description() returning "
                           "a LaunchDescription"))
    for argument in info.arguments.values():
        if not argument.has_default:
            out.append(Finding("error", f"{where}:{argument.line}",
                               f"launch argument {argument.name!r} has no default_value"))
        if not argument.description.strip():
            out.append(Finding("error", f"{where}:{argument.line}",
                               f"launch argument {argument.name!r} has no description"))
        if (argument.choices is not None and argument.default is not None
                and argument.default not in argument.choices):
            out.append(Finding("error", f"{where}:{argument.line}",
                               f"launch argument {argument.name!r}: default "
                               f"{argument.default!r} is not one of {list(argument.choices)}"))
    for name in sorted(info.used_arguments - info.arguments.keys()):
        out.append(Finding("error", where, f"LaunchConfiguration({name!r}) is never declared"))
    for problem in info.problems:
        out.append(Finding("error", where, problem))
    for node in info.nodes:
        at = f"{where}:{node.line}"
        if node.package is None or node.executable is None:
            out.append(Finding("error", at, "Node package/executable is not a literal"))
            continue
        if node.package == package and node.executable not in console_scripts:
            level: Level = "pending" if node.executable in pending else "error"
            out.append(Finding(level, at, f"executable {node.executable!r} is not a console "
                               "script in setup.py" + (" (being written)" if level == "pending"
                                                       else "")))
        for entry in node.params:
            if entry.unresolved:
                out.append(Finding("error", at, f"{node.executable}: parameters entry "
                                   f"{entry.unresolved!r} cannot be checked statically"))
    for value, line in info.share_paths:
        for finding in _check_share_path(value, f"{where}:{line}", root, package):
            if value in pending_files:
                finding = Finding("pending", finding.where, finding.message + " (its node is "
                                  "being written)")
            out.append(finding)
    for include in info.includes:
        at = f"{where}:{include.line}"
        if include.paths is None:
            out.append(Finding("error", at, "included launch file path cannot be resolved"))
            continue
        for value in include.paths:
            local = share_to_repo(value, root, package)
            if local is None:
                out.append(Finding("info", at, f"includes {value} (another package: not "
                                   "checked here)"))
                continue
            if not local.exists():
                continue  # reported as a share path already
            included = read_launch_file(local)
            unknown = set(include.arguments) - included.arguments.keys()
            if unknown:
                out.append(Finding("error", at, f"passes {sorted(unknown)} to "
                                   f"{local.relative_to(root)}, which declares no such "
                                   "launch argument"))
    for module, line in info.python_modules:
        parts = module.split(".")
        source = root / "src" / Path(*parts).with_suffix(".py")
        if parts[0] != package or not source.exists():
            out.append(Finding("error", f"{where}:{line}", f"runs python -m {module}: no such "
                               "module in src/"))
        elif not re_main(source):
            out.append(Finding("error", f"{where}:{line}", f"runs python -m {module}, which "
                               "has no main()"))
    return out


def share_to_repo(value: str, root: Path, package: str = "delivery_robot") -> Path | None:
    """The repository file behind "$share/<package>/<rel>" (None: another package)."""
    prefix = f"{SHARE}{package}"
    if not value.startswith(prefix):
        return None
    rel = value[len(prefix):].lstrip("/")
    return root / rel if rel else root


def re_main(source: Path) -> bool:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)


def _check_share_path(value: str, at: str, root: Path, package: str) -> list[Finding]:
    local = share_to_repo(value, root, package)
    if local is None:
        return []
    installed = ("launch", "config", "gazebo_worlds", "urdf")
    rel = local.relative_to(root)
    if not rel.parts or rel.parts[0] not in installed:
        return [Finding("error", at, f"{value}: setup.py installs only {installed} into share/")]
    if not local.exists():
        return [Finding("error", at, f"refers to {rel}, which does not exist")]
    return []


def console_scripts(setup_py: Path) -> dict[str, str]:
    """{name: "module:function"} of the CONSOLE_SCRIPTS list in setup.py (read with ast)."""
    tree = ast.parse(setup_py.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name)
                                                 and t.id == "CONSOLE_SCRIPTS"
                                                 for t in node.targets)
                and isinstance(node.value, ast.List)):
            out = {}
            for element in node.value.elts:
                text = _const_str(element)
                if text and "=" in text:
                    name, target = (part.strip() for part in text.split("=", 1))
                    out[name] = target
            return out
    raise ValueError(f"{setup_py}: no CONSOLE_SCRIPTS list")


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _const_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _kwarg(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


class _Resolver:
    """Resolves expressions of one launch file to the strings they can take."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.arguments: dict[str, LaunchArgument] = {}
        self.module_assigns = _assigns(tree.body)
        self.function_assigns: dict[ast.FunctionDef, dict[str, list[ast.expr]]] = {}
        self.params: dict[ast.FunctionDef, set[str]] = {}
        self._calls: list[tuple[ast.Call, ast.FunctionDef | None]] = []
        self._visit(tree, None)

    def _visit(self, node: ast.AST, scope: ast.FunctionDef | None) -> None:
        """Record every call with its innermost enclosing function, and each function's names:
        its assignments, and its parameters and loop variables (not knowable statically)."""
        if isinstance(node, ast.FunctionDef):
            self.function_assigns[node] = _assigns(node.body)
            unknown = {a.arg for a in node.args.args + node.args.kwonlyargs}
            for inner in ast.walk(node):
                if isinstance(inner, ast.For | ast.comprehension):
                    unknown |= {n.id for n in ast.walk(inner.target) if isinstance(n, ast.Name)}
            self.params[node] = unknown
            scope = node
        elif isinstance(node, ast.Call):
            self._calls.append((node, scope))
        for child in ast.iter_child_nodes(node):
            self._visit(child, scope)

    def calls(self) -> Iterable[tuple[ast.Call, ast.FunctionDef | None]]:
        return list(self._calls)

    def lookup(self, name: str, scope: ast.FunctionDef | None) -> list[ast.expr] | None:
        if scope is not None:
            if name in self.function_assigns.get(scope, {}):
                return self.function_assigns[scope][name]
            if name in self.params.get(scope, set()):
                return None
        return self.module_assigns.get(name)

    def resolve(self, node: ast.AST | None, scope: ast.FunctionDef | None,
                depth: int = 0) -> list[str] | None:
        """Every string `node` can evaluate to, or None when that is not knowable here."""
        if node is None or depth > 12:
            return None
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return [node.value]
            if isinstance(node.value, bool | int | float):
                return [str(node.value)]
            return None
        if isinstance(node, ast.Name):
            exprs = self.lookup(node.id, scope)
            if not exprs:
                return None
            return _union(self.resolve(e, scope, depth + 1) for e in exprs)
        if isinstance(node, ast.JoinedStr):
            parts: list[list[str] | None] = []
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    parts.append(self.resolve(value.value, scope, depth + 1))
                else:
                    parts.append(self.resolve(value, scope, depth + 1))
            return _product(parts, "")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return _product([self.resolve(node.left, scope, depth + 1),
                             self.resolve(node.right, scope, depth + 1)], "")
        if isinstance(node, ast.IfExp):
            return _union([self.resolve(node.body, scope, depth + 1),
                           self.resolve(node.orelse, scope, depth + 1)])
        if isinstance(node, ast.Call):
            return self._resolve_call(node, scope, depth)
        return None

    def _resolve_call(self, call: ast.Call, scope: ast.FunctionDef | None,
                      depth: int) -> list[str] | None:
        name = _call_name(call)
        if name in ("get_package_share_directory", "FindPackageShare") and call.args:
            packages = self.resolve(call.args[0], scope, depth + 1)
            return None if packages is None else [SHARE + p for p in packages]
        if name == "join" or name == "PathJoinSubstitution":
            items: list[ast.expr] = list(call.args)
            if name == "PathJoinSubstitution" and len(items) == 1 and isinstance(
                    items[0], ast.List):
                items = list(items[0].elts)
            return _product([self.resolve(item, scope, depth + 1) for item in items], "/")
        if name == "LaunchConfiguration" and call.args:
            return self._argument_values(_const_str(call.args[0]))
        if name == "perform_substitution" and call.args:
            return self.resolve(call.args[0], scope, depth + 1)
        if name == "perform" and isinstance(call.func, ast.Attribute):
            return self.resolve(call.func.value, scope, depth + 1)
        if name in ("strip", "lower", "upper", "rstrip", "lstrip") and isinstance(
                call.func, ast.Attribute):
            values = self.resolve(call.func.value, scope, depth + 1)
            chars = _const_str(call.args[0]) if call.args else None
            if values is None:
                return None
            return [getattr(v, name)(chars) if name.endswith("strip") else getattr(v, name)()
                    for v in values]
        if name == "str" and call.args:
            return self.resolve(call.args[0], scope, depth + 1)
        if name == "ReplaceString":
            return self.resolve(_kwarg(call, "source_file") or (
                call.args[0] if call.args else None), scope, depth + 1)
        return None

    def _argument_values(self, name: str | None) -> list[str] | None:
        argument = self.arguments.get(name or "")
        if argument is None:
            return None
        if argument.choices:
            return list(argument.choices)
        return None if argument.default is None else [argument.default]

    def is_replace_string(self, node: ast.AST, scope: ast.FunctionDef | None) -> bool:
        if isinstance(node, ast.Call):
            return _call_name(node) == "ReplaceString"
        if isinstance(node, ast.Name):
            return any(self.is_replace_string(e, scope) for e in self.lookup(node.id, scope)
                       or ())
        return False

    def as_literal(self, node: ast.AST, scope: ast.FunctionDef | None,
                   want: type[ast.AST]) -> list[ast.AST]:
        """`node` itself if it is of type `want`, or what a name bound to it holds."""
        if isinstance(node, want):
            return [node]
        if isinstance(node, ast.Name):
            return [lit for e in self.lookup(node.id, scope) or ()
                    for lit in self.as_literal(e, scope, want)]
        if isinstance(node, ast.IfExp):
            return (self.as_literal(node.body, scope, want)
                    + self.as_literal(node.orelse, scope, want))
        return []


def _assigns(body: Sequence[ast.stmt]) -> dict[str, list[ast.expr]]:
    """name -> every expression assigned to it in these statements (nested blocks included,
    nested functions and classes not)."""
    out: dict[str, list[ast.expr]] = {}

    def visit(statements: Sequence[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if isinstance(statement, ast.Assign):
                for target in statement.targets:
                    if isinstance(target, ast.Name):
                        out.setdefault(target.id, []).append(statement.value)
            elif isinstance(statement, ast.AnnAssign | ast.AugAssign) and isinstance(
                    statement.target, ast.Name) and statement.value is not None:
                out.setdefault(statement.target.id, []).append(statement.value)
            elif isinstance(statement, ast.With):
                for item in statement.items:
                    if isinstance(item.optional_vars, ast.Name):
                        out.setdefault(item.optional_vars.id, []).append(item.context_expr)
            for name in ("body", "orelse", "finalbody"):
                inner = getattr(statement, name, None)
                if isinstance(inner, list):
                    visit([s for s in inner if isinstance(s, ast.stmt)])
            if isinstance(statement, ast.Try):
                for handler in statement.handlers:
                    visit(handler.body)
    visit(body)
    return out


def _union(options: Iterable[list[str] | None]) -> list[str] | None:
    out: list[str] = []
    for values in options:
        if values is None:
            return None
        out += [v for v in values if v not in out]
    return out


def _product(parts: Sequence[list[str] | None], sep: str) -> list[str] | None:
    if any(p is None for p in parts):
        return None
    known = [p for p in parts if p is not None]
    if math.prod(len(p) for p in known) > _MAX_VALUES:
        return None
    return [sep.join(combo) for combo in itertools.product(*known)]


def _launch_argument(call: ast.Call, resolver: _Resolver,
                     scope: ast.FunctionDef | None) -> LaunchArgument | None:
    name = _const_str(call.args[0]) if call.args else _const_str(_kwarg(call, "name"))
    if name is None:
        return None
    default_node = _kwarg(call, "default_value")
    choices_node = _kwarg(call, "choices")
    choices: tuple[str, ...] | None = None
    if choices_node is not None:
        lists = resolver.as_literal(choices_node, scope, ast.List)
        if lists and isinstance(lists[0], ast.List):
            values = [_const_str(e) for e in lists[0].elts]
            if all(v is not None for v in values):
                choices = tuple(v for v in values if v is not None)
    description = _const_str(_kwarg(call, "description"))
    if description is None:
        texts = resolver.resolve(_kwarg(call, "description"), scope)
        description = texts[0] if texts else ""
    return LaunchArgument(name, _const_str(default_node), default_node is not None, choices,
                          description, call.lineno)


def _node_action(call: ast.Call, resolver: _Resolver, scope: ast.FunctionDef | None,
                 info: LaunchFile) -> NodeAction:
    def single(key: str) -> str | None:
        values = resolver.resolve(_kwarg(call, key), scope)
        return values[0] if values and len(values) == 1 else None

    params: list[ParamEntry] = []
    params_node = _kwarg(call, "parameters")
    if params_node is not None:
        lists = resolver.as_literal(params_node, scope, ast.List)
        if not lists:
            info.problems.append(f"line {call.lineno}: Node parameters must be a list literal")
        for literal in lists:
            assert isinstance(literal, ast.List)
            for element in literal.elts:
                params.append(_param_entry(element, resolver, scope))
    remappings: list[tuple[str, str]] = []
    remap_node = _kwarg(call, "remappings")
    if remap_node is not None:
        remappings += _remappings(remap_node, resolver, scope, info, call.lineno)
    return NodeAction(single("package"), single("executable"), single("name"),
                      _kwarg(call, "namespace") is not None, tuple(params), tuple(remappings),
                      call.lineno)


def _param_entry(element: ast.expr, resolver: _Resolver,
                 scope: ast.FunctionDef | None) -> ParamEntry:
    dicts = resolver.as_literal(element, scope, ast.Dict)
    if dicts:
        keys: list[str] = []
        values: dict[str, tuple[str, ...]] = {}
        for literal in dicts:
            assert isinstance(literal, ast.Dict)
            for key_node, value_node in zip(literal.keys, literal.values, strict=True):
                if key_node is None:  # **splat
                    inner = _param_entry(value_node, resolver, scope)
                    if inner.keys is None:
                        return ParamEntry(unresolved=ast.unparse(value_node))
                    keys += inner.keys
                    values.update(inner.values)
                    continue
                key = _const_str(key_node)
                if key is None:
                    return ParamEntry(unresolved=ast.unparse(key_node))
                keys.append(key)
                resolved = resolver.resolve(value_node, scope)
                if resolved is not None:
                    values[key] = tuple(resolved)
        return ParamEntry(keys=tuple(dict.fromkeys(keys)), values=values)
    files = resolver.resolve(element, scope)
    if files is None:
        return ParamEntry(unresolved=ast.unparse(element))
    return ParamEntry(files=tuple(files),
                      placeholders=resolver.is_replace_string(element, scope))


def _remappings(node: ast.AST, resolver: _Resolver, scope: ast.FunctionDef | None,
                info: LaunchFile, line: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    lists = resolver.as_literal(node, scope, ast.List)
    if not lists:
        info.problems.append(f"line {line}: Node remappings must be a list literal")
    for literal in lists:
        assert isinstance(literal, ast.List)
        for element in literal.elts:
            if isinstance(element, ast.Starred):
                out += _remappings(element.value, resolver, scope, info, line)
                continue
            pair = element if isinstance(element, ast.Tuple) else None
            texts = [_const_str(e) for e in pair.elts] if pair is not None else []
            if len(texts) != 2 or texts[0] is None or texts[1] is None:
                info.problems.append(f"line {line}: remapping {ast.unparse(element)} is not a "
                                     "pair of string literals")
                continue
            out.append((texts[0], texts[1]))
    return out


def _include_action(call: ast.Call, resolver: _Resolver,
                    scope: ast.FunctionDef | None) -> IncludeAction:
    source = call.args[0] if call.args else _kwarg(call, "launch_description_source")
    paths: list[str] | None = None
    if isinstance(source, ast.Call) and source.args:
        paths = resolver.resolve(source.args[0], scope)
    arguments: list[str] = []
    launch_arguments = _kwarg(call, "launch_arguments")
    if (isinstance(launch_arguments, ast.Call) and isinstance(launch_arguments.func,
                                                              ast.Attribute)):
        for literal in resolver.as_literal(launch_arguments.func.value, scope, ast.Dict):
            assert isinstance(literal, ast.Dict)
            arguments += [k for k in (_const_str(key) for key in literal.keys) if k]
    return IncludeAction(None if paths is None else tuple(paths), tuple(arguments),
                         call.lineno)


def _python_modules(call: ast.Call, resolver: _Resolver,
                    scope: ast.FunctionDef | None) -> list[tuple[str, int]]:
    cmd = _kwarg(call, "cmd")
    out: list[tuple[str, int]] = []
    for literal in resolver.as_literal(cmd, scope, ast.List) if cmd is not None else []:
        assert isinstance(literal, ast.List)
        texts = [_const_str(e) for e in literal.elts]
        for i, text in enumerate(texts[:-1]):
            module = texts[i + 1]
            if text == "-m" and module is not None:
                out.append((module, call.lineno))
    return out


# == params files ==============================================================================


def ros_parameters(path: Path, node_key: str = "/**") -> dict[str, Any]:
    """The flattened (dotted) ros__parameters under `node_key` of a ROS 2 params file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    section = data.get(node_key, {}) if isinstance(data, dict) else {}
    params = section.get("ros__parameters", {}) if isinstance(section, dict) else {}
    return flatten(params) if isinstance(params, dict) else {}


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, as rcl names nested parameters."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def nav2_sections(path: Path) -> dict[str, dict[str, Any]]:
    """{"amcl": {...}, "local_costmap/local_costmap": {...}} of a `/**:`-rooted Nav2 file."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    root = data.get("/**", {}) if isinstance(data, dict) else {}
    out: dict[str, dict[str, Any]] = {}

    def visit(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if not isinstance(value, dict):
                continue
            if "ros__parameters" in value:
                params = value["ros__parameters"]
                out[prefix + key] = flatten(params) if isinstance(params, dict) else {}
            else:
                visit(value, f"{prefix}{key}/")
    if isinstance(root, dict):
        visit(root, "")
    return out


def check_nav2_lifecycle(sections: Mapping[str, Mapping[str, Any]],
                         launched: Sequence[str], where: str) -> list[Finding]:
    """The lifecycle managers together manage exactly the Nav2 nodes the launch file starts,
    each once (a node missing there is never activated; an extra one blocks bring-up)."""
    out: list[Finding] = []
    managed: list[str] = []
    managers = [name for name in launched if name.startswith("lifecycle_manager")]
    for manager in managers:
        names = sections.get(manager, {}).get("node_names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            out.append(Finding("error", where, f"{manager}: node_names must be a list of "
                               "node names"))
            continue
        managed += names
    nodes = [name for name in launched if not name.startswith("lifecycle_manager")]
    for name in sorted({n for n in managed if managed.count(n) > 1}):
        out.append(Finding("error", where, f"{name} is in two lifecycle managers' node_names"))
    for name in sorted(set(nodes) - set(managed)):
        out.append(Finding("error", where, f"{name} is started but no lifecycle manager "
                           "manages it (it would never be activated)"))
    for name in sorted(set(managed) - set(nodes)):
        out.append(Finding("error", where, f"lifecycle node_names lists {name}, which the "
                           "launch file does not start (bring-up would wait for it)"))
    return out


# == the bridge ================================================================================


@dataclass(frozen=True)
class BridgeEntry:
    ros_topic: str
    gz_topic: str
    ros_type: str
    gz_type: str
    direction: str


def read_bridge_config(path: Path) -> tuple[list[BridgeEntry], list[Finding]]:
    """ros_gz_bridge's YAML, checked the way the bridge reads it, plus the known type pairs."""
    where = path.name
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        return [], [Finding("error", where, f"cannot read: {error}")]
    if not isinstance(data, list) or not data:
        return [], [Finding("error", where, "top level must be a non-empty YAML list")]
    entries: list[BridgeEntry] = []
    out: list[Finding] = []
    for index, item in enumerate(data):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            out.append(Finding("error", at, "entry must be a mapping"))
            continue
        unknown = set(item) - BRIDGE_KEYS
        if unknown:
            out.append(Finding("error", at, f"unknown keys {sorted(unknown)}"))
        topic, ros_topic, gz_topic = (str(item.get(k, "")) for k in
                                      ("topic_name", "ros_topic_name", "gz_topic_name"))
        if topic and (ros_topic or gz_topic):
            out.append(Finding("error", at, "topic_name excludes ros_topic_name/gz_topic_name"))
            continue
        ros_topic, gz_topic = (topic, topic) if topic else (ros_topic or gz_topic,
                                                            gz_topic or ros_topic)
        ros_type, gz_type = str(item.get("ros_type_name", "")), str(item.get("gz_type_name", ""))
        direction = str(item.get("direction", "BIDIRECTIONAL"))
        if not ros_topic or not ros_type or not gz_type:
            out.append(Finding("error", at, "needs a topic name, ros_type_name and "
                               "gz_type_name"))
            continue
        if direction not in BRIDGE_DIRECTIONS:
            out.append(Finding("error", at, f"direction {direction!r}: one of "
                               f"{list(BRIDGE_DIRECTIONS)}"))
            continue
        if (ros_type, gz_type) not in BRIDGE_TYPE_PAIRS:
            out.append(Finding("error", at, f"{ros_type} <-> {gz_type} is not a ros_gz_bridge "
                               "(Jazzy) type pair"))
        entries.append(BridgeEntry(ros_topic, gz_topic, ros_type, gz_type, direction))
    return entries, out


def expand_name(name: str, namespace: str) -> str:
    """A relative topic resolved in `namespace` ("/robot1"), as rcl and expand_gz_topic_names
    do; absolute names stay."""
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        raise ValueError(f"private names are not used in bridge configs: {name}")
    return f"{namespace.rstrip('/')}/{name}"


# == robot geometry across configs =============================================================


@dataclass(frozen=True)
class UrdfJoint:
    name: str
    parent: str
    child: str
    kind: str
    xyz: tuple[float, float, float]
    rpy: tuple[float, float, float]


def urdf_joints(urdf: str) -> dict[str, UrdfJoint]:
    root = ET.fromstring(urdf)
    out = {}
    for joint in root.findall("joint"):
        origin = joint.find("origin")
        xyz = _floats(origin.get("xyz") if origin is not None else None, 3)
        rpy = _floats(origin.get("rpy") if origin is not None else None, 3)
        parent, child = joint.find("parent"), joint.find("child")
        out[joint.get("name", "")] = UrdfJoint(
            joint.get("name", ""), parent.get("link", "") if parent is not None else "",
            child.get("link", "") if child is not None else "", joint.get("type", ""),
            (xyz[0], xyz[1], xyz[2]), (rpy[0], rpy[1], rpy[2]))
    return out


def urdf_footprint(urdf: str, base: str = "base_link") -> tuple[float, float, float, float]:
    """(x_min, y_min, x_max, y_max) of the box collisions of links fixed to `base`."""
    root = ET.fromstring(urdf)
    offsets = {j.child: j.xyz for j in urdf_joints(urdf).values()
               if j.parent == base and j.kind == "fixed"}
    offsets[base] = (0.0, 0.0, 0.0)
    xs: list[float] = []
    ys: list[float] = []
    for link in root.findall("link"):
        if link.get("name") not in offsets:
            continue
        ox, oy, _ = offsets[link.get("name", "")]
        for collision in link.findall("collision"):
            box = collision.find("geometry/box")
            origin = collision.find("origin")
            if box is None:
                continue
            sx, sy, _ = _floats(box.get("size"), 3)
            cx, cy, _ = _floats(origin.get("xyz") if origin is not None else None, 3)
            xs += [ox + cx - sx / 2, ox + cx + sx / 2]
            ys += [oy + cy - sy / 2, oy + cy + sy / 2]
    if not xs:
        raise ValueError("no box collision fixed to base_link")
    return min(xs), min(ys), max(xs), max(ys)


def urdf_wheel_radius(urdf: str, link: str) -> float:
    root = ET.fromstring(urdf)
    for element in root.findall("link"):
        if element.get("name") == link:
            cylinder = element.find("collision/geometry/cylinder")
            if cylinder is not None:
                return float(cylinder.get("radius", "nan"))
    raise ValueError(f"link {link!r} has no cylinder collision")


def polygon_bounds(flat: Sequence[float]) -> tuple[float, float, float, float]:
    xs, ys = list(flat[0::2]), list(flat[1::2])
    return min(xs), min(ys), max(xs), max(ys)


def parse_footprint(text: str) -> list[float]:
    """Nav2's footprint string "[[x, y], ...]" as a flat list."""
    points = yaml.safe_load(text)
    return [float(c) for point in points for c in point]


def agree(values: Mapping[str, float], tolerance: float = 1e-3) -> bool:
    numbers = list(values.values())
    return max(numbers) - min(numbers) <= tolerance


def disagreement(what: str, values: Mapping[str, float]) -> str:
    listed = ", ".join(f"{source} = {value:g}" for source, value in values.items())
    return f"{what} differs: {listed}"


def _floats(text: str | None, count: int) -> list[float]:
    values = [float(v) for v in (text or "").split()] or [0.0] * count
    if len(values) != count:
        raise ValueError(f"expected {count} numbers, got {text!r}")
    return values


def check_robot_geometry(urdf: str, safety: Mapping[str, Any], fleet_sim: Mapping[str, Any],
                         base_driver: Mapping[str, Any],
                         nav2: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
    """The robot's dimensions are written in several files; they must say the same.

    The URDF is the reference (it is what Gazebo simulates and robot_state_publisher
    broadcasts): lidar mount (safety.yaml laser_pose, fleet_sim.yaml lidar.mount_*), wheels
    (base_driver.yaml, the URDF's diff drive plugin, fleet_sim.yaml kinematics.wheel_base) and
    outline (safety.yaml footprint, Nav2's costmap footprints). Keys a file leaves out take the
    code's defaults (fleet_simulation.LidarConfig / KinematicsConfig)."""
    from delivery_robot.fleet_simulation import KinematicsConfig, LidarConfig

    out: list[Finding] = []
    joints = urdf_joints(urdf)
    lidar_defaults, kinematics_defaults = LidarConfig(), KinematicsConfig()

    def sim(key: str, default: float) -> float:
        return float(fleet_sim.get(key, default))

    laser = joints.get("laser_joint")
    if laser is None:
        out.append(Finding("error", "urdf", "no laser_joint (the lidar mount)"))
    else:
        pose = [float(v) for v in safety.get("laser_pose", [0.0, 0.0, 0.0])]
        for axis, urdf_value, safety_value, sim_key, sim_default in (
                ("x", laser.xyz[0], pose[0], "lidar.mount_x", lidar_defaults.mount_x),
                ("y", laser.xyz[1], pose[1], "lidar.mount_y", lidar_defaults.mount_y),
                ("yaw", laser.rpy[2], pose[2], "lidar.mount_yaw", lidar_defaults.mount_yaw)):
            values = {"urdf laser_joint": urdf_value, "safety.yaml laser_pose": safety_value,
                      f"fleet_sim.yaml {sim_key}": sim(sim_key, sim_default)}
            if not agree(values):
                out.append(Finding("error", "robot geometry", disagreement(
                    f"lidar mount {axis}", values)))
        heights = {"urdf laser_joint z": laser.xyz[2],
                   "fleet_sim.yaml lidar.mount_z": sim("lidar.mount_z", lidar_defaults.mount_z)}
        if not agree(heights):
            out.append(Finding("error", "robot geometry", disagreement("lidar height",
                                                                       heights)))
    left, right = joints.get("left_wheel_joint"), joints.get("right_wheel_joint")
    if left is None or right is None:
        out.append(Finding("error", "urdf", "no left_wheel_joint / right_wheel_joint"))
    else:
        plugin = _diff_drive(urdf)
        separation = {"urdf wheel joints": abs(left.xyz[1] - right.xyz[1]),
                      "urdf DiffDrive wheel_separation": plugin.get("wheel_separation",
                                                                    math.nan),
                      "base_driver.yaml track_width": float(base_driver.get("track_width",
                                                                            math.nan)),
                      "fleet_sim.yaml kinematics.wheel_base": sim(
                          "kinematics.wheel_base", kinematics_defaults.wheel_base)}
        if not agree(separation):
            out.append(Finding("error", "robot geometry", disagreement("wheel separation",
                                                                       separation)))
        radius = {"urdf left_wheel": urdf_wheel_radius(urdf, left.child),
                  "urdf right_wheel": urdf_wheel_radius(urdf, right.child),
                  "urdf DiffDrive wheel_radius": plugin.get("wheel_radius", math.nan),
                  "base_driver.yaml wheel_radius": float(base_driver.get("wheel_radius",
                                                                         math.nan))}
        if not agree(radius):
            out.append(Finding("error", "robot geometry", disagreement("wheel radius",
                                                                       radius)))
    outline = {"urdf body": urdf_footprint(urdf),
               "safety.yaml footprint": polygon_bounds(
                   [float(v) for v in safety.get("footprint", [0.0, 0.0])])}
    for costmap in ("local_costmap/local_costmap", "global_costmap/global_costmap"):
        text = nav2.get(costmap, {}).get("footprint")
        if isinstance(text, str):
            outline[f"nav2_params.yaml {costmap.split('/')[0]} footprint"] = polygon_bounds(
                parse_footprint(text))
    for index, side in enumerate(("x_min", "y_min", "x_max", "y_max")):
        values = {source: bounds[index] for source, bounds in outline.items()}
        if not agree(values):
            out.append(Finding("error", "robot geometry", disagreement(f"outline {side}",
                                                                       values)))
    return out


def _diff_drive(urdf: str) -> dict[str, float]:
    root = ET.fromstring(urdf)
    for plugin in root.iter("plugin"):
        if plugin.get("name") == "gz::sim::systems::DiffDrive":
            return {child.tag: float(child.text) for child in plugin
                    if child.tag in ("wheel_separation", "wheel_radius") and child.text}
    return {}
