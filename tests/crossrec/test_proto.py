"""The v1 API contract: stubs match the protos, and the protos follow the style we promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from crossrec.v1 import events_pb2, recommend_pb2, service_pb2, service_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
FILES = [events_pb2.DESCRIPTOR, recommend_pb2.DESCRIPTOR, service_pb2.DESCRIPTOR]


def test_committed_stubs_match_protos():
    result = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stale_check_notices_an_edited_stub(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "proto"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    fake_protos = tmp_path / "proto" / "crossrec" / "v1"
    fake_stubs = tmp_path / "crossrec" / "v1"
    for folder, source in ((fake_protos, generate.PACKAGE), (fake_stubs, generate.STUBS)):
        folder.mkdir(parents=True)
        for src in source.iterdir():
            if src.suffix in (".proto", ".py", ".pyi"):
                (folder / src.name).write_bytes(src.read_bytes())
    (fake_stubs / "events_pb2.py").write_text("# hand-edited\n")
    monkeypatch.setattr(generate, "PROTO_ROOT", tmp_path / "proto")
    monkeypatch.setattr(generate, "PACKAGE", fake_protos)
    monkeypatch.setattr(generate, "STUBS", fake_stubs)
    assert generate.stale_files() == ["events_pb2.py"]


def test_package_is_versioned():
    assert {f.package for f in FILES} == {"crossrec.v1"}


def test_enums_start_with_unspecified_zero():
    for f in FILES:
        for enum in f.enum_types_by_name.values():
            prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_")
            assert enum.values[0].number == 0
            assert enum.values[0].name == f"{prefix}_UNSPECIFIED"
            assert all(v.name.startswith(prefix + "_") for v in enum.values), enum.name


def test_repeated_fields_have_plural_names():
    for f in FILES:
        for message in f.message_types_by_name.values():
            for field in message.fields:
                if field.is_repeated:
                    assert field.name.endswith("s"), f"{message.name}.{field.name}"


def test_service_offers_every_rpc():
    methods = set(service_pb2.DESCRIPTOR.services_by_name["RecommendService"].methods_by_name)
    assert methods == {
        "Recommend",
        "RecommendBatch",
        "IngestEvents",
        "DeleteUser",
        "GetStatus",
        "SwapVersion",
    }
    assert hasattr(service_pb2_grpc, "RecommendServiceStub")
    assert hasattr(service_pb2_grpc, "add_RecommendServiceServicer_to_server")


def test_request_round_trips_through_the_wire_format():
    request = recommend_pb2.RecommendRequest(
        user_id="u1",
        k=10,
        recent_events=[events_pb2.Event(item_id="i1", action=events_pb2.ACTION_PURCHASE)],
        category_quotas=[
            recommend_pb2.CategoryQuota(category="Outdoors > Camping > Tents", count=3)
        ],
        cross_category_share=1.0,
        objective_weights=[
            recommend_pb2.ObjectiveWeight(objective=recommend_pb2.OBJECTIVE_PURCHASE, weight=1.0)
        ],
        filters=recommend_pb2.Filters(in_stock_only=True, max_price=50.0),
        explain=True,
    )
    decoded = recommend_pb2.RecommendRequest.FromString(request.SerializeToString())
    assert decoded == request
    assert decoded.HasField("cross_category_share")
    assert decoded.filters.HasField("max_price")
    assert not decoded.filters.HasField("min_price")


def test_stub_type_hints_are_committed():
    package = ROOT / "crossrec" / "v1"
    for name in ("events_pb2.pyi", "recommend_pb2.pyi", "service_pb2.pyi", "service_pb2_grpc.pyi"):
        assert (package / name).stat().st_size > 0
