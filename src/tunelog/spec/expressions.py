"""A small whitelist evaluator for spec expressions (rules, constraints, derived params).

Python's parser reads the text into a syntax tree; only the node kinds listed here
are accepted, and the tree is walked by this module. Nothing is ever passed to
`eval`/`exec`: no attribute access beyond dotted names, no subscripts, no
comprehensions, no calls but the few math functions below.

    expr = parse("train.learning_rate > 1.2e-4 and train.optimizer == 'adamw8bit'")
    expr.names                      # {'train.learning_rate', 'train.optimizer'}
    expr.evaluate({"train.learning_rate": 2e-4, "train.optimizer": "adamw8bit"})  # True

A spec may come from a stranger, so size is bounded as well as syntax: the text (MAX_CHARS),
the tree's depth and size (MAX_DEPTH, MAX_NODES, checked without recursion before anything recurses), every
string or list a step builds (MAX_SEQUENCE items, checked before it is built), and every
integer (MAX_INT_BITS, checked before a power is computed). An accepted expression
therefore evaluates in well under 10 ms.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any


class ExpressionError(ValueError):
    """A syntax, name or type problem; the caller adds which rule it was."""


MAX_CHARS = 10_000  # a rule is a line or two; this is a hundred times that
MAX_DEPTH = 100  # nesting of the syntax tree (a 5,000-term sum is 5,000 deep)
MAX_NODES = 2_000  # parts of the syntax tree: bounds the time one evaluation takes
MAX_SEQUENCE = 10_000  # items in a string or list any step may produce
MAX_INT_BITS = 4_096  # an integer result (2 ** 4096 is far past any float)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
    "ceil": math.ceil,
    "floor": math.floor,
}
CONSTANTS = {
    "true": True,
    "false": False,
    "True": True,
    "False": False,
    "none": None,
    "None": None,
    "pi": math.pi,
    "e": math.e,
}

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def dotted_name(node: ast.AST) -> str | None:
    """`lora.r` arrives as Attribute(Name('lora'), 'r'): read it back as one dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


@dataclass(frozen=True)
class Expression:
    text: str
    tree: ast.AST = field(repr=False, compare=False)
    names: frozenset[str] = frozenset()

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        missing = sorted(n for n in self.names if n not in env)
        if missing:
            raise ExpressionError(
                f"unknown name(s) {', '.join(missing)} in {self.text!r}; known: {', '.join(sorted(env)) or 'none'}"
            )
        try:
            return _Evaluator(env).visit(self.tree)
        except ExpressionError:
            raise
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise ExpressionError(f"cannot evaluate {self.text!r}: {exc}") from None


@lru_cache(maxsize=4096)
def parse(text: str) -> Expression:
    """Parse and check against the whitelist; raises ExpressionError with what is wrong.

    Cached: sweeps check the same rules on every trial, and an Expression is never mutated.
    """
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"expected an expression string, got {text!r}")
    if len(text) > MAX_CHARS:
        raise ExpressionError(
            f"expression of {len(text):,} characters refused; accepted: at most {MAX_CHARS:,} ({_short(text)})"
        )
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error in {_short(text)!r}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(
            f"expression nested more than {MAX_DEPTH} deep refused ({_short(text)}); split it into derived params"
        ) from None
    _check_depth(tree, text)
    names: set[str] = set()
    _check(tree, names, text)
    return Expression(text=text.strip(), tree=tree, names=frozenset(names))


def _short(text: str, limit: int = 80) -> str:
    """An expression as an error message quotes it: whole when short, its start when not."""
    text = text.strip()
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} chars)"


