//! Store call latency, measured by each driver at the one seam its calls pass through, so no
//! store method has to time itself:
//!
//! - SQLite (`driver="sqlite"`): `op="read"` is one read, from asking to the answer (waiting for
//!   a reader connection included); `op="write"` one write, from queueing it for the writer
//!   thread to its transaction's commit (so the group commit's wait and fsync are in it).
//! - MongoDB (`driver="mongodb"`): each command the driver sends, by its name (`find`,
//!   `insert`, `update`, `findAndModify`, `aggregate`, `getMore`, …; others are `other`), as the
//!   driver's command monitoring times it (the round trip). A store call may send several.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::Histogram},
    registry::Registry,
};

/// Latency buckets, in seconds: from an in-memory read (50 µs) to a stalled disk (5 s).
const BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    5.0,
];

/// MongoDB commands named as such; any other is `other`.
const MONGODB_COMMANDS: [&str; 15] = [
    "find",
    "getMore",
    "insert",
    "update",
    "delete",
    "findAndModify",
    "aggregate",
    "count",
    "distinct",
    "createIndexes",
    "listIndexes",
    "killCursors",
    "ping",
    "endSessions",
    "hello",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    driver: &'static str,
    op: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// A driver's call latencies; cheap to clone (handles to the same series).
#[derive(Clone)]
pub struct StoreTimings(Family<Call, Histogram, fn() -> Histogram>);

impl Default for StoreTimings {
    fn default() -> Self {
        Self(Family::new_with_constructor(histogram))
    }
}

impl StoreTimings {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "confab_store_call_duration_seconds",
            "Store call latency: SQLite reads and writes (a write until its commit), MongoDB commands by name",
            self.0.clone(),
        );
    }

    /// One SQLite read (`write: false`) or write, which took `took`.
    pub fn sqlite(&self, write: bool, took: Duration) {
        let op = if write { "write" } else { "read" };
        self.observe("sqlite", op, took);
    }

    /// One MongoDB command, by its name.
    pub fn mongodb(&self, command: &str, took: Duration) {
        let op = MONGODB_COMMANDS
            .iter()
            .find(|known| **known == command)
            .copied()
            .unwrap_or("other");
        self.observe("mongodb", op, took);
    }

    fn observe(&self, driver: &'static str, op: &'static str, took: Duration) {
        self.0
            .get_or_create(&Call { driver, op })
            .observe(took.as_secs_f64());
    }
}
