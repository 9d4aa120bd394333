"""opsstack: the operations toolkit a long-running Python bot imports.

Importing this package (or any manager module) opens no file, socket or thread: each manager
exists at import, off, and starts working on ``enable()``. ``exporter.runtime.start()`` turns
on every manager whose flag is set in the settings.
"""

__version__ = "0.1.0"
