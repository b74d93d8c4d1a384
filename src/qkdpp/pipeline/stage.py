"""The Stage base class and the stage registry.

A stage is policy and messaging around kernels: it receives the batch's frames that are still
alive, talks to the peer only through the :class:`~qkdpp.protocol.PeerScope` it is given, and
returns one frame per input frame (same ids, same order), FAILED ones carrying a reason.
Stages are rebuilt from plain configs (``{"stage": name, **params}``), so a pipeline is a
TOML/JSON list of stage tables.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar

from qkdpp.errors import ConfigError
from qkdpp.frame import Frame, Role
from qkdpp.protocol.link import PeerScope

_REGISTRY: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make ``cls`` buildable from configs under ``cls.name``."""
    if not cls.name:
        raise ConfigError(f"stage class {cls.__name__} has no name")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ConfigError(f"stage name {cls.name!r} used by {other.__name__} and {cls.__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def stage_class(name: str) -> type[Stage]:
    """The stage class registered as ``name``.

    Built-in stages are found by importing :mod:`qkdpp.stages` on demand; a plug-in stage is named
    ``"package.module:ClassName"`` and imported from there.
    """
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            klass = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import stage {name!r}: {exc}") from exc
        if not (isinstance(klass, type) and issubclass(klass, Stage)):
            raise ConfigError(f"{name!r} is not a Stage subclass")
        return klass
    if name not in _REGISTRY:
        import qkdpp.stages as pkg

        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown stage {name!r}; known stages: {', '.join(sorted(_REGISTRY))}"
        ) from None


def registered_stages() -> list[str]:
    """Names of every stage known after importing :mod:`qkdpp.stages`."""
    import qkdpp.stages as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")
    return sorted(_REGISTRY)


class Stage:
    """Base class of every pipeline stage.

    Subclasses set ``name``, take their parameters as keyword arguments and pass them on:
    ``super().__init__(role, block_size=block_size)``, which makes ``get_config`` /
    ``from_config`` round-trip. Override :meth:`process_batch` (lock-step protocols) or
    :meth:`process` (one frame at a time).
    """

    name: ClassVar[str] = ""

    def __init__(self, role: Role | str, **params: Any) -> None:
        self.role = Role(role)
        self.params = dict(params)

    def setup(self) -> None:
        """Allocate buffers and warm JIT kernels before the first frame."""

    def prepare(self, session_id: str, n_bits: int) -> None:
        """Precompute what frames of ``n_bits`` bits of session ``session_id`` will need.

        Optional (default: nothing). The engine calls it from a background thread while the
        party waits for its peer (Bob's clock fit), so it must be thread-safe, and the frames'
        results must be identical to computing the same things on first use.
        """

    def process(self, frame: Frame, peer: PeerScope) -> Frame:
        """Process one frame (used by the default :meth:`process_batch`)."""
        raise NotImplementedError(f"stage {self.name} implements neither process nor batch")

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        """Process the live frames of one batch; default: :meth:`process` on each."""
        return [self.process(f, peer) for f in frames]

    def get_config(self) -> dict[str, Any]:
        """``{"stage": name, **params}`` — enough to rebuild this stage."""
        cls = type(self)
        registered = _REGISTRY.get(self.name) is cls
        name = self.name if registered else f"{cls.__module__}:{cls.__qualname__}"
        return {"stage": name, **self.params}

    @classmethod
    def from_config(cls, role: Role | str, config: dict[str, Any]) -> Stage:
        """Build the stage named by ``config["stage"]`` with the remaining keys as parameters."""
        cfg = dict(config)
        name = cfg.pop("stage", None)
        if not isinstance(name, str):
            raise ConfigError(f"stage config needs a 'stage' name, got {config!r}")
        klass = stage_class(name)
        try:
            return klass(role, **cfg)
        except TypeError as exc:
            raise ConfigError(f"bad parameters for stage {name!r}: {exc}") from exc

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.role.value}{', ' if args else ''}{args})"
