//! The states of the index's tables, typed, with their SQL literals written here and nowhere else.
//!
//! Each state column (`series.state`, `associations.state`, `jobs.state`, `outbox.state`) holds one of
//! the literals below. Queries bind them ([`as_str`](JobState::as_str)) and rows are parsed back into
//! the enums, so a misspelt state is a compile error rather than a query that silently matches
//! nothing. The partial-index conditions of [`crate::schema`] repeat some of these literals inside
//! their SQL text (they must be literal for SQLite to use the index); a unit test there checks that
//! every literal they name is a state of the table.

use crate::error::IndexError;

/// Declares a state enum with its SQL literals, parsing, `Display` (padded like a `&str`, so table
/// output keeps its columns) and serialisation as the literal.
macro_rules! states {
    ($(#[$doc:meta])* $name:ident in $table:literal { $($(#[$vdoc:meta])* $variant:ident = $lit:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every state, in lifecycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The table whose `state` column holds these.
            pub const TABLE: &'static str = $table;

            /// The SQL literal of the state.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $lit,)+
                }
            }

            /// The state of a literal, if it is one.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($lit => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The state of a value read from the table (an error names an unknown one).
            pub(crate) fn from_column(s: String) -> Result<$name, IndexError> {
                $name::parse(&s).ok_or(IndexError::UnknownState {
                    table: $table,
                    value: s,
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other.as_str()
            }
        }
    };
}

states! {
    /// A series revision: receiving instances, then complete (the tracker decided, with a reason). A
    /// late instance reopens a complete series as the next revision, receiving again.
    SeriesState in "series" {
        Receiving = "RECEIVING",
        Complete = "COMPLETE",
        /// Claimed by a node that is removing its files (retention).
        Purging = "PURGING",
        /// Files removed after the retention period; the series' history stays.
        Purged = "PURGED",
    }
}

states! {
    /// A DICOM association as journaled by the receiver that holds it.
    AssociationState in "associations" {
        Open = "OPEN",
        /// Ended with a normal release.
        Released = "RELEASED",
        /// Aborted by either side, or left open by a receiver that died.
        Aborted = "ABORTED",
    }
}

states! {
    /// A job: QUEUED → RUNNING → DONE, or FAILED (retried after a backoff) → … → DEAD.
    JobState in "jobs" {
        Queued = "QUEUED",
        /// Claimed by a worker holding a lease.
        Running = "RUNNING",
        Done = "DONE",
        /// Waiting for its retry.
        Failed = "FAILED",
        /// Out of attempts: only a manual retry queues it again.
        Dead = "DEAD",
    }
}

states! {
    /// A delivery of a result file to one destination.
    DeliveryState in "outbox" {
        Pending = "PENDING",
        /// Taken by a dispatcher (with a lease).
        Sending = "SENDING",
        /// The destination acknowledged it.
        Sent = "SENT",
        /// Refused for good or out of attempts: only a manual resend queues it again.
        Dead = "DEAD",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_round_trip_and_pad() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(DeliveryState::parse("SENT"), Some(DeliveryState::Sent));
        assert_eq!(SeriesState::parse("complete"), None);
        assert_eq!(format!("{:<9}|", SeriesState::Complete), "COMPLETE |");
        assert!(AssociationState::Open == "OPEN");
        assert!(matches!(
            JobState::from_column("LOST".into()),
            Err(IndexError::UnknownState { table: "jobs", .. })
        ));
    }
}
