//! A least-recently-used map bounded by the bytes of its values, with counters so the
//! evaluator can report how much memory its caches hold and how often they help.
//!
//! A segmented cache ([`Lru::segmented`]) ranks entries before recency: entries never read
//! since their insertion go first, then entries read at least once, then preferred ones
//! ([`Lru::prefer`]); so a stream of one-off values cannot push out the values that keep
//! being reused (the prefix states of a search's incumbent).

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
    /// 0 = not read since inserted, 1 = read, 2 = preferred (segmented caches only).
    class: u8,
}

/// Values are cheap handles (`Arc`, candle `Tensor`) so a value evicted while still in use
/// stays alive for its user; the bound is on what the cache itself keeps.
pub struct Lru<K, V> {
    map: HashMap<K, Entry<V>>,
    tick: u64,
    stats: CacheStats,
    segmented: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub fn new(capacity_bytes: u64) -> Self {
        Self { map: HashMap::new(), tick: 0, stats: CacheStats { capacity_bytes, ..CacheStats::default() }, segmented: false }
    }

    /// A cache that evicts by class first (see the module docs), then by recency.
    pub fn segmented(capacity_bytes: u64) -> Self {
        Self { segmented: true, ..Self::new(capacity_bytes) }
    }

    /// Mark the held entries `keep` accepts as preferred, and demote previously preferred
    /// ones it rejects to "read".
    pub fn prefer(&mut self, keep: impl Fn(&K) -> bool) {
        for (k, e) in self.map.iter_mut() {
            if keep(k) {
                e.class = 2;
            } else if e.class == 2 {
                e.class = 1;
            }
        }
    }

    /// The value for `key`, marking it recently used; counts a hit or a miss.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        match self.map.get_mut(key) {
            Some(e) => {
                e.last_used = self.tick;
                e.class = e.class.max(1);
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
        self.insert_preferred(key, value, bytes, false);
    }

    /// [`Lru::insert`], as a preferred entry when `preferred` (segmented caches).
    pub fn insert_preferred(&mut self, key: K, value: V, bytes: u64, preferred: bool) {
        self.tick += 1;
        if bytes > self.stats.capacity_bytes {
            return;
        }
        let class = if preferred { 2 } else { 0 };
        if let Some(old) = self.map.insert(key, Entry { value, bytes, last_used: self.tick, class }) {
            self.stats.bytes -= old.bytes;
        }
        self.stats.bytes += bytes;
        self.evict_to_bound();
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.bytes);
    }

    /// Change the bound; a lower one evicts (by class, then recency) until it holds.
    pub fn set_capacity(&mut self, capacity_bytes: u64) {
        self.stats.capacity_bytes = capacity_bytes;
        self.evict_to_bound();
    }

    fn evict_to_bound(&mut self) {
        let segmented = self.segmented;
        while self.stats.bytes > self.stats.capacity_bytes {
            let rank = |e: &Entry<V>| (if segmented { e.class } else { 0 }, e.last_used);
            let oldest = self.map.iter().min_by_key(|(_, e)| rank(e)).map(|(k, _)| k.clone());
            let Some(k) = oldest else { break };
            let e = self.map.remove(&k).expect("key just found");
            self.stats.bytes -= e.bytes;
            self.stats.evictions += 1;
        }
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
        // A lower bound evicts the least recently used now.
        c.set_capacity(4);
        assert!(c.contains(&"c") && !c.contains(&"a"));
        assert_eq!((c.stats().bytes, c.stats().capacity_bytes, c.stats().evictions), (4, 4, 2));
    }

    #[test]
    fn segmented_cache_evicts_one_off_entries_before_reused_and_preferred_ones() {
        let mut c: Lru<&str, u32> = Lru::segmented(12);
        c.insert_preferred("incumbent", 0, 4, true);
        c.insert("reused", 1, 4);
        assert_eq!(c.get(&"reused"), Some(1));
        c.insert("once", 2, 4);
        // Full: a newer one-off entry pushes out the older one-off one, not the others
        // (a plain LRU would evict "incumbent", the least recently used).
        c.insert("once again", 3, 4);
        assert!(c.contains(&"incumbent") && c.contains(&"reused") && c.contains(&"once again") && !c.contains(&"once"));
        // Without one-off entries left, the read one goes before the preferred one.
        c.prefer(|k| *k == "incumbent" || *k == "once again");
        c.insert_preferred("new", 4, 4, true);
        assert!(c.contains(&"incumbent") && !c.contains(&"reused"), "the read entry goes first");
        // Demoted when no longer preferred.
        c.prefer(|k| *k == "new");
        c.insert_preferred("newer", 5, 4, true);
        assert!(c.contains(&"new") && c.contains(&"newer") && c.len() == 3);
    }
}
