"""User-facing errors. Each one's str() names the problem and what to do about it; the CLI prints it after
`keeper: ` with no traceback and exits with its `exit_code`."""

from __future__ import annotations

from urllib.parse import urlsplit


class KeeperError(Exception):
    """A problem the operator can fix (bad config, wrong chain, missing key); never a bug."""

    exit_code: int = 2


class ConfigError(KeeperError):
    """The settings file or environment is missing, unreadable or has invalid values."""


class DeploymentError(KeeperError):
    """The deployment record is missing or malformed, or its contracts are not on the node."""


class ChainMismatchError(KeeperError):
    """The node, the config and the deployment record disagree on the chain id."""

    exit_code = 3


class SignerError(KeeperError):
    """The signing key cannot be loaded, or is not allowed on this chain."""


class NodeUnreachableError(KeeperError):
    """The node does not answer (refused, timed out, not JSON-RPC)."""

    exit_code = 4


def redact_url(url: str) -> str:
    """`scheme://host[:port]` of a node URL, for messages and logs: user:password, the path (hosted nodes put the
    API key there, e.g. `/v3/<key>`), the query and the fragment are left out, replaced by `/…` when present."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme or not host:
        return "<URL without scheme or host>"
    if ":" in host:
        host = f"[{host}]"
    shown = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    if parts.path.strip("/") or parts.query or parts.fragment:
        shown += "/…"
    return shown
