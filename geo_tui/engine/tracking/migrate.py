"""``geo-tui migrate --to postgresql://...``: the command around `transfer.move_to_postgres`."""

from __future__ import annotations

from pathlib import Path

from geo_tui.config import Config, rules

from ..lock import DatabaseClaim

__all__ = ["MigrateRefused", "migrate_command"]


class MigrateRefused(Exception):
    """The command's arguments or the config do not allow a migration: ``str(e)`` says why, in one line."""


class _Flag:
    def __init__(self, flag: str) -> None:
        self.flag = flag

    def error(self, message: str) -> Exception:
        return MigrateRefused(f"migrate {self.flag}: {message}")


def migrate_command(config: Config, url: str, password_file: Path | None) -> int:
    """Move the SQLite tracking database of `config` into the PostgreSQL database at `url`, printing the
    rows moved per table. The SQLite file is claimed like an engine claims it, so none writes meanwhile."""
    from .postgres import PostgresDatabase
    from .transfer import move_to_postgres

    engine = config.engine
    if engine.database_url is not None:
        raise MigrateRefused(f"migrate: [engine] database in {config.path} is already PostgreSQL")
    if not engine.database.exists():
        raise MigrateRefused(f"migrate: tracking database {engine.database} does not exist: nothing to move")
    rules.postgres_url(url, _Flag("--to"))
    password = None
    if password_file is not None:
        rules.owner_only(password_file, _Flag("--password-file"))
        password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
    target = PostgresDatabase(url, password)
    claim = DatabaseClaim(engine.database, "geo-tui migrate")
    claim.acquire()  # DatabaseInUse while an engine runs on the file
    try:
        copied = move_to_postgres(engine.database, target)
    finally:
        claim.release()
    for table, count in copied.items():
        print(f"{table}: {count} rows")
    print(
        f"moved {sum(copied.values())} rows from {engine.database} into {target}; "
        f'now set [engine] database = "{url}" in {config.path}'
    )
    return 0
