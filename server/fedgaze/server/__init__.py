"""The server side: the ServerApp, aggregation, the server ledger, server start and status."""
