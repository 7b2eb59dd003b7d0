"""YAML for files people and tools read: no anchors or aliases.

PyYAML writes a repeated object once with an anchor (``&id001``) and refers back to it;
valid YAML, but kube-score, kubeconform and reviewers read such a CRD or manifest badly, so
every generated file is written without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

import yaml


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _enum_value(dumper: yaml.SafeDumper, member: StrEnum) -> yaml.Node:
    # A vocabulary member (constants.CapacityType.SPOT) in a built object is its string.
    return dumper.represent_str(member.value)


_PlainDumper.add_multi_representer(StrEnum, _enum_value)


def dump(data: Any, **options: Any) -> str:
    return str(yaml.dump(data, Dumper=_PlainDumper, **options))


def dump_all(documents: Iterable[Any], **options: Any) -> str:
    return str(yaml.dump_all(documents, Dumper=_PlainDumper, **options))
