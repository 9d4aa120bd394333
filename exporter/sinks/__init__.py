"""Log shipping backends. Each module imports its third-party client lazily, inside itself."""
