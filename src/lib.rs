//! segnode: a DICOM network node that receives CT / CBCT series, decides when each series is complete,
//! segments it and sends the results back to PACS as DICOM objects.
//!
//! The crate is a library with one binary (`src/main.rs`) so that tests and benchmarks can reach every
//! room of the pipeline directly. Data flows one way through the modules:
//! `source` (the C-STORE SCP of crate `segnode-net`) → `store` (durable files + index) → `series`
//! (completion) → `volume` (HU + affine) → `segment` (pipelines) → `result` (DICOM SEG). The index
//! database (tables, queue, outbox, wake-ups) is the `segnode-db` crate: this crate holds no SQL.

pub mod atna;
pub mod audit;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod http;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod readahead;
pub mod reload;
pub mod retention;
pub mod routing;
pub mod series;
pub mod sink;
pub mod source;
pub mod store;
pub mod view;
pub mod worker;

pub use segnode_imaging::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
