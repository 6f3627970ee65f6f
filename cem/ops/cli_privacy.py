"""`cem privacy erase`: ask the identity coordinator to forget a customer (README "Privacy:
consent and erasure"). The request is acknowledged by Kafka before this returns; the coordinator,
the customer stage and landing carry it out, and `privacy_erasures` records it when done."""
from __future__ import annotations

import time

import typer

privacy_app = typer.Typer(no_args_is_help=True, help="Consent and erasure: forget a customer.")


@privacy_app.command("erase")
def privacy_erase(customer_id: str = typer.Argument(..., help="Customer id (cus-…, the customer_id column) or one "
                                                    "identifier as kind:value, e.g. customer_id:C123, "
                                                    "email:alice@example.com or phone:+49… (hashed as at the edge)"),
                  by: str = typer.Option(..., "--by", help="Who asks (recorded in privacy_erasures).")) -> None:
    """Remove the customer's identifiers from the identity graph and state and their rows from
    every table; an audit row without identifiers lands in privacy_erasures."""
    from cem.connectors.pseudonymize import Pseudonymizer, pseudonymize_subject
    from cem.kafka.connection import KafkaConnection
    from cem.kafka.erasure_requests import request_erasure
    from cem.ops.cli import _fail, _settings
    from cem.ops.console import console
    from cem.privacy import ErasureRequest
    s = _settings()
    try:
        subject = pseudonymize_subject(customer_id, Pseudonymizer(s.pseudonymization_key.get_secret_value().encode()))
        request = ErasureRequest.new(subject, by, int(time.time() * 1000))
    except ValueError as err:  # BadSubject, PseudonymizationError: say what a valid one looks like
        raise _fail(str(err), 2) from None
    _settings(kafka=True)  # then, like every Kafka command, one line if no broker answers
    try:
        request_erasure(KafkaConnection.from_settings(s), request)
    except RuntimeError as err:
        raise _fail(str(err)) from None
    console.print(f"erasure {request.erasure_id} requested; done when this returns a row:\n"
                  f"  SELECT * FROM privacy_erasures WHERE erasure_id = '{request.erasure_id}'")
