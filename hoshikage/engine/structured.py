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

A schema is a client's program for the grammar engine, so its cost is bounded
before anything is built (issue 21): it must be a valid JSON Schema (the
2020-12 meta-schema), and the LIMITS below cap what makes a grammar large
(repetition counts, enums, properties, branches, nesting) and the grammar text
itself. llama.cpp's grammar parser expands a repetition ``{0,N}`` into N nested
rules and walks them recursively: ``maxItems: 30000`` overflowed the stack and
killed the daemon; an enum of thousands of values made one sampling step take
minutes. Each limit is a 400 ``unsupported_schema`` naming the keyword, the
place and the limit. Conversion runs on a worker thread (api/generation.py).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any


class SchemaNotSupported(ValueError):
    """str() names the keyword and its place in the schema."""


MAX_ENUMERATED = 1000
# The bounds on a schema's cost (documented in the README's reliability section).
MAX_REPETITION = 1000  # minItems/maxItems, minLength/maxLength and a pattern's {n,m}
MAX_ENUM_VALUES = 256  # values of one enum
MAX_PROPERTIES = 128  # properties of one object
MAX_BRANCHES = 64  # anyOf/oneOf alternatives, prefixItems
MAX_NESTING = 24  # schema levels
MAX_SUBSCHEMAS = 2000  # schemas in the whole document
MAX_ALTERNATIVES = 2048  # enum values and branches in the whole document (what one sampling step may weigh)
MAX_GRAMMAR_BYTES = 256 * 1024  # the GBNF text made from it
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
    """GBNF whose every sentence validates against SCHEMA; SchemaNotSupported otherwise. Blocks: call it on a
    worker thread."""
    if not isinstance(schema, dict):
        raise SchemaNotSupported("the schema must be a JSON object")
    _check_meta_schema(schema)
    _check_cost(schema)
    _check(schema, "schema")
    from llama_cpp.llama_grammar import SchemaConverter

    converter = _converter_class(SchemaConverter)(prop_order={}, allow_fetch=False, dotall=False,
                                                  raw_pattern=False)
    try:
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "request")
        converter.visit(resolved, "")
        grammar = converter.format_grammar()
    except RecursionError:
        raise SchemaNotSupported("the schema nests too deeply to be turned into a grammar") from None
    except Exception as error:  # noqa: BLE001 - the converter's every failure is the schema's, never a 500
        raise SchemaNotSupported(f"the schema cannot be turned into a grammar: {error}") from None
    if len(grammar) > MAX_GRAMMAR_BYTES:
        raise SchemaNotSupported(f"the grammar made from the schema would be {len(grammar)} bytes, more than the "
                                 f"limit of {MAX_GRAMMAR_BYTES}; simplify the schema")
    return grammar


def _check_meta_schema(schema: dict[str, Any]) -> None:
    """A 400 for what is not a JSON Schema at all (`properties: "x"`, `anyOf: 5`, `pattern: 5`)."""
    import jsonschema

    # The draft the schema names ($schema), else 2020-12 (what OpenAI and pydantic write). The check walks the
    # document recursively; the body reader already capped its nesting.
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "schema" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.path)
        raise SchemaNotSupported(f"'{where}' is not valid JSON Schema: {error.message}") from None
    except RecursionError:
        raise SchemaNotSupported("the schema nests too deeply") from None


_REPEATED = ("minItems", "maxItems", "minLength", "maxLength")
_QUANTIFIER = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def _check_cost(schema: dict[str, Any]) -> None:
    """Refuse, before any grammar is built, a schema whose grammar would be too large or too slow."""
    subschemas = alternatives = 0
    stack: list[tuple[Any, str, int]] = [(schema, "schema", 1)]
    while stack:
        node, where, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        subschemas += 1
        if subschemas > MAX_SUBSCHEMAS:
            raise SchemaNotSupported(f"the schema has more than {MAX_SUBSCHEMAS} subschemas (limit)")
        if depth > MAX_NESTING:
            raise SchemaNotSupported(f"'{where}' nests schemas more than {MAX_NESTING} levels deep (limit)")
        for keyword in _REPEATED:
            value = node.get(keyword)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_REPETITION:
                raise SchemaNotSupported(f"'{keyword}' at '{where}' is {value:g}; the limit is {MAX_REPETITION}")
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            for low, high in _QUANTIFIER.findall(pattern):
                if max(int(low), int(high or 0)) > MAX_REPETITION:
                    raise SchemaNotSupported(f"a repetition in 'pattern' at '{where}' exceeds the limit of "
                                             f"{MAX_REPETITION}")
        if isinstance(node.get("enum"), list):
            if len(node["enum"]) > MAX_ENUM_VALUES:
                raise SchemaNotSupported(f"'enum' at '{where}' has {len(node['enum'])} values; the limit is "
                                         f"{MAX_ENUM_VALUES}")
            alternatives += len(node["enum"])
        if isinstance(node.get("properties"), dict) and len(node["properties"]) > MAX_PROPERTIES:
            raise SchemaNotSupported(f"'properties' at '{where}' has {len(node['properties'])} entries; the limit "
                                     f"is {MAX_PROPERTIES}")
        for keyword in ("anyOf", "oneOf", "prefixItems"):
            if isinstance(node.get(keyword), list):
                if len(node[keyword]) > MAX_BRANCHES:
                    raise SchemaNotSupported(f"'{keyword}' at '{where}' has {len(node[keyword])} entries; the "
                                             f"limit is {MAX_BRANCHES}")
                alternatives += len(node[keyword])
                stack.extend((child, f"{where}.{keyword}[{index}]", depth + 1)
                             for index, child in enumerate(node[keyword]))
        if alternatives > MAX_ALTERNATIVES:
            raise SchemaNotSupported(f"the schema has more than {MAX_ALTERNATIVES} enum values and branches in all "
                                     "(limit)")
        for keyword in ("properties", "$defs", "definitions"):
            if isinstance(node.get(keyword), dict):
                stack.extend((child, f"{where}.{keyword}.{name}", depth + 1)
                             for name, child in node[keyword].items())
        for keyword in ("items", "additionalProperties"):
            if isinstance(node.get(keyword), dict):
                stack.append((node[keyword], f"{where}.{keyword}", depth + 1))


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
