"""Where a registered dataset's images come from, in order (`resolve_source`):

  1. the local directory its config field names (`config.data.idx_dir` for the IDX datasets,
     `config.data.local_dir` for the colour ones), when given;
  2. data TFDS already has prepared (`tfds.data_source`, no TensorFlow);
  3. known local places (Debian's `/usr/share/datasets/fashion-mnist`);
  4. a TFDS download through our own builders, only if the network answers within seconds;
     offline this fails fast with a message naming the option that points at local files.
"""

from __future__ import annotations

import socket

from vae.data import registry
from vae.errors import DataError


def network_reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _local_dirs(spec: registry.Spec, data_config) -> str:
    """The directory of local files config.data names for `spec`; refuses the other field."""
    for field in registry.LOCAL_FIELDS:
        value = data_config[field]
        if value and field != spec.local_field:
            raise DataError(f"config.data.{field} is not how {spec.name} is read: it reads "
                            f"{', '.join(spec.files)} from --config.data.{spec.local_field}")
    return data_config[spec.local_field]


def resolve_source(spec: registry.Spec, data_config):
    """(train_or_None, test, note) from the first source that has `spec`'s data."""
    local = _local_dirs(spec, data_config)
    if local:
        return spec.read_local(local)
    tfds_data_dir = data_config.tfds_data_dir
    found = spec.read_prepared(tfds_data_dir)
    if found is not None:
        return found
    for directory in spec.known_dirs:
        if spec.has_local(directory):
            return spec.read_local(directory)
    if spec.download is None or spec.network_host is None:
        why = "it cannot be downloaded here"
    elif not network_reachable(spec.network_host):
        why = "the network is unreachable, so TFDS cannot download it"
    else:
        return spec.download(tfds_data_dir)
    raise DataError(f"dataset {spec.name!r}: no local copy found and {why}. Point at a directory holding "
                    f"{', '.join(spec.files)} with --config.data.{spec.local_field}=DIR")
