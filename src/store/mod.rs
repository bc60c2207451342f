//! Durable storage of received instances: UID validation, the instance files, their header, the index
//! database, and the filing service that ties them together.

pub mod crashpoint;
pub mod files;
pub mod header;
pub mod index;
pub mod ingest;
pub mod uid;
pub mod wakeup;
