"""A few Containerfile rules, checked without hadolint (GPL-3.0; this project
uses Apache/BSD/MIT tools only): multi-stage, an exactly pinned base, a
non-root user, no build tools or remote ADD in the image that ships.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "cmake", "git", "cargo", "rustc")
# An exact release: python:3.11.13-slim-bookworm, not python:3.11 or :latest.
EXACT_TAG = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    text: str


def instructions(source: str) -> list[Instruction]:
    """The file's instructions, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in source.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, text = (pending + line).partition(" ")
        out.append(Instruction(keyword.upper(), text.strip()))
        pending = ""
    return out


def problems(source: str) -> list[str]:
    """What breaks a rule, one readable line each (empty: the file passes)."""
    found = []
    steps = instructions(source)
    args = {}
    for step in steps:
        if (
            step.keyword == "ARG"
            and "=" in step.text
            and not any(s.keyword == "FROM" for s in steps[: steps.index(step)])
        ):
            name, _, value = step.text.partition("=")
            args[name] = value
    stages = [i for i, s in enumerate(steps) if s.keyword == "FROM"]
    if len(stages) < 2:
        found.append("not multi-stage: build tools would ship in the image")
    for index in stages:
        image = steps[index].text.split()[0]
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), image)
        if not EXACT_TAG.match(image):
            found.append(f"FROM {image}: pin an exact version tag (never latest)")
    for step in steps:
        if step.keyword == "ADD" and re.search(r"\b(https?|ftp)://", step.text):
            found.append(f"ADD {step.text}: download with a checked step, never ADD a URL")
        if ":latest" in step.text:
            found.append(f"{step.keyword} {step.text}: names :latest")
    final = steps[stages[-1] :] if stages else steps
    users = [s.text for s in final if s.keyword == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        found.append("the final stage runs as root: end it with USER <non-root>")
    for step in final:
        if step.keyword == "RUN" and "install" in step.text:
            words = set(shlex.split(step.text.replace("&&", " ")))
            found += [f"build tool {tool} installed in the final stage"
                      for tool in BUILD_TOOLS if tool in words]  # fmt: skip
    if not any(s.keyword == "COPY" and "--from=" in s.text for s in final):
        found.append("the final stage copies nothing from a build stage")
    return found
