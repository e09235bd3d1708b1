"""The `parley` command."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from aiohttp import web
from sqlalchemy.orm import Session

from parley.config import Settings, SettingsError, load_settings
from parley.event_loop import new_event_loop
from parley.db import create_sync_db_engine, sync_session_factory
from parley.errors import DomainError
from parley.ids import is_valid_id
from parley.logs import configure_logging
from parley.models import UserKind
from parley.schemas import UserPrivateOut

if TYPE_CHECKING:
    from workers.celery_app import ParleyCelery

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _with_session(settings: Settings, work: Callable[[Session], T]) -> T:
    engine = create_sync_db_engine(settings)
    try:
        with sync_session_factory(engine)() as session:
            return work(session)
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    finally:
        engine.dispose()


def _migrate_if_asked(settings: Settings, migrate: bool | None) -> None:
    """--migrate/--no-migrate, defaulting to on for the embedded SQLite only: there one process
    owns the database, while several API nodes on PostgreSQL should not race to migrate it."""
    from parley.migrate import upgrade_to_head

    if migrate if migrate is not None else settings.is_sqlite:
        upgrade_to_head(settings)


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
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64),
    help="API processes sharing the port (SO_REUSEPORT), to use every core. More than one needs "
    "PARLEY_REDIS_URL: the processes share realtime events and presence through Redis.",
)
@click.option("--reuse-port", is_flag=True, hidden=True, help="Bind with SO_REUSEPORT (set for --workers' children).")
def serve(host: str | None, port: int | None, migrate: bool | None, workers: int, reuse_port: bool) -> None:
    """Run the HTTP API."""
    from parley.api.app import init_app

    settings = _settings()
    configure_logging(settings.log_level)
    if workers > 1 and not settings.redis_url:
        raise click.ClickException(
            f"--workers {workers} needs PARLEY_REDIS_URL (e.g. redis://127.0.0.1:6379/0): the API processes "
            "share live events, presence and typing through Redis. Without it, run one process."
        )
    host, port = host or settings.host, port or settings.port
    if workers > 1:
        _listenable(host, port)
        _migrate_if_asked(settings, migrate)
        _serve_processes(host, port, workers)
        return
    if not reuse_port:
        _listenable(host, port)  # a busy address stops here, before anything has started
    _migrate_if_asked(settings, migrate)
    web.run_app(
        init_app(settings),
        loop=new_event_loop(),
        host=host,
        port=port,
        reuse_port=reuse_port or None,
        access_log=None,
        print=lambda line: click.echo(line),
    )


def _listen(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    from parley.listening import AddressUnavailable, bind_listeners

    try:
        return bind_listeners(host, port, reuse_port=reuse_port)
    except AddressUnavailable as exc:
        raise click.ClickException(str(exc)) from None


def _listenable(host: str, port: int) -> None:
    for listener in _listen(host, port):
        listener.close()


def _serve_processes(host: str, port: int, workers: int) -> None:
    """Run `workers` API processes on one port; stop them all on Ctrl-C, SIGTERM, or if one dies."""
    from workers.stack import Child, run_stack

    argv = [sys.executable, "-m", "parley.cli", "serve", "--no-migrate", "--reuse-port", "--host", host, "--port", str(port)]
    children = [Child(f"api-{n}", argv) for n in range(1, workers + 1)]

    def announce() -> None:
        click.echo(f"{workers} API processes on http://{host}:{port} (Ctrl-C stops them)")

    raise SystemExit(run_stack(children, f"http://{host}:{port}/readyz", announce))


@main.command("mail-in")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=2525, type=int, show_default=True, help="Port to listen on.")
@click.option("--lmtp", is_flag=True, help="Speak LMTP instead of SMTP (a relay's local delivery).")
def mail_in(host: str, port: int, lmtp: bool) -> None:
    """Receive replies by email over SMTP (LMTP with --lmtp) from a relay such as Postfix: each
    reply to a notification's reply+<token>@PARLEY_EMAIL_REPLY_DOMAIN address becomes a message.
    Unknown recipients are refused with 550, mail over PARLEY_EMAIL_MAX_INBOUND_BYTES with 552."""
    from integrations.email.inbound import session_runner
    from integrations.email.mail_in import serve
    from integrations.storage.configured import storage_for

    settings = _settings()
    configure_logging(settings.log_level)
    if not settings.email_reply_domain:
        raise click.ClickException("set PARLEY_EMAIL_REPLY_DOMAIN: replies go to reply+<token>@<that domain>")
    sessions = sync_session_factory(create_sync_db_engine(settings))
    loop = new_event_loop()
    try:
        loop.run_until_complete(serve(settings, storage_for(settings), session_runner(sessions), host, port, lmtp=lmtp))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


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
    from parley.api.endpoints import validate_fields
    from parley.api.errors import ApiError
    from parley.api.schemas import CreateUserBody
    from parley.services.users import NewUser, create_user as do_create_user

    fields = {"username": username, "name": name, "email": email, "avatar_url": avatar_url, "kind": kind}
    try:
        body = validate_fields(CreateUserBody, {k: v for k, v in fields.items() if v is not None})
    except ApiError as exc:  # what the API answers for the same fields
        problems = "".join(
            f"\n  --{str(f['field']).replace('_', '-')}: {f['message']}" for f in exc.details.get("fields", [])
        )
        raise click.ClickException(f"{exc.code}: {exc.error_message}{problems}") from None
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

    def work(session: Session) -> dict[str, str]:
        with session.begin():
            user = get_user(session, user_ref) if is_valid_id(user_ref) else get_user_by_username(session, user_ref)
        minted = do_create_token(session, user.id, name)
        return {"id": minted.token.id, "user_id": user.id, "token": minted.secret}

    click.echo(json.dumps(_with_session(_settings(), work), indent=2))


@main.group()
def digests() -> None:
    """Digests of unread messages (README: Digests)."""


def _user_id_of(session: Session, username: str) -> str:
    from parley.services.users import get_user_by_username

    with session.begin():
        return get_user_by_username(session, username).id


@digests.command("send")
@click.option("--user", "username", default=None, help="Only this user (by username).")
@click.option("--force", is_flag=True, help="Everyone with something new, due or not (digests off excepted).")
@click.option("--dry-run", is_flag=True, help="Print who would get what; record and send nothing.")
def send_digests(username: str | None, force: bool, dry_run: bool) -> None:
    """Send the digests that are due now (at each user's local digest_hour), here and now rather than
    through a worker: recorded like the sweep's, so nothing is ever sent twice."""
    from integrations.email.sender import sender_for
    from parley.models import utcnow
    from parley.services.email_digests import BATCH_SIZE, collect_digests, digest_users, due_digest_users
    from workers.digest_tasks import run_digest_batch

    settings = _settings()
    configure_logging(settings.log_level)
    engine = create_sync_db_engine(settings)
    sessions = sync_session_factory(engine)
    sender = sender_for(settings)
    totals = {"users": 0, "digests": 0, "messages": 0}
    try:
        with sessions() as session:
            if username is not None:
                candidates = [_user_id_of(session, username)]
            elif force:
                candidates, after = [], ""
                while page := digest_users(session, after):
                    candidates += page
                    after = page[-1]
            else:
                candidates = due_digest_users(session, utcnow())
        for start in range(0, len(candidates), BATCH_SIZE):
            batch = candidates[start:start + BATCH_SIZE]
            if dry_run:
                with sessions() as session:
                    found = collect_digests(session, settings, batch)
                for facts in found.values():
                    click.echo(f"{facts.recipient_email}: {facts.total_messages} messages in "
                               f"{facts.total_conversations} conversations")
                    totals["digests"] += 1
                    totals["messages"] += facts.total_messages
                totals["users"] += len(batch)
                continue
            prepared, _ = run_digest_batch(settings, sessions, sender, batch, force=force)
            totals["users"] += prepared.users
            totals["digests"] += len(prepared.email_ids)
            totals["messages"] += prepared.messages
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    finally:
        engine.dispose()
    verb = "would send" if dry_run else "sent"
    click.echo(f"{verb} {totals['digests']} digests ({totals['messages']} messages) to {totals['users']} users checked")


@digests.command("preview")
@click.argument("username")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the HTML part to this file.")
def preview_digest(username: str, html_file: str | None) -> None:
    """Print the digest USERNAME would get now (its subject and text part), recording nothing."""
    from integrations.email.compose import render
    from integrations.email.digests import digest_context
    from parley.services.email_digests import collect_digests

    settings = _settings()

    def work(session: Session) -> Any:
        return collect_digests(session, settings, [_user_id_of(session, username)])

    found = _with_session(settings, work)
    if not found:
        click.echo(f"nothing new for {username}: no digest")
        return
    [facts] = found.values()
    rendered = render("digest", digest_context(settings, facts))
    click.echo(f"Subject: {rendered.subject}\n\n{rendered.text}")
    if html_file:
        with open(html_file, "w", encoding="utf-8") as out:
            out.write(rendered.html)
        click.echo(f"HTML written to {html_file}", err=True)


# `parley worker` and `parley beat` hand every argument they do not know to Celery; --help is Parley's.
CELERY_PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}
DEMO_PEOPLE = (("alice", "Alice (demo)"), ("bob", "Bob (demo)"))


