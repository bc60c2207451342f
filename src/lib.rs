//! segnode: a DICOM network node that receives CT / CBCT series, decides when each series is complete,
//! segments it and sends the results back to PACS as DICOM objects.
//!
//! The crate is a library with one binary (`src/main.rs`) so that tests and benchmarks can reach every room
//! of the pipeline directly.

pub mod phantom;
pub mod result;
pub mod segment;
pub mod volume;
