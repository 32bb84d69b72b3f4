"""What train.py and sample.py share: flag parsing and one clear message per user mistake."""

from __future__ import annotations

import logging
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging

from vae.errors import USER_ERRORS, Stopped


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        # ml_collections reports an unknown --config.x.y key as AttributeError/KeyError.
        message = str(e).strip("\"'")
        print(f"error: bad flag: {message}. Run with --helpfull for the flags; config keys are "
              "the fields of the config file's get_config().", file=sys.stderr)
        sys.exit(2)


def run(main):
    """app.run(main) with flag errors and USER_ERRORS printed as one line, exit code 2; a
    run stopped by a signal exits with 128 + the signal number after saving."""

    def wrapped(argv):
        absl_logging.set_verbosity(absl_logging.WARNING)  # hides orbax's per-save INFO chatter
        for name in ("vae", "priors"):
            logging.getLogger(name).setLevel(logging.INFO)
        try:
            main(argv)
        except Stopped as e:  # SIGTERM/SIGINT, after saving: the shell's usual code
            print(str(e), file=sys.stderr)
            sys.exit(128 + e.signum)
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except jax.errors.JaxRuntimeError as e:
            if jax.process_count() == 1:
                raise
            # Several processes: a collective failing mostly means another process is gone. At
            # exit JAX's coordination service names it, once its heartbeat times out.
            print(f"error: process {jax.process_index()} of {jax.process_count()}: {str(e)[:300]}. Another "
                  "process has probably stopped; JAX's coordination service names it below within "
                  "config.train.heartbeat_timeout_seconds. Relaunch every process to resume from the last "
                  "checkpoint.", file=sys.stderr)
            sys.exit(1)

    app.run(wrapped, flags_parser=_parse_flags)
