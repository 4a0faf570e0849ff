"""TLS for the listening inputs (tcp, syslog, beats, http).

::

    inputs:
      - type: beats
        tls:
          cert_file: /etc/logstream/server.pem   # certificate chain, PEM
          key_file: /etc/logstream/server.key
          ca_file: /etc/logstream/clients-ca.pem # CAs that sign client certificates
          client_auth: required                  # none | optional | required
          min_version: "1.2"

The context is built when the input is built, so ``logstream check`` reports
a missing or mismatched file with the key that names it. A client that fails
the handshake (no TLS, an untrusted certificate) is disconnected like any
other bad client: it never affects the others.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


class TlsServerSettings(BaseModel):
    """A listener's certificate and how it checks its clients."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path = Field(description="The server's certificate (chain), PEM.")
    key_file: Path = Field(description="The certificate's private key, PEM, unencrypted.")
    ca_file: Path | None = Field(
        default=None, description="CAs whose client certificates are accepted (client_auth)."
    )
    client_auth: Literal["none", "optional", "required"] = Field(
        default="none", description="Whether clients must present a certificate signed by ca_file."
    )
    min_version: Literal["1.2", "1.3"] = Field(default="1.2", description="Oldest TLS accepted.")

    @model_validator(mode="after")
    def _ca_for_client_auth(self) -> TlsServerSettings:
        if self.client_auth != "none" and self.ca_file is None:
            raise ValueError(
                f"client_auth {self.client_auth!r} needs ca_file to check clients with"
            )
        return self

    def context(self, unit: str) -> ssl.SSLContext:
        """The server context; ``ValueError`` naming the file when one cannot be used."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = _VERSIONS[self.min_version]
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(
                f"input {unit}: tls cert_file {str(self.cert_file)!r} / key_file "
                f"{str(self.key_file)!r} cannot be used: {error}"
            ) from None
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(
                    f"input {unit}: tls ca_file {str(self.ca_file)!r} cannot be used: {error}"
                ) from None
        context.verify_mode = _CLIENT_AUTH[self.client_auth]
        return context
