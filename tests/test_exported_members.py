"""Each package's ``__all__`` is exactly its public surface (as httpx's test of the same name).

A public name is one ``dir(package)`` lists without a leading underscore, or one that the
package's module ``__getattr__`` imports on first use; modules are not (``tickwire.model.book``
is reached by its module path, not re-exported), nor the typing helpers a lazy package
needs (``TYPE_CHECKING``, ``Any``). A package that re-exports anything lists it in
``__all__``; a package that re-exports nothing may leave ``__all__`` out.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import tickwire

#: Dunder names a package exports on purpose.
EXPORTED_DUNDERS = {"__version__"}
#: What ``from __future__ import annotations`` and a lazy package's imports bind.
IMPORT_HELPERS = {"annotations", "TYPE_CHECKING", "Any"}


#: The public packages: the top level and one per layer (DESIGN.md, [tool.importlinter]).
LAYERS = ["model", "engine", "hub", "auth", "dialects", "ingest", "server", "client"]
PACKAGES = ["tickwire", *(f"tickwire.{layer}" for layer in LAYERS)]


def _public_names(package: ModuleType) -> set[str]:
    namespace = vars(package)
    return {
        name
        for name in dir(package)
        if (not name.startswith("_") or name in EXPORTED_DUNDERS)
        and name not in IMPORT_HELPERS
        and not isinstance(namespace.get(name), ModuleType)
    }


def test_the_layers_are_the_packages() -> None:
    """A new top-level package is a new layer: add it here and to [tool.importlinter]."""
    packages = {info.name for info in pkgutil.iter_modules(tickwire.__path__) if info.ispkg}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    package = importlib.import_module(name)
    public = _public_names(package)
    listed: list[str] | None = getattr(package, "__all__", None)
    if listed is None:
        assert public == set(), f"{name} exports {sorted(public)} without an __all__"
        return
    assert len(listed) == len(set(listed)), f"{name}.__all__ repeats a name"
    missing = [n for n in listed if not hasattr(package, n)]  # imports lazy names too
    assert missing == [], f"{name}.__all__ lists names it does not define: {missing}"
    public |= {n for n in listed if n not in public}  # resolved lazily, just above
    assert set(listed) == public, (
        f"{name}: not in __all__: {sorted(public - set(listed))}; "
        f"in __all__ but not public: {sorted(set(listed) - public)}"
    )


def test_top_level_exports_the_version() -> None:
    assert "__version__" in tickwire.__all__
    assert isinstance(tickwire.__version__, str) and tickwire.__version__
