"""Entry point of `terraform-provider-spirl` (Terraform starts it; it speaks plugin protocol 6).

Kept tiny on purpose: Terraform starts the provider several times per command, so only what the
handshake needs is imported here; httpx, yaml and jsonschema load when a request needs them.
"""

from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str] | None = None) -> None:
    # stdout carries the go-plugin handshake line: logs go to stderr, which Terraform keeps in
    # its own log (TF_LOG=debug shows them).
    level = os.environ.get("SPIRL_PROVIDER_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level, logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
    )
    from tf.runner import run_provider

    from controlplane.terraform import servicer
    from controlplane.terraform.provider import SpirlProvider

    servicer.install()

    run_provider(SpirlProvider(), argv if argv is not None else sys.argv)
    # Terraform waits for the plugin process to exit after every command step; interpreter
    # teardown (gRPC threads, module cleanup) adds tens of ms each time and there is nothing
    # left to save, so leave at once.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
