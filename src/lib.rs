//! segnode: a DICOM network node that receives CT / CBCT series, decides when each series is complete,
//! segments it and sends the results back to PACS as DICOM objects.
//!
//! The crate is a library with one binary (`src/main.rs`) so that tests and benchmarks can reach every
//! room of the pipeline directly. Data flows one way through the modules:
//! `net` (C-STORE SCP) → `store` (durable files + index) → `series` (completion) → `volume` (HU + affine)
//! → `segment` (pipelines) → `result` (DICOM SEG).

pub mod config;
pub mod dispatch;
pub mod http;
pub mod metrics;
pub mod net;
pub mod node;
pub mod phantom;
pub mod queue;
pub mod result;
pub mod routing;
pub mod segment;
pub mod series;
pub mod store;
pub mod volume;
pub mod worker;

/// Our Implementation Class UID (file meta and association negotiation).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.14345763612760638638775095632467294471";
/// Our Implementation Version Name (≤ 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("SEGNODE_", env!("CARGO_PKG_VERSION"));
