"""Structured output: OpenAI's response_format as a llama.cpp grammar (GBNF) for one sequence.

``json_object`` is llama-cpp-python's JSON grammar with an object at the root.
``json_schema`` goes through llama-cpp-python's JSON-Schema-to-GBNF converter,
after a check that refuses what it would not enforce: a keyword the converter
ignores would give an answer that looks constrained and is not, so it is a 400
naming the keyword and where it is. Where the converter falls short, it is
extended here:

- numeric bounds (``minimum``/``maximum``) on integers and numbers, which it
  ignores: an integer (or a number's integer part) range of up to
  MAX_ENUMERATED values is spelled out; a lower bound of 0 or 1 alone is a
  sign and digit rule;
- ``pattern`` without ``^...$`` anchors, which it rejects: the pattern is
  anchored (the output then matches the whole string, which satisfies the
  schema's search semantics too);
- escaped punctuation in a pattern (``\\.``), which it copies into GBNF that
  llama.cpp cannot parse: written as a one-character class (``[.]``).

What llama.cpp still cannot parse is refused when the request is checked
against the model (api/generation.py), never decoded unconstrained.
"""

from __future__ import annotations

import json
import math
from typing import Any


class SchemaNotSupported(ValueError):
    """str() names the keyword and its place in the schema."""


MAX_ENUMERATED = 1000
STRING_FORMATS = ("date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5")
# Keywords whose meaning the grammar enforces (or that only annotate).
ENFORCED = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions", "minLength", "maxLength", "pattern",
    "format", "minimum", "maximum",
}
ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
               "readOnly", "writeOnly", "strict"}


def json_object_grammar() -> str:
    from llama_cpp.llama_grammar import JSON_GBNF

    return JSON_GBNF


def json_schema_grammar(schema: Any) -> str:
    """GBNF whose every sentence validates against SCHEMA; SchemaNotSupported otherwise."""
    if not isinstance(schema, dict):
        raise SchemaNotSupported("the schema must be a JSON object")
    _check(schema, "schema")
    from llama_cpp.llama_grammar import SchemaConverter

    converter = _converter_class(SchemaConverter)(prop_order={}, allow_fetch=False, dotall=False,
                                                  raw_pattern=False)
    try:
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "request")
        converter.visit(resolved, "")
    except (AssertionError, ValueError, KeyError, TypeError) as error:
        raise SchemaNotSupported(f"the schema cannot be turned into a grammar: {error}") from None
    return converter.format_grammar()


def _check(node: Any, where: str) -> None:
    if isinstance(node, bool):
        if node is False:
            raise SchemaNotSupported(f"'{where}' is false (nothing can match it)")
        return
    if not isinstance(node, dict):
        raise SchemaNotSupported(f"'{where}' must be a schema object")
    for keyword in node:
        if keyword not in ENFORCED and keyword not in ANNOTATIONS:
            raise SchemaNotSupported(f"the keyword '{keyword}' at '{where}' cannot be enforced by the grammar")
    if "pattern" in node and ("minLength" in node or "maxLength" in node):
        raise SchemaNotSupported(f"'pattern' together with minLength/maxLength at '{where}' cannot be enforced; "
                                 "put the length into the pattern")
    if "format" in node and node["format"] not in STRING_FORMATS:
        raise SchemaNotSupported(f"the string format {node['format']!r} at '{where}' cannot be enforced "
                                 f"(supported: {', '.join(STRING_FORMATS)})")
    if "minimum" in node or "maximum" in node:
        _number_rule(node, where)  # raises when the bounds are beyond what is spelled out
    if "additionalProperties" in node and node["additionalProperties"] not in (False, True) and "properties" in node:
        _check(node["additionalProperties"], f"{where}.additionalProperties")
    for name, child in (node.get("properties") or {}).items():
        _check(child, f"{where}.properties.{name}")
    for keyword in ("$defs", "definitions"):
        for name, child in (node.get(keyword) or {}).items():
            _check(child, f"{where}.{keyword}.{name}")
    for keyword in ("anyOf", "oneOf", "prefixItems"):
        for index, child in enumerate(node.get(keyword) or []):
            _check(child, f"{where}.{keyword}[{index}]")
    if isinstance(node.get("items"), dict):
        _check(node["items"], f"{where}.items")
    ref = node.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        raise SchemaNotSupported(f"only local references ('#/...') are supported; '{where}.$ref' is {ref!r}")


