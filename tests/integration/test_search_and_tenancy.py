"""Search (filters, opaque stable page tokens) and tenant isolation."""

from __future__ import annotations

import grpc
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as O

from tests.helpers import COLUMN, TABLE, asset, details, eventually, status_of, violations


async def _search_all(stub, md, **query):
    seen, token = [], ""
    while True:
        page = await stub.SearchMetadata(
            O.SearchMetadataRequest(page_size=7, page_token=token, **query), metadata=md
        )
        seen += [a.qualified_name for a in page.assets]
        token = page.next_page_token
        if not token:
            return seen


async def test_search_filters(stub, md):
    await stub.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[
                asset(
                    "sf://a/db/s/t1",
                    TABLE,
                    owners=["ann"],
                    data_source="snowflake",
                    tags=[common_pb.TagAssignment(name="PII")],
                ),
                asset("sf://a/db/s/t2", TABLE, owners=["bob"], data_source="snowflake"),
                asset("pg://b/db/s/t3", TABLE, owners=["ann"], data_source="postgres"),
                asset("sf://a/db", common_pb.ASSET_TYPE_DATABASE, data_source="snowflake"),
            ]
        ),
        metadata=md,
    )
    assert await _search_all(stub, md) == [
        "pg://b/db/s/t3",
        "sf://a/db",
        "sf://a/db/s/t1",
        "sf://a/db/s/t2",
    ]
    assert await _search_all(stub, md, asset_type=TABLE, owner="ann") == [
        "pg://b/db/s/t3",
        "sf://a/db/s/t1",
    ]
    assert await _search_all(stub, md, tag="PII") == ["sf://a/db/s/t1"]
    assert await _search_all(stub, md, qualified_name_prefix="sf://a/db/") == [
        "sf://a/db/s/t1",
        "sf://a/db/s/t2",
    ]
    assert await _search_all(stub, md, data_source="postgres") == ["pg://b/db/s/t3"]
    assert await _search_all(stub, md, qualified_name_prefix="sf://a/db%") == []  # no wildcards


async def test_pages_are_stable_across_concurrent_inserts(stub, md):
    names = [f"pg://h/db/s/t{i:03d}" for i in range(0, 60, 2)]
    await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset(n) for n in names]), metadata=md
    )
    seen, token, n = [], "", 1
    while True:
        page = await stub.SearchMetadata(
            O.SearchMetadataRequest(page_size=10, page_token=token), metadata=md
        )
        seen += [a.qualified_name for a in page.assets]
        # inserts before and after the cursor while paging
        await stub.IngestMetadata(
            O.IngestMetadataRequest(
                assets=[asset(f"pg://h/db/s/t{n:03d}"), asset(f"pg://h/db/s/t{59 - n:03d}")]
            ),
            metadata=md,
        )
        n += 2
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert set(names) <= set(seen), "a row that existed before paging was skipped"
    assert seen == sorted(seen)


