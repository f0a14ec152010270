"""The crossrec API: generated gRPC/protobuf code under ``crossrec.v1`` (do not edit: see
proto/generate.py) and the hand-written, dependency-free :mod:`crossrec.vocabulary`."""
