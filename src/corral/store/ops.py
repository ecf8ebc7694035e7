"""Operator state of one run database, in one object: human requests, controls, API tokens and the
audit log.

Each concept has its own module (`humans`, `controls`, `tokens`, `audit`); `Ops` builds them over
one store and one audit log (every mutation in the first three is audited in its own transaction)
and is what the app, the server and the CLI hold. Its methods are the parts' own methods under the
names callers use (`ops.decide`, `ops.add_control`, `ops.create_token`, `ops.audit_entries`...);
the parts are also reachable as `ops.requests`, `ops.controls`, `ops.tokens`, `ops.log`.
"""

from __future__ import annotations

from pathlib import Path

from corral.store.audit import AuditLog, AuditSigner
from corral.store.controls import Control, Controls
from corral.store.humans import HumanRequests
from corral.store.sql import SqlStore
from corral.store.tokens import ROLES, Role, Tokens

__all__ = ["ROLES", "Control", "Ops", "Role"]


class Ops:
    """Human requests, controls, tokens and the audit log of one database.

    Args:
        store: The app's store (its engine and redactor are used).
        key_file: Where the audit signing key lives (see `corral.store.audit.AuditSigner`;
            None: beside a SQLite database, `corral.store.audit.default_key_file`).
        checkpoint_every: Sign the chain head every this many audit entries.
    """

    def __init__(
        self,
        store: SqlStore,
        *,
        key_file: str | Path | None = None,
        checkpoint_every: int = 100,
    ) -> None:
        self.store = store
        self.log = AuditLog(store, key_file=key_file, checkpoint_every=checkpoint_every)
        self.requests = HumanRequests(store, self.log)
        self.controls = Controls(store, self.log)
        self.tokens = Tokens(store, self.log)
        # Human requests (the `corral.humans.HumanStore` the app's `HumanDesk` waits through).
        self.open_request = self.requests.open_request
        self.get_request = self.requests.get_request
        self.expire_request = self.requests.expire_request
        self.decided_among = self.requests.decided_among
        self.human_wait_s = self.requests.human_wait_s
        self.list_requests = self.requests.list_requests
        self.decide = self.requests.decide
        self.feedback = self.requests.feedback
        # Controls.
        self.add_control = self.controls.add
        self.controls_since = self.controls.since
        # Tokens.
        self.create_token = self.tokens.create
        self.list_tokens = self.tokens.list_all
        self.revoke_token = self.tokens.revoke
        self.authenticate = self.tokens.authenticate
        self.has_tokens = self.tokens.any_live
        # The audit log.
        self.audit = self.log.record
        self.audit_entries = self.log.entries
        self.checkpoint = self.log.checkpoint
        self.checkpoints = self.log.checkpoints
        self.verify = self.log.verify

    @property
    def signer(self) -> AuditSigner:
        """The checkpoint signing key (loaded, or created, on first use)."""
        return self.log.signer

    @property
    def checkpoint_every(self) -> int:
        """Sign the chain head every this many audit entries."""
        return self.log.checkpoint_every
