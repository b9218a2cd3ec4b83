"""Checks for regular expressions that come from flow documents (Router rules, OutputParser patterns).

Python's `re` has no timeout, so a pattern with a repeat nested inside an unbounded repeat (`(a+)+`,
`(\\w*)*`) can backtrack for longer than any run deadline on a short hostile input. Such patterns are
refused at validation time; callers also bound the length of the text they match.

>>> [p.code for p in regex_problems("(a+)+$", "/p")]
['unsafe_regex']
>>> regex_problems(r"\\b(refund|invoice)s?\\b", "/p")
[]
"""

from __future__ import annotations

import importlib
import re
import warnings
from typing import Any

from cluster.errors import Problem

MAX_PATTERN_CHARS = 1000
# A bounded repeat allowing more than this many iterations is treated like an unbounded one.
_MANY = 16

# The regex parser is private; only its parse tree shape is used, and only to refuse patterns.
_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")
_BACKTRACKING_REPEATS = frozenset({_constants.MAX_REPEAT, _constants.MIN_REPEAT})


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-patterns of one parse-tree node."""
    if op is _constants.SUBPATTERN:
        return [av[3]]
    if op is _constants.BRANCH:
        return list(av[1])
    if op in (_constants.ASSERT, _constants.ASSERT_NOT):
        return [av[1]]
    if op is _constants.ATOMIC_GROUP:
        return [av]
    if op is _constants.GROUPREF_EXISTS:
        return [p for p in av[1:] if p is not None]
    return []


def _nested_repeat(items: Any, inside: bool) -> bool:
    """True if an unbounded repeat occurs inside a repeat that may run many times."""
    for op, av in items:
        if op in _BACKTRACKING_REPEATS or op is _constants.POSSESSIVE_REPEAT:
            _low, high, body = av
            unbounded = high is _constants.MAXREPEAT or high == _constants.MAXREPEAT
            if inside and unbounded and op in _BACKTRACKING_REPEATS:
                return True
            # A possessive repeat never gives back what it matched, so it cannot multiply backtracking.
            many = op in _BACKTRACKING_REPEATS and (unbounded or high > _MANY)
            if _nested_repeat(body, inside or many):
                return True
        else:
            for child in _children(op, av):
                if _nested_repeat(child, inside):
                    return True
    return False


def regex_problems(pattern: str, path: str, *, flags: int = 0) -> list[Problem]:
    """Problems with a pattern from a flow: too long, not a valid regex, or prone to runaway backtracking."""
    if len(pattern) > MAX_PATTERN_CHARS:
        message = f"pattern has {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}"
        return [Problem(path, "too_long", message)]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            re.compile(pattern, flags)
            tree = _parser.parse(pattern, flags)  # not cached by `re`, so it warns every time
    except (re.error, RecursionError, OverflowError) as e:
        return [Problem(path, "invalid_regex", f"invalid regular expression: {e}")]
    if caught:
        # e.g. "Possible nested set": valid today, but its meaning may change in a later Python.
        message = f"ambiguous regular expression: {caught[0].message}; escape the character"
        return [Problem(path, "invalid_regex", message)]
    if _nested_repeat(tree, False):
        message = (
            "a repeat nested inside an unbounded repeat (like (a+)+) can backtrack without end; "
            "simplify the pattern or make the inner repeat possessive (a++)"
        )
        return [Problem(path, "unsafe_regex", message)]
    return []
