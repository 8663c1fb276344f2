"""How the operator reaches the API server: one configuration for kopf, the Lease and the handlers.

The configuration comes from `--kubeconfig` when given, else from the pod's service account. It is
installed as the kubernetes client's default, and the file is exported as KUBECONFIG, so clients
that handlers build load the same credentials as kopf's watchers and the Lease.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.config import kube_config


def load_configuration(kubeconfig: Path | None) -> client.Configuration:
    """Load credentials and make them the kubernetes client's default; fails with a clear message."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        if not kubeconfig.is_file():
            raise SystemExit(f"--kubeconfig {kubeconfig}: no such file (omit the flag to use the pod's service account)")
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        # Clients that call load_kube_config() without a file must not reach another cluster: the
        # library read KUBECONFIG when it was imported, so its default location is set as well.
        os.environ["KUBECONFIG"] = str(kubeconfig.resolve())
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig.resolve())
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as error:
            raise SystemExit(
                f"not running in a pod ({error}): pass --kubeconfig PATH (or set KUBECONFIG) to run outside a cluster"
            ) from error
    client.Configuration.set_default(configuration)
    return configuration


def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """kopf's view of a client configuration; asking for the token refreshes rotated tokens."""
    header = (configuration.get_api_key_with_prefix("BearerToken")
              or configuration.get_api_key_with_prefix("authorization"))
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or ("Bearer" if token else None),
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def register_login(registry: kopf.OperatorRegistry, configuration: client.Configuration) -> None:
    """Make kopf authenticate with `configuration` instead of its own kubeconfig discovery."""

    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    kopf.on.login(registry=registry, id="funcplane-login")(login)
