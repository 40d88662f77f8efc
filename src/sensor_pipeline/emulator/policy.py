"""IAM policy evaluation as AWS documents it, for the emulator's enforcement (pure: no moto here).

AWS's logic for one account ("Policy evaluation logic", IAM User Guide,
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
an explicit ``Deny`` in any applicable statement wins; otherwise an ``Allow`` that applies permits;
otherwise the request is implicitly denied. A statement applies when its ``Action``/``NotAction``,
``Resource``/``NotResource`` and every ``Condition`` match the request. Values match with the
``*``/``?`` wildcards; actions case-insensitively. A condition whose key is absent from the request
does not hold, except for negated operators, ``...IfExists`` and ``Null``
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html).

What is not modelled, and so cannot be proven here: permissions boundaries, session policies, SCPs,
cross-account access, policy variables (``${aws:username}``), numeric/date/IP operators (an Allow
using one grants nothing, a Deny using one applies: never more permissive than AWS).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Context = Mapping[str, str | list[str]]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: which statement decided (its Sid or index), or why nothing allowed
    reason: str


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    # fnmatch would read [...] as a class; IAM has only * and ?.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def action_matches(pattern: str, action: str) -> bool:
    return _glob(pattern, action, ignore_case=True)


def _string_op(name: str) -> tuple[Any, bool] | None:
    """(compare(expected, actual) -> bool, negated) of a condition operator, or None if unknown."""
    ops: dict[str, Any] = {
        "StringEquals": lambda e, a: e == a,
        "StringEqualsIgnoreCase": lambda e, a: e.lower() == a.lower(),
        "StringLike": _glob,
        "ArnEquals": lambda e, a: e == a,
        "ArnLike": _glob,
        "Bool": lambda e, a: e.lower() == a.lower(),
    }
    negated = {
        "StringNotEquals": "StringEquals",
        "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
        "StringNotLike": "StringLike",
        "ArnNotEquals": "ArnEquals",
        "ArnNotLike": "ArnLike",
    }
    if name in ops:
        return ops[name], False
    if name in negated:
        return ops[negated[name]], True
    return None


class UnknownOperator(Exception):
    """A condition operator this evaluator does not model (numeric, date, IP, binary)."""


def condition_holds(condition: Mapping[str, Mapping[str, Any]], context: Context) -> bool:
    """Every operator block, every key in it, must hold (AND); the values of one key are OR'ed.

    Raises :class:`UnknownOperator` for an operator it cannot evaluate: the caller decides (an Allow
    then grants nothing, a Deny applies: never more permissive than AWS).
    """
    lowered = {k.lower(): v for k, v in context.items()}
    for raw_operator, tests in condition.items():
        operator, if_exists = raw_operator, raw_operator.endswith("IfExists")
        operator = operator.removesuffix("IfExists")
        quantifier = ""
        if ":" in operator:  # ForAnyValue:StringLike, ForAllValues:...
            quantifier, operator = operator.split(":", 1)
        for key, expected_raw in tests.items():
            expected = [str(v) for v in _as_list(expected_raw)]
            present = key.lower() in lowered
            actual = [str(v) for v in _as_list(lowered.get(key.lower()))]
            if operator == "Null":
                if (not present) != (expected[0].lower() == "true"):
                    return False
                continue
            op = _string_op(operator)
            if op is None:
                raise UnknownOperator(raw_operator)
            compare, negated = op

            if not present:
                if if_exists or negated or quantifier == "ForAllValues":
                    continue
                return False
            # A negated operator holds for a value that matches none of the expected ones.
            holding = [any(compare(e, a) for e in expected) != negated for a in actual]
            # ForAllValues: every value; single-valued keys and ForAnyValue: some value.
            if not (all(holding) if quantifier == "ForAllValues" else any(holding)):
                return False
    return True


def _statement_matches(statement: Mapping[str, Any], action: str, resource: str, context: Context) -> bool:
    if "NotAction" in statement:
        if any(action_matches(p, action) for p in _as_list(statement["NotAction"])):
            return False
    elif not any(action_matches(p, action) for p in _as_list(statement.get("Action"))):
        return False
    if "NotResource" in statement:
        if any(_glob(p, resource) for p in _as_list(statement["NotResource"])):
            return False
    elif "Resource" in statement and not any(_glob(p, resource) for p in _as_list(statement["Resource"])):
        return False
    try:
        return condition_holds(statement.get("Condition") or {}, context)
    except UnknownOperator:
        return str(statement.get("Effect", "")).lower() == "deny"  # never more permissive than AWS


def statements(documents: Iterable[str | Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """(label, statement) of every statement of identity-based policy documents (JSON text or parsed)."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for number, document in enumerate(documents):
        parsed = json.loads(document) if isinstance(document, str) else document
        for index, statement in enumerate(_as_list(parsed.get("Statement"))):
            found.append((str(statement.get("Sid") or f"policy {number} statement {index}"), statement))
    return found


def evaluate(
    documents: Iterable[str | Mapping[str, Any]], action: str, resource: str, context: Context | None = None
) -> Decision:
    """Whether identity-based ``documents`` allow ``action`` on ``resource`` in ``context``."""
    allowed_by = ""
    for label, statement in statements(documents):
        if not _statement_matches(statement, action, resource, context or {}):
            continue
        if str(statement.get("Effect", "")).lower() == "deny":
            return Decision(False, f"explicitly denied by statement {label!r}")
        allowed_by = allowed_by or label
    if allowed_by:
        return Decision(True, f"allowed by statement {allowed_by!r}")
    return Decision(False, "no identity-based policy allows it")


def principal_matches(statement: Mapping[str, Any], principal: Mapping[str, str]) -> bool:
    """A resource or trust policy statement's ``Principal`` against {"AWS": arn} / {"Service": name}."""
    declared = statement.get("Principal")
    if declared == "*":
        return True
    if not isinstance(declared, Mapping):
        return False
    for kind, value in principal.items():
        if any(p == "*" or fnmatch.fnmatchcase(value, p) for p in _as_list(declared.get(kind))):
            return True
    return False


def evaluate_resource_policy(
    document: str | Mapping[str, Any], principal: Mapping[str, str], action: str, resource: str, context: Context
) -> Decision:
    """A trust policy or key policy: statements apply only to the principals they name."""
    parsed = json.loads(document) if isinstance(document, str) else document
    applicable = [s for s in _as_list(parsed.get("Statement")) if principal_matches(s, principal)]
    return evaluate([{"Statement": applicable}], action, resource, context)
