"""The `parley` command."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from parley.config import Settings, SettingsError, load_settings
from parley.db import async_session_factory, create_async_db_engine
from parley.errors import DomainError
from parley.ids import is_valid_id
from parley.logs import configure_logging
from parley.models import UserKind
from parley.schemas import UserPrivateOut

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_async_db_engine(settings)
        try:
            async with async_session_factory(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None


@click.group()
def main() -> None:
    """Parley: 1:1 conversations, carried wherever people are."""


@main.command()
@click.option("--host", default=None, help="Address to listen on [default: PARLEY_HOST, 127.0.0.1].")
@click.option("--port", default=None, type=int, help="Port to listen on [default: PARLEY_PORT, 8080].")
@click.option(
    "--migrate/--no-migrate", default=None,
    help="Bring the database schema up to date first [default: on for the embedded SQLite only].",
)
def serve(host: str | None, port: int | None, migrate: bool | None) -> None:
    """Run the HTTP API."""
    from parley.api.app import init_app
    from parley.migrate import upgrade_to_head

    settings = _settings()
    configure_logging(settings.log_level)
    if migrate if migrate is not None else settings.is_sqlite:
        upgrade_to_head(settings)
    web.run_app(
        init_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        access_log=None,
        print=lambda line: click.echo(line),
    )


@main.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from parley.migrate import upgrade_to_head

    settings = _settings()
    upgrade_to_head(settings)
    click.echo("database is up to date")


@main.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.option("--username", required=True)
@click.option("--name", required=True)
@click.option("--email", default=None)
@click.option("--avatar-url", default=None)
@click.option("--kind", type=click.Choice([k.value for k in UserKind]), default=UserKind.USER.value, show_default=True)
def create_user(username: str, name: str, email: str | None, avatar_url: str | None, kind: str) -> None:
    """Create a user and print it as JSON."""
    from pydantic import ValidationError

    from parley.api.schemas import CreateUserBody
    from parley.services.users import NewUser, create_user as do_create_user

    try:
        body = CreateUserBody(username=username, name=name, email=email, avatar_url=avatar_url, kind=UserKind(kind))
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    user = _with_session(_settings(), lambda s: do_create_user(s, NewUser(**body.model_dump())))
    click.echo(UserPrivateOut.model_validate(user).model_dump_json(indent=2))


@main.group()
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.option("--user", "user_ref", required=True, help="User id or username.")
@click.option("--name", default=None, help="A label to recognise the token by.")
def create_token(user_ref: str, name: str | None) -> None:
    """Mint a token for a user and print it (the only time it is shown)."""
    from parley.services.tokens import create_token as do_create_token
    from parley.services.users import get_user, get_user_by_username

    async def work(session: AsyncSession) -> dict[str, str]:
        async with session.begin():
            user = await (get_user(session, user_ref) if is_valid_id(user_ref) else get_user_by_username(session, user_ref))
        minted = await do_create_token(session, user.id, name)
        return {"id": minted.token.id, "user_id": user.id, "token": minted.secret}

    click.echo(json.dumps(_with_session(_settings(), work), indent=2))


if __name__ == "__main__":
    main()
