//! Per-key async mutexes: creates of one session, and lifecycle operations of one ship, are
//! serialised while different keys proceed in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

/// A set of async mutexes created on demand, one per key.
#[derive(Debug, Default)]
pub struct KeyedLock {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Holds the lock of one key until dropped.
pub type KeyGuard = OwnedMutexGuard<()>;

impl KeyedLock {
    /// Waits for and takes the lock of `key`.
    pub async fn lock(&self, key: &str) -> KeyGuard {
        self.mutex(key).lock_owned().await
    }

    fn mutex(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(key).and_then(Weak::upgrade) {
            return m;
        }
        if map.len() >= 256 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let m = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_owned(), Arc::downgrade(&m));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_is_serialised_and_other_keys_are_not() {
        let locks = Arc::new(KeyedLock::default());
        let g = locks.lock("a").await;
        let l2 = locks.clone();
        let blocked = tokio::spawn(async move { l2.lock("a").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !blocked.is_finished(),
            "second lock of the same key must wait"
        );
        let _other = tokio::time::timeout(Duration::from_secs(1), locks.lock("b"))
            .await
            .expect("another key is free");
        drop(g);
        tokio::time::timeout(Duration::from_secs(1), blocked)
            .await
            .expect("released")
            .unwrap();
    }
}