def _number_rule(node: dict[str, Any], where: str) -> str:
    """GBNF (without trailing space) for an integer or number between the node's bounds."""
    kind = node.get("type")
    low, high = node.get("minimum"), node.get("maximum")
    if kind not in ("integer", "number"):
        raise SchemaNotSupported(f"minimum/maximum at '{where}' need \"type\": \"integer\" or \"number\"")
    for bound in (low, high):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
            raise SchemaNotSupported(f"minimum/maximum at '{where}' must be numbers")
    fraction = '("." [0-9]{1,15})?' if kind == "number" else ""
    if low is not None and high is not None:
        first, last = math.ceil(low), math.floor(high)
        if kind == "number" and (first != low or last != high):
            raise SchemaNotSupported(f"number bounds at '{where}' must be whole numbers to be enforced")
        if last < first:
            raise SchemaNotSupported(f"minimum is above maximum at '{where}'")
        if last - first + 1 > MAX_ENUMERATED:
            raise SchemaNotSupported(f"a range of more than {MAX_ENUMERATED} whole values at '{where}' cannot be "
                                     "enforced")
        inner = [f'"{value}"' for value in range(first, last)] if kind == "number" else []
        if kind == "number":
            # The top value takes no fraction but zeros; below it any fraction stays in range.
            below = f"({' | '.join(inner)}) {fraction}" if inner else None
            top = f'"{last}" ("." "0"{{1,15}})?'
            return " | ".join(part for part in (below, top) if part)
        return " | ".join(f'"{value}"' for value in range(first, last + 1))
    if high is None and low in (0, 1):
        digits = '("0" | [1-9] [0-9]{0,15})' if low == 0 else '[1-9] [0-9]{0,15}'
        if low == 1 and kind == "number":
            raise SchemaNotSupported(f"a number with only minimum 1 at '{where}' cannot be enforced")
        return f"{digits} {fraction}".strip()
    raise SchemaNotSupported(f"numeric bounds at '{where}' are enforced for a minimum and a maximum together "
                             "(whole numbers), or a minimum of 0 or 1 alone")


def _converter_class(base):
    class BoundedConverter(base):
        """llama-cpp-python's converter, with numeric bounds enforced (see the module's docstring)."""

        def visit(self, schema, name):
            if isinstance(schema, dict) and ("minimum" in schema or "maximum" in schema) and "$ref" not in schema:
                rule_name = name + "-" if name in _reserved_names() else name or "root"
                return self._add_rule(rule_name, f"({_number_rule(schema, name or 'schema')}) space")
            if isinstance(schema, dict) and isinstance(schema.get("pattern"), str):
                pattern = _escapes_as_classes(schema["pattern"])
                if not (pattern.startswith("^") and pattern.endswith("$")):
                    pattern = f"^({pattern.removeprefix('^').removesuffix('$')})$"
                schema = {**schema, "pattern": pattern}
            return super().visit(schema, name)

    return BoundedConverter


_CLASSABLE = set(".-+*?(){}|/$")


def _escapes_as_classes(pattern: str) -> str:
    """``\\.`` -> ``[.]`` outside brackets: the converter copies such escapes into GBNF literals, where
    llama.cpp's parser rejects them."""
    out, index, in_class = [], 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            following = pattern[index + 1]
            out.append(f"[{following}]" if not in_class and following in _CLASSABLE else char + following)
            index += 2
            continue
        if char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        out.append(char)
        index += 1
    return "".join(out)


def _reserved_names():
    from llama_cpp.llama_grammar import RESERVED_NAMES

    return RESERVED_NAMES
