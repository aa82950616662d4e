"""Ingest: identity, versions, last-writer-wins, consistency classes, bulk jobs."""

from __future__ import annotations

import grpc
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as O

from core.domain.rules import asset_id_for
from core.server import start
from core.settings import Settings
from tests.helpers import COLUMN, TABLE, ago, asset, eventually, status_of, violations


async def test_asset_id_is_stable_and_reingest_bumps_version_only_on_change(stub, md, tenant):
    qn = "snowflake://acct/db/sales/orders"
    first = (
        await stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset(qn, description="v1")]), metadata=md
        )
    ).results[0]
    assert first.outcome == O.INGEST_OUTCOME_CREATED
    assert first.asset_id == asset_id_for(tenant, qn)
    assert first.version == 1
    again = (
        await stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset(qn, description="v1")]), metadata=md
        )
    ).results[0]
    assert (again.outcome, again.asset_id, again.version) == (
        O.INGEST_OUTCOME_UNCHANGED,
        first.asset_id,
        1,
    )
    changed = (
        await stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset(qn, description="v2")]), metadata=md
        )
    ).results[0]
    assert (changed.outcome, changed.version) == (O.INGEST_OUTCOME_UPDATED, 2)
    assert list(changed.changed_fields) == ["description"]
    got = (await stub.GetMetadata(O.GetMetadataRequest(asset_id=first.asset_id), metadata=md)).asset
    assert (got.description, got.version, got.tenant_id) == ("v2", 2, tenant)
    looked = (
        await stub.LookupMetadata(O.LookupMetadataRequest(qualified_name=qn), metadata=md)
    ).asset
    assert looked.asset_id == first.asset_id


async def test_older_ingest_and_update_are_stale_noops(stub, md):
    qn = "pg://h/db/s/events"
    await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset(qn, description="new", source_event_time=ago(10))]),
        metadata=md,
    )
    old = (
        await stub.IngestMetadata(
            O.IngestMetadataRequest(
                assets=[asset(qn, description="old", source_event_time=ago(60))]
            ),
            metadata=md,
        )
    ).results[0]
    assert old.outcome == O.INGEST_OUTCOME_STALE
    assert old.version == 1
    upd = await stub.UpdateMetadata(
        O.UpdateMetadataRequest(
            asset_id=old.asset_id,
            asset=common_pb.Asset(description="older still"),
            update_mask={"paths": ["description"]},
            source_event_time=ago(30),
        ),
        metadata=md,
    )
    assert upd.outcome == O.INGEST_OUTCOME_STALE
    got = (await stub.GetMetadata(O.GetMetadataRequest(asset_id=old.asset_id), metadata=md)).asset
    assert (got.description, got.version) == ("new", 1)


async def test_same_asset_twice_in_one_batch_applies_in_order(stub, md):
    qn = "pg://h/db/s/dup"
    res = (
        await stub.IngestMetadata(
            O.IngestMetadataRequest(
                assets=[asset(qn, description="a"), asset(qn, description="b")]
            ),
            metadata=md,
        )
    ).results
    assert [r.outcome for r in res] == [O.INGEST_OUTCOME_CREATED, O.INGEST_OUTCOME_UPDATED]
    got = (
        await stub.GetMetadata(O.GetMetadataRequest(asset_id=res[0].asset_id), metadata=md)
    ).asset
    assert (got.description, got.version) == ("b", 2)


