//! What the metrics service knows: the latest report of every process ([`aggregator`]), the
//! figures over the sliding window ([`figures`]), the targets they are held to ([`targets`]),
//! and the Prometheus text of it all ([`exposition`]).

pub mod aggregator;
pub mod exposition;
pub mod figures;
pub mod targets;

pub use aggregator::{Aggregator, RecordError};
pub use figures::Figures;
pub use targets::{Alert, AlertBook, Targets};