def _check_depth(tree: ast.AST, text: str) -> None:
    """Refuse trees deeper than MAX_DEPTH or larger than MAX_NODES, walking with a stack: recursion is
    what depth would break."""
    stack, seen = [(tree, 1)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ExpressionError(
                f"expression of more than {MAX_NODES:,} parts refused ({_short(text)}); split it into derived params"
            )
        if depth > MAX_DEPTH:
            raise ExpressionError(
                f"expression nested more than {MAX_DEPTH} deep refused ({_short(text)}); split it into derived params"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check(node: ast.AST, names: set[str], text: str) -> None:
    """Walk the tree once: refuse every node kind not in the whitelist, collect the names used."""
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = dotted_name(node)
        if name is None:
            raise ExpressionError(f"only plain dotted names are allowed in {text!r}")
        if name not in CONSTANTS:
            names.add(name)
        return
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float, str, bool, type(None))):
            raise ExpressionError(f"unsupported literal {node.value!r} in {text!r}")
        return
    if isinstance(node, ast.Call):
        fname = node.func.id if isinstance(node.func, ast.Name) else None
        if fname not in FUNCTIONS or node.keywords:
            raise ExpressionError(f"unknown function in {text!r}; accepted: {', '.join(sorted(FUNCTIONS))}")
        for arg in node.args:
            _check(arg, names, text)
        return
    allowed = (
        ast.BinOp,
        ast.UnaryOp,
        ast.BoolOp,
        ast.Compare,
        ast.IfExp,
        ast.List,
        ast.Tuple,
        ast.Set,
        ast.operator,
        ast.unaryop,
        ast.boolop,
        ast.cmpop,
        ast.Load,
    )
    if not isinstance(node, allowed) or (isinstance(node, ast.operator) and type(node) not in _BINARY):
        raise ExpressionError(
            f"{type(node).__name__} is not allowed in {text!r}; accepted: numbers, strings, "
            f"names, arithmetic, comparisons, and/or/not, in, if-else, "
            f"{', '.join(sorted(FUNCTIONS))}"
        )
    for child in ast.iter_child_nodes(node):
        _check(child, names, text)


class _Evaluator:
    def __init__(self, env: Mapping[str, Any]):
        self.env = env

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = dotted_name(node)
            return CONSTANTS[name] if name in CONSTANTS else self.env[name]
        if isinstance(node, ast.BinOp):
            left, right = self.visit(node.left), self.visit(node.right)
            _guard(node.op, left, right)
            return _bounded(_BINARY[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self.visit(node.operand))
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(self.visit(v) for v in node.values)
            return any(self.visit(v) for v in node.values)
        if isinstance(node, ast.Compare):
            left = self.visit(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = self.visit(comp)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return [self.visit(e) for e in node.elts]
        if isinstance(node, ast.Call):
            return _bounded(FUNCTIONS[node.func.id](*(self.visit(a) for a in node.args)))  # type: ignore[attr-defined]
        raise ExpressionError(f"{type(node).__name__} is not allowed")  # unreachable after _check


def _guard(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse, before computing it, a step whose result would be huge or whose meaning is not arithmetic."""
    if isinstance(op, ast.Mult):
        seq, count = (left, right) if isinstance(left, (str, list)) else (right, left)
        if isinstance(seq, (str, list)) and isinstance(count, int) and len(seq) * max(count, 0) > MAX_SEQUENCE:
            raise ExpressionError(
                f"repetition of {len(seq):,} items x {count:,} refused; accepted: a result of at "
                f"most {MAX_SEQUENCE:,} items"
            )
    elif isinstance(op, ast.Mod) and isinstance(left, str):
        raise ExpressionError("string formatting with % is not allowed; accepted: % between numbers")
    elif isinstance(op, ast.Pow) and isinstance(right, (int, float)) and not isinstance(right, bool):
        if abs(right) > 1000:
            raise ExpressionError("exponent above 1000 refused")  # 9 ** 10 ** 9 would hang
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and abs(left).bit_length() * right > MAX_INT_BITS
        ):
            raise ExpressionError(f"power with a result over {MAX_INT_BITS} bits refused")


def _bounded(value: Any) -> Any:
    """Refuse a result too large to keep computing with (a long concatenation, a huge integer)."""
    if isinstance(value, (str, list)) and len(value) > MAX_SEQUENCE:
        raise ExpressionError(f"a result of {len(value):,} items refused; accepted: at most {MAX_SEQUENCE:,}")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError(f"an integer over {MAX_INT_BITS} bits refused")
    return value
