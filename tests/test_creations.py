"""User creations gathered per organisation (core.creations): a burst goes to
PostgreSQL as few statements, and each creation still succeeds or fails on
its own, with its own row, audit event and place on the change stream; and
each statement shows in the trace it belongs to."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common import tracing
from common.wirejson import dumps
from core import db, users
from core.creations import Creation, Creations
from tests.scim_client import Scim
from tests.support import bearer, new_org_with_token, org_id_of
from wando.provisioning.v1 import admin_service_pb2_grpc
from wando.provisioning.v1 import user_service_pb2 as upb
from wando.provisioning.v1 import user_service_pb2_grpc as ugrpc


async def _create(
    stub: ugrpc.UserServiceStub, secret: str, user_name: str
) -> upb.CreateUserResponse | grpc.StatusCode:
    try:
        return await stub.CreateUser(
            upb.CreateUserRequest(user_json=dumps({"userName": user_name})),
            metadata=bearer(secret),
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def test_a_burst_of_creations_each_gets_its_own_row_audit_and_sequence(
    channel: grpc.aio.Channel,
    admin_stub: admin_service_pb2_grpc.AdminServiceStub,
    pool: asyncpg.Pool,
) -> None:
    _, secret = await new_org_with_token(admin_stub, "burst")
    org_id = await org_id_of(pool, "burst")
    stub = ugrpc.UserServiceStub(channel)
    await _create(stub, secret, "taken@burst.example")
    names = [f"u{i}@burst.example" for i in range(40)]
    sent = [*names, "taken@burst.example", "dup@burst.example", "DUP@burst.example"]
    answered = await asyncio.gather(*(_create(stub, secret, n) for n in sent))
    answers = dict(zip(sent, answered, strict=True))

    assert answers["taken@burst.example"] == grpc.StatusCode.ALREADY_EXISTS
    # userName is unique without regard to case: one of the two wins
    dups = [answers["dup@burst.example"], answers["DUP@burst.example"]]
    assert sorted(isinstance(a, upb.CreateUserResponse) for a in dups) == [False, True]
    assert grpc.StatusCode.ALREADY_EXISTS in dups
    created = {n: a for n, a in answers.items() if isinstance(a, upb.CreateUserResponse)}
    assert set(names) <= set(created)

    # each answer's sequence is its own user's row on the stream, gapless from 1
    stream = {
        r["user_id"]: r["seq"]
        for r in await pool.fetch(
            "SELECT user_id::text, seq FROM role_changes WHERE org_id = $1", org_id
        )
    }
    assert sorted(stream.values()) == list(range(1, 43))
    for answer in created.values():
        assert stream[answer.user.id] == answer.role_sequence
    audited = await pool.fetchval(
        "SELECT count(*) FROM audit_events WHERE org_id = $1 AND action = 'create'", org_id
    )
    assert audited == 42
    total = await pool.fetchval(
        "SELECT sum(n) FROM resource_counts WHERE org_id = $1 AND resource = 'users'", org_id
    )
    assert (
        total == 42 == await pool.fetchval("SELECT count(*) FROM users WHERE org_id = $1", org_id)
    )


def _creation(user_name: str) -> Creation:
    return Creation(
        user_id=uuid.uuid4(),
        user_name=user_name,
        external_id=None,
        display_name=None,
        active=True,
        document={"userName": user_name, "active": True},
        emails=[],
        role_values=[],
        token_id=None,
        changed=["active", "userName"],
    )


async def test_creations_that_arrive_together_go_as_one_statement(
    acme: Scim, pool: asyncpg.Pool
) -> None:
    org_id = await org_id_of(pool, "acme")
    creations = Creations(pool, users.INSERT_USERS, users.CREATE_ATTEMPTS)
    rows = await asyncio.gather(
        *(creations.create(org_id, _creation(f"u{i}@acme.example")) for i in range(30))
    )
    assert all(r is not None for r in rows)
    assert creations.batches < 30


async def test_a_creation_the_database_refuses_fails_alone(acme: Scim, pool: asyncpg.Pool) -> None:
    """A statement that fails for one user's row is run again one creation at a
    time: the others are written."""
    await pool.execute(
        """
        CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.user_name = 'poison@acme.example' THEN RAISE EXCEPTION 'refused'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_poison BEFORE INSERT ON users
            FOR EACH ROW EXECUTE FUNCTION refuse_poison();
        """
    )
    org_id = await org_id_of(pool, "acme")
    creations = Creations(pool, users.INSERT_USERS, users.CREATE_ATTEMPTS)
    sent = [_creation(f"u{i}@acme.example") for i in range(10)]
    sent.insert(5, _creation("poison@acme.example"))
    answers = await asyncio.gather(
        *(creations.create(org_id, c) for c in sent), return_exceptions=True
    )
    assert isinstance(answers[5], asyncpg.RaiseError)
    assert all(isinstance(a, asyncpg.Record) for i, a in enumerate(answers) if i != 5)
    names = {r["user_name"] for r in await pool.fetch("SELECT user_name FROM users")}
    assert names == {f"u{i}@acme.example" for i in range(10)}


async def test_whose_statement_a_trace_shows(acme: Scim, database_dsn: str) -> None:
    """A creation that goes alone runs its INSERT in its caller's trace; a
    batch's INSERT is in a span of its own, linked to each caller's span, and
    in no caller's trace (before, every batch ran in the trace of whichever
    caller started the queue)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        traced = await db.create_pool(database_dsn, min_size=1, max_size=10)  # traced statements
        try:
            org_id = await org_id_of(traced, "acme")
            creations = Creations(traced, users.INSERT_USERS, users.CREATE_ATTEMPTS)
            tracer = provider.get_tracer("test")

            async def caller(i: int) -> trace.SpanContext:
                with tracer.start_as_current_span(f"caller {i}") as span:
                    assert await creations.create(org_id, _creation(f"t{i}@acme.example"))
                    return span.get_span_context()

            callers = await asyncio.gather(*(caller(i) for i in range(30)))
        finally:
            await traced.close()
    finally:
        tracing.use(None)
        provider.shutdown()

    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    batches = [s for s in spans if s.name == "user creations"]
    inserts = [s for s in spans if s.name == "INSERT users"]
    assert batches and creations.batches < 30  # some went together
    # each INSERT is a lone caller's or a batch's, and each caller is in exactly one
    served: list[int] = []
    for insert in inserts:
        assert insert.parent is not None
        parent = by_id[insert.parent.span_id]
        if parent.name == "user creations":
            links = [link.context.span_id for link in parent.links]
            assert len(links) == parent.attributes["wando.batch_size"] > 1
            served += links
        else:
            assert parent.name.startswith("caller ")
            served.append(parent.context.span_id)
    assert sorted(served) == sorted(c.span_id for c in callers)
    for batch in batches:  # the root of a trace of its own
        assert batch.parent is None
        assert batch.context.trace_id not in {c.trace_id for c in callers}
