"""Generated gRPC/protobuf code of the crossrec API. Do not edit: see proto/generate.py."""
