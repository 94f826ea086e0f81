"""mapsync: declarative sync between Microsoft Dynamics 365 and Adobe Campaign Standard.

One distribution, one import package. The repository keeps the folders a reader expects at the top
(``engine/``, ``dsl/``, ``emulators/``, ``schemas/``, ``mappings/``); the build installs them under this
package (``mapsync.engine``, ``mapsync.dsl``, ...) so that nothing of ours lands in site-packages under a
name another distribution could use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mapsync")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