async def test_columns_are_queued_then_written_and_the_bulk_job_settles(stub, md):
    job = (await stub.CreateBulkJob(O.CreateBulkJobRequest(description="scrape"), metadata=md)).job
    assert job.state == O.BULK_JOB_STATE_OPEN
    batch = (
        [asset("pg://h/db/s/t", TABLE)]
        + [
            asset(f"pg://h/db/s/t/c{i}", COLUMN, parent_qualified_name="pg://h/db/s/t")
            for i in range(50)
        ]
        + [asset("", COLUMN)]
    )
    res = (
        await stub.IngestMetadata(
            O.IngestMetadataRequest(assets=batch, bulk_job_id=job.job_id, close_bulk_job=True),
            metadata=md,
        )
    ).results
    assert res[0].outcome == O.INGEST_OUTCOME_CREATED
    assert res[0].consistency == common_pb.CONSISTENCY_CLASS_STRONG
    assert {r.outcome for r in res[1:51]} == {O.INGEST_OUTCOME_ACCEPTED}
    assert {r.consistency for r in res[1:51]} == {common_pb.CONSISTENCY_CLASS_EVENTUAL}
    assert res[51].outcome == O.INGEST_OUTCOME_REJECTED

    async def settled():
        j = (await stub.GetBulkJob(O.GetBulkJobRequest(job_id=job.job_id), metadata=md)).job
        return j if j.state in (O.BULK_JOB_STATE_SUCCEEDED, O.BULK_JOB_STATE_FAILED) else None

    final = await eventually(settled)
    assert (final.accepted, final.written, final.failed, final.stale) == (51, 51, 1, 0)
    assert final.state == O.BULK_JOB_STATE_FAILED  # one item was rejected
    assert final.HasField("finished_at")
    col = (
        await stub.GetMetadata(O.GetMetadataRequest(asset_id=res[7].asset_id), metadata=md)
    ).asset
    assert col.parent_id == res[0].asset_id
    assert col.consistency == common_pb.CONSISTENCY_CLASS_EVENTUAL
    # a closed job takes no more batches
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset("pg://h/x")], bulk_job_id=job.job_id), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_stream_ingest_summarises_and_counts_stale_and_unchanged(stub, md):
    cols = [asset(f"pg://h/db/s/w/c{i}", COLUMN, source_event_time=ago(5)) for i in range(20)]

    async def first():
        yield O.IngestMetadataStreamRequest(assets=cols[:10])
        yield O.IngestMetadataStreamRequest(assets=[*cols[10:], asset("pg://h/db/s/w", TABLE)])

    summary = await stub.IngestMetadataStream(first(), metadata=md)
    assert (summary.received, summary.accepted, summary.created, summary.rejected) == (21, 20, 1, 0)

    async def job_done(job_id):
        j = (await stub.GetBulkJob(O.GetBulkJobRequest(job_id=job_id), metadata=md)).job
        return j if j.state == O.BULK_JOB_STATE_SUCCEEDED else None

    assert (await eventually(lambda: job_done(summary.bulk_job_id))).written == 21
    older = [asset(c.qualified_name, COLUMN, source_event_time=ago(60)) for c in cols[:5]]
    same = cols[5:8]

    async def second():
        yield O.IngestMetadataStreamRequest(assets=older + same + [asset("bad", 42)])

    s2 = await stub.IngestMetadataStream(second(), metadata=md)
    assert (s2.received, s2.accepted, s2.rejected) == (9, 8, 1)
    assert s2.rejections[0].index == 8
    job = await eventually(lambda: _final(stub, md, s2.bulk_job_id))
    assert (job.stale, job.unchanged, job.written, job.failed) == (5, 3, 0, 1)


