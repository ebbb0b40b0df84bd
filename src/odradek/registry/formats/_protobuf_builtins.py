"""The ``.proto`` files Confluent's registry resolves without references, beyond the
``google/protobuf/*`` ones protoc ships: ``confluent/*`` (field metadata, decimal) and
``google/type/*`` (date, money, ...). confluent-kafka's serializers never register these as
references (they count as built in), so a schema importing one must resolve here too.

Their descriptors are taken from the generated modules installed with confluent-kafka and
googleapis-common-protos, read from the modules' source (the serialized ``FileDescriptorProto``
each one embeds) rather than imported, so that nothing is registered in the process's default
descriptor pool; a package that is not installed just contributes no files. They are printed
once per process as ``.proto`` text into a private directory that protoc searches after the
schema's own references.
"""

from __future__ import annotations

import ast
import atexit
import functools
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from odradek.registry.formats._protobuf_text import render_file

__all__ = ["builtin_include_dir"]

#: (package, directory inside it) holding generated ``*_pb2.py`` modules of built-in files.
_SOURCES = (
    ("confluent_kafka", "schema_registry/confluent"),
    ("confluent_kafka", "schema_registry/confluent/type"),
    ("confluent_kafka", "schema_registry/confluent/types"),
    ("google.type", ""),
)
_PREFIXES = ("confluent/", "google/type/")


@functools.cache
def builtin_include_dir() -> str | None:
    """A directory of the built-in files found installed, or None if there are none."""
    files = {fd.name: fd for fd in _descriptors() if fd.name.startswith(_PREFIXES)}
    if not files:
        return None
    root = tempfile.mkdtemp(prefix="odradek-proto-builtins-")
    atexit.register(shutil.rmtree, root, True)
    for name, fd in files.items():
        path = os.path.join(root, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(render_file(fd))
    return root


def _descriptors() -> Iterator[descriptor_pb2.FileDescriptorProto]:
    for package, subdir in _SOURCES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            directory = os.path.join(location, *subdir.split("/")) if subdir else location
            if not os.path.isdir(directory):
                continue
            for entry in sorted(os.listdir(directory)):
                if entry.endswith("_pb2.py"):
                    yield from _embedded(os.path.join(directory, entry))


def _embedded(path: str) -> Iterator[descriptor_pb2.FileDescriptorProto]:
    """The ``FileDescriptorProto`` a generated module passes to ``AddSerializedFile``."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            try:
                yield descriptor_pb2.FileDescriptorProto.FromString(node.args[0].value)
            except DecodeError:
                continue
