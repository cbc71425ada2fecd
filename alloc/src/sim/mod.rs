//! The crash simulator (`sim` backend): see `state.rs` for the model and
//! `images.rs` for how crash images are enumerated.

pub(crate) mod images;
pub(crate) mod sites;
pub(crate) mod state;

pub use images::{CrashPoint, ImageDesc, PendingWord};
pub use sites::{Site, SiteKind, SiteStats};
pub use state::{Sim, SimConfig, SimCounters};
