"""A small whitelist evaluator for spec expressions (rules, constraints, derived params).

Python's parser reads the text into a syntax tree; only the node kinds listed here
are accepted, and the tree is walked by this module. Nothing is ever passed to
`eval`/`exec`: no attribute access beyond dotted names, no subscripts, no
comprehensions, no calls but the few math functions below.

    expr = parse("train.learning_rate > 1.2e-4 and train.optimizer == 'adamw8bit'")
    expr.names                      # {'train.learning_rate', 'train.optimizer'}
    expr.evaluate({"train.learning_rate": 2e-4, "train.optimizer": "adamw8bit"})  # True
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping


class ExpressionError(ValueError):
    """A syntax, name or type problem; the caller adds which rule it was."""


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "log": math.log, "log2": math.log2, "log10": math.log10, "exp": math.exp, "sqrt": math.sqrt,
    "min": min, "max": max, "abs": abs, "round": round, "ceil": math.ceil, "floor": math.floor,
}
CONSTANTS = {"true": True, "false": False, "True": True, "False": False, "none": None, "None": None,
             "pi": math.pi, "e": math.e}

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne,
            ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}


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
            raise ExpressionError(f"unknown name(s) {', '.join(missing)} in {self.text!r}; "
                                  f"known: {', '.join(sorted(env)) or 'none'}")
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
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error in {text!r}: {exc.msg}") from None
    names: set[str] = set()
    _check(tree, names, text)
    return Expression(text=text.strip(), tree=tree, names=frozenset(names))


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
    allowed = (ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.List, ast.Tuple, ast.Set,
               ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Load)
    if not isinstance(node, allowed) or (isinstance(node, ast.operator) and type(node) not in _BINARY):
        raise ExpressionError(f"{type(node).__name__} is not allowed in {text!r}; accepted: numbers, strings, "
                              f"names, arithmetic, comparisons, and/or/not, in, if-else, "
                              f"{', '.join(sorted(FUNCTIONS))}")
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
            if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 1000:
                raise ExpressionError("exponent above 1000 refused")  # 9 ** 10 ** 9 would hang
            return _BINARY[type(node.op)](left, right)
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
            return FUNCTIONS[node.func.id](*(self.visit(a) for a in node.args))  # type: ignore[attr-defined]
        raise ExpressionError(f"{type(node).__name__} is not allowed")  # unreachable after _check
