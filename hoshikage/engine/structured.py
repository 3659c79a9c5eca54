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
  llama.cpp cannot parse: written as a one-character class (``[.]``);
- a list of types (``["string", "null"]``), for which it keeps only the types
  and drops every other keyword (``maxLength`` ...): the schema is rewritten as
  ``anyOf`` one branch per type, each with the keywords that apply to it; and
  keywords beside ``anyOf``/``oneOf``, which it drops too: they move into each
  branch;
- keywords whose value asks for nothing (``uniqueItems: false``,
  ``minItems: 0``, ``minProperties: 0`` ...) are dropped before anything else
  looks at the schema, so a schema that states its defaults is accepted.

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
# One character of a JSON string: anything but a quote, a backslash or a control character, or an escape.
JSON_STRING_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
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
    schema = _normalised(schema)
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


# Keywords that constrain only instances of one type (JSON Schema's "type-specific" keywords).
_KEYWORDS_OF_TYPE = {
    "string": {"minLength", "maxLength", "pattern", "format"},
    "integer": {"minimum", "maximum"},
    "number": {"minimum", "maximum"},
    "array": {"items", "prefixItems", "minItems", "maxItems"},
    "object": {"properties", "required", "additionalProperties"},
}
_TYPED_KEYWORDS = set().union(*_KEYWORDS_OF_TYPE.values())
# Values that constrain nothing: the keyword's default, dropped so that a schema stating it is accepted.
# additionalProperties: true is one too: the converter would build it wrong (any extra value an object, and
# one extra required after the last listed property), and without it the output has the listed properties only,
# which the schema allows.
_NO_OP_VALUES = {"uniqueItems": False, "minItems": 0, "minLength": 0, "minProperties": 0, "minContains": 1,
                 "additionalProperties": True, "unevaluatedProperties": True, "unevaluatedItems": True,
                 "required": [], "dependentRequired": {}, "dependentSchemas": {}, "patternProperties": {}}
# Keywords beside a union that may move into its branches: they hold no subschema, so copying them into every
# branch costs a few bytes each, never a copy of a subtree (which would grow the grammar exponentially).
_MOVABLE = {"type", "minLength", "maxLength", "pattern", "format", "minimum", "maximum", "minItems", "maxItems",
            "required"}
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_ONES = ("items", "additionalProperties")


def _normalised(node: Any) -> Any:
    """NODE rewritten into what the converter enforces exactly: no-op keywords dropped, a type list split into
    one anyOf branch per type, keywords beside anyOf/oneOf moved into the branches (recursively)."""
    if not isinstance(node, dict):
        return node
    node = {keyword: value for keyword, value in node.items()
            if not (keyword in _NO_OP_VALUES and value == _NO_OP_VALUES[keyword]
                    and type(value) is type(_NO_OP_VALUES[keyword]))}
    for keyword in _SUBSCHEMA_MAPS:
        if isinstance(node.get(keyword), dict):
            node[keyword] = {name: _normalised(child) for name, child in node[keyword].items()}
    for keyword in _SUBSCHEMA_LISTS:
        if isinstance(node.get(keyword), list):
            node[keyword] = [_normalised(child) for child in node[keyword]]
    for keyword in _SUBSCHEMA_ONES:
        if isinstance(node.get(keyword), dict):
            node[keyword] = _normalised(node[keyword])
    types = node.get("type")
    if isinstance(types, list) and "$ref" not in node:
        if len(types) == 1:
            node["type"] = types[0]
        elif not {"enum", "const", "anyOf", "oneOf"} & set(node):  # an enum says all; a union: _check refuses
            return _split_types(node, types)
    if "$ref" not in node:
        return _branches_take_siblings(node)
    return node


def _split_types(node: dict[str, Any], types: list[str]) -> dict[str, Any]:
    """{"type": [A, B], ...} as {"anyOf": [{"type": A, A's keywords}, {"type": B, B's keywords}]}. Each keyword
    goes to the one type it constrains (minimum/maximum to integer and number): nothing is copied twice."""
    shared = {keyword: value for keyword, value in node.items()
              if keyword not in _TYPED_KEYWORDS and keyword != "type"}
    branches = [{"type": kind, **{keyword: value for keyword, value in node.items()
                                  if keyword in _KEYWORDS_OF_TYPE.get(kind, ())}} for kind in types]
    return {**shared, "anyOf": branches}


def _branches_take_siblings(node: dict[str, Any]) -> dict[str, Any]:
    """Keywords beside anyOf/oneOf (which the converter ignores) moved into each branch, where they hold too."""
    union = "anyOf" if "anyOf" in node else "oneOf" if "oneOf" in node else None
    if union is None or not isinstance(node[union], list):
        return node
    kept = ANNOTATIONS | {"$defs", "definitions"}  # references point at these where they are
    siblings = {keyword: value for keyword, value in node.items() if keyword != union and keyword not in kept}
    if not siblings or set(siblings) - _MOVABLE:
        return node  # nothing to move, or a subschema beside the union: _check refuses it
    branches = []
    for branch in node[union]:
        if not isinstance(branch, dict):
            return node  # a boolean branch: _check says what is wrong
        clash = [keyword for keyword in siblings if keyword in branch and branch[keyword] != siblings[keyword]]
        if clash or "$ref" in branch:
            return node  # left as written: _check refuses what would be lost
        branches.append(_normalised({**branch, **siblings}))
    return {**{keyword: value for keyword, value in node.items() if keyword in kept}, union: branches}


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
    for union in ("anyOf", "oneOf"):
        if union in node and set(node) - ANNOTATIONS - {union, "$defs", "definitions"}:
            others = sorted(set(node) - ANNOTATIONS - {union, "$defs", "definitions"})
            raise SchemaNotSupported(f"{', '.join(repr(key) for key in others)} beside '{union}' at '{where}' "
                                     f"cannot be enforced; move them into each branch of '{union}'")
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

        # The converter's string character lets raw control characters through (a newline inside a string),
        # which JSON forbids: the text then failed to parse (a forced tool call's arguments answered 500).
        def _add_primitive(self, name, rule):
            if name == "char":
                rule = type(rule)(JSON_STRING_CHAR, rule.deps)
            return super()._add_primitive(name, rule)

        # The converter writes JSON text (a property name, a const or enum value, already escaped by
        # json.dumps) into GBNF literals escaping quotes but not backslashes, so a name with '"' gave a grammar
        # llama.cpp rejects and a value with '\\' one that produced a different string. A pattern's literals
        # carry regex escapes that GBNF must still read, so they are left as the converter writes them.
        def _format_literal(self, literal):
            if not getattr(self, "_in_pattern", False):
                literal = literal.replace("\\", "\\\\")
            return super()._format_literal(literal)

        def _visit_pattern(self, pattern, name):
            self._in_pattern = True
            try:
                return super()._visit_pattern(pattern, name)
            finally:
                self._in_pattern = False

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
