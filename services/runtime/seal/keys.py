"""The key that signs checkpoints, and how a log's recorder learns its checkpoint policy.

Development creates the key under the data directory (readable by its owner only), as it
does for the token key; production refuses to start without ``KETNOI_SEAL_SIGNING_KEY_FILE``
(see ``Settings``) and never creates one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.runtime.auth import load_or_create_ed25519_key
from services.runtime.seal.note import Signer
from services.runtime.seal.recorders import CheckpointPolicy
from services.runtime.settings import Environment, Settings, SettingsError

# Keys of an application's environment (see ``seal_env``).
LOG = "KETNOI_SEAL_LOG"
KEY_FILE = "KETNOI_SEAL_SIGNING_KEY_FILE"
CREATE_KEY = "KETNOI_SEAL_CREATE_KEY"
ORIGIN = "KETNOI_SEAL_ORIGIN"
EVERY = "KETNOI_SEAL_CHECKPOINT_EVERY"


def load_key(path: Path, *, create: bool) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file; created when missing only if ``create``.
    Raises SettingsError when it is missing or not an Ed25519 key."""
    if create:
        return load_or_create_ed25519_key(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        msg = f"cannot read the seal's signing key {path}: {exc}"
        raise SettingsError(msg) from None
    if not isinstance(key, Ed25519PrivateKey):
        msg = f"{path} is not an Ed25519 private key"
        raise SettingsError(msg)
    return key


def seal_signer(settings: Settings) -> Signer:
    """The signer of this installation's checkpoints (created in development)."""
    create = settings.environment is Environment.DEVELOPMENT
    return Signer(settings.seal_origin, load_key(settings.seal_key_path(), create=create))


def seal_env(settings: Settings, log: str) -> dict[str, str]:
    """The part of a log's application environment that configures its checkpoints."""
    return {
        LOG: log,
        KEY_FILE: str(settings.seal_key_path()),
        CREATE_KEY: "yes" if settings.environment is Environment.DEVELOPMENT else "no",
        ORIGIN: settings.seal_origin,
        EVERY: str(settings.seal_checkpoint_every),
    }


def policy_from_env(env: Mapping[str, str]) -> CheckpointPolicy | None:
    """A log's checkpoint policy from its application environment, or None without one."""
    log = env.get(LOG)
    if not log or not env.get(KEY_FILE):
        return None
    origin = env.get(ORIGIN) or "ketnoi.localhost"
    key = load_key(Path(env[KEY_FILE]), create=env.get(CREATE_KEY) == "yes")
    return CheckpointPolicy(
        signer=Signer(origin, key), origin=f"{origin}/{log}", every=int(env.get(EVERY) or 1000)
    )
