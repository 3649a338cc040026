//! Locking shared by the gateway's modules.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`. Nothing panics while holding the gateway's locks; a poisoned one still
/// holds valid data, so it is used as it is.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
