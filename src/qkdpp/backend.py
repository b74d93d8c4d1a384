"""Kernel backend selection.

Each kernel family under :mod:`qkdpp.kernels` has a readable NumPy reference (``_ref``) and a
compiled implementation (``_cy`` Cython or ``_nb`` numba). ``QKDPP_BACKEND`` chooses:

* ``auto`` (default): compiled where available, reference otherwise;
* ``compiled``: compiled or :class:`~qkdpp.errors.BackendUnavailable`;
* ``reference``: the NumPy oracle everywhere (slow; for debugging and cross-checks).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType

from qkdpp.errors import BackendUnavailable, ConfigError

BACKENDS = ("compiled", "reference")


def requested_backend() -> str:
    """The backend named by ``QKDPP_BACKEND`` (``auto`` when unset)."""
    value = os.environ.get("QKDPP_BACKEND", "auto").strip().lower() or "auto"
    if value not in ("auto", *BACKENDS):
        raise ConfigError(f"QKDPP_BACKEND must be auto, compiled or reference, got {value!r}")
    return value


def load(
    package: str, compiled: str, reference: str = "_ref", backend: str | None = None
) -> tuple[str, ModuleType]:
    """Import the implementation module of a kernel family.

    Parameters
    ----------
    package : str
        Dotted package of the family, e.g. ``"qkdpp.kernels.bits"``.
    compiled, reference : str
        Module names inside ``package`` of the compiled and reference implementations.
    backend : str, optional
        ``auto``, ``compiled`` or ``reference``; default from ``QKDPP_BACKEND``.

    Returns
    -------
    (name, module) where name is ``"compiled"`` or ``"reference"``.
    """
    choice = backend or requested_backend()
    if choice == "reference":
        return "reference", importlib.import_module(f"{package}.{reference}")
    try:
        return "compiled", importlib.import_module(f"{package}.{compiled}")
    except ImportError as exc:
        if choice == "compiled":
            raise BackendUnavailable(
                f"compiled backend of {package} is not built ({exc}); reinstall qkdpp with a C "
                "compiler, or set QKDPP_BACKEND=reference"
            ) from exc
        return "reference", importlib.import_module(f"{package}.{reference}")


def available(package: str, compiled: str, reference: str = "_ref") -> list[str]:
    """Backends of a kernel family that import on this machine."""
    names = ["reference"]
    try:
        importlib.import_module(f"{package}.{compiled}")
        names.insert(0, "compiled")
    except ImportError:
        pass
    return names


def family(
    package: str, compiled: str, reference: str = "_ref"
) -> tuple[str, ModuleType, Callable[[str], ModuleType], Callable[[], list[str]]]:
    """Everything a kernel family's ``__init__`` exports about its backends, in one call.

    Returns ``(BACKEND, active_module, impl, available_backends)``: the active backend's name and
    module (per ``QKDPP_BACKEND``), ``impl(name)`` giving the module of one backend (for tests
    comparing backends), and ``available_backends()`` (``compiled`` first when built).
    """
    name, module = load(package, compiled, reference)

    def impl(backend: str) -> ModuleType:
        """The implementation module of backend ``backend`` (``compiled`` or ``reference``)."""
        return load(package, compiled, reference, backend=backend)[1]

    def available_backends() -> list[str]:
        """Backends of this family that import here (``compiled`` first when built)."""
        return available(package, compiled, reference)

    return name, module, impl, available_backends
