"""YAML text read with bounds (issue #19): every YAML a person or a store hands us (a grid, ``config=FILE``,
a trial's ``config.yaml``) is loaded here, with PyYAML's safe loader only.

- At most ``MAX_YAML_BYTES`` of text, and at most ``MAX_YAML_NODES`` values once aliases are expanded: a
  300-byte "billion laughs" anchor bomb otherwise takes seconds and gigabytes to construct (and more to print
  in an error message).
- ``strict``: a key repeated in one mapping is an error naming both lines (PyYAML silently keeps the last).

Errors are ``YamlError`` (a ValueError) with one line that names the source.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_YAML_BYTES = 1 << 20  # a grid of the paper is ~5 KiB, a trial's config.yaml ~2 KiB
MAX_YAML_NODES = 100_000  # values after alias expansion; the largest grid here has a few hundred

# libyaml's loader when PyYAML was built with it: ten times faster on stores of thousands of trials.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(ValueError):
    """YAML that is not read: too large, an alias bomb, a repeated key, or not YAML at all."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects repeated mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the constructor below says so
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {first + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def expanded_size(node: yaml.Node, limit: int = MAX_YAML_NODES) -> int:
    """How many values ``node`` stands for with its aliases expanded (counted once per node object, so the count
    itself is linear in the document); stops counting past ``limit``."""
    sizes: dict[int, int] = {}

    def size(item: yaml.Node) -> int:
        known = sizes.get(id(item))
        if known is not None:
            return known
        sizes[id(item)] = 1  # a recursive alias counts once (SafeLoader refuses to construct it anyway)
        total = 1
        if isinstance(item, yaml.SequenceNode):
            for child in item.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(item, yaml.MappingNode):
            for key, value in item.value:
                total += size(key) + size(value)
                if total > limit:
                    break
        sizes[id(item)] = total
        return total

    return size(node)


def load_yaml(text: str, source: str, strict: bool = True) -> Any:
    """The value of one YAML document, within the bounds above; ``source`` names it in errors."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlError(f"{source}: {len(text):,} bytes of YAML, more than the {MAX_YAML_BYTES:,} read")
    loader = _StrictLoader if strict else _FAST_LOADER
    try:
        if "*" not in text:  # no alias: no expansion to bound, and the text size bounds the values
            return yaml.load(text, Loader=loader)  # noqa: S506 - SafeLoader and subclasses only
        node = yaml.compose(text, Loader=loader)  # noqa: S506
        if node is None:
            return None
        if expanded_size(node) > MAX_YAML_NODES:
            raise YamlError(
                f"{source}: its aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb?): not read"
            )
        return loader(text).construct_document(node)
    except yaml.YAMLError as err:
        raise YamlError(f"{source}: not valid YAML: {_one_line(err)}") from None
    except RecursionError:
        raise YamlError(f"{source}: nested too deeply to read") from None


def _one_line(err: yaml.YAMLError) -> str:
    return " ".join(str(err).split())
