//! A least-recently-used map bounded by the bytes of its values, with counters so the
//! evaluator can report how much memory its caches hold and how often they help.

use std::collections::HashMap;
use std::hash::Hash;

/// Counters of one cache, reported in [`super::EvalStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Most bytes ever held at once.
    pub peak_bytes: u64,
    /// The configured bound.
    pub capacity_bytes: u64,
}

struct Entry<V> {
    value: V,
    bytes: u64,
    last_used: u64,
}

/// Values are cheap handles (`Arc`, candle `Tensor`) so a value evicted while still in use
/// stays alive for its user; the bound is on what the cache itself keeps.
pub struct Lru<K, V> {
    map: HashMap<K, Entry<V>>,
    tick: u64,
    stats: CacheStats,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub fn new(capacity_bytes: u64) -> Self {
        Self { map: HashMap::new(), tick: 0, stats: CacheStats { capacity_bytes, ..CacheStats::default() } }
    }

    /// The value for `key`, marking it recently used; counts a hit or a miss.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        match self.map.get_mut(key) {
            Some(e) => {
                e.last_used = self.tick;
                self.stats.hits += 1;
                Some(e.value.clone())
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Count a miss for a lookup made with [`Lru::contains`] probes (e.g. several keys tried
    /// for one answer).
    pub fn record_miss(&mut self) {
        self.stats.misses += 1;
    }

    /// Whether `key` is held, without touching recency or counters.
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Insert, then evict least-recently-used entries until the bound holds. A value larger
    /// than the whole bound is not kept.
    pub fn insert(&mut self, key: K, value: V, bytes: u64) {
        self.tick += 1;
        if bytes > self.stats.capacity_bytes {
            return;
        }
        if let Some(old) = self.map.insert(key, Entry { value, bytes, last_used: self.tick }) {
            self.stats.bytes -= old.bytes;
        }
        self.stats.bytes += bytes;
        while self.stats.bytes > self.stats.capacity_bytes {
            let oldest = self.map.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone());
            let Some(k) = oldest else { break };
            let e = self.map.remove(&k).expect("key just found");
            self.stats.bytes -= e.bytes;
            self.stats.evictions += 1;
        }
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.bytes);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_the_byte_bound() {
        let mut c: Lru<&str, u32> = Lru::new(10);
        c.insert("a", 1, 4);
        c.insert("b", 2, 4);
        assert_eq!(c.get(&"a"), Some(1)); // b is now the oldest
        c.insert("c", 3, 4);
        assert!(c.contains(&"a") && c.contains(&"c") && !c.contains(&"b"));
        assert_eq!(c.stats().bytes, 8);
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(c.stats().peak_bytes, 8);
        c.insert("huge", 9, 11);
        assert!(!c.contains(&"huge"));
        assert_eq!(c.get(&"b"), None);
        assert_eq!((c.stats().hits, c.stats().misses), (1, 1));
    }
}
