"""Feature repos on disk: find one, read its ``loopline.yaml``, load its definitions.

A feature repo is a folder holding ``loopline.yaml`` (or ``loopline.toml``)
and a Python definitions module. Which repo a command runs on, first match
wins: ``--repo PATH``, the ``LOOPLINE_REPO`` environment variable, the
current folder when it holds ``loopline.yaml``, else the fraud example
shipped beside the package (``examples/fraud`` of a source checkout).

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "loopline.yaml").write_text("project: demo\\nredis:\\n  port: 6400\\n")
>>> cfg = read_repo_config(root)
>>> cfg.project, cfg.definitions, cfg.sections
('demo', 'definitions.py', {'redis': {'port': 6400}})
>>> find_repo(None, env={}, cwd=root) == root
True
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from loopline.contracts.definitions import Model
from loopline.contracts.errors import ConfigError, DefinitionError, LooplineError
from loopline.contracts.settings import Settings
from loopline.featurecore.project import Project

CONFIG_NAMES = ("loopline.yaml", "loopline.yml", "loopline.toml")
REPO_ENV = "LOOPLINE_REPO"
# Keys of loopline.yaml that describe the repo itself; every other key is a settings section.
REPO_KEYS = ("project", "definitions", "simulator")


@dataclass(frozen=True)
class RepoConfig:
    """What a repo's ``loopline.yaml`` says."""

    root: Path
    file: Path
    project: str
    definitions: str = "definitions.py"
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The repo's simulator module (see loopline.simulation), when it has one.
    simulator: str = "simulator.py"


def builtin_example(name: str = "fraud") -> Path | None:
    """The example repo shipped beside the package in a source checkout (None elsewhere)."""
    here = Path(__file__).resolve().parents[2] / "examples" / name
    return here if config_file(here) is not None else None


def config_file(root: Path) -> Path | None:
    for name in CONFIG_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def find_repo(
    explicit: str | Path | None, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Path:
    """The repo folder a command runs on (see the module docstring for the order)."""
    environ = os.environ if env is None else env
    chosen = explicit or environ.get(REPO_ENV)
    if chosen:
        root = Path(chosen).expanduser()
        if root.is_file():
            root = root.parent
        if config_file(root) is None:
            raise ConfigError(
                f"{root} is not a feature repo (no loopline.yaml); create one with "
                f"`loopline init {root}`"
            )
        return root.resolve()
    here = Path.cwd() if cwd is None else cwd
    if config_file(here) is not None:
        return here.resolve()
    example = builtin_example()
    if example is None:
        raise ConfigError(
            "no feature repo: pass --repo PATH, set LOOPLINE_REPO, run from a folder holding "
            "loopline.yaml, or create one with `loopline init DIR`"
        )
    return example


def read_repo_config(root: Path) -> RepoConfig:
    """Parse a repo's config file; a bad one raises :class:`ConfigError` naming it."""
    path = config_file(root)
    if path is None:
        raise ConfigError(f"{root}: no loopline.yaml; create one with `loopline init {root}`")
    doc = read_config_document(path)
    project = doc.get("project", root.name)
    definitions = doc.get("definitions", "definitions.py")
    if not isinstance(project, str) or not project:
        raise ConfigError(f"{path}: 'project' must be the repo's name, e.g. project: shop")
    if not isinstance(definitions, str) or not definitions.endswith(".py"):
        raise ConfigError(f"{path}: 'definitions' must name a .py file, e.g. definitions.py")
    sections = {}
    for key, value in doc.items():
        if key in REPO_KEYS:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {key}: must be a section of settings (key: value lines)")
        sections[key] = value
    simulator = doc.get("simulator", "simulator.py")
    if not isinstance(simulator, str) or not simulator.endswith(".py"):
        raise ConfigError(f"{path}: 'simulator' must name a .py file, e.g. simulator.py")
    return RepoConfig(root.resolve(), path, project, definitions, sections, simulator)


def read_config_document(path: Path) -> dict[str, Any]:
    """A YAML or TOML settings document as plain data."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    if path.suffix == ".toml":
        try:
            return tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    import yaml

    try:
        doc = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path} must hold key: value lines")
    return doc


_LOADED: dict[tuple[Path, str], tuple[float, Project]] = {}


def load_project(root: Path) -> Project:
    """Import a repo's definitions module and check it (cached until the file changes)."""
    cfg = read_repo_config(root)
    path = (cfg.root / cfg.definitions).resolve()
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        raise DefinitionError(
            f"{cfg.file}: definitions file {cfg.definitions} does not exist; create it or fix "
            "'definitions:'"
        ) from None
    known = _LOADED.get((path, cfg.project))
    if known is not None and known[0] == mtime:
        return known[1]
    namespace = vars(import_file(path, "loopline_repo"))
    project = Project.of(cfg.project, namespace.values(), root=cfg.root, file=cfg.definitions)
    _LOADED[(path, cfg.project)] = (mtime, project)
    return project


def import_file(path: Path, prefix: str) -> ModuleType:
    """Import a repo's Python file (definitions, simulator) as its own module.

    Any fault while it runs becomes a :class:`DefinitionError` naming the file.
    """
    # A unique module name per file, so two repos' modules never collide.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"{prefix}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DefinitionError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # The repo's folder is importable while the file runs (helpers beside it).
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except DefinitionError as e:
        raise DefinitionError(f"{path.name}: {e}") from None
    except LooplineError:
        raise
    except Exception as e:
        raise DefinitionError(
            f"{path.name} failed to import: {type(e).__name__}: {e}; fix that module"
        ) from e
    finally:
        sys.path.remove(str(path.parent))
    return module


def project_of(settings: Settings) -> Project:
    """The project the settings run on: their repo, else the built-in example."""
    root = settings.project.repo
    if root is None:
        root = builtin_example()
        if root is None:
            raise ConfigError(
                "no feature repo configured: pass --repo PATH or set LOOPLINE_REPO "
                "(`loopline init DIR` makes one)"
            )
    return load_project(Path(root))


def model_of(settings: Settings) -> Model:
    """The repo's model the settings run (``project.model``, else the repo's first)."""
    return project_of(settings).model(settings.project.model)
