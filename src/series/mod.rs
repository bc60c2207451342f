//! Series: the stack geometry check and the completion tracker that decides, from evidence, when a
//! series is complete.

pub mod geometry;
pub mod tracker;
