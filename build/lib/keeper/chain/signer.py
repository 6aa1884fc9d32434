"""The keeper's signing key: an encrypted keystore (any chain) or, on a local chain only, an Anvil dev account or a
raw private key. A key or password never reaches a message or a log line."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any, Protocol

from eth_account import Account
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr

from keeper.core.errors import SignerError
from keeper.core.networks import is_local_chain

log = logging.getLogger(__name__)

# The mnemonic Anvil and Hardhat fund by default; its keys are public, so it is refused off a local chain.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


def dev_account_path(index: int) -> str:
    return f"m/44'/60'/0'/0/{index}"


class KeySource(Protocol):
    """Where the signing key comes from (the keeper's settings): a keystore with its password file, an Anvil dev
    account index, or a raw key."""

    @property
    def keystore(self) -> Path | None: ...

    @property
    def password_file(self) -> Path | None: ...

    @property
    def dev_account_index(self) -> int | None: ...

    @property
    def private_key(self) -> SecretStr | None: ...


def load_signer(settings: KeySource, chain_id: int) -> LocalAccount:
    """The account named by `settings` for use on `chain_id` (the node's chain id)."""
    local = is_local_chain(chain_id)
    if settings.keystore is not None and settings.password_file is not None:
        return _from_keystore(settings.keystore, settings.password_file)
    if settings.dev_account_index is not None:
        if not local:
            raise SignerError(
                f"dev_account_index is for local chains (31337, 1337) only, not chain {chain_id}; "
                "use keystore + password_file"
            )
        seed = seed_from_mnemonic(ANVIL_MNEMONIC, "")
        account: LocalAccount = Account.from_key(key_from_seed(seed, dev_account_path(settings.dev_account_index)))
        return account
    if settings.private_key is not None:
        if not local:
            raise SignerError(
                f"a raw private_key is refused on chain {chain_id} (local chains 31337 and 1337 only); "
                "use keystore + password_file"
            )
        try:
            account = Account.from_key(settings.private_key.get_secret_value().strip())
        except (ValueError, TypeError):
            raise SignerError("private_key is not a valid secp256k1 private key") from None
        return account
    raise SignerError(
        "no signing key configured: set keystore and password_file (or dev_account_index on a local chain)"
    )


def _from_keystore(keystore: Path, password_file: Path) -> LocalAccount:
    password = _read_password(password_file)
    try:
        data: Any = json.loads(keystore.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SignerError(f"cannot read keystore {keystore}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise SignerError(f"keystore {keystore} is not a JSON keystore file") from None
    if not isinstance(data, dict) or not ("crypto" in data or "Crypto" in data):
        raise SignerError(f"keystore {keystore} is not an Ethereum keystore (no crypto section)")
    try:
        key = Account.decrypt(data, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise SignerError(f"wrong password for keystore {keystore} (password from {password_file})") from None
        raise SignerError(f"keystore {keystore} cannot be decrypted: {type(exc).__name__}") from None
    except (KeyError, TypeError, NotImplementedError) as exc:
        raise SignerError(f"keystore {keystore} is damaged or of an unsupported kind ({type(exc).__name__})") from None
    account: LocalAccount = Account.from_key(key)
    recorded = data.get("address")
    if isinstance(recorded, str) and recorded.lower().removeprefix("0x") != account.address.lower().removeprefix("0x"):
        raise SignerError(
            f"keystore {keystore} decrypts to {account.address}, not to the address it records "
            f"(0x{recorded.removeprefix('0x')}): the file is damaged"
        )
    return account


def _read_password(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SignerError(f"cannot read password file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SignerError(f"password file {path} is not UTF-8 text") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("password file %s is accessible to other users; restrict it with chmod 600", path)
    # Editors and `echo` add a final newline; it is never part of the password.
    return text.removesuffix("\n").removesuffix("\r")
