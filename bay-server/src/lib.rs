//! bay-server: the HTTP/WebSocket API over bay-core, and the driver factory.
