//! Durable storage of received instances: UID validation, the instance files, their header, and the
//! filing service that ties them to the index database (`segnode-db`), directly or through the ingest
//! journal (`journal`, `materialise`).

pub mod crashpoint;
pub mod files;
pub mod header;
pub mod ingest;
pub mod journal;
pub mod lengths;
pub mod materialise;
pub mod record;
pub mod uid;
