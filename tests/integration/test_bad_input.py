"""Bad input: clear INVALID_ARGUMENT (or the right code) with BadRequest details; in a batch only
the bad items are rejected; generated messages never crash the server or half-write."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as O

from tests.helpers import COLUMN, TABLE, ago, asset, eventually, new_tenant, status_of, violations


async def _refused(call, code=grpc.StatusCode.INVALID_ARGUMENT):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value
    return err.value


async def test_only_bad_items_of_a_batch_are_rejected(stub, md):
    batch = [
        asset("pg://ok/1"),
        asset("pg://" + "x" * 2045, name="long"),  # 2,051 bytes
        common_pb.AssetInput(qualified_name="pg://ok/type", asset_type=99),
        common_pb.AssetInput(asset_type=TABLE),  # no qualified name
        asset("pg://ok/nul\x00", name="nul"),
        asset("pg://ok/tag", tags=[common_pb.TagAssignment(name="bad tag!")]),
        asset("pg://ok/future", source_event_time=ago(-3600)),
        asset("pg://ok/2", COLUMN),
    ]
    res = (await stub.IngestMetadata(O.IngestMetadataRequest(assets=batch), metadata=md)).results
    outcomes = [r.outcome for r in res]
    assert outcomes == [O.INGEST_OUTCOME_CREATED] + [O.INGEST_OUTCOME_REJECTED] * 6 + [
        O.INGEST_OUTCOME_ACCEPTED
    ]
    fields = [set(violations(r.error)) for r in res[1:7]]
    assert fields == [
        {"assets[1].qualified_name"},
        {"assets[2].asset_type"},
        {"assets[3].qualified_name"},
        {"assets[4].qualified_name"},
        {"assets[5].tags[0].name"},
        {"assets[6].source_event_time"},
    ]
    assert all(r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for r in res[1:7])

    async def written() -> list[str]:
        found = await stub.SearchMetadata(
            O.SearchMetadataRequest(qualified_name_prefix="pg://ok/", page_size=100), metadata=md
        )
        return [a.qualified_name for a in found.assets]

    # the good table at once, the good column once the worker has it; none of the bad ones
    assert "pg://ok/1" in await written()
    assert await eventually(lambda: _both(written)) == ["pg://ok/1", "pg://ok/2"]


async def _both(written):
    names = await written()
    return names if len(names) >= 2 else None


async def test_a_qualified_name_of_exactly_2048_bytes_is_fine(stub, md):
    qn = "pg://" + "é" * 1021 + "x"  # 5 + 2042 + 1 = 2048 bytes
    assert len(qn.encode()) == 2048
    r = (
        await stub.IngestMetadata(O.IngestMetadataRequest(assets=[asset(qn)]), metadata=md)
    ).results[0]
    assert r.outcome == O.INGEST_OUTCOME_CREATED


async def test_batch_over_1000_is_refused_whole(stub, md):
    err = await _refused(
        stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset(f"pg://big/{i}") for i in range(1001)]),
            metadata=md,
        )
    )
    assert "assets" in violations(status_of(err))
    assert not (
        await stub.SearchMetadata(
            O.SearchMetadataRequest(qualified_name_prefix="pg://big/"), metadata=md
        )
    ).assets


async def test_message_over_the_size_limit(stub, md):
    huge = asset("pg://huge", description="x" * (17 * 1024 * 1024))
    await _refused(
        stub.IngestMetadata(O.IngestMetadataRequest(assets=[huge]), metadata=md),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )


async def test_malformed_requests(stub, md):
    aid = (
        (
            await stub.IngestMetadata(
                O.IngestMetadataRequest(assets=[asset("pg://m/t")]), metadata=md
            )
        )
        .results[0]
        .asset_id
    )
    cases = [
        (stub.GetMetadata(O.GetMetadataRequest(), metadata=md), "asset_id"),
        (stub.GetMetadata(O.GetMetadataRequest(asset_id="../etc"), metadata=md), "asset_id"),
        (stub.LookupMetadata(O.LookupMetadataRequest(), metadata=md), "qualified_name"),
        (
            stub.UpdateMetadata(
                O.UpdateMetadataRequest(asset_id=aid, asset=common_pb.Asset(name="n")), metadata=md
            ),
            "update_mask",
        ),
        (
            stub.UpdateMetadata(
                O.UpdateMetadataRequest(
                    asset_id=aid,
                    asset=common_pb.Asset(version=9),
                    update_mask={"paths": ["version"]},
                ),
                metadata=md,
            ),
            "update_mask.paths[0]",
        ),
        (stub.UpdateTags(O.UpdateTagsRequest(asset_id=aid), metadata=md), "add"),
        (
            stub.UpdateTags(
                O.UpdateTagsRequest(
                    asset_id=aid, source=77, add=[common_pb.TagAssignment(name="a")]
                ),
                metadata=md,
            ),
            "source",
        ),
        (stub.AttachIssue(O.AttachIssueRequest(asset_id=aid), metadata=md), "issue"),
        (
            stub.AttachIssue(
                O.AttachIssueRequest(asset_id=aid, issue=common_pb.DataQualityIssue(source="mc")),
                metadata=md,
            ),
            "issue.external_id",
        ),
        (stub.SearchMetadata(O.SearchMetadataRequest(page_size=5000), metadata=md), "page_size"),
        (stub.SearchMetadata(O.SearchMetadataRequest(asset_type=1234), metadata=md), "asset_type"),
        (stub.GetBulkJob(O.GetBulkJobRequest(job_id="x"), metadata=md), "job_id"),
        (
            stub.IngestMetadata(O.IngestMetadataRequest(close_bulk_job=True), metadata=md),
            "close_bulk_job",
        ),
    ]
    for call, field in cases:
        err = await _refused(call)
        assert field in violations(status_of(err)), (field, err.details())
    await _refused(
        stub.GetBulkJob(O.GetBulkJobRequest(job_id="0" * 32), metadata=md),
        grpc.StatusCode.NOT_FOUND,
    )
    await _refused(
        stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset("pg://m/x")], bulk_job_id="0" * 32), metadata=md
        ),
        grpc.StatusCode.NOT_FOUND,
    )


_text = st.text(st.characters(codec="utf-8"), max_size=40)
_inputs = st.builds(
    common_pb.AssetInput,
    qualified_name=st.one_of(_text, st.just(""), st.text(min_size=2040, max_size=2060)),
    asset_type=st.integers(min_value=-3, max_value=12),
    name=_text,
    description=_text,
    owners=st.lists(_text, max_size=3),
    tags=st.lists(st.builds(common_pb.TagAssignment, name=_text, value=_text), max_size=3),
    attributes=st.dictionaries(_text, _text, max_size=3),
    source_event_time=st.builds(lambda s: ago(s), st.floats(-1e6, 1e9, allow_nan=False)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(_inputs, max_size=8))
async def test_generated_batches_never_crash_or_half_write(stub, channel, admin_md, batch):
    import uuid

    md = await new_tenant(channel, admin_md, "hyp" + uuid.uuid4().hex[:10])
    res = (await stub.IngestMetadata(O.IngestMetadataRequest(assets=batch), metadata=md)).results
    assert [r.index for r in res] == list(range(len(batch)))
    written = {
        r.qualified_name
        for r in res
        if r.outcome
        in (
            O.INGEST_OUTCOME_CREATED,
            O.INGEST_OUTCOME_UPDATED,
            O.INGEST_OUTCOME_UNCHANGED,
            O.INGEST_OUTCOME_STALE,
        )
    }
    for r in res:
        assert r.outcome != O.INGEST_OUTCOME_UNSPECIFIED
        if r.outcome == O.INGEST_OUTCOME_REJECTED:
            assert violations(r.error)
            if (
                r.qualified_name.strip()  # a blank name is not a valid lookup either
                and r.qualified_name not in written
                and "\x00" not in r.qualified_name
                and len(r.qualified_name.encode()) <= 2048
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.LookupMetadata(
                        O.LookupMetadataRequest(qualified_name=r.qualified_name), metadata=md
                    )
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for qn in written:
        got = (
            await stub.LookupMetadata(O.LookupMetadataRequest(qualified_name=qn), metadata=md)
        ).asset
        trail = (
            await stub.GetAuditTrail(O.GetAuditTrailRequest(asset_id=got.asset_id), metadata=md)
        ).entries
        # written with its audit entry (a queued item of the same name may land meanwhile)
        assert any(entry.asset_version == got.version for entry in trail)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    req=st.builds(
        O.SearchMetadataRequest,
        asset_type=st.integers(-2, 20),
        tag=_text,
        qualified_name_prefix=_text,
        owner=_text,
        page_size=st.integers(-5, 2000),
        page_token=st.one_of(st.just(""), _text),
    )
)
async def test_generated_searches_answer_or_refuse_cleanly(stub, md, req):
    try:
        await stub.SearchMetadata(req, metadata=md)
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        assert violations(status_of(err))


@pytest.mark.parametrize("job_id", ["\x00" * 32, "nope", "A" * 32, "0" * 31 + "\n"])
async def test_bulk_job_ids_that_cannot_exist_are_refused(stub, md, job_id):
    for call in (
        stub.GetBulkJob(O.GetBulkJobRequest(job_id=job_id), metadata=md),
        stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset("pg://job/t")], bulk_job_id=job_id),
            metadata=md,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # not a crash (NUL bytes)
