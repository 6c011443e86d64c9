"""Start-up errors: one clear line for the user, a traceback only at debug level."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

log = logging.getLogger("wsgi_fcgi")


class ConfigError(Exception):
    """A setting that cannot work: reported as one line at start-up."""


def fail(message: str, debug: bool = False) -> NoReturn:
    """Report a start-up error (stderr, and the error log when it is a file) and exit 1."""
    if debug:
        log.exception(message)
    else:
        root_handlers = logging.getLogger().handlers
        if any(isinstance(h, logging.FileHandler) for h in root_handlers):
            log.error("%s", message)
    sys.stderr.write("wsgi-fcgi: error: %s\n" % message)
    sys.exit(1)