async def test_page_tokens_are_bound_to_query_and_tenant(stub, md, other_md):
    await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset(f"pg://h/p{i}") for i in range(3)]), metadata=md
    )
    token = (
        await stub.SearchMetadata(O.SearchMetadataRequest(page_size=1), metadata=md)
    ).next_page_token
    assert token
    other_tenant = other_md
    for req, meta in (
        (O.SearchMetadataRequest(page_size=1, page_token=token, tag="x"), md),  # another query
        (O.SearchMetadataRequest(page_size=1, page_token=token), other_tenant),  # another tenant
        (O.SearchMetadataRequest(page_size=1, page_token=token[:-2] + "AA"), md),  # tampered
        (O.SearchMetadataRequest(page_size=1, page_token="garbage!"), md),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SearchMetadata(req, metadata=meta)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in violations(status_of(err.value))


async def test_tenants_never_see_each_other(stub, md, other_md):
    aid = (
        (
            await stub.IngestMetadata(
                O.IngestMetadataRequest(assets=[asset("pg://shared/name", owners=["x"])]),
                metadata=md,
            )
        )
        .results[0]
        .asset_id
    )
    other = other_md
    for call in (
        stub.GetMetadata(O.GetMetadataRequest(asset_id=aid, include_deleted=True), metadata=other),
        stub.LookupMetadata(
            O.LookupMetadataRequest(qualified_name="pg://shared/name"), metadata=other
        ),
        stub.GetAuditTrail(O.GetAuditTrailRequest(asset_id=aid), metadata=other),
        stub.DeleteMetadata(O.DeleteMetadataRequest(asset_id=aid), metadata=other),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (
        await stub.SearchMetadata(O.SearchMetadataRequest(owner="x"), metadata=other)
    ).assets
    # the same qualified name in the other tenant is another asset
    other_id = (
        (
            await stub.IngestMetadata(
                O.IngestMetadataRequest(assets=[asset("pg://shared/name")]), metadata=other
            )
        )
        .results[0]
        .asset_id
    )
    assert other_id != aid
    assert (
        await stub.GetMetadata(O.GetMetadataRequest(asset_id=aid), metadata=md)
    ).asset.version == 1


async def test_missing_credentials_or_another_tenant_named_are_refused(stub, md, tenant):
    for meta in ((), (("x-lily-tenant", tenant),), (("authorization", "Bearer lily_nope"),)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SearchMetadata(O.SearchMetadataRequest(), metadata=meta)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert details(status_of(err.value))["ErrorInfo"].reason == "UNAUTHENTICATED"
    # naming your own tenant is fine; naming another is refused
    await stub.SearchMetadata(O.SearchMetadataRequest(), metadata=(*md, ("x-lily-tenant", tenant)))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SearchMetadata(
            O.SearchMetadataRequest(), metadata=(*md, ("x-lily-tenant", tenant + "x"))
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_watch_delivers_matching_changes_of_own_tenant_only(stub, md, other_md, tenant):
    other = other_md
    call = stub.WatchChanges(O.WatchChangesRequest(tags=["PII"]), metadata=md)
    await call.initial_metadata()  # subscribed
    await stub.IngestMetadata(O.IngestMetadataRequest(assets=[asset("pg://w/plain")]), metadata=md)
    await stub.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[asset("pg://w/pii", tags=[common_pb.TagAssignment(name="PII")])]
        ),
        metadata=other,
    )
    await stub.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[asset("pg://w/pii", tags=[common_pb.TagAssignment(name="PII")])]
        ),
        metadata=md,
    )
    first = await eventually(lambda: call.read(), timeout=5)
    assert (first.event.qualified_name, first.event.tenant_id) == ("pg://w/pii", tenant)
    assert list(first.event.tags_added) == ["PII"]
    call.cancel()


async def test_watch_filters_by_asset_type_and_change(stub, md):
    from lily.v1 import events_pb2

    call = stub.WatchChanges(
        O.WatchChangesRequest(asset_types=[COLUMN], changes=[events_pb2.CHANGE_KIND_CREATED]),
        metadata=md,
    )
    await call.initial_metadata()
    await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset("pg://f/t"), asset("pg://f/t/c", COLUMN)]),
        metadata=md,
    )
    got = await eventually(lambda: call.read(), timeout=5)
    assert got.event.asset_type == COLUMN and got.event.change == events_pb2.CHANGE_KIND_CREATED
    call.cancel()


async def test_a_watcher_that_goes_away_releases_its_consumer(stub, md, stack):
    import nats

    nc = await nats.connect(stack[1])
    js = nc.jetstream()
    try:
        before = (await js.stream_info("LILY_CHANGES")).state.consumer_count
        calls = [stub.WatchChanges(O.WatchChangesRequest(), metadata=md) for _ in range(3)]
        for call in calls:
            await call.initial_metadata()

        async def count():
            return (await js.stream_info("LILY_CHANGES")).state.consumer_count

        async def at_least(n):
            return await count() >= n

        async def at_most(n):
            return await count() <= n

        await eventually(lambda: at_least(3), timeout=5)
        during = await count()
        for call in calls:
            call.cancel()
        # earlier tests' watchers may still be going away: compare with the peak, not `before`
        await eventually(lambda: at_most(min(before, during - 3)), timeout=5)
    finally:
        await nc.close()