async def test_stream_batches_apply_in_order_and_a_bad_batch_stops_the_stream(stub, md, tenant):
    """Batches go through the pipelined lanes in stream order: the last version of a strong
    asset sent wins even at equal source times (the queued ones are ordered by their source
    times, as concurrent workers may take them in any order); an oversized batch ends the
    stream with INVALID_ARGUMENT, and what came before it is written and counted once."""
    at = ago(30)

    def batch(n: int) -> O.IngestMetadataStreamRequest:
        return O.IngestMetadataStreamRequest(
            assets=[
                asset("pg://lane/t", TABLE, description=f"v{n}", source_event_time=at),
                asset("pg://lane/t/c", COLUMN, description=f"v{n}", source_event_time=ago(30 - n)),
                asset(f"pg://lane/t/c{n}", COLUMN),
            ]
        )

    async def ordered():
        for n in range(12):
            yield batch(n)

    summary = await stub.IngestMetadataStream(ordered(), metadata=md)
    assert (summary.received, summary.created, summary.updated, summary.accepted) == (36, 1, 11, 24)
    job = await eventually(lambda: _final(stub, md, summary.bulk_job_id))
    # (a queued version overtaken by a newer one is counted stale, not written)
    assert (job.state, job.accepted, job.written + job.stale) == (
        O.BULK_JOB_STATE_SUCCEEDED,
        36,
        36,
    )
    assert job.written >= 12 + 12 + 1
    for qn in ("pg://lane/t", "pg://lane/t/c"):
        got = (
            await stub.GetMetadata(
                O.GetMetadataRequest(asset_id=asset_id_for(tenant, qn)), metadata=md
            )
        ).asset
        assert got.description == "v11", qn

    async def with_a_bad_batch():
        yield O.IngestMetadataStreamRequest(assets=[asset("pg://stop/t", TABLE)])
        yield O.IngestMetadataStreamRequest(assets=[asset("pg://stop/t/c", COLUMN)])
        yield O.IngestMetadataStreamRequest(
            assets=[asset(f"pg://stop/big{i}") for i in range(1001)]
        )
        yield O.IngestMetadataStreamRequest(assets=[asset("pg://stop/after", TABLE)])

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.IngestMetadataStream(with_a_bad_batch(), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "assets" in violations(status_of(err.value))
    found = await eventually(lambda: _found(stub, md, "pg://stop/", 2))
    assert sorted(a.qualified_name for a in found) == ["pg://stop/t", "pg://stop/t/c"]


async def _found(stub, md, prefix: str, n: int):
    assets = (
        await stub.SearchMetadata(
            O.SearchMetadataRequest(qualified_name_prefix=prefix), metadata=md
        )
    ).assets
    return assets if len(assets) >= n else None


async def _final(stub, md, job_id):
    j = (await stub.GetBulkJob(O.GetBulkJobRequest(job_id=job_id), metadata=md)).job
    return j if j.state in (O.BULK_JOB_STATE_SUCCEEDED, O.BULK_JOB_STATE_FAILED) else None


async def test_consistency_mapping_is_configurable(stack, md):
    dsn, url = stack
    server = await start(
        Settings(grpc_port=0, consistency={"COLUMN": "STRONG", "TABLE": "EVENTUAL"}, workers=False),
        postgres_dsn=dsn,
        nats_url=url,
    )
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            from lily.v1 import metadata_pb2_grpc

            stub = metadata_pb2_grpc.MetadataServiceStub(ch)
            res = (
                await stub.IngestMetadata(
                    O.IngestMetadataRequest(
                        assets=[asset("pg://cfg/t/c", COLUMN), asset("pg://cfg/t", TABLE)]
                    ),
                    metadata=md,
                )
            ).results
            assert res[0].outcome == O.INGEST_OUTCOME_CREATED
            assert res[0].consistency == common_pb.CONSISTENCY_CLASS_STRONG
            assert res[1].outcome == O.INGEST_OUTCOME_ACCEPTED
    finally:
        await server.stop()


async def test_queued_assets_keep_the_callers_trace_through_the_worker(stub, md, tenant, event_log):
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    traced = (*md, ("traceparent", f"00-{trace_id}-b7ad6b7169203331-01"))
    res = await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset("pg://trace/t/c", COLUMN)]), metadata=traced
    )
    assert res.results[0].outcome == O.INGEST_OUTCOME_ACCEPTED

    async def created():
        return event_log.events(".asset.created")

    ((subject, event, headers),) = await eventually(created)
    assert subject == f"lily.{tenant}.asset.created" and event.qualified_name == "pg://trace/t/c"
    assert headers["traceparent"].split("-")[1] == trace_id
