//! DICOM networking: the listener, one handler per association, the DIMSE message codec, the accepted
//! SOP classes and transfer syntaxes, and association access control.

pub mod access;
pub mod association;
pub mod dimse;
pub mod listener;
pub mod scu;
pub mod sop;