def _celery_app() -> ParleyCelery:
    try:
        from workers.app import app
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    except (ImportError, ValueError) as exc:  # a consumer module that is missing or malformed
        raise click.ClickException(f"cannot load the consumers: {exc}") from None
    return app


@main.command(context_settings=CELERY_PASSTHROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker on every queue (events, media, webhooks, mirror, email), with
    PARLEY_* settings (broker: PARLEY_BROKER_URL).

    Other arguments go to Celery's worker; the useful ones:

    \b
      -Q, --queues events,media     only these queues (default: all five)
      -c, --concurrency N           worker processes (default: one per CPU)
      -n, --hostname NAME@%h        the worker's name, unique on a machine
      -l, --loglevel LEVEL          default: PARLEY_LOG_LEVEL

    \b
    Examples:
      parley worker                          every queue
      parley worker -Q media -c 4            media processing only, 4 processes
      parley worker -Q webhooks -n hooks@%h  a second worker on this machine

    The same as `celery -A workers.app worker`; every Celery option is listed by
    `celery -A workers.app worker --help`.
    """
    app = _celery_app()
    level = app.parley.settings.log_level
    app.worker_main(["worker", "--loglevel", level, "--without-gossip", "--without-mingle", *celery_args])


@main.command(context_settings=CELERY_PASSTHROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Run Celery beat, Parley's clock: it sweeps the outbox every PARLEY_OUTBOX_SWEEP_SECONDS,
    wakes the webhook delivery engines, purges uploads never attached and sends the digests that are
    due (every PARLEY_DIGEST_SWEEP_SECONDS). Run exactly one (a
    second one only sweeps twice as often).

    Other arguments go to Celery's beat; the useful ones:

    \b
      -l, --loglevel LEVEL      default: PARLEY_LOG_LEVEL
      -s, --schedule FILE       where beat keeps when each task last ran

    \b
    Example:
      parley beat

    The same as `celery -A workers.app beat`; every Celery option is listed by
    `celery -A workers.app beat --help`.
    """
    app = _celery_app()
    app.start(["beat", "--loglevel", app.parley.settings.log_level, *celery_args])


@main.command()
@click.option("--host", default=None, help="Address the API listens on [default: PARLEY_HOST, 127.0.0.1].")
@click.option("--port", default=None, type=int, help="Port the API listens on [default: PARLEY_PORT, 8080].")
@click.option("--demo", is_flag=True, help="Also create the demo users alice and bob, and print their tokens.")
@click.option(
    "--migrate/--no-migrate", default=None,
    help="Bring the database schema up to date first [default: on for the embedded SQLite only].",
)
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
def up(host: str | None, port: int | None, demo: bool, migrate: bool | None, concurrency: int) -> None:
    """Run all of Parley on this machine: the API, a Celery worker and beat, until Ctrl-C.

    On a fresh checkout this needs no settings and no server: SQLite and the embedded broker live in
    ./var. Ctrl-C or SIGTERM stops every process it started.
    """
    from workers.stack import run_stack, stack_children

    settings = _settings()
    configure_logging(settings.log_level)
    host = host or settings.host
    port = port or settings.port
    # Before anything starts: a second `parley up` must not take the first one's API for its own.
    _listenable(host, port)
    _migrate_if_asked(settings, migrate)
    people = _with_session(settings, lambda s: _demo_people(s, settings)) if demo else None
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # a wildcard is not a URL to visit
    base = f"http://{shown_host}:{port}"

    def announce() -> None:
        click.echo(
            f"\nParley is up.\n"
            f"  API     {base}/api/v1\n"
            f"  Docs    {base}/docs\n"
            f"  Ready   {base}/readyz\n"
            f"  Worker  {concurrency} processes, broker {settings.broker_url}\n"
            f"  Beat    sweeping the outbox every {settings.outbox_sweep_seconds:g} s\n"
        )
        if people is not None:
            click.echo(_describe_demo(base, people))
        click.echo("Press Ctrl-C to stop.\n")

    def stopping() -> None:
        click.echo("Stopping Parley (API, worker, beat): a running task gets a few seconds to finish...")

    raise SystemExit(run_stack(stack_children(host, port, concurrency), f"{base}/readyz", announce, stopping))


def _demo_people(session: Session, settings: Settings) -> dict[str, Any]:
    """alice and bob (created the first time, reused after), a fresh token each, and their
    conversation."""
    from sqlalchemy import select

    from parley.models import User
    from parley.services.contact import contact_user
    from parley.services.conversations import OtherUser
    from parley.services.tokens import create_token
    from parley.services.users import NewUser, create_user

    users = []
    for username, name in DEMO_PEOPLE:
        with session.begin():
            existing = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
        users.append(existing or create_user(session, NewUser(username=username, name=name)))
    tokens = [create_token(session, user.id, "parley up --demo").secret for user in users]
    contact = contact_user(session, settings, users[0], OtherUser(user_id=users[1].id))
    return {
        "people": [{"username": u.username, "id": u.id, "token": t} for u, t in zip(users, tokens, strict=True)],
        "conversation_id": contact.conversation.id,
    }


def _describe_demo(base: str, demo: dict[str, Any]) -> str:
    lines = ["Demo users (new tokens each run):"]
    lines += [f"  {p['username']:<6} id {p['id']}  token {p['token']}" for p in demo["people"]]
    alice = demo["people"][0]
    lines += [
        "Send a message as alice:",
        f"  curl -s -X POST {base}/api/v1/conversations/{demo['conversation_id']}/messages \\",
        f"    -H 'Authorization: Bearer {alice['token']}' -H 'Content-Type: application/json' \\",
        "    -d '{\"content\": \"Hello Bob\"}'",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
