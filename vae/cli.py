"""What train.py, sample.py and the benchmark and experiment scripts share: flag parsing and
one clear message per user mistake."""

from __future__ import annotations

import logging
import re
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from vae import xla_flags
from vae.errors import USER_ERRORS, Stopped

# Config flag name -> the config file it reads when the command line names none.
_CONFIG_DEFAULTS: dict[str, str] = {}


def define_config_file(name: str, default: str, help_string: str, **kwargs):
    """config_flags.DEFINE_config_file whose `default` file is read when `run` parses the flags,
    as if the command line said --name=default.

    Given a default, ml_collections reads it while the flag is defined, at import, and applies
    the --name.x overrides right there: a misspelled one raised a traceback before `run` could
    print its message."""
    _CONFIG_DEFAULTS[name] = default
    holder = config_flags.DEFINE_config_file(name, None, help_string, **kwargs)
    kwargs.get("flag_values", flags.FLAGS)[name].default_as_str = repr(default)  # what --helpfull shows
    return holder


def _with_config_defaults(argv: list[str]) -> list[str]:
    """argv with --name=<default> after the program name for each `define_config_file` flag it does not set."""
    missing = []
    for name, default in _CONFIG_DEFAULTS.items():
        pattern = re.compile(rf"-{{1,2}}{re.escape(name)}(=|$)")  # --config=f or --config f, as ml_collections
        if not any(pattern.match(arg) for arg in argv[1:]):
            missing.append(f"--{name}={default}")
    return [*argv[:1], *missing, *argv[1:]]


def _flag_error_message(e: Exception, argv: list[str]) -> str:
    """'bad flag: <what the error says>', naming the argument where the error does not.

    ml_collections raises an unknown --config.x key as AttributeError(KeyError(text)), and
    str() of a KeyError is the repr of its text (escaped quotes, a literal \\n): the text is
    read from the innermost exception's argument instead."""
    while e.args and isinstance(e.args[0], BaseException):
        e = e.args[0]
    if not (isinstance(e, KeyError) and e.args and isinstance(e.args[0], str)):
        return f"bad flag: {e}"
    text = e.args[0]  # "'num_epoch'", then maybe a line 'Did you mean "num_epochs" instead of "num_epoch"?'
    key = text.splitlines()[0].strip("\"'")
    for arg in argv[1:]:
        path = arg.split("=", 1)[0].lstrip("-").split(".")
        if len(path) > 1 and key in path[1:]:
            return f"bad flag {arg}: no config field {text}"
    return f"bad flag: no config field {text}"


def _parse_flags(argv):
    try:
        return flags.FLAGS(_with_config_defaults(argv))
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        # ml_collections reports an unknown --config.x.y key as AttributeError/KeyError.
        print(f"error: {_flag_error_message(e, argv)}\nRun with --helpfull for the flags; config keys "
              "are the fields of the config file's get_config().", file=sys.stderr)
        sys.exit(2)


def run(main):
    """app.run(main) with USER_ERRORS printed as one line and flag errors as their message and a
    hint, exit code 2, no traceback; a run stopped by a signal exits with 128 + the signal
    number after saving. Scripts define a config flag that has a default with `define_config_file`.
    XLA:CPU's defaults (`vae.xla_flags`) are set first, before JAX starts its backend."""
    xla_flags.apply_cpu_defaults()

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
