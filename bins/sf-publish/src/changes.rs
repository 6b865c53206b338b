//! The change list sf-publish writes ([`sf_core::changes`], shared with sf-invalidate), filled
//! by concurrent uploads.

use std::sync::{Arc, Mutex};

pub use sf_core::changes::{schema_json, Action, Change, ChangeList, CHANGE_LIST_VERSION};

/// A change list filled by concurrent uploads.
#[derive(Clone, Debug)]
pub struct Changes(Arc<Mutex<ChangeList>>);

impl Changes {
    pub fn new(destination: &str) -> Self {
        Changes(Arc::new(Mutex::new(ChangeList::new(destination))))
    }

    pub fn push(&self, c: Change) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .changes
            .push(c);
    }

    pub fn snapshot(&self) -> ChangeList {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
