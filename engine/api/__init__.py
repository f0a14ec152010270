"""The gRPC front door: the server, the servicer (messages only), request validation and
access control."""
