"""One connection to each broker before a process starts its real work, to tell the failures no
retry can fix (an untrusted certificate, a host name the certificate does not cover, refused
credentials) from a broker that is merely not up yet. The first end the process with one line that
names the problem and holds no secret; the second is left to the clients' own reconnect loops.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from pipeline.config import ConfigError, mask_url

TIMEOUT_S = 15.0


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        # e.g. "Hostname mismatch, certificate is not valid for 'localhost'."
        #      "unable to get local issuer certificate" (a CA we were not told to trust)
        return f"TLS certificate rejected: {exc.verify_message}"
    return f"TLS handshake failed: {exc.reason or exc}"


async def check_kafka(client: dict[str, Any]) -> None:
    """`client`: aiokafka client arguments (config.kafka_client_kwargs)."""
    from aiokafka import errors
    from aiokafka.conn import create_conn

    options = {k: v for k, v in client.items() if k in (
        "security_protocol", "ssl_context", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")}
    for server in client["bootstrap_servers"]:
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(host, int(port), **options), TIMEOUT_S)
        except ssl.SSLError as exc:
            raise ConfigError(f"Kafka {server}: {_tls_reason(exc)}") from None
        except errors.SaslAuthenticationFailed as exc:
            # the broker's text names the mechanism, never the password
            raise ConfigError(f"Kafka {server}: SASL authentication failed for user "
                              f"{client.get('sasl_plain_username')!r}: {exc.args[0] if exc.args else exc}") from None
        except (errors.UnsupportedSaslMechanismError, errors.IllegalSaslStateError) as exc:
            raise ConfigError(f"Kafka {server}: SASL mechanism {client.get('sasl_mechanism')} refused: {exc}") from None
        except (TimeoutError, OSError, errors.KafkaError):
            continue  # not reachable (yet): the clients retry
        conn.close()
        return


async def check_amqp(url: str, ssl_context: ssl.SSLContext | None = None) -> None:
    import aio_pika
    from aiormq.exceptions import AMQPConnectionError, ProbableAuthenticationError

    shown = mask_url(url)
    try:
        connection = await asyncio.wait_for(aio_pika.connect(url, ssl_context=ssl_context), TIMEOUT_S)
    except ProbableAuthenticationError:
        raise ConfigError(f"RabbitMQ {shown}: the login was refused (wrong user or password, or no access to the virtual host)") from None
    except AMQPConnectionError as exc:
        cause = next((a for a in exc.args if isinstance(a, ssl.SSLError)), None)
        cause = cause or next((e for e in (exc.__cause__, exc.__context__) if isinstance(e, ssl.SSLError)), None)
        if cause is not None:
            raise ConfigError(f"RabbitMQ {shown}: {_tls_reason(cause)}") from None
        return  # not reachable (yet): the source reconnects
    except ssl.SSLError as exc:
        raise ConfigError(f"RabbitMQ {shown}: {_tls_reason(exc)}") from None
    except (TimeoutError, OSError):
        return
    await connection.close()
