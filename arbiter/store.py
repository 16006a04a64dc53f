"""SQLite persistence through sqlite-utils: rooms, connections, chat (docs/PROTOCOL.md section 5).

The store is called from the trio loop directly. Every call is one short statement or one short
transaction on a local WAL database with `synchronous=NORMAL` (no fsync per commit), which costs
tens of microseconds; a thread hop would cost more than it saves and sqlite3 connections are bound
to their thread. The store is never called on the media path.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlite_utils


class RoomStatus(StrEnum):
    """A room's life (docs/PROTOCOL.md section 2, "Room ids and the room lifecycle"); stored as
    its text in the rooms table."""

    STARTING = "starting"  # made, its SFU not identified yet
    UNCLAIMED = "unclaimed"  # in the idle pool, waiting for a claimRoom
    CLAIMED = "claimed"  # bound to a URL path
    CLOSED = "closed"


STARTING = RoomStatus.STARTING
UNCLAIMED = RoomStatus.UNCLAIMED
CLAIMED = RoomStatus.CLAIMED
CLOSED = RoomStatus.CLOSED

# Room ids are random in [2^32, 2^53): JSON- and JavaScript-safe integers that are as hard to
# guess as a URL is to find (knowing a room id admits to its call). Never sequential.
ROOM_ID_MIN = 2**32
ROOM_ID_MAX = 2**53


def random_room_id() -> int:
    return ROOM_ID_MIN + secrets.randbelow(ROOM_ID_MAX - ROOM_ID_MIN)


@dataclass(frozen=True)
class RoomRow:
    id: int
    url_path: str | None
    status: str
    worker_id: str | None
    created_at: float
    claimed_at: float | None
    # scrypt hashes (arbiter.credentials), never the secrets; None: no password / no key.
    password_hash: str | None = None
    moderator_key_hash: str | None = None
    locked: bool = False


@dataclass(frozen=True)
class ChatRow:
    id: int
    room_id: int
    sender: str
    name: str
    content: str
    ts: float


def _room(row: sqlite3.Row | tuple[Any, ...]) -> RoomRow:
    *head, locked = row
    return RoomRow(*head, locked=bool(locked))


_ROOM_COLUMNS = (
    "id, url_path, status, worker_id, created_at, claimed_at,"
    " password_hash, moderator_key_hash, locked"
)


class Store:
    """One SQLite database. Open with `Store.open(path)`; `close()` is idempotent."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self._closed = False

    @classmethod
    def open(cls, path: str | Path) -> Store:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        store = cls(db)
        store._migrate()
        return store

    def _migrate(self) -> None:
        db = self.db
        if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "memory":
            db.enable_wal()
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db["rooms"].create(
            {
                "id": int,
                "url_path": str,
                "status": str,
                "worker_id": str,
                "created_at": float,
                "claimed_at": float,
            },
            pk="id",
            not_null={"status", "created_at"},
            if_not_exists=True,
        )
        # Room access (added after the first release: existing databases gain the columns).
        columns = db["rooms"].columns_dict
        for name, kind in (("password_hash", str), ("moderator_key_hash", str), ("locked", int)):
            if name not in columns:
                db["rooms"].add_column(name, kind, not_null_default=0 if kind is int else None)
        # SQLite UNIQUE admits many NULLs: unclaimed and closed rooms have url_path NULL.
        db["rooms"].create_index(["url_path"], unique=True, if_not_exists=True)
        db["rooms"].create_index(["status"], if_not_exists=True)
        db["connections"].create(
            {
                "connection_id": str,
                "type": str,
                "peer_id": str,
                "room_id": int,
                "name": str,
                "connected_at": float,
                "identified_at": float,
                "remote_addr": str,
            },
            pk="connection_id",
            if_not_exists=True,
        )
        db["connections"].create_index(["room_id"], if_not_exists=True)
        db["chat"].create(
            {
                "id": int,
                "room_id": int,
                "sender": str,
                "name": str,
                "content": str,
                "ts": float,
            },
            pk="id",
            not_null={"room_id", "content", "ts"},
            if_not_exists=True,
        )
        db["chat"].create_index(["room_id", "id"], if_not_exists=True)
        # Chat belongs to a room's life: history of rooms closed before this version is purged.
        db.execute(
            "DELETE FROM chat WHERE room_id NOT IN (SELECT id FROM rooms WHERE status != ?)",
            [CLOSED],
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.db.conn.close()

    # -- rooms ---------------------------------------------------------------------------------

    def create_room(self, now: float, worker_id: str | None = None) -> int:
        for _ in range(8):
            room_id = random_room_id()
            try:
                self.db.execute(
                    "INSERT INTO rooms (id, status, worker_id, created_at) VALUES (?, ?, ?, ?)",
                    [room_id, STARTING, worker_id, now],
                )
            except sqlite3.IntegrityError:
                continue  # a collision in 2^53 ids: practically never, but never reuse one
            return room_id
        raise sqlite3.IntegrityError("no free room id after 8 draws")  # pragma: no cover

    def get_room(self, room_id: int) -> RoomRow | None:
        row = self.db.execute(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE id = ?", [room_id]
        ).fetchone()
        return _room(row) if row else None

    def room_by_path(self, url_path: str) -> RoomRow | None:
        row = self.db.execute(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE url_path = ? AND status != ?",
            [url_path, CLOSED],
        ).fetchone()
        return _room(row) if row else None

    def mark_ready(self, room_id: int) -> None:
        """The room's SFU identified: a starting room becomes claimable."""
        self.db.execute(
            "UPDATE rooms SET status = ? WHERE id = ? AND status = ?",
            [UNCLAIMED, room_id, STARTING],
        )

    def claim(
        self,
        url_path: str,
        now: float,
        *,
        password_hash: str | None = None,
        moderator_key_hash: str | None = None,
    ) -> tuple[int, bool] | None:
        """Bind one ready unclaimed room to `url_path`, atomically; idempotent per path.

        Returns (room id, True) when this call bound it (the hashes are stored with it), or
        (room id, False) when the path already had a room (nothing changes), or None when no
        ready room is left. One IMMEDIATE transaction: the existing-binding check and the
        UPDATE ... RETURNING see the same snapshot, and the UNIQUE index on url_path is the last
        line of defence.
        """
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT id FROM rooms WHERE url_path = ? AND status != ?", [url_path, CLOSED]
            ).fetchone()
            new = row is None
            if new:
                row = conn.execute(
                    "UPDATE rooms SET url_path = ?, status = ?, claimed_at = ?,"
                    " password_hash = ?, moderator_key_hash = ?, locked = 0 WHERE id = ("
                    " SELECT id FROM rooms WHERE status = ? AND url_path IS NULL"
                    " ORDER BY created_at, id LIMIT 1) RETURNING id",
                    [url_path, CLAIMED, now, password_hash, moderator_key_hash, UNCLAIMED],
                ).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return (int(row[0]), new) if row else None

    def set_password(self, room_id: int, password_hash: str | None) -> None:
        self.db.execute(
            "UPDATE rooms SET password_hash = ? WHERE id = ?", [password_hash, room_id]
        )

    def set_worker(self, room_id: int, worker_id: str | None) -> None:
        self.db.execute("UPDATE rooms SET worker_id = ? WHERE id = ?", [worker_id, room_id])

    def set_locked(self, room_id: int, locked: bool) -> None:
        self.db.execute("UPDATE rooms SET locked = ? WHERE id = ?", [int(locked), room_id])

    def close_room(self, room_id: int) -> None:
        """Closed rooms free their urlPath and forget their chat (names and messages)."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Its secrets go with it: a closed room's hashes protect nothing any more.
            conn.execute(
                "UPDATE rooms SET status = ?, url_path = NULL, password_hash = NULL,"
                " moderator_key_hash = NULL, locked = 0 WHERE id = ?",
                [CLOSED, room_id],
            )
            conn.execute("DELETE FROM chat WHERE room_id = ?", [room_id])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def live_rooms(self) -> list[RoomRow]:
        rows = self.db.execute(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE status != ? ORDER BY id", [CLOSED]
        ).fetchall()
        return [_room(r) for r in rows]

    def count_rooms(self, status: str | None = None) -> int:
        if status is None:
            sql, args = "SELECT count(*) FROM rooms WHERE status != ?", [CLOSED]
        else:
            sql, args = "SELECT count(*) FROM rooms WHERE status = ?", [status]
        return int(self.db.execute(sql, args).fetchone()[0])

    # -- connections ---------------------------------------------------------------------------

    def add_connection(self, connection_id: str, remote_addr: str, now: float) -> None:
        self.db.execute(
            "INSERT INTO connections (connection_id, connected_at, remote_addr) VALUES (?, ?, ?)",
            [connection_id, now, remote_addr],
        )

    def identify_connection(
        self,
        connection_id: str,
        *,
        type: str | None,
        peer_id: str | None,
        room_id: int | None,
        name: str | None,
        now: float | None,
    ) -> None:
        """Record (or, with Nones, forget) what a connection identified as."""
        self.db.execute(
            "UPDATE connections SET type = ?, peer_id = ?, room_id = ?, name = ?,"
            " identified_at = ? WHERE connection_id = ?",
            [type, peer_id, room_id, name, now, connection_id],
        )

    def remove_connection(self, connection_id: str) -> None:
        self.db.execute("DELETE FROM connections WHERE connection_id = ?", [connection_id])

    def clear_connections(self) -> int:
        """At start-up: the sockets of those rows died with the previous process."""
        return self.db.execute("DELETE FROM connections").rowcount

    def count_connections(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM connections").fetchone()[0])

    def connections(self) -> list[dict[str, Any]]:
        return list(self.db["connections"].rows)

    # -- chat ----------------------------------------------------------------------------------

    def add_chat(
        self,
        room_id: int,
        sender: str,
        name: str,
        content: str,
        ts: float,
        *,
        max_rows: int = 500,
        max_bytes: int = 262144,
    ) -> ChatRow:
        """Append a message; the room's oldest messages go once it is over its quota."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "INSERT INTO chat (room_id, sender, name, content, ts) VALUES (?, ?, ?, ?, ?)",
                [room_id, sender, name, content, ts],
            )
            row_id = int(cur.lastrowid or 0)
            # Keep the newest messages whose running size fits both quotas (window function:
            # one statement, bounded by the quota's row count).
            conn.execute(
                "DELETE FROM chat WHERE room_id = ? AND id < ("
                " SELECT coalesce(min(id), 0) FROM ("
                "  SELECT id, sum(length(CAST(content AS BLOB)) + length(CAST(name AS BLOB))"
                "   + length(CAST(sender AS BLOB))) OVER (ORDER BY id DESC) AS total,"
                "   row_number() OVER (ORDER BY id DESC) AS n"
                "  FROM chat WHERE room_id = ? ORDER BY id DESC LIMIT ?"
                " ) WHERE total <= ? AND n <= ?)",
                [room_id, room_id, max_rows + 1, max_bytes, max_rows],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return ChatRow(row_id, room_id, sender, name, content, ts)

    def chat_usage(self, room_id: int) -> tuple[int, int]:
        """(rows, bytes) of a room's stored chat."""
        rows, size = self.db.execute(
            "SELECT count(*), coalesce(sum(length(CAST(content AS BLOB))"
            " + length(CAST(name AS BLOB)) + length(CAST(sender AS BLOB))), 0)"
            " FROM chat WHERE room_id = ?",
            [room_id],
        ).fetchone()
        return int(rows), int(size)

    def recent_chat(self, room_id: int, limit: int = 50) -> list[ChatRow]:
        rows = self.db.execute(
            "SELECT id, room_id, sender, name, content, ts FROM chat WHERE room_id = ?"
            " ORDER BY id DESC LIMIT ?",
            [room_id, limit],
        ).fetchall()
        return [ChatRow(*r) for r in reversed(rows)]
