//! Sources: where instances come into the node. Today one, the DICOM C-STORE SCP ([`scp`]: the
//! application side of `segnode-net`'s association handling — admission, the association journal,
//! filing through `store::ingest`, metrics), with its access policy ([`access`]). DICOMweb STOW-RS
//! would be another source beside it, filing through the same ingest.

pub mod access;
pub mod scp;
