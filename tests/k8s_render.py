"""Render deploy/k8s overlays without kustomize, for tests that need no binary.

The overlays use a deliberately small part of kustomize (resources, namespace,
images, JSON patches); this module applies exactly that part and refuses any
other kustomization field, so an overlay that outgrows it fails loudly
instead of rendering differently. A test checks the rendering equals what
``kubectl kustomize`` produced (recorded under tests/k8s_rendered/).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}

Manifest = dict[str, Any]


def load_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(folder: Path) -> list[Manifest]:
    """The manifests ``kustomize build folder`` would print (as far as used here)."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise ValueError(f"{folder}: kustomization fields this renderer does not apply: {unknown}")
    docs: list[Manifest] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        docs += render(path) if path.is_dir() else load_documents(path)
    for patch in spec.get("patches", []):
        target = find(docs, patch["target"]["kind"], patch["target"]["name"])
        for op in yaml.safe_load(patch["patch"]):
            apply_operation(target, op)
    for image in spec.get("images", []):
        for container in containers_of_all(docs):
            if container["image"].split(":")[0] == image["name"]:
                container["image"] = f"{image['newName']}:{image['newTag']}"
    if "namespace" in spec:
        for doc in docs:
            doc["metadata"]["namespace"] = spec["namespace"]
    return docs


def find(docs: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(matches) != 1:
        raise KeyError(f"{len(matches)} manifests are {kind}/{name}")
    return matches[0]


def containers_of_all(docs: list[Manifest]) -> list[dict[str, Any]]:
    return [c for doc in docs if (spec := pod_spec(doc)) for c in spec["containers"]]


def pod_spec(doc: Manifest) -> dict[str, Any] | None:
    """The pod template's spec of a workload, None for anything else."""
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return doc["spec"]["template"]["spec"]
    return None


def apply_operation(doc: Manifest, op: dict[str, Any]) -> None:
    """One RFC 6902 operation (add, replace, remove) on ``doc``, in place."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    value = copy.deepcopy(op.get("value"))
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op["op"] == "add":
            node.insert(index, value)
        elif op["op"] == "replace":
            node[index] = value
        elif op["op"] == "remove":
            del node[index]
        else:
            raise ValueError(f"unsupported patch op {op['op']!r}")
        return
    if op["op"] in ("replace", "remove") and last not in node:
        raise KeyError(f"{op['path']}: nothing to {op['op']}")
    if op["op"] in ("add", "replace"):
        node[last] = value
    elif op["op"] == "remove":
        del node[last]
    else:
        raise ValueError(f"unsupported patch op {op['op']!r}")
