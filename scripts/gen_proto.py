"""Regenerates the Python code for proto/lily/v1 (messages, .pyi stubs, gRPC stubs).

    python scripts/gen_proto.py           # write proto/lily/v1/*_pb2*.py(i)
    python scripts/gen_proto.py --check   # exit 1 if the committed code drifts from the protos

It also copies the google/api and google/rpc protos we import from the installed
googleapis-common-protos package to build/protodeps, where buf.yaml looks for them.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
PACKAGE = PROTO / "lily" / "v1"
DEPS = ROOT / "build" / "protodeps"
GOOGLE_DEPS = [
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/field_behavior.proto",
    "google/rpc/status.proto",
]
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _googleapis_root() -> Path:
    import google.api  # from googleapis-common-protos

    return Path(next(iter(google.api.__path__))).parent.parent


def copy_deps() -> None:
    src = _googleapis_root()
    for rel in GOOGLE_DEPS:
        dst = DEPS / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst)


def generate(out: Path) -> None:
    from grpc_tools import protoc

    plugin = Path(sys.executable).with_name("protoc-gen-mypy")  # mypy-protobuf's typed stubs
    wkt = resources.files("grpc_tools") / "_proto"
    protos = sorted(str(p.relative_to(PROTO)) for p in PACKAGE.glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{_googleapis_root()}",
        f"-I{wkt}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(base: Path) -> dict[str, Path]:
    pkg = base / "lily" / "v1"
    return {p.name: p for p in pkg.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code drifts")
    args = parser.parse_args()
    copy_deps()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh = generated_files(out)
        committed = generated_files(PROTO)
        if args.check:
            drift = sorted(
                set(fresh) ^ set(committed)
                | {
                    n
                    for n in fresh.keys() & committed.keys()
                    if not filecmp.cmp(fresh[n], committed[n], shallow=False)
                }
            )
            if drift:
                print("generated code drifts from proto/ in: " + ", ".join(drift), file=sys.stderr)
                print("run: python scripts/gen_proto.py", file=sys.stderr)
                return 1
            print(f"generated code matches proto/ ({len(fresh)} files)")
            return 0
        for name in committed.keys() - fresh.keys():
            committed[name].unlink()
        for name, path in fresh.items():
            shutil.copyfile(path, PACKAGE / name)
        print(f"wrote {len(fresh)} files to {PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
